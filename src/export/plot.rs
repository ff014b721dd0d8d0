//! `alexnet report`: a run's loss and error curves as one PNG, drawn by hand on an RGB image
//! (axes, ticks, legend, a built-in 5×7 bitmap font), so reports need no plotting library.
//!
//! Left panel, against the step: the loss of each logged step (light), its exponential
//! moving average (dark) and the validation loss at each epoch's end (orange, dots).
//! Right panel, against the epoch: validation top-1 and top-5 error.
use crate::train::metrics::{read_metrics, MetricsError, Record, METRICS_FILE};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Width of the report image in pixels.
pub const REPORT_WIDTH: u32 = 1200;
/// Height of the report image in pixels.
pub const REPORT_HEIGHT: u32 = 480;

/// What can go wrong drawing a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// The metrics file is missing or unreadable.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The metrics file holds no records.
    #[error("{path}: no records yet; the run logs a step every `log_every` steps, so train longer or lower log_every")]
    Empty {
        /// The metrics file.
        path: PathBuf,
    },
    /// The output path is one of the run's files.
    #[error(transparent)]
    Output(#[from] crate::output_check::OutputError),
    /// The PNG could not be written.
    #[error("{path}: cannot write the report: {problem}")]
    Write {
        /// The image file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

/// Reads `RUN/metrics.jsonl` and writes the curves to `out` (default `RUN/report.png`);
/// returns the path written.
pub fn write_report(run_dir: &Path, out: Option<&Path>) -> Result<PathBuf, PlotError> {
    let metrics = run_dir.join(METRICS_FILE);
    let records = read_metrics(&metrics)?;
    if records.is_empty() {
        return Err(PlotError::Empty { path: metrics });
    }
    let out = out.map_or_else(|| run_dir.join("report.png"), Path::to_path_buf);
    // An old report may be replaced; the run's own files may not.
    let inputs = [metrics.as_path(), run_dir];
    crate::output_check::check_output(&out, &inputs, true)?;
    let img = render_report(&records);
    let err = |problem: String| PlotError::Write {
        path: out.clone(),
        problem,
    };
    // Written beside and renamed, so a viewer never shows half an image.
    let mut tmp = out.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let saved = img
        .save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| err(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, &out).map_err(|e| err(e.to_string())));
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved.map(|()| out)
}

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([228, 228, 228]);
const RAW: Rgb<u8> = Rgb([170, 200, 235]);
const SMOOTH: Rgb<u8> = Rgb([20, 80, 170]);
const VAL: Rgb<u8> = Rgb([235, 120, 20]);
const TOP1: Rgb<u8> = Rgb([200, 30, 40]);
const TOP5: Rgb<u8> = Rgb([30, 150, 60]);

/// Draws the report of `records` (any order of step and epoch records; non-finite values
/// leave gaps).
pub fn render_report(records: &[Record]) -> RgbImage {
    let mut c = Canvas(RgbImage::from_pixel(REPORT_WIDTH, REPORT_HEIGHT, WHITE));
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut val_loss: Vec<(f64, f64)> = Vec::new();
    let mut top1: Vec<(f64, f64)> = Vec::new();
    let mut top5: Vec<(f64, f64)> = Vec::new();
    for r in records {
        match r {
            Record::Step(s) => steps.push((s.step as f64, s.loss)),
            Record::Epoch(e) => {
                let ep = e.epoch as f64;
                if let Some(v) = e.val_loss {
                    val_loss.push((e.step as f64, v));
                }
                if let Some(v) = e.val_top1_error {
                    top1.push((ep, v));
                }
                if let Some(v) = e.val_top5_error {
                    top5.push((ep, v));
                }
            }
        }
    }
    for v in [&mut steps, &mut val_loss, &mut top1, &mut top5] {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let smooth = ema(&steps);

    // Loss panel. The raw curve's first steps (ln(classes) and above) would flatten everything
    // else, so the top of the axis follows the smoothed curve and validation, plus the raw
    // curve's 98th percentile; higher raw points are drawn at the top edge.
    let max_x = records.iter().map(|r| r.step() as f64).fold(1.0, f64::max);
    let mut tops: Vec<f64> = steps
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .collect();
    tops.sort_by(f64::total_cmp);
    let raw_top = tops
        .get(tops.len().saturating_sub(1) * 98 / 100)
        .copied()
        .unwrap_or(0.0);
    let max_y = smooth
        .iter()
        .chain(&val_loss)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(raw_top, f64::max);
    let loss_axes = Axes::new(
        (80, 64, 575, 420),
        (0.0, max_x),
        (0.0, if max_y > 0.0 { max_y * 1.05 } else { 1.0 }),
    );
    loss_axes.frame(&mut c, "step", "loss");
    loss_axes.polyline(&mut c, &steps, RAW, 1);
    loss_axes.polyline(&mut c, &smooth, SMOOTH, 2);
    loss_axes.polyline(&mut c, &val_loss, VAL, 2);
    loss_axes.dots(&mut c, &val_loss, VAL);
    legend(
        &mut c,
        80,
        8,
        &[(RAW, "step loss"), (SMOOTH, "smoothed"), (VAL, "val loss")],
    );

    // Error panel.
    let max_epoch = records
        .iter()
        .map(|r| match r {
            Record::Epoch(e) => e.epoch as f64,
            Record::Step(s) => s.epoch as f64,
        })
        .fold(1.0, f64::max);
    let max_err = top1
        .iter()
        .chain(&top5)
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let err_top = if max_err > 0.0 {
        (max_err * 1.1).min(1.0)
    } else {
        1.0
    };
    let mut err_axes = Axes::new((680, 64, 1175, 420), (0.0, max_epoch), (0.0, err_top));
    // Epochs are whole numbers: no 0.5 ticks on short runs.
    err_axes.whole_x = true;
    err_axes.frame(&mut c, "epoch", "error");
    for (series, color) in [(&top1, TOP1), (&top5, TOP5)] {
        err_axes.polyline(&mut c, series, color, 2);
        err_axes.dots(&mut c, series, color);
    }
    legend(
        &mut c,
        680,
        8,
        &[(TOP1, "val top-1 error"), (TOP5, "val top-5 error")],
    );
    if top1.is_empty() && top5.is_empty() {
        c.text(760, 220, "no validation yet", 2, BLACK);
    }
    c.0
}

/// Exponential moving average with bias correction (as TensorBoard's smoothing), over a span
/// of about 1/30 of the points so the curve looks alike for short and long runs.
fn ema(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let span = (points.len() as f64 / 30.0).max(1.0);
    let alpha = 1.0 - (-1.0 / span).exp();
    let (mut avg, mut weight) = (0.0, 0.0);
    points
        .iter()
        .map(|&(x, y)| {
            if !y.is_finite() {
                return (x, f64::NAN);
            }
            avg = (1.0 - alpha) * avg + alpha * y;
            weight = (1.0 - alpha) * weight + alpha;
            (x, avg / weight)
        })
        .collect()
}

fn legend(c: &mut Canvas, mut x: i64, y: i64, items: &[(Rgb<u8>, &str)]) {
    for (color, label) in items {
        c.rect(x, y + 5, 18, 4, *color);
        x += 24;
        c.text(x, y, label, 2, BLACK);
        x += text_width(label, 2) + 24;
    }
}

/// A plot area in pixels and the data range it shows.
struct Axes {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
    x: (f64, f64),
    y: (f64, f64),
    /// Ticks on the x axis at whole numbers only.
    whole_x: bool,
}

impl Axes {
    fn new(px: (i64, i64, i64, i64), x: (f64, f64), y: (f64, f64)) -> Self {
        Axes {
            left: px.0,
            top: px.1,
            right: px.2,
            bottom: px.3,
            x,
            y,
            whole_x: false,
        }
    }

    /// Pixel of a data point, clamped into the plot area.
    fn map(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        let px = self.left as f64 + fx.clamp(0.0, 1.0) * (self.right - self.left) as f64;
        let py = self.bottom as f64 - fy.clamp(0.0, 1.0) * (self.bottom - self.top) as f64;
        (px.round() as i64, py.round() as i64)
    }

    fn frame(&self, c: &mut Canvas, x_label: &str, y_label: &str) {
        for t in nice_ticks(self.y.0, self.y.1) {
            let (_, py) = self.map(self.x.0, t);
            c.line(self.left, py, self.right, py, GRID, 1);
            c.line(self.left - 5, py, self.left, py, BLACK, 1);
            let s = format_tick(t, self.y.1 - self.y.0);
            c.text(self.left - 9 - text_width(&s, 2), py - 7, &s, 2, BLACK);
        }
        let mut x_ticks = nice_ticks(self.x.0, self.x.1);
        if self.whole_x {
            x_ticks.retain(|t| t.fract() == 0.0);
        }
        for t in x_ticks {
            let (px, _) = self.map(t, self.y.0);
            c.line(px, self.top, px, self.bottom, GRID, 1);
            c.line(px, self.bottom, px, self.bottom + 5, BLACK, 1);
            let s = if self.whole_x {
                format!("{t}")
            } else {
                format_tick(t, self.x.1 - self.x.0)
            };
            c.text(px - text_width(&s, 2) / 2, self.bottom + 10, &s, 2, BLACK);
        }
        c.line(self.left, self.top, self.left, self.bottom, BLACK, 1);
        c.line(self.left, self.bottom, self.right, self.bottom, BLACK, 1);
        let cx = (self.left + self.right) / 2 - text_width(x_label, 2) / 2;
        c.text(cx, self.bottom + 34, x_label, 2, BLACK);
        c.text(
            self.left - 9 - text_width(y_label, 2),
            self.top - 24,
            y_label,
            2,
            BLACK,
        );
    }

    /// Joins consecutive finite points; a non-finite value breaks the line.
    fn polyline(&self, c: &mut Canvas, pts: &[(f64, f64)], color: Rgb<u8>, thick: i64) {
        let mut prev: Option<(i64, i64)> = None;
        for &(x, y) in pts {
            if !(x.is_finite() && y.is_finite()) {
                prev = None;
                continue;
            }
            let p = self.map(x, y);
            match prev {
                Some(q) => c.line(q.0, q.1, p.0, p.1, color, thick),
                None => c.rect(p.0, p.1, thick, thick, color),
            }
            prev = Some(p);
        }
    }

    fn dots(&self, c: &mut Canvas, pts: &[(f64, f64)], color: Rgb<u8>) {
        for &(x, y) in pts.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            let (px, py) = self.map(x, y);
            c.rect(px - 3, py - 3, 7, 7, color);
        }
    }
}

/// Ticks at 1, 2 or 5 × 10^k, about five over the range.
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let range = hi - lo;
    if !(range.is_finite() && range > 0.0) {
        return vec![lo];
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// A tick label: whole numbers (thousands as `k`) for ranges of 5 or more, otherwise just
/// enough decimals for the tick spacing.
fn format_tick(v: f64, range: f64) -> String {
    if range >= 5.0 {
        let r = v.round() as i64;
        if r != 0 && r % 1000 == 0 && range >= 5000.0 {
            format!("{}k", r / 1000)
        } else {
            r.to_string()
        }
    } else {
        let decimals = (-(range / 5.0).log10().floor()).clamp(1.0, 6.0) as usize;
        format!("{v:.decimals$}")
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// An image with clipped drawing primitives.
struct Canvas(RgbImage);

impl Canvas {
    fn set(&mut self, x: i64, y: i64, color: Rgb<u8>) {
        if x >= 0 && y >= 0 && x < self.0.width() as i64 && y < self.0.height() as i64 {
            self.0.put_pixel(x as u32, y as u32, color);
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, color);
            }
        }
    }

    /// Bresenham's line, each point drawn as a `thick`×`thick` square.
    fn line(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>, thick: i64) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.rect(x, y, thick, thick, color);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text in the 5×7 font, each font pixel a `scale`×`scale` square, one column of space
    /// between characters. Characters outside the font are drawn as a hollow box.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, color: Rgb<u8>) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            let cx = x + i as i64 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0b10000 >> col) != 0 {
                        self.rect(cx + col * scale, y + r as i64 * scale, scale, scale, color);
                    }
                }
            }
        }
    }
}

