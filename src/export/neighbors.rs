//! `alexnet neighbors`: the rows of a features file closest to a query row by Euclidean
//! distance (the paper's Figure 4), as a table and optionally a contact sheet.
//!
//! The search streams the file one row group at a time, so memory holds one group (4096
//! rows) whatever the file's size. Within a group, rows are split into blocks that rayon
//! spreads over the cores; each block computes `‖q‖² − 2q·x + ‖x‖²` for every query with
//! f32 products summed in eight lanes (which the compiler vectorises), combines the three
//! terms in f64, and keeps its own top k. The k survivors are then re-measured exactly as
//! `Σ (q − x)²` in f64, so the reported distances do not suffer the cancellation of the
//! expanded form when a neighbour is nearly identical to the query.
use super::features_file::FeatureFile;
use super::figure;
use super::shard_columns::read_shard_names;
use super::ExportError;
use crate::dataset::{read_rows, ShardSet};
use image::{Rgb, RgbImage};
use plotters::element::Text;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Rows per rayon task: 64 rows of 4096 floats is 1 MiB, large enough to amortise the
/// task and small enough that the blocks spread evenly over the cores.
const BLOCK_ROWS: usize = 64;

/// One neighbour of a query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    /// Global row index in the features file.
    pub row: usize,
    /// Euclidean distance to the query.
    pub distance: f64,
}

/// The k smallest (squared distance, row) pairs seen, sorted ascending; ties go to the
/// lower row so results do not depend on how rayon split the work.
#[derive(Clone, Debug)]
struct TopK {
    k: usize,
    items: Vec<(f64, usize)>,
}

