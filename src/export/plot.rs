//! `alexnet report`: a run's loss and error curves as one PNG, drawn with plotters.
//!
//! Title: the run's name (its directory) and how far it got. Left panel, against the step:
//! the loss of each logged step (light), its exponential moving average (dark) and the
//! validation loss at each epoch's end (orange, dots), on a linear or a log scale. Right
//! panel, against the epoch: validation top-1 and top-5 error in percent, as the console
//! prints them; without validation data the panel says so and has no legend.
use super::figure::{draw_on, text_style, FAMILY};
use crate::train::metrics::{read_metrics, MetricsError, Record, METRICS_FILE};
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// Width of the report image in pixels.
pub const REPORT_WIDTH: u32 = 1400;
/// Height of the report image in pixels.
pub const REPORT_HEIGHT: u32 = 560;
/// Height of the title band at the top.
pub const TITLE_HEIGHT: u32 = 48;

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
    /// Drawing failed (a plotting library error).
    #[error("drawing the report failed: {0}")]
    Draw(String),
    /// A run was named twice (it would be counted twice in the comparison).
    #[error("{} and {} are the same run; name each run once", first.display(), second.display())]
    SameRun {
        /// The first spelling.
        first: PathBuf,
        /// The second.
        second: PathBuf,
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

/// How the report is drawn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReportOptions {
    /// The title's name; [`write_report_with`] uses the run directory's name when `None`.
    pub title: Option<String>,
    /// Loss on a log scale (late training, when the loss is small, stays readable).
    pub log_loss: bool,
    /// `--overwrite`: an existing image may be replaced.
    pub overwrite: bool,
}

/// Reads `RUN/metrics.jsonl` and writes the curves to `out` (default `RUN/report.png`) with
/// the default options; returns the path written.
pub fn write_report(run_dir: &Path, out: Option<&Path>) -> Result<PathBuf, PlotError> {
    write_report_with(run_dir, out, &ReportOptions::default())
}

/// [`write_report`] with options.
pub fn write_report_with(
    run_dir: &Path,
    out: Option<&Path>,
    opts: &ReportOptions,
) -> Result<PathBuf, PlotError> {
    let metrics = run_dir.join(METRICS_FILE);
    let records = read_metrics(&metrics)?;
    if records.is_empty() {
        return Err(PlotError::Empty { path: metrics });
    }
    let out = out.map_or_else(|| run_dir.join("report.png"), Path::to_path_buf);
    // The run's own files are never replaced; its report.png is the report's own.
    let inputs = [metrics.as_path(), run_dir];
    let mut o = crate::output_check::Output::new(
        &out,
        crate::output_check::Format::Png,
        &inputs,
        opts.overwrite,
    );
    o.own_name = Some("report.png");
    crate::output_check::check(&o)?;
    let mut opts = opts.clone();
    if opts.title.is_none() {
        opts.title = Some(run_name(run_dir));
    }
    let img = render_report(&records, &opts)?;
    save_report_png(&img, &out)?;
    Ok(out)
}

/// Saves a figure beside `out` and renames it into place, so a viewer never shows half an
/// image and a failed write leaves nothing behind.
pub(crate) fn save_report_png(img: &RgbImage, out: &Path) -> Result<(), PlotError> {
    super::write_via_temp(out, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| e.to_string())
    })
    .map_err(|problem| PlotError::Write {
        path: out.to_path_buf(),
        problem,
    })
}

/// The run's name: its directory's last component (`.` resolved).
pub(crate) fn run_name(run_dir: &Path) -> String {
    let full = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    full.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| run_dir.display().to_string())
}

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const RAW: RGBColor = RGBColor(170, 200, 235);
const SMOOTH: RGBColor = RGBColor(20, 80, 170);
const VAL: RGBColor = RGBColor(235, 120, 20);
const TOP1: RGBColor = RGBColor(200, 30, 40);
const TOP5: RGBColor = RGBColor(30, 150, 60);