/// The 5×7 glyph of `ch` (rows top to bottom, bit 4 = leftmost column). Upper case is drawn
/// as lower case; the font holds what axis labels, legends and numbers need.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_lowercase() {
        ' ' => [0; 7],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '/' => [0x01, 0x02, 0x02, 0x04, 0x08, 0x08, 0x10],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        'a' => [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0, 0, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0, 0, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0, 0, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0, 0, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Writes `s` in the report's 5×7 font onto `img` (other exports caption their images with it).
pub(crate) fn draw_text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64, color: Rgb<u8>) {
    let mut c = Canvas(std::mem::take(img));
    c.text(x, y, s, scale, color);
    *img = c.0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{EpochRecord, MetricsWriter, StepRecord};

    fn run(epochs: usize, decay: f64) -> Vec<Record> {
        let mut out = Vec::new();
        let mut step = 0;
        for e in 1..=epochs {
            for _ in 0..50 {
                step += 1;
                let loss =
                    2.3 * (-(step as f64) * decay).exp() + 0.1 * ((step * 7 % 11) as f64 / 11.0);
                out.push(Record::Step(StepRecord {
                    step,
                    epoch: e,
                    loss,
                    lr: 0.01,
                    images_per_s: 500.0,
                    data_wait_s: 0.0,
                    exchange: None,
                }));
            }
            let err = 0.9 * (-(e as f64) * decay * 50.0).exp();
            out.push(Record::Epoch(EpochRecord {
                epoch: e,
                step,
                train_loss: 1.0,
                val_loss: Some(1.5 * err + 0.2),
                val_top1_error: Some(err),
                val_top5_error: Some(err / 3.0),
                lr: 0.01,
                seconds: 10.0,
            }));
        }
        out
    }

    fn inked(img: &RgbImage, color: Rgb<u8>) -> usize {
        img.pixels().filter(|p| **p == color).count()
    }

    #[test]
    fn report_has_its_size_curves_and_follows_the_data() {
        let a = render_report(&run(5, 0.01));
        let b = render_report(&run(5, 0.02));
        assert_eq!(a.dimensions(), (REPORT_WIDTH, REPORT_HEIGHT));
        let non_white = a.pixels().filter(|p| **p != WHITE).count();
        assert!(non_white > 5_000, "only {non_white} pixels drawn");
        for (color, name) in [
            (SMOOTH, "smoothed"),
            (VAL, "val"),
            (TOP1, "top-1"),
            (TOP5, "top-5"),
        ] {
            // The legend swatch alone is 72 pixels; a curve adds far more.
            assert!(inked(&a, color) > 200, "{name} curve missing");
        }
        assert_ne!(a, b, "different data drew the same image");
        assert_eq!(a, render_report(&run(5, 0.01)), "drawing is deterministic");
    }

    #[test]
    fn report_without_validation_or_with_nan_still_draws() {
        let mut recs: Vec<Record> = run(2, 0.01)
            .into_iter()
            .filter(|r| matches!(r, Record::Step(_)))
            .collect();
        if let Record::Step(s) = &mut recs[10] {
            s.loss = f64::NAN;
        }
        let img = render_report(&recs);
        assert_eq!(inked(&img, TOP1), 72, "only the legend swatch");
        assert!(inked(&img, SMOOTH) > 200);
    }

    #[test]
    fn write_report_reads_the_run_and_explains_missing_data() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_report(dir.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl") && e.contains("alexnet train"),
            "{e}"
        );
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        let e = write_report(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("no records"), "{e}");
        for r in run(3, 0.01) {
            w.write(&r).unwrap();
        }
        let out = write_report(dir.path(), None).unwrap();
        assert_eq!(out, dir.path().join("report.png"));
        let png = image::open(&out).unwrap().to_rgb8();
        assert_eq!(png, render_report(&run(3, 0.01)));
        if let Ok(keep) = std::env::var("ALEXNET_KEEP_REPORT") {
            // For looking at the drawing by eye.
            std::fs::copy(&out, keep).unwrap();
        }
        let other = dir.path().join("x.png");
        assert_eq!(write_report(dir.path(), Some(&other)).unwrap(), other);
    }

    #[test]
    fn ticks_and_labels() {
        let t: Vec<String> = nice_ticks(0.0, 1.0)
            .iter()
            .map(|v| format_tick(*v, 1.0))
            .collect();
        assert_eq!(t, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        assert_eq!(nice_ticks(0.0, 23_000.0).len(), 5);
        assert_eq!(format_tick(20_000.0, 23_000.0), "20k");
        assert_eq!(format_tick(40.0, 90.0), "40");
        assert_eq!(format_tick(0.4, 1.0), "0.4");
        assert_eq!(format_tick(0.05, 0.2), "0.05");
        // Every character the report writes is in the font (the fallback is a box).
        let boxed = glyph('\u{1}');
        for ch in "0123456789.-k step loss smoothed val top-1 error epoch no validation yet".chars()
        {
            assert!(
                ch == ' ' || glyph(ch) != boxed,
                "{ch:?} missing from the font"
            );
        }
    }
}
