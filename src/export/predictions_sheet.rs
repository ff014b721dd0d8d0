//! The predictions sheet of `predict --sheet` and `eval --sheet` (the paper's Figure 4,
//! left): each image with its five most probable classes as horizontal bars, the true
//! class's bar in another colour, panels in a grid of bounded size.
use super::figure;
use image::{Rgb, RgbImage};
use plotters::element::Text;

/// Panels a sheet holds at most: a figure to look at, with memory bounded whatever is asked.
pub const MAX_PANELS: usize = 64;
/// Bars a panel shows at most (the paper's five).
pub const MAX_BARS: usize = 5;
/// Panels per row.
const COLUMNS: usize = 4;
/// Images are shown with a side between these: small ones enlarged by a whole factor
/// (pixels repeated), big ones reduced by one (pixels skipped).
const MIN_TILE: usize = 128;
const MAX_TILE: usize = 256;
/// Width of a panel's bars (and of the panel, unless the image is wider).
const BAR_WIDTH: u32 = 240;
/// Margin around the sheet and gap between panels.
const MARGIN: u32 = 16;
/// Band above the panels (the title), under each image (its caption), each bar's row.
const TITLE_BAND: u32 = 40;
const CAPTION_BAND: u32 = 40;
const BAR_ROW: u32 = 20;
const BAR_HEIGHT: u32 = 16;
/// Pixels every bar shows, whatever its probability.
const MIN_BAR: u32 = 3;
/// Bar colours: the true class (red, as the paper marks it), any other class.
pub const TRUE_BAR: Rgb<u8> = Rgb([225, 80, 70]);
/// The colour of a bar whose class is not the image's.
pub const OTHER_BAR: Rgb<u8> = Rgb([150, 185, 230]);
const TRACK: Rgb<u8> = Rgb([238, 238, 238]);
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// One class of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    /// Its name as shown (wnid, and the human name when known).
    pub name: String,
    /// Its probability.
    pub probability: f64,
    /// Whether it is the image's true class.
    pub truth: bool,
}

/// One image and its most probable classes, most probable first.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Stored pixels `[S,S,3]`, S as the sheet's `side`.
    pub pixels: Vec<u8>,
    /// The line under the image (its file name).
    pub caption: String,
    /// The true class's name, when it is known.
    pub truth: Option<String>,
    /// The classes to draw (at most [`MAX_BARS`] are).
    pub bars: Vec<Bar>,
}

/// Where the sheet puts things, for `panels` images of side `s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredictionsLayout {
    /// Whole image width.
    pub width: u32,
    /// Whole image height.
    pub height: u32,
    /// Side of an image on the sheet.
    pub tile: u32,
    /// A stored pixel spans `up` sheet pixels…
    pub up: u32,
    /// …after keeping every `down`-th one.
    pub down: u32,
    panel_width: u32,
    panel_height: u32,
    columns: u32,
}

impl PredictionsLayout {
    /// The layout of `panels` images of side `s`.
    pub fn new(panels: usize, s: usize) -> PredictionsLayout {
        let s = s.max(1);
        let (up, down) = if s < MIN_TILE {
            (MIN_TILE.div_ceil(s), 1)
        } else {
            (1, s.div_ceil(MAX_TILE))
        };
        let tile = (s * up / down) as u32;
        let panel_width = tile.max(BAR_WIDTH);
        let panel_height = tile + CAPTION_BAND + MAX_BARS as u32 * BAR_ROW;
        let columns = panels.clamp(1, COLUMNS) as u32;
        let rows = panels.div_ceil(COLUMNS).max(1) as u32;
        PredictionsLayout {
            width: 2 * MARGIN + columns * panel_width + (columns - 1) * MARGIN,
            height: TITLE_BAND + rows * (panel_height + MARGIN),
            tile,
            up: up as u32,
            down: down as u32,
            panel_width,
            panel_height,
            columns,
        }
    }

    /// Top-left pixel of panel `p`.
    pub fn panel(&self, p: usize) -> (u32, u32) {
        let (r, c) = (p as u32 / self.columns, p as u32 % self.columns);
        (
            MARGIN + c * (self.panel_width + MARGIN),
            TITLE_BAND + r * (self.panel_height + MARGIN),
        )
    }

    /// Top-left pixel of panel `p`'s image.
    pub fn image(&self, p: usize) -> (u32, u32) {
        let (x, y) = self.panel(p);
        (x + (self.panel_width - self.tile) / 2, y)
    }