impl TopK {
    fn new(k: usize) -> TopK {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    fn push(&mut self, d: f64, row: usize) {
        // A vector with NaN or inf (written by another tool) is near nothing; NaN would
        // otherwise compare as "not worse" and be ranked first.
        if self.k == 0 || !d.is_finite() {
            return;
        }
        if self.items.len() == self.k {
            let worst = self.items[self.k - 1];
            if (d, row) >= worst {
                return;
            }
        }
        let at = self.items.partition_point(|&e| e < (d, row));
        self.items.insert(at, (d, row));
        self.items.truncate(self.k);
    }

    fn merge(mut self, other: TopK) -> TopK {
        for (d, r) in other.items {
            self.push(d, r);
        }
        self
    }
}

/// (q·x, ‖x‖²) in f32 over eight lanes, summed in f64 at the end.
#[inline]
fn dot_and_norm(q: &[f32], x: &[f32]) -> (f64, f64) {
    let mut dot = [0f32; 8];
    let mut nn = [0f32; 8];
    let (qc, xc) = (q.chunks_exact(8), x.chunks_exact(8));
    let (qr, xr) = (qc.remainder(), xc.remainder());
    for (a, b) in qc.zip(xc) {
        for l in 0..8 {
            dot[l] += a[l] * b[l];
            nn[l] += b[l] * b[l];
        }
    }
    let mut d: f64 = dot.iter().map(|&v| v as f64).sum();
    let mut n: f64 = nn.iter().map(|&v| v as f64).sum();
    for (&a, &b) in qr.iter().zip(xr) {
        d += a as f64 * b as f64;
        n += b as f64 * b as f64;
    }
    (d, n)
}

/// q·x in f32 over eight lanes, summed in f64 at the end.
#[inline]
fn dot(q: &[f32], x: &[f32]) -> f64 {
    let mut acc = [0f32; 8];
    let (qc, xc) = (q.chunks_exact(8), x.chunks_exact(8));
    let (qr, xr) = (qc.remainder(), xc.remainder());
    for (a, b) in qc.zip(xc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut d: f64 = acc.iter().map(|&v| v as f64).sum();
    for (&a, &b) in qr.iter().zip(xr) {
        d += a as f64 * b as f64;
    }
    d
}

/// Exact squared distance in f64.
fn exact_sq(q: &[f32], x: &[f32]) -> f64 {
    q.iter()
        .zip(x)
        .map(|(&a, &b)| {
            let d = a as f64 - b as f64;
            d * d
        })
        .sum()
}

/// The `k` nearest rows of `data` (`[rows, dim]`, global rows `first_row..`) to each of
/// `queries` (each `dim` long), nearest first. `skip[i]` is a global row left out of query
/// i's answer (the query's own row).
pub fn nearest(
    queries: &[Vec<f32>],
    skip: &[Option<usize>],
    data: &[f32],
    dim: usize,
    first_row: usize,
    k: usize,
) -> Vec<Vec<Neighbor>> {
    let tops = nearest_sq(queries, skip, data, dim, first_row, k);
    tops.into_iter()
        .map(|t| {
            t.items
                .into_iter()
                .map(|(d, row)| Neighbor {
                    row,
                    distance: d.sqrt(),
                })
                .collect()
        })
        .collect()
}

fn nearest_sq(
    queries: &[Vec<f32>],
    skip: &[Option<usize>],
    data: &[f32],
    dim: usize,
    first_row: usize,
    k: usize,
) -> Vec<TopK> {
    let nq = queries.len();
    if dim == 0 || nq == 0 {
        return vec![TopK::new(k); nq];
    }
    let qq: Vec<f64> = queries
        .iter()
        .map(|q| q.iter().map(|&v| v as f64 * v as f64).sum())
        .collect();
    let mut tops = data
        .par_chunks(BLOCK_ROWS * dim)
        .enumerate()
        .fold(
            || vec![TopK::new(k); nq],
            |mut tops, (b, block)| {
                for (i, x) in block.chunks_exact(dim).enumerate() {
                    let row = first_row + b * BLOCK_ROWS + i;
                    if nq == 1 {
                        // One query: a single fused pass over the row.
                        if skip.first().copied().flatten() != Some(row) {
                            let (dot, xx) = dot_and_norm(&queries[0], x);
                            tops[0].push((qq[0] - 2.0 * dot + xx).max(0.0), row);
                        }
                        continue;
                    }
                    // Several: ‖x‖² once, then the row stays in cache for every query's dot.
                    let xx = dot_and_norm(x, x).0;
                    for (j, q) in queries.iter().enumerate() {
                        if skip.get(j).copied().flatten() == Some(row) {
                            continue;
                        }
                        let dot = dot(q, x);
                        tops[j].push((qq[j] - 2.0 * dot + xx).max(0.0), row);
                    }
                }
                tops
            },
        )
        .reduce(
            || vec![TopK::new(k); nq],
            |a, b| a.into_iter().zip(b).map(|(x, y)| x.merge(y)).collect(),
        );
    for (t, q) in tops.iter_mut().zip(queries) {
        for e in t.items.iter_mut() {
            let i = e.1 - first_row;
            e.0 = exact_sq(q, &data[i * dim..(i + 1) * dim]);
        }
        t.items
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }
    tops
}

/// What `neighbors` does.
#[derive(Clone, Debug)]
pub struct NeighborsConfig {
    /// The features file.
    pub features: PathBuf,
    /// A `source` exactly as stored, or a row index.
    pub query: String,
    /// Neighbours to find (the query itself is not counted).
    pub k: usize,
    /// Where to draw the contact sheet, if anywhere.
    pub sheet: Option<PathBuf>,
    /// Shards holding the pixels; default: the shards named in the file's footer.
    pub data: Vec<PathBuf>,
}

/// A row as the table shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RowInfo {
    /// Global row index.
    pub row: usize,
    /// Its source path.
    pub source: String,
    /// Its label.
    pub label: i32,
    /// Its class folder name.
    pub wnid: String,
    /// Distance to the query (0 for the query).
    pub distance: f64,
}

/// The answer of a neighbour query (`neighbors --json` prints it).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NeighborsResult {
    /// The query row.
    pub query: RowInfo,
    /// Its neighbours, nearest first.
    pub neighbors: Vec<RowInfo>,
    /// The contact sheet written, if any.
    pub sheet: Option<PathBuf>,
}

