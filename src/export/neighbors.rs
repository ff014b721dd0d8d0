//! `alexnet neighbors`: the rows of a features file closest to a query row, or to a new
//! image embedded through the checkpoint ([`super::embed`]), by Euclidean distance (the
//! paper's Figure 4), as a table and optionally a contact sheet.
//!
//! The search streams the file one row group at a time, so memory holds one group (4096
//! rows) whatever the file's size. Within a group, rows are split into blocks that rayon
//! spreads over the cores; each block computes `‖q‖² − 2q·x + ‖x‖²` for every query with
//! f32 products summed in eight lanes (which the compiler vectorises), combines the three
//! terms in f64, and keeps its own top k. The k survivors are then re-measured exactly as
//! `Σ (q − x)²` in f64, so the reported distances do not suffer the cancellation of the
//! expanded form when a neighbour is nearly identical to the query.
use super::features_file::FeatureFile;
use super::shard_columns::read_shard_names;
pub use super::sheet::{render_sheet, sheet_size, SheetLayout, MAX_NEIGHBOURS};
use super::ExportError;
use crate::dataset::{read_rows, ShardSet};
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
    /// `--overwrite`: an existing sheet may be replaced.
    pub overwrite: bool,
    /// A new image to query with instead of a row (`query` is then not read).
    pub query_image: Option<QueryImage>,
}

/// `neighbors --query-image FILE --checkpoint W`.
#[derive(Clone, Debug)]
pub struct QueryImage {
    /// The image file.
    pub image: PathBuf,
    /// The checkpoint the features file was exported with.
    pub checkpoint: PathBuf,
    /// Where the network runs.
    pub device: crate::device::Device,
}

/// A row as the table shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RowInfo {
    /// Global row index; `None` for a query image, which is in no row (left out of JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
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
            let row = r.row.map_or_else(|| "-".to_string(), |r| r.to_string());
            writeln!(
                f,
                "{rank:>4}  {row:>8}  {:>10.4}  {:>6}  {}",
                r.distance, r.label, r.source
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
    let q = file.row(row)?;
    if q.iter().any(|v| !v.is_finite()) {
        return Err(ExportError::Mismatch(format!(
            "{}: row {row} ({}) holds NaN or inf, so it has no distances; export the features again from a checkpoint that has not diverged",
            file.path().display(),
            file.sources.get(row).map_or("", |s| s.as_str())
        )));
    }
    search_vector(file, q, Some(row), k)
}

/// Finds the `k` nearest rows of the vector `q` (the file's width long) across the whole
/// file, leaving out row `skip`.
pub fn search_vector(
    file: &FeatureFile,
    q: Vec<f32>,
    skip: Option<usize>,
    k: usize,
) -> Result<Vec<Neighbor>, ExportError> {
    let q = vec![q];
    // Decoding Parquet costs far more than the distances, so row groups are decoded in
    // parallel too; memory holds about one group (64 MiB at 4096 floats) per core.
    let top = (0..file.row_groups())
        .into_par_iter()
        .map(|g| -> Result<TopK, ExportError> {
            let data = file.read_group(g)?;
            let part = nearest_sq(&q, &[skip], &data, file.width, file.group_start(g), k);
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
    let info = |row: usize, distance: f64| RowInfo {
        row: Some(row),
        source: file.sources.get(row).cloned().unwrap_or_default(),
        label: file.labels.get(row).copied().unwrap_or(-1),
        wnid: file.wnids.get(row).cloned().unwrap_or_default(),
        distance,
    };
    let (query, found, query_pixels) = match &cfg.query_image {
        None => {
            let row = resolve_query(&file, &cfg.query)?;
            (info(row, 0.0), search_file(&file, row, cfg.k)?, None)
        }
        Some(q) => {
            let meta = file.provenance.as_ref().ok_or_else(|| {
                ExportError::Mismatch(format!(
                    "{}: the file does not record its layer, input size and shards (written by another tool?); --query-image needs a file export-features wrote",
                    cfg.features.display()
                ))
            })?;
            let e =
                super::embed::embed_image(&q.image, &q.checkpoint, &cfg.features, meta, q.device)?;
            let query = RowInfo {
                row: None,
                source: q.image.display().to_string(),
                label: -1,
                wnid: String::new(),
                distance: 0.0,
            };
            (
                query,
                search_vector(&file, e.vector, None, cfg.k)?,
                Some(e.pixels),
            )
        }
    };
    let mut result = NeighborsResult {
        query,
        neighbors: found.iter().map(|n| info(n.row, n.distance)).collect(),
        sheet: None,
    };
    if let Some(out) = &cfg.sheet {
        // Never over the features file or a shard, nor an old sheet without --overwrite.
        let inputs: Vec<&Path> = std::iter::once(cfg.features.as_path())
            .chain(cfg.data.iter().map(PathBuf::as_path))
            .collect();
        use crate::output_check::{check, Format, Output};
        check(&Output::new(out, Format::Png, &inputs, cfg.overwrite))?;
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
        write_sheet(&file, &data, &result, query_pixels.as_deref(), out)?;
        result.sheet = Some(out.clone());
    }
    Ok(result)
}

/// Draws the sheet from the shards' pixels; `query_pixels` is a query image's own tile (a
/// row query's comes from the shards).
fn write_sheet(
    file: &FeatureFile,
    data: &[PathBuf],
    result: &NeighborsResult,
    query_pixels: Option<&[u8]>,
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
    if result.neighbors.len() > MAX_NEIGHBOURS {
        eprintln!(
            "note: the contact sheet shows the nearest {MAX_NEIGHBOURS} of the {} neighbours (the table lists them all)",
            result.neighbors.len()
        );
    }
    let shown = NeighborsResult {
        query: result.query.clone(),
        neighbors: result
            .neighbors
            .iter()
            .take(MAX_NEIGHBOURS)
            .cloned()
            .collect(),
        sheet: None,
    };
    let result = &shown;
    let rows: Vec<u64> = std::iter::once(&result.query)
        .chain(&result.neighbors)
        .filter_map(|r| r.row.map(|r| r as u64))
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
    let mut images = read_rows(&set, &rows)?.images;
    if let Some(q) = query_pixels {
        images.splice(0..0, q.iter().copied());
    }
    let img = render_sheet(&images, set.size(), result).map_err(|problem| ExportError::Image {
        path: out.into(),
        problem,
    })?;
    super::save_png(&img, out)
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
}