    /// Top-left pixel of bar `b` of panel `p` (its full-length track).
    pub fn bar(&self, p: usize, b: usize) -> (u32, u32) {
        let (x, y) = self.panel(p);
        (x, y + self.tile + CAPTION_BAND + b as u32 * BAR_ROW)
    }

    /// Length of a full bar (probability 1).
    pub fn bar_width(&self) -> u32 {
        self.panel_width
    }

    /// Bytes the sheet's image takes.
    pub fn bytes(&self) -> u128 {
        self.width as u128 * self.height as u128 * 3
    }
}

/// Draws the sheet: `panels` of `[s,s,3]` images under `title`; at most [`MAX_PANELS`].
pub fn render_predictions(panels: &[Panel], s: usize, title: &str) -> Result<RgbImage, String> {
    if panels.len() > MAX_PANELS {
        return Err(format!(
            "{} images asked for; a predictions sheet shows at most {MAX_PANELS}",
            panels.len()
        ));
    }
    if let Some(p) = panels.iter().position(|p| p.pixels.len() != s * s * 3) {
        return Err(format!(
            "image {p} holds {} bytes, not the {}×{}×3 of the sheet's images",
            panels[p].pixels.len(),
            s,
            s
        ));
    }
    let l = PredictionsLayout::new(panels.len(), s);
    crate::memory::check(
        format!("a {}×{} predictions sheet", l.width, l.height),
        l.bytes(),
        "lower --sheet-count",
    )
    .map_err(|e| e.to_string())?;
    let mut img = RgbImage::from_pixel(l.width, l.height, BACKGROUND);
    for (p, panel) in panels.iter().enumerate() {
        let (x0, y0) = l.image(p);
        for y in 0..l.tile {
            for x in 0..l.tile {
                let (sx, sy) = ((x * l.down / l.up) as usize, (y * l.down / l.up) as usize);
                let i = (sy * s + sx) * 3;
                let px = &panel.pixels[i..i + 3];
                img.put_pixel(x0 + x, y0 + y, Rgb([px[0], px[1], px[2]]));
            }
        }
        for (b, bar) in panel.bars.iter().take(MAX_BARS).enumerate() {
            let (x, y) = l.bar(p, b);
            // At least a stub, so that an improbable true class is still marked.
            let filled = ((bar.probability.clamp(0.0, 1.0) * l.bar_width() as f64).round() as u32)
                .max(MIN_BAR);
            let colour = if bar.truth { TRUE_BAR } else { OTHER_BAR };
            for yy in 0..BAR_HEIGHT {
                for xx in 0..l.bar_width() {
                    let c = if xx < filled { colour } else { TRACK };
                    img.put_pixel(x + xx, y + yy, c);
                }
            }
        }
    }
    let black = Rgb([0, 0, 0]);
    figure::draw_on(&mut img, |area| {
        let e = |e: plotters::drawing::DrawingAreaErrorKind<_>| e.to_string();
        let title = figure::fit_text(title, 18, l.width - 2 * MARGIN, true);
        area.draw(&Text::new(
            title,
            (MARGIN as i32, 10),
            figure::text_style(18, black, true),
        ))
        .map_err(e)?;
        for (p, panel) in panels.iter().enumerate() {
            let (x, y) = l.panel(p);
            let y = y + l.tile + 3;
            let lines = [
                (panel.caption.clone(), Rgb([90, 90, 90]), false),
                (
                    panel
                        .truth
                        .as_ref()
                        .map_or_else(|| "true class unknown".into(), |t| format!("true: {t}")),
                    if panel.truth.is_some() {
                        TRUE_BAR
                    } else {
                        Rgb([120, 120, 120])
                    },
                    panel.truth.is_some(),
                ),
            ];
            for (k, (text, colour, bold)) in lines.into_iter().enumerate() {
                let text = figure::fit_text(&text, 13, l.panel_width, bold);
                area.draw(&Text::new(
                    text,
                    (x as i32, (y + 17 * k as u32) as i32),
                    figure::text_style(13, colour, bold),
                ))
                .map_err(e)?;
            }
            for (b, bar) in panel.bars.iter().take(MAX_BARS).enumerate() {
                let (bx, by) = l.bar(p, b);
                let text = format!("{:5.1}%  {}", bar.probability * 100.0, bar.name);
                let text = figure::fit_text(&text, 12, l.bar_width() - 4, bar.truth);
                area.draw(&Text::new(
                    text,
                    (bx as i32 + 3, by as i32 + 2),
                    figure::text_style(12, black, bar.truth),
                ))
                .map_err(e)?;
            }
        }
        Ok(())
    })?;
    Ok(img)
}