/// The curves of a run, gathered from its records.
#[derive(Default)]
struct Series {
    steps: Vec<(f64, f64)>,
    smooth: Vec<(f64, f64)>,
    val_loss: Vec<(f64, f64)>,
    top1: Vec<(f64, f64)>,
    top5: Vec<(f64, f64)>,
    max_step: f64,
    max_epoch: f64,
}

impl Series {
    fn new(records: &[Record]) -> Series {
        let mut s = Series {
            max_step: 1.0,
            max_epoch: 1.0,
            ..Series::default()
        };
        for r in records {
            s.max_step = s.max_step.max(r.step() as f64);
            match r {
                Record::Step(st) => {
                    s.steps.push((st.step as f64, st.loss));
                    s.max_epoch = s.max_epoch.max(st.epoch as f64);
                }
                Record::Resume(_) => {}
                Record::Epoch(e) => {
                    let ep = e.epoch as f64;
                    s.max_epoch = s.max_epoch.max(ep);
                    if let Some(v) = e.val_loss {
                        s.val_loss.push((e.step as f64, v));
                    }
                    // Percent, as the console prints errors.
                    if let Some(v) = e.val_top1_error {
                        s.top1.push((ep, v * 100.0));
                    }
                    if let Some(v) = e.val_top5_error {
                        s.top5.push((ep, v * 100.0));
                    }
                }
            }
        }
        for v in [&mut s.steps, &mut s.val_loss, &mut s.top1, &mut s.top5] {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        s.smooth = ema(&s.steps);
        s
    }

    fn has_validation(&self) -> bool {
        [&self.top1, &self.top5, &self.val_loss]
            .iter()
            .any(|v| v.iter().any(|p| p.1.is_finite()))
    }

    /// The loss axis: up to the smoothed curve and validation plus the raw curve's 98th
    /// percentile (the first steps' ln(classes) and spikes would flatten everything else;
    /// higher raw points are clipped at the top), down to 0 or, on a log scale, the smallest
    /// positive loss.
    fn loss_range(&self, log: bool) -> (f64, f64) {
        let mut raw: Vec<f64> = finite(&self.steps).map(|p| p.1).collect();
        raw.sort_by(f64::total_cmp);
        let p98 = raw
            .get(raw.len().saturating_sub(1) * 98 / 100)
            .copied()
            .unwrap_or(0.0);
        let top = finite(&self.smooth)
            .chain(finite(&self.val_loss))
            .map(|p| p.1)
            .fold(p98, f64::max);
        let top = if top > 0.0 { top * 1.05 } else { 1.0 };
        if !log {
            return (0.0, top);
        }
        let low = finite(&self.steps)
            .chain(finite(&self.val_loss))
            .map(|p| p.1)
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let low = if low.is_finite() {
            low * 0.8
        } else {
            top / 100.0
        };
        // Whole decades, so the axis always has labelled powers of ten.
        let decade = |v: f64, round: fn(f64) -> f64| 10f64.powf(round(v.log10()));
        let (low, top) = (
            decade(low.min(top / 2.0), f64::floor),
            decade(top, f64::ceil),
        );
        (low, if top > low { top } else { low * 10.0 })
    }
}

fn finite(points: &[(f64, f64)]) -> impl Iterator<Item = &(f64, f64)> {
    points.iter().filter(|p| p.0.is_finite() && p.1.is_finite())
}

/// Splits a series at non-finite values, so a NaN loss leaves a gap instead of a spike.
fn runs(points: &[(f64, f64)], clip: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            out.last_mut()
                .expect("starts non-empty")
                .push((x, y.clamp(clip.0, clip.1)));
        } else if !out.last().is_some_and(Vec::is_empty) {
            out.push(Vec::new());
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// Draws the loss curves and their legend on a chart of either y scale (the two scales are
/// different chart types, so the body is shared as a macro rather than a function).
macro_rules! loss_series {
    ($chart:ident, $s:ident, $clip:expr, $e:ident) => {{
        for (series, style, label) in [
            (&$s.steps, RAW.stroke_width(1), "step loss"),
            (&$s.smooth, SMOOTH.stroke_width(2), "smoothed"),
        ] {
            let mut first = true;
            for run in runs(series, $clip) {
                let drawn = $chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err($e)?;
                if first {
                    drawn.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], style.stroke_width(3))
                    });
                    first = false;
                }
            }
        }
        if $s.steps.len() < 30 {
            // Few points: a line alone may be a single invisible point, so mark each.
            $chart
                .draw_series(
                    finite(&$s.steps).map(|&(x, y)| {
                        Circle::new((x, y.clamp($clip.0, $clip.1)), 3, SMOOTH.filled())
                    }),
                )
                .map_err($e)?;
        }
        if $s.has_validation() && !$s.val_loss.is_empty() {
            for run in runs(&$s.val_loss, $clip) {
                $chart
                    .draw_series(LineSeries::new(run, VAL.stroke_width(2)))
                    .map_err($e)?;
            }
            $chart
                .draw_series(
                    finite(&$s.val_loss).map(|&(x, y)| {
                        Circle::new((x, y.clamp($clip.0, $clip.1)), 4, VAL.filled())
                    }),
                )
                .map_err($e)?
                .label("validation loss")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], VAL.stroke_width(3)));
        }
        $chart
            .configure_series_labels()
            .label_font((FAMILY, 16))
            .background_style(WHITE_STYLE)
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err($e)?;
    }};
}

