//! The comparison figure: three panels on shared axes, training loss (smoothed) and training
//! top-1 error against the step, validation top-1 error against the epoch. One colour per
//! group; a group of several seeds is drawn as its mean (thick) over a band from the lowest
//! to the highest seed, a single run as its own thick line, each labelled in the legend.
use super::{CompareOptions, RunCurves};
use crate::export::figure::{draw_on, text_style, FAMILY};
use crate::export::plot::{ema, step_label, PlotError};
use crate::train::metrics::Record;
use image::{Rgb, RgbImage};
use plotters::prelude::*;

/// Width of the comparison image in pixels.
pub const COMPARE_WIDTH: u32 = 1800;
/// Height of the comparison image in pixels.
pub const COMPARE_HEIGHT: u32 = 620;
const TITLE_HEIGHT: u32 = 48;

/// Colours that stay apart for the usual handful of groups (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A run's three curves (see [`curves`]).
type Curves = [Vec<(f64, f64)>; 3];

/// A group's curve: the mean over its runs at the x values every run has, with the lowest
/// and highest run at each.
struct Band {
    mean: Vec<(f64, f64)>,
    low: Vec<(f64, f64)>,
    high: Vec<(f64, f64)>,
}

fn band(curves: &[Vec<(f64, f64)>]) -> Band {
    let mut b = Band {
        mean: Vec::new(),
        low: Vec::new(),
        high: Vec::new(),
    };
    let Some(first) = curves.first() else {
        return b;
    };
    for &(x, _) in first {
        let ys: Vec<f64> = curves
            .iter()
            .filter_map(|c| c.iter().find(|p| p.0 == x).map(|p| p.1))
            .filter(|y| y.is_finite())
            .collect();
        if ys.len() < curves.len() {
            continue;
        }
        let mean = ys.iter().sum::<f64>() / ys.len() as f64;
        b.mean.push((x, mean));
        b.low
            .push((x, ys.iter().copied().fold(f64::INFINITY, f64::min)));
        b.high
            .push((x, ys.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
    }
    b
}

/// The three curves of a run: smoothed training loss and training error (percent) by step,
/// validation top-1 error (percent) by epoch.
fn curves(r: &RunCurves) -> Curves {
    let (mut loss, mut err, mut val) = (Vec::new(), Vec::new(), Vec::new());
    for rec in &r.records {
        match rec {
            Record::Step(s) => {
                loss.push((s.step as f64, s.loss));
                if let Some(e) = s.top1_error {
                    err.push((s.step as f64, e * 100.0));
                }
            }
            Record::Epoch(e) => {
                if let Some(v) = e.val_top1_error {
                    val.push((e.epoch as f64, v * 100.0));
                }
            }
            Record::Resume(_) => {}
        }
    }
    for c in [&mut loss, &mut err, &mut val] {
        c.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    [ema(&loss), ema(&err), val]
}

/// Draws `runs` as the module docs say.
pub fn render_comparison(runs: &[RunCurves], opts: &CompareOptions) -> Result<RgbImage, PlotError> {
    let mut groups: Vec<(String, Vec<Curves>)> = Vec::new();
    for r in runs {
        let c = curves(r);
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, members)) => members.push(c),
            None => groups.push((r.group.clone(), vec![c])),
        }
    }
    let label = |g: &str, n: usize| {
        if n > 1 {
            format!("{g} ({n} seeds)")
        } else {
            g.to_string()
        }
    };
    let mut img = RgbImage::from_pixel(COMPARE_WIDTH, COMPARE_HEIGHT, Rgb([255, 255, 255]));
    let title = format!(
        "{} — {} runs in {} groups",
        opts.title.as_deref().unwrap_or("comparison"),
        runs.len(),
        groups.len()
    );
    let panels = [
        ("training loss (smoothed)", "step", "loss"),
        ("training top-1 error (smoothed)", "step", "error (%)"),
        ("validation top-1 error", "epoch", "error (%)"),
    ];
    draw_on(&mut img, |root| {
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        let (head, body) = root.split_vertically(TITLE_HEIGHT);
        head.draw(&Text::new(
            title.clone(),
            (16, 10),
            text_style(26, Rgb([0, 0, 0]), true),
        ))
        .map_err(e)?;
        let areas = body.split_evenly((1, 3));
        for (k, (area, (caption, x_desc, y_desc))) in areas.iter().zip(panels).enumerate() {
            let points = || {
                groups
                    .iter()
                    .flat_map(|(_, m)| m.iter().flat_map(|c| c[k].iter()))
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
            };
            let x_max = points().map(|p| p.0).fold(1.0, f64::max);
            let y_max = points().map(|p| p.1).fold(0.0, f64::max);
            let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
            let mut chart = ChartBuilder::on(area)
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .caption(caption, (FAMILY, 20))
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)
                .map_err(e)?;
            // Whole steps and epochs: no `100.0` or `0.5` ticks.
            let whole = |v: &f64| step_label(*v);
            let ticks = if k == 2 {
                (x_max as usize + 1).min(12)
            } else {
                10
            };
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(ticks)
                .x_label_formatter(&whole)
                .y_label_formatter(&|v| format!("{v:.1}"))
                .label_style((FAMILY, 15))
                .draw()
                .map_err(e)?;
            if points().next().is_none() {
                area.draw(&Text::new(
                    "not logged by these runs",
                    (COMPARE_WIDTH as i32 / 6 - 110, COMPARE_HEIGHT as i32 / 2),
                    text_style(18, Rgb([90, 90, 90]), false),
                ))
                .map_err(e)?;
                continue;
            }
            for (i, (group, members)) in groups.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let member: Vec<Vec<(f64, f64)>> = members.iter().map(|c| c[k].clone()).collect();
                let b = band(&member);
                if members.len() > 1 && !b.mean.is_empty() {
                    let outline: Vec<(f64, f64)> =
                        b.high.iter().chain(b.low.iter().rev()).copied().collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            outline,
                            color.mix(0.18).filled(),
                        )))
                        .map_err(e)?;
                }
                let line = if members.len() > 1 {
                    b.mean
                } else {
                    member[0].clone()
                };
                let few = line.len() < 30;
                let drawn = chart
                    .draw_series(LineSeries::new(line.clone(), color.stroke_width(3)))
                    .map_err(e)?;
                drawn
                    .label(label(group, members.len()))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                    });
                if few {
                    chart
                        .draw_series(line.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(e)?;
                }
            }
            chart
                .configure_series_labels()
                .label_font((FAMILY, 15))
                .background_style(RGBColor(255, 255, 255).mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(e)?;
        }
        Ok(())
    })
    .map_err(PlotError::Draw)?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{EpochRecord, StepRecord};

    fn run(name: &str, level: f64) -> RunCurves {
        let mut records = Vec::new();
        for step in 1..=40u64 {
            records.push(Record::Step(StepRecord {
                step,
                epoch: 1 + (step as usize - 1) / 20,
                loss: level * 2.0 / (1.0 + step as f64 / 10.0),
                lr: 0.01,
                top1_error: Some(level * 0.8 / (1.0 + step as f64 / 20.0)),
                images_per_s: 100.0,
                data_wait_s: 0.0,
                exchange: None,
            }));
            if step % 20 == 0 {
                records.push(Record::Epoch(EpochRecord {
                    epoch: step as usize / 20,
                    step,
                    train_loss: 1.0,
                    val_loss: Some(1.0),
                    val_top1_error: Some(level * 0.5 / (step as f64 / 20.0)),
                    val_top5_error: None,
                    lr: 0.01,
                    seconds: 1.0,
                }));
            }
        }
        RunCurves::new(name, records)
    }

    fn count(img: &RgbImage, c: RGBColor) -> usize {
        img.pixels().filter(|p| **p == Rgb([c.0, c.1, c.2])).count()
    }

    #[test]
    fn one_coloured_curve_per_group_in_every_panel() {
        let runs = [run("a-s1", 1.0), run("a-s2", 0.9), run("b", 0.5)];
        let img = render_comparison(&runs, &CompareOptions::default()).unwrap();
        assert_eq!(img.dimensions(), (COMPARE_WIDTH, COMPARE_HEIGHT));
        let third = COMPARE_WIDTH / 3;
        for (g, color) in PALETTE[..2].iter().enumerate() {
            for panel in 0..3 {
                let n = (0..third)
                    .flat_map(|x| (TITLE_HEIGHT..COMPARE_HEIGHT).map(move |y| (x, y)))
                    .filter(|&(x, y)| {
                        *img.get_pixel(panel * third + x, y) == Rgb([color.0, color.1, color.2])
                    })
                    .count();
                assert!(n > 150, "group {g} panel {panel}: {n} pixels");
            }
        }
        assert_eq!(count(&img, PALETTE[2]), 0, "only two groups");
        // Moving one group's curves moves its pixels.
        let other = [run("a-s1", 0.3), run("a-s2", 0.2), run("b", 0.5)];
        let moved = render_comparison(&other, &CompareOptions::default()).unwrap();
        assert_ne!(img, moved);
    }

    #[test]
    fn band_is_the_mean_low_and_high_where_every_run_has_a_point() {
        let b = band(&[
            vec![(1.0, 2.0), (2.0, 4.0), (3.0, 1.0)],
            vec![(1.0, 4.0), (2.0, f64::NAN), (3.0, 3.0)],
        ]);
        assert_eq!(b.mean, [(1.0, 3.0), (3.0, 2.0)]);
        assert_eq!(b.low, [(1.0, 2.0), (3.0, 1.0)]);
        assert_eq!(b.high, [(1.0, 4.0), (3.0, 3.0)]);
    }
}