/// Draws the sheet and writes it to `out` as a PNG, atomically.
pub fn write_predictions(
    panels: &[Panel],
    s: usize,
    title: &str,
    out: &std::path::Path,
) -> Result<(), super::ExportError> {
    let img =
        render_predictions(panels, s, title).map_err(|problem| super::ExportError::Image {
            path: out.into(),
            problem,
        })?;
    super::save_png(&img, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panel(s: usize, seed: usize, truth_at: Option<usize>) -> Panel {
        Panel {
            pixels: (0..s * s * 3)
                .map(|i| ((i * 7 + seed * 31) % 251) as u8)
                .collect(),
            caption: format!("image_{seed}.JPEG"),
            truth: truth_at.map(|b| format!("n0000000{b}")),
            bars: [0.55, 0.2, 0.1, 0.05, 0.01]
                .iter()
                .enumerate()
                .map(|(b, &p)| Bar {
                    name: format!("n0000000{b} some class"),
                    probability: p,
                    truth: truth_at == Some(b),
                })
                .collect(),
        }
    }

    #[test]
    fn one_panel_per_image_with_its_bars_and_the_true_class_marked() {
        let s = 40;
        let panels: Vec<Panel> = (0..6)
            .map(|k| panel(s, k, [Some(0), Some(2), None, Some(4), Some(1), None][k]))
            .collect();
        let img = render_predictions(&panels, s, "six images").unwrap();
        let l = PredictionsLayout::new(6, s);
        assert_eq!(img.dimensions(), (l.width, l.height));
        assert_eq!((l.up, l.down, l.tile), (4, 1, 160), "40 pixels shown 4×");
        for (p, panel) in panels.iter().enumerate() {
            let (x, y) = l.image(p);
            // Stored pixel (row 5, column 7) fills a 4×4 block of the tile.
            let i = (5 * s + 7) * 3;
            let want = Rgb([panel.pixels[i], panel.pixels[i + 1], panel.pixels[i + 2]]);
            assert_eq!(
                *img.get_pixel(x + 7 * 4 + 3, y + 5 * 4 + 1),
                want,
                "panel {p}"
            );
            for (b, bar) in panel.bars.iter().enumerate() {
                let (bx, by) = l.bar(p, b);
                // Below the text, inside the filled part of the bar; past its end, the track.
                let inside = *img.get_pixel(bx + 1, by + BAR_HEIGHT - 1);
                let want = if bar.truth { TRUE_BAR } else { OTHER_BAR };
                assert_eq!(inside, want, "panel {p} bar {b}");
                let end = ((bar.probability * l.bar_width() as f64) as u32).max(MIN_BAR);
                assert_eq!(*img.get_pixel(bx + end + 2, by + BAR_HEIGHT - 1), TRACK);
            }
            let ink = figure::inked(
                &img,
                l.panel(p).0,
                y + l.tile,
                l.panel_width,
                CAPTION_BAND,
                BACKGROUND,
            );
            assert!(ink > 100, "panel {p}'s caption has {ink} pixels");
        }
        let true_bars = panels
            .iter()
            .flat_map(|p| &p.bars)
            .filter(|b| b.truth)
            .count();
        assert_eq!(true_bars, 4);
        // Panels never overlap and stay inside the image; six make two rows of four.
        assert_eq!(l.panel(4).0, l.panel(0).0);
        assert!(l.panel(4).1 > l.bar(0, 4).1 + BAR_HEIGHT);
        let (x, y) = l.bar(5, 4);
        assert!(x + l.bar_width() <= l.width && y + BAR_HEIGHT <= l.height);
    }

    #[test]
    fn the_sheet_is_bounded_whatever_the_images() {
        // The most panels of big stored images: reduced to at most 256 pixels a side.
        let l = PredictionsLayout::new(MAX_PANELS, 1000);
        assert_eq!((l.down, l.tile), (4, 250));
        assert!(l.width < 1200 && l.height < 9000, "{l:?}");
        assert!(l.bytes() < 32 << 20, "{} bytes", l.bytes());
        let l = PredictionsLayout::new(1, 8);
        assert!(l.tile >= MIN_TILE as u32 && l.width < 400, "{l:?}");
        let many = vec![panel(8, 0, None); MAX_PANELS + 1];
        let e = render_predictions(&many, 8, "").unwrap_err();
        assert!(e.contains("at most 64"), "{e}");
        let e = render_predictions(&[panel(8, 0, None)], 9, "").unwrap_err();
        assert!(e.contains("image 0"), "{e}");
    }
}