/// Draws the report of `records` (any order of step and epoch records; non-finite values
/// leave gaps).
pub fn render_report(records: &[Record], opts: &ReportOptions) -> Result<RgbImage, PlotError> {
    let s = Series::new(records);
    let mut img = RgbImage::from_pixel(REPORT_WIDTH, REPORT_HEIGHT, WHITE);
    let title = format!(
        "{} — {} steps, {} epochs",
        opts.title.as_deref().unwrap_or("run"),
        s.max_step,
        s.max_epoch
    );
    draw_on(&mut img, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let (head, body) = root.split_vertically(TITLE_HEIGHT);
        head.draw(&Text::new(
            title.clone(),
            (16, 10),
            text_style(26, Rgb([0, 0, 0]), true),
        ))
        .map_err(e)?;
        let (left, right) = body.split_horizontally(REPORT_WIDTH / 2);
        let (lo, hi) = s.loss_range(opts.log_loss);
        // No more ticks than whole steps, so a short run does not repeat a rounded label.
        let x_ticks = (s.max_step as usize + 1).min(10);
        if opts.log_loss {
            let mut chart = ChartBuilder::on(&left)
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .caption("loss (log scale)", (FAMILY, 20))
                .build_cartesian_2d(0.0..s.max_step, (lo..hi).log_scale())
                .map_err(e)?;
            chart
                .configure_mesh()
                // Enough requested labels that every decade gets its 1, 2 and 5.
                .y_labels(20)
                .x_desc("step")
                .y_desc("loss")
                .x_label_formatter(&|v| step_label(*v))
                .x_labels(x_ticks)
                .label_style((FAMILY, 15))
                .draw()
                .map_err(e)?;
            loss_series!(chart, s, (lo, hi), e);
        } else {
            let mut chart = ChartBuilder::on(&left)
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .caption("loss", (FAMILY, 20))
                .build_cartesian_2d(0.0..s.max_step, lo..hi)
                .map_err(e)?;
            chart
                .configure_mesh()
                .x_desc("step")
                .y_desc("loss")
                .x_label_formatter(&|v| step_label(*v))
                .x_labels(x_ticks)
                .label_style((FAMILY, 15))
                .draw()
                .map_err(e)?;
            loss_series!(chart, s, (lo, hi), e);
        }

        let max_err = finite(&s.top1)
            .chain(finite(&s.top5))
            .map(|p| p.1)
            .fold(0.0, f64::max);
        let err_top = if max_err > 0.0 {
            (max_err * 1.1).min(100.0)
        } else {
            100.0
        };
        let mut chart = ChartBuilder::on(&right)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .caption("validation error", (FAMILY, 20))
            .build_cartesian_2d(0.0..s.max_epoch, 0.0..err_top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("error (%)")
            .label_style((FAMILY, 15))
            .y_label_formatter(&|v| format!("{v:.0}%"))
            // Epochs are whole numbers: no 0.5 ticks on short runs.
            .x_labels((s.max_epoch as usize + 1).min(12))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        if s.top1.is_empty() && s.top5.is_empty() {
            right
                .draw(&Text::new(
                    "no validation data (train with --val)",
                    (
                        REPORT_WIDTH as i32 / 4 - 150,
                        (REPORT_HEIGHT - TITLE_HEIGHT) as i32 / 2,
                    ),
                    text_style(18, Rgb([90, 90, 90]), false),
                ))
                .map_err(e)?;
            return Ok(());
        }
        for (series, color, label) in [
            (&s.top1, TOP1, "top-1 error"),
            (&s.top5, TOP5, "top-5 error"),
        ] {
            if series.is_empty() {
                continue;
            }
            for run in runs(series, (0.0, 100.0)) {
                chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(e)?;
            }
            chart
                .draw_series(finite(series).map(|&(x, y)| Circle::new((x, y), 4, color.filled())))
                .map_err(e)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 16))
            .background_style(WHITE_STYLE)
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
        Ok(())
    })
    .map_err(PlotError::Draw)?;
    Ok(img)
}