impl std::fmt::Display for NeighborsResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>4}  {:>8}  {:>10}  {:>6}  source",
            "rank", "row", "distance", "label"
        )?;
        let rows = std::iter::once(&self.query).chain(&self.neighbors);
        for (rank, r) in rows.enumerate() {
            let rank = if rank == 0 {
                "q".to_string()
            } else {
                rank.to_string()
            };
            writeln!(
                f,
                "{rank:>4}  {:>8}  {:>10.4}  {:>6}  {}",
                r.row, r.distance, r.label, r.source
            )?;
        }
        if let Some(s) = &self.sheet {
            writeln!(f, "contact sheet: {}", s.display())?;
        }
        Ok(())
    }
}

/// The row `query` names: an exact `source` match first, else a row index.
fn resolve_query(file: &FeatureFile, query: &str) -> Result<usize, ExportError> {
    if let Some(r) = file.sources.iter().position(|s| s == query) {
        return Ok(r);
    }
    match query.parse::<usize>() {
        Ok(r) if r < file.len() => Ok(r),
        _ => Err(ExportError::QueryNotFound {
            path: file.path().into(),
            query: query.into(),
            rows: file.len(),
        }),
    }
}

/// Finds the `k` nearest rows of the query row across the whole file, one row group at a time.
pub fn search_file(file: &FeatureFile, row: usize, k: usize) -> Result<Vec<Neighbor>, ExportError> {
    let q = vec![file.row(row)?];
    if q[0].iter().any(|v| !v.is_finite()) {
        return Err(ExportError::Mismatch(format!(
            "{}: row {row} ({}) holds NaN or inf, so it has no distances; export the features again from a checkpoint that has not diverged",
            file.path().display(),
            file.sources.get(row).map_or("", |s| s.as_str())
        )));
    }
    // Decoding Parquet costs far more than the distances, so row groups are decoded in
    // parallel too; memory holds about one group (64 MiB at 4096 floats) per core.
    let top = (0..file.row_groups())
        .into_par_iter()
        .map(|g| -> Result<TopK, ExportError> {
            let data = file.read_group(g)?;
            let part = nearest_sq(&q, &[Some(row)], &data, file.width, file.group_start(g), k);
            Ok(part.into_iter().fold(TopK::new(k), TopK::merge))
        })
        .try_reduce(|| TopK::new(k), |a, b| Ok(a.merge(b)))?;
    Ok(top
        .items
        .into_iter()
        .map(|(d, row)| Neighbor {
            row,
            distance: d.sqrt(),
        })
        .collect())
}

/// Runs a neighbour query as `cfg` says.
pub fn neighbors(cfg: &NeighborsConfig) -> Result<NeighborsResult, ExportError> {
    let file = FeatureFile::open(&cfg.features)?;
    let row = resolve_query(&file, &cfg.query)?;
    let found = search_file(&file, row, cfg.k)?;
    let info = |row: usize, distance: f64| RowInfo {
        row,
        source: file.sources.get(row).cloned().unwrap_or_default(),
        label: file.labels.get(row).copied().unwrap_or(-1),
        wnid: file.wnids.get(row).cloned().unwrap_or_default(),
        distance,
    };
    let mut result = NeighborsResult {
        query: info(row, 0.0),
        neighbors: found.iter().map(|n| info(n.row, n.distance)).collect(),
        sheet: None,
    };
    if let Some(out) = &cfg.sheet {
        // Replacing an old sheet is fine; drawing over the features file or a shard is not.
        let inputs: Vec<&Path> = std::iter::once(cfg.features.as_path())
            .chain(cfg.data.iter().map(PathBuf::as_path))
            .collect();
        crate::output_check::check_output(out, &inputs, true)?;
        let data = if cfg.data.is_empty() {
            file.provenance
                .as_ref()
                .map(|p| p.shard_paths(&cfg.features))
                .unwrap_or_default()
        } else {
            cfg.data.clone()
        };
        if data.is_empty() {
            return Err(ExportError::Mismatch(format!(
                "{}: the file does not name the shards it was made from; pass --data SHARDS for the contact sheet",
                cfg.features.display()
            )));
        }
        write_sheet(&file, &data, &result, out)?;
        result.sheet = Some(out.clone());
    }
    Ok(result)
}

