//! The contact sheet of `alexnet neighbors --sheet` (the paper's Figure 4): the query and
//! its nearest neighbours as framed, captioned tiles, laid out as a grid of bounded size.
use super::figure;
use super::neighbors::{NeighborsResult, RowInfo};
use image::{Rgb, RgbImage};
use plotters::element::Text;

/// Smallest side a tile is shown at: small stored images are enlarged by a whole factor
/// (pixels repeated, nothing invented) so the sheet reads on a laptop screen.
const MIN_TILE: usize = 192;
/// Neighbours a sheet shows at most (`-k` may ask for more in the table): the sheet is a
/// figure to look at, and its memory must stay bounded whatever `-k` is.
pub const MAX_NEIGHBOURS: usize = 64;
/// Neighbour tiles per row of the grid (the query has the first row to itself).
const COLUMNS: usize = 8;
/// Margin around the sheet and gap between tiles, in pixels.
const MARGIN: u32 = 16;
/// Extra gap below the query's row.
const QUERY_GAP: u32 = 24;
/// Width of the frame around each tile.
const FRAME: u32 = 5;
/// Band above the tiles (the title) and below each tile (three caption lines).
const TITLE_BAND: u32 = 40;
const CAPTION_BAND: u32 = 66;
/// Frame colours: the query, a neighbour of the query's class, any other neighbour.
const QUERY_FRAME: Rgb<u8> = Rgb([30, 90, 200]);
const SAME_FRAME: Rgb<u8> = Rgb([20, 160, 60]);
const OTHER_FRAME: Rgb<u8> = Rgb([200, 200, 200]);
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Where the contact sheet puts things, for `tiles` images of side `s` (query first): the
/// query alone on the first row, the neighbours below it in rows of up to eight.
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
    columns: u32,
}

impl SheetLayout {
    /// The layout of `tiles` images of side `s`.
    pub fn new(tiles: usize, s: usize) -> SheetLayout {
        let scale = MIN_TILE.div_ceil(s.max(1)).max(1) as u32;
        let tile = s as u32 * scale;
        let neighbours = tiles.saturating_sub(1);
        let columns = neighbours.clamp(1, COLUMNS) as u32;
        let rows = 1 + neighbours.div_ceil(COLUMNS) as u32;
        let cell = tile + 2 * FRAME;
        let row = cell + CAPTION_BAND + MARGIN;
        SheetLayout {
            width: 2 * MARGIN + columns * cell + (columns - 1) * MARGIN,
            height: TITLE_BAND + rows * row + if rows > 1 { QUERY_GAP } else { 0 },
            tile,
            scale,
            columns,
        }
    }

    /// Top-left pixel of tile `t`'s image (inside its frame).
    pub fn origin(&self, t: usize) -> (u32, u32) {
        let cell = self.tile + 2 * FRAME;
        let row = cell + CAPTION_BAND + MARGIN;
        if t == 0 {
            return (MARGIN + FRAME, TITLE_BAND + FRAME);
        }
        let i = t as u32 - 1;
        let (r, c) = (i / self.columns, i % self.columns);
        (
            MARGIN + c * (cell + MARGIN) + FRAME,
            TITLE_BAND + (1 + r) * row + QUERY_GAP + FRAME,
        )
    }

    /// Bytes the sheet's image takes.
    pub fn bytes(&self) -> u128 {
        self.width as u128 * self.height as u128 * 3
    }
}

/// Size of the contact sheet of `tiles` images of side `s`: query, then the neighbours.
pub fn sheet_size(tiles: usize, s: usize) -> (u32, u32) {
    let l = SheetLayout::new(tiles, s);
    (l.width, l.height)
}

/// Draws the sheet (the paper's Figure 4, as a grid): `images` holds the query then the
/// neighbours, `[n,S,S,3]` u8. Each tile is framed (blue: the query; green: a neighbour of
/// the query's class; grey: another class) and captioned with its rank and distance, its
/// class (a check mark for the query's class) and its file name.
pub fn render_sheet(images: &[u8], s: usize, result: &NeighborsResult) -> Result<RgbImage, String> {
    let px = s * s * 3;
    let n = images.len() / px.max(1);
    let l = SheetLayout::new(n, s);
    crate::memory::check(
        format!("a {}×{} contact sheet", l.width, l.height),
        l.bytes(),
        "lower -k",
    )
    .map_err(|e| e.to_string())?;
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

    fn info(row: usize, label: i32, distance: f64) -> RowInfo {
        RowInfo {
            row: Some(row),
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

    #[test]
    fn many_neighbours_make_a_grid_not_a_strip() {
        // 64 neighbours of 70-pixel images (shown 3×: 210 pixels): eight rows of eight
        // under the query, never 65 tiles side by side.
        let l = SheetLayout::new(1 + MAX_NEIGHBOURS, 70);
        let cell = l.tile + 2 * FRAME;
        assert_eq!(l.width, 2 * MARGIN + 8 * cell + 7 * MARGIN);
        assert!(l.height < 10 * (cell + CAPTION_BAND + MARGIN) + TITLE_BAND + QUERY_GAP);
        assert!(l.bytes() < 40 << 20, "{} bytes", l.bytes());
        // Tiles never overlap and stay inside the image.
        let mut seen = std::collections::HashSet::new();
        for t in 0..=MAX_NEIGHBOURS {
            let (x, y) = l.origin(t);
            assert!(x + l.tile + FRAME <= l.width && y + l.tile + FRAME + CAPTION_BAND <= l.height);
            assert!(seen.insert((x, y)), "tile {t}");
        }
        assert_eq!(l.origin(9).1, l.origin(1).1 + cell + CAPTION_BAND + MARGIN);
        assert_eq!(l.origin(9).0, l.origin(1).0);
    }
}