const WHITE_STYLE: RGBColor = RGBColor(255, 255, 255);

/// A step tick: a whole number, thousands as `k` from 10,000 on.
pub(crate) fn step_label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{}k", (v / 1000.0).round())
    } else {
        format!("{v:.0}")
    }
}

/// Exponential moving average with bias correction (as TensorBoard's smoothing), over a span
/// of about 1/30 of the points so the curve looks alike for short and long runs.
pub(crate) fn ema(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::figure::inked;
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
                    top1_error: None,
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

    fn count(img: &RgbImage, color: RGBColor) -> usize {
        let c = Rgb([color.0, color.1, color.2]);
        img.pixels().filter(|p| **p == c).count()
    }

    fn opts(title: &str) -> ReportOptions {
        ReportOptions {
            title: Some(title.into()),
            log_loss: false,
            overwrite: false,
        }
    }

    #[test]
    fn report_has_its_size_title_curves_and_follows_the_data() {
        let a = render_report(&run(5, 0.01), &opts("paper")).unwrap();
        let b = render_report(&run(5, 0.02), &opts("paper")).unwrap();
        assert_eq!(a.dimensions(), (REPORT_WIDTH, REPORT_HEIGHT));
        let non_white = a.pixels().filter(|p| **p != WHITE).count();
        assert!(non_white > 10_000, "only {non_white} pixels drawn");
        // The title is written in the band at the top, from the left.
        assert!(inked(&a, 0, 0, 400, TITLE_HEIGHT, WHITE) > 300, "no title");
        let longer = render_report(&run(5, 0.01), &opts("a much longer run name")).unwrap();
        assert!(
            inked(&longer, 0, 0, 700, TITLE_HEIGHT, WHITE)
                > inked(&a, 0, 0, 700, TITLE_HEIGHT, WHITE),
            "the title does not follow the run's name"
        );
        for (color, name) in [
            (SMOOTH, "smoothed"),
            (VAL, "val"),
            (TOP1, "top-1"),
            (TOP5, "top-5"),
        ] {
            assert!(count(&a, color) > 200, "{name} curve missing");
        }
        assert_ne!(a, b, "different data drew the same image");
        let again = render_report(&run(5, 0.01), &opts("paper")).unwrap();
        assert_eq!(a, again, "drawing is deterministic");
        // Errors are in percent: the error axis reaches past 50 (0.9 · 100 on epoch 1).
        let s = Series::new(&run(5, 0.01));
        assert!(s.top1.iter().any(|p| p.1 > 50.0));
    }

    #[test]
    fn a_run_of_one_logged_step_still_shows_its_loss() {
        let one: Vec<Record> = run(1, 0.01).into_iter().skip(49).collect();
        assert_eq!(one.len(), 2, "one step record and the epoch's");
        for log_loss in [false, true] {
            let o = ReportOptions {
                log_loss,
                ..opts("r")
            };
            let img = render_report(&one, &o).unwrap();
            assert!(
                count(&img, SMOOTH) > 20,
                "log {log_loss}: the point is not drawn"
            );
        }
    }

    #[test]
    fn step_ticks_are_whole_numbers() {
        assert_eq!(step_label(20.0), "20");
        assert_eq!(step_label(9_500.0), "9500");
        assert_eq!(step_label(20_000.0), "20k");
    }

    #[test]
    fn log_scale_draws_small_losses_higher_up() {
        let recs = run(5, 0.01);
        let lin = render_report(&recs, &opts("r")).unwrap();
        let log = ReportOptions {
            log_loss: true,
            ..opts("r")
        };
        let img = render_report(&recs, &log).unwrap();
        assert_ne!(lin, img);
        // The smoothed loss falls towards 0.15: on a linear axis its late part lies near the
        // bottom of the panel, on a log axis it spreads over the panel's lower half and up.
        let lower = |img: &RgbImage| {
            let c = Rgb([SMOOTH.0, SMOOTH.1, SMOOTH.2]);
            let mut n = 0;
            for (x, y, p) in img.enumerate_pixels() {
                n += (*p == c && x < REPORT_WIDTH / 2 && y > REPORT_HEIGHT * 4 / 5) as usize;
            }
            n
        };
        assert!(
            lower(&img) < lower(&lin),
            "{} vs {}",
            lower(&img),
            lower(&lin)
        );
        let (lo, hi) = Series::new(&recs).loss_range(true);
        assert_eq!((lo, hi), (0.1, 10.0), "whole decades around 0.15..2.4");
    }

    #[test]
    fn report_without_validation_has_no_validation_legend() {
        let mut recs: Vec<Record> = run(2, 0.01)
            .into_iter()
            .filter(|r| matches!(r, Record::Step(_)))
            .collect();
        if let Record::Step(s) = &mut recs[10] {
            s.loss = f64::NAN;
        }
        let img = render_report(&recs, &opts("r")).unwrap();
        for c in [TOP1, TOP5, VAL] {
            assert_eq!(count(&img, c), 0, "a validation curve or legend was drawn");
        }
        assert!(count(&img, SMOOTH) > 200);
        // The right panel says why it is empty, in its middle.
        let (x0, y0) = (REPORT_WIDTH / 2 + 100, REPORT_HEIGHT / 2);
        assert!(inked(&img, x0, y0 - 20, 500, 60, WHITE) > 200);
    }

    #[test]
    fn write_report_reads_the_run_and_explains_missing_data() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("my-run");
        std::fs::create_dir(&run_dir).unwrap();
        let e = write_report(&run_dir, None).unwrap_err().to_string();
        assert!(
            e.contains("metrics.jsonl") && e.contains("alexnet train"),
            "{e}"
        );
        let mut w = MetricsWriter::create(&run_dir).unwrap();
        let e = write_report(&run_dir, None).unwrap_err().to_string();
        assert!(e.contains("no records"), "{e}");
        for r in run(3, 0.01) {
            w.write(&r).unwrap();
        }
        let out = write_report(&run_dir, None).unwrap();
        assert_eq!(out, run_dir.join("report.png"));
        let png = image::open(&out).unwrap().to_rgb8();
        // The default title is the run directory's name.
        assert_eq!(png, render_report(&run(3, 0.01), &opts("my-run")).unwrap());
        if let Ok(keep) = std::env::var("ALEXNET_KEEP_REPORT") {
            // For looking at the drawing by eye.
            std::fs::copy(&out, keep).unwrap();
        }
        let other = dir.path().join("x.png");
        assert_eq!(write_report(&run_dir, Some(&other)).unwrap(), other);
    }
}