/// Smallest side a tile is shown at: small stored images are enlarged by a whole factor
/// (pixels repeated, nothing invented) so the sheet reads on a laptop screen.
const MIN_TILE: usize = 192;
/// Margin around the sheet and gap between tiles, in pixels.
const MARGIN: u32 = 16;
/// Extra gap after the query tile.
const QUERY_GAP: u32 = 24;
/// Width of the frame around each tile.
const FRAME: u32 = 5;
/// Band above the tiles (the title) and below them (three caption lines).
const TITLE_BAND: u32 = 40;
const CAPTION_BAND: u32 = 66;
/// Frame colours: the query, a neighbour of the query's class, any other neighbour.
const QUERY_FRAME: Rgb<u8> = Rgb([30, 90, 200]);
const SAME_FRAME: Rgb<u8> = Rgb([20, 160, 60]);
const OTHER_FRAME: Rgb<u8> = Rgb([200, 200, 200]);
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Where the contact sheet puts things, for `tiles` images of side `s` (query first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SheetLayout {
    /// Whole image size.
    pub width: u32,
    /// Whole image height.
    pub height: u32,
    /// Side of a tile on the sheet (the stored side times `scale`).
    pub tile: u32,
    /// Screen pixels per stored pixel.
    pub scale: u32,
    tiles: u32,
}

impl SheetLayout {
    /// The layout of `tiles` images of side `s`.
    pub fn new(tiles: usize, s: usize) -> SheetLayout {
        let scale = MIN_TILE.div_ceil(s.max(1)).max(1) as u32;
        let tile = s as u32 * scale;
        let n = tiles.max(1) as u32;
        let cell = tile + 2 * FRAME;
        SheetLayout {
            width: 2 * MARGIN + n * cell + (n - 1) * MARGIN + QUERY_GAP,
            height: TITLE_BAND + cell + CAPTION_BAND + MARGIN,
            tile,
            scale,
            tiles: n,
        }
    }

    /// Top-left pixel of tile `t`'s image (inside its frame).
    pub fn origin(&self, t: usize) -> (u32, u32) {
        let t = t as u32;
        let cell = self.tile + 2 * FRAME;
        let gap = if t > 0 { QUERY_GAP } else { 0 };
        (
            MARGIN + t * (cell + MARGIN) + gap + FRAME,
            TITLE_BAND + FRAME,
        )
    }
}

/// Size of the contact sheet of `tiles` images of side `s`: query, then the neighbours.
pub fn sheet_size(tiles: usize, s: usize) -> (u32, u32) {
    let l = SheetLayout::new(tiles, s);
    (l.width, l.height)
}

fn write_sheet(
    file: &FeatureFile,
    data: &[PathBuf],
    result: &NeighborsResult,
    out: &Path,
) -> Result<(), ExportError> {
    let set = ShardSet::open(data)?;
    let first = set.files()[0].display().to_string();
    if set.len() != file.len() {
        return Err(ExportError::Mismatch(format!(
            "{first}: the shards hold {} images but {} has {} rows; pass --data with the shards the features were exported from",
            set.len(),
            file.path().display(),
            file.len()
        )));
    }
    let rows: Vec<u64> = std::iter::once(&result.query)
        .chain(&result.neighbors)
        .map(|r| r.row as u64)
        .collect();
    let names = read_shard_names(set.files())?;
    for &r in &rows {
        let (want, got) = (&file.sources[r as usize], &names.sources[r as usize]);
        if want != got {
            return Err(ExportError::Mismatch(format!(
                "row {r} is `{want}` in {} but `{got}` in {first}; pass --data with the shards the features were exported from",
                file.path().display()
            )));
        }
    }
    let pixels = read_rows(&set, &rows)?;
    let img =
        render_sheet(&pixels.images, set.size(), result).map_err(|problem| ExportError::Image {
            path: out.into(),
            problem,
        })?;
    super::save_png(&img, out)
}

/// Draws the sheet (the paper's Figure 4, one row): `images` holds the query then the
/// neighbours, `[n,S,S,3]` u8. Each tile is framed (blue: the query; green: a neighbour of
/// the query's class; grey: another class) and captioned with its rank and distance, its
/// class (a check mark for the query's class) and its file name.
pub fn render_sheet(images: &[u8], s: usize, result: &NeighborsResult) -> Result<RgbImage, String> {
    let px = s * s * 3;
    let n = images.len() / px.max(1);
    let l = SheetLayout::new(n, s);
    let mut img = RgbImage::from_pixel(l.width, l.height, BACKGROUND);
    let rows: Vec<&RowInfo> = std::iter::once(&result.query)
        .chain(&result.neighbors)
        .collect();
    let same = |t: usize| t > 0 && rows.get(t).is_some_and(|r| r.label == result.query.label);
    for t in 0..n {
        let (x0, y0) = l.origin(t);
        let frame = match t {
            0 => QUERY_FRAME,
            _ if same(t) => SAME_FRAME,
            _ => OTHER_FRAME,
        };
        let side = l.tile + 2 * FRAME;
        for y in 0..side {
            for x in 0..side {
                img.put_pixel(x0 - FRAME + x, y0 - FRAME + y, frame);
            }
        }
        let tile = &images[t * px..(t + 1) * px];
        for y in 0..l.tile {
            for x in 0..l.tile {
                let i = ((y / l.scale) as usize * s + (x / l.scale) as usize) * 3;
                img.put_pixel(x0 + x, y0 + y, Rgb([tile[i], tile[i + 1], tile[i + 2]]));
            }
        }
    }
    let black = Rgb([0, 0, 0]);
    let q = &result.query;
    let same_count = (1..n).filter(|&t| same(t)).count();
    let title = format!(
        "query {} (class {}): {} of {} neighbours share its class (green frames)",
        q.source,
        q.wnid,
        same_count,
        n.saturating_sub(1)
    );
    let title = figure::fit_text(&title, 18, l.width - 2 * MARGIN, true);
    figure::draw_on(&mut img, |area| {
        let e = |e: plotters::drawing::DrawingAreaErrorKind<_>| e.to_string();
        area.draw(&Text::new(
            title,
            (MARGIN as i32, 10),
            figure::text_style(18, black, true),
        ))
        .map_err(e)?;
        for (t, r) in rows.iter().enumerate().take(n) {
            let (x0, y0) = l.origin(t);
            let (x, y) = (x0 as i32 - FRAME as i32, (y0 + l.tile + FRAME + 6) as i32);
            let width = l.tile + 2 * FRAME;
            let head = if t == 0 {
                "query".to_string()
            } else {
                format!("#{t}  distance {:.3}", r.distance)
            };
            let (class, colour) = if t == 0 {
                (format!("class {}", r.wnid), QUERY_FRAME)
            } else if same(t) {
                (format!("✓ {}", r.wnid), SAME_FRAME)
            } else {
                (r.wnid.clone(), Rgb([120, 120, 120]))
            };
            let name = r.source.rsplit('/').next().unwrap_or(&r.source);
            for (line, (text, size, colour, bold)) in [
                (head, 16, black, true),
                (class, 15, colour, t == 0 || same(t)),
                (name.to_string(), 13, Rgb([90, 90, 90]), false),
            ]
            .into_iter()
            .enumerate()
            {
                let text = figure::fit_text(&text, size, width, bold);
                area.draw(&Text::new(
                    text,
                    (x, y + 20 * line as i32),
                    figure::text_style(size, colour, bold),
                ))
                .map_err(e)?;
            }
        }
        Ok(())
    })?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(q: &[f32], data: &[f32], dim: usize, k: usize, skip: Option<usize>) -> Vec<usize> {
        let mut d: Vec<(f64, usize)> = data
            .chunks_exact(dim)
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(i, x)| (exact_sq(q, x), i))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        d.into_iter().take(k).map(|e| e.1).collect()
    }

    #[test]
    fn blocked_search_matches_brute_force() {
        let (rows, dim, k) = (1000, 37, 7);
        let data: Vec<f32> = (0..rows * dim)
            .map(|i| crate::shape::normal(11, i as u32))
            .collect();
        let queries: Vec<Vec<f32>> = [3usize, 500, 999]
            .iter()
            .map(|&r| data[r * dim..(r + 1) * dim].to_vec())
            .collect();
        let skip = [Some(3), None, Some(999)];
        let got = nearest(&queries, &skip, &data, dim, 0, k);
        for (j, q) in queries.iter().enumerate() {
            let want = brute(q, &data, dim, k, skip[j]);
            let rows: Vec<usize> = got[j].iter().map(|n| n.row).collect();
            assert_eq!(rows, want, "query {j}");
        }
        // Not skipped: the row itself comes first at distance exactly 0.
        assert_eq!(got[1][0].row, 500);
        assert_eq!(got[1][0].distance, 0.0);
        assert!(got[0].windows(2).all(|w| w[0].distance <= w[1].distance));
    }

    #[test]
    fn non_finite_distances_are_never_neighbours() {
        let mut t = TopK::new(2);
        t.push(f64::NAN, 0);
        t.push(3.0, 1);
        t.push(f64::INFINITY, 2);
        t.push(1.0, 3);
        assert_eq!(t.items, vec![(1.0, 3), (3.0, 1)]);
    }

    #[test]
    fn top_k_keeps_the_smallest_with_ties_to_the_lower_row() {
        let mut t = TopK::new(3);
        for (d, r) in [(5.0, 0), (1.0, 9), (1.0, 2), (7.0, 1), (0.5, 4), (1.0, 3)] {
            t.push(d, r);
        }
        assert_eq!(t.items, vec![(0.5, 4), (1.0, 2), (1.0, 3)]);
        assert!(TopK::new(0).merge(t).items.is_empty());
    }

    fn info(row: usize, label: i32, distance: f64) -> RowInfo {
        RowInfo {
            row,
            source: format!("n{label}/image_{row}.JPEG"),
            label,
            wnid: format!("n{label:08}"),
            distance,
        }
    }

    #[test]
    fn sheet_frames_the_query_class_and_captions_every_tile() {
        let s = 24;
        let result = NeighborsResult {
            query: info(0, 3, 0.0),
            neighbors: vec![info(5, 3, 1.5), info(7, 1, 2.0)],
            sheet: None,
        };
        let images: Vec<u8> = (0..3 * s * s * 3).map(|i| (i * 7 % 251) as u8).collect();
        let img = render_sheet(&images, s, &result).unwrap();
        let l = SheetLayout::new(3, s);
        assert_eq!(img.dimensions(), (l.width, l.height));
        assert_eq!(l.scale, 8, "24-pixel images are shown 8× (192 pixels)");
        assert!(l.tile >= MIN_TILE as u32);
        let frame = |t: usize| {
            let (x, y) = l.origin(t);
            *img.get_pixel(x - 2, y + 10)
        };
        assert_eq!(frame(0), QUERY_FRAME);
        assert_eq!(frame(1), SAME_FRAME, "neighbour of the query's class");
        assert_eq!(frame(2), OTHER_FRAME);
        for t in 0..3 {
            let (x, y) = l.origin(t);
            // Stored pixel (row 2, column 3) fills an 8×8 block of the tile.
            let i = t * s * s * 3 + (2 * s + 3) * 3;
            let want = Rgb([images[i], images[i + 1], images[i + 2]]);
            assert_eq!(
                *img.get_pixel(x + 3 * 8 + 5, y + 2 * 8 + 7),
                want,
                "tile {t}"
            );
            // Three caption lines under every tile.
            let ink = figure::inked(
                &img,
                x,
                y + l.tile + FRAME,
                l.tile,
                CAPTION_BAND,
                BACKGROUND,
            );
            assert!(ink > 150, "tile {t} caption has {ink} pixels");
        }
        // The title band holds text.
        assert!(figure::inked(&img, 0, 0, l.width, TITLE_BAND - FRAME, BACKGROUND) > 300);
    }
}
