//! The numbers of `report --table`: per group of runs (seeds of one variant), the final and
//! best validation errors, the steps to a training error, and the throughput, each as the
//! mean and sample standard deviation over the group's runs.
use super::RunCurves;
use crate::train::metrics::Record;
use serde::Serialize;

/// A mean with its spread over runs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// The mean over the runs that have the value.
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for a single run.
    pub sd: f64,
    /// How many runs have the value.
    pub n: usize,
}

impl Stat {
    /// The mean and spread of the finite values; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Stat { mean, sd, n })
    }
}

/// One row of the table: a group of runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupRow {
    /// The group's name (the runs' common name without the seed suffix).
    pub group: String,
    /// The runs in it, by name.
    pub runs: Vec<String>,
    /// Validation top-1 error (percent) at each run's last validated epoch.
    pub final_top1: Option<Stat>,
    /// Validation top-5 error (percent) at the same epoch.
    pub final_top5: Option<Stat>,
    /// The lowest validation top-1 error (percent) of each run.
    pub best_top1: Option<Stat>,
    /// Steps until a logged training top-1 error first fell to the threshold, over the runs
    /// that reached it (`n` says how many did).
    pub steps_to_threshold: Option<Stat>,
    /// Mean training images/s of each run's logged windows.
    pub images_per_s: Option<Stat>,
    /// Steps each run did (the largest).
    pub steps: u64,
}

/// The table of `runs`, one row per group in the order groups first appear.
pub fn table(runs: &[RunCurves], threshold: f64) -> Vec<GroupRow> {
    let mut groups: Vec<(String, Vec<&RunCurves>)> = Vec::new();
    for r in runs {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, members)) => members.push(r),
            None => groups.push((r.group.clone(), vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(group, members)| {
            let last_val = |r: &RunCurves| {
                r.records.iter().rev().find_map(|rec| match rec {
                    Record::Epoch(e) => e.val_top1_error.map(|t1| (t1, e.val_top5_error)),
                    _ => None,
                })
            };
            let best = |r: &RunCurves| {
                r.records
                    .iter()
                    .filter_map(|rec| match rec {
                        Record::Epoch(e) => e.val_top1_error.filter(|v| v.is_finite()),
                        _ => None,
                    })
                    .fold(f64::NAN, f64::min)
            };
            let reached = |r: &RunCurves| {
                r.records.iter().find_map(|rec| match rec {
                    Record::Step(s) if s.top1_error.is_some_and(|e| e <= threshold) => {
                        Some(s.step as f64)
                    }
                    _ => None,
                })
            };
            let speed = |r: &RunCurves| {
                Stat::of(r.records.iter().filter_map(|rec| match rec {
                    Record::Step(s) => Some(s.images_per_s),
                    _ => None,
                }))
                .map_or(f64::NAN, |s| s.mean)
            };
            let pct = |v: f64| v * 100.0;
            GroupRow {
                runs: members.iter().map(|r| r.name.clone()).collect(),
                final_top1: Stat::of(members.iter().filter_map(|r| last_val(r)).map(|v| pct(v.0))),
                final_top5: Stat::of(
                    members
                        .iter()
                        .filter_map(|r| last_val(r).and_then(|v| v.1))
                        .map(pct),
                ),
                best_top1: Stat::of(members.iter().map(|r| pct(best(r)))),
                steps_to_threshold: Stat::of(members.iter().filter_map(|r| reached(r))),
                images_per_s: Stat::of(members.iter().map(|r| speed(r))),
                steps: members
                    .iter()
                    .flat_map(|r| r.records.iter().map(Record::step))
                    .max()
                    .unwrap_or(0),
                group,
            }
        })
        .collect()
}

/// `mean ± sd` with `digits` decimals (the spread only when there are several runs).
fn cell(s: Option<Stat>, digits: usize) -> String {
    match s {
        None => "—".into(),
        Some(s) if s.n > 1 => format!("{:.digits$} ± {:.digits$}", s.mean, s.sd),
        Some(s) => format!("{:.digits$}", s.mean),
    }
}

/// The table as Markdown, with a header line that says what each column measures.
pub fn markdown(rows: &[GroupRow], threshold: f64) -> String {
    let mut out = format!(
        "| group | runs | final top-1 err % | final top-5 err % | best top-1 err % | steps to {:.0}% train err | images/s |\n|---|---|---|---|---|---|---|\n",
        threshold * 100.0
    );
    for r in rows {
        let reached = match r.steps_to_threshold {
            Some(s) if s.n < r.runs.len() => {
                format!("{} ({} of {})", cell(Some(s), 0), s.n, r.runs.len())
            }
            Some(s) => cell(Some(s), 0),
            None => format!("not reached in {}", r.steps),
        };
        out += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.group,
            r.runs.len(),
            cell(r.final_top1, 2),
            cell(r.final_top5, 2),
            cell(r.best_top1, 2),
            reached,
            cell(r.images_per_s, 0),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{EpochRecord, StepRecord};

    /// A run whose training error falls by `rate` per logged step, validated after each of
    /// two epochs with the given top-1 errors.
    fn run(name: &str, rate: f64, val: [f64; 2]) -> RunCurves {
        let mut records = Vec::new();
        for step in 1..=10u64 {
            records.push(Record::Step(StepRecord {
                step: step * 10,
                epoch: 1 + (step as usize - 1) / 5,
                loss: 1.0,
                lr: 0.01,
                top1_error: Some(0.9 - rate * step as f64),
                images_per_s: 100.0 * step as f64,
                data_wait_s: 0.0,
                exchange: None,
            }));
            if step % 5 == 0 {
                let v = val[step as usize / 5 - 1];
                records.push(Record::Epoch(EpochRecord {
                    epoch: step as usize / 5,
                    step: step * 10,
                    train_loss: 1.0,
                    val_loss: Some(1.0),
                    val_top1_error: Some(v),
                    val_top5_error: Some(v / 2.0),
                    lr: 0.01,
                    seconds: 1.0,
                }));
            }
        }
        RunCurves::new(name, records)
    }

    #[test]
    fn groups_seeds_and_gives_mean_spread_and_threshold_steps() {
        let runs = [
            run("relu-s1", 0.1, [0.5, 0.3]),
            run("relu-s2", 0.2, [0.4, 0.5]),
            run("tanh-s1", 0.01, [0.6, 0.7]),
        ];
        let rows = table(&runs, 0.5);
        assert_eq!(rows.len(), 2);
        let relu = &rows[0];
        assert_eq!((relu.group.as_str(), relu.runs.len()), ("relu", 2));
        let f = relu.final_top1.unwrap();
        // Final errors 30% and 50%: mean 40, sample sd √200 ≈ 14.14.
        assert!((f.mean - 40.0).abs() < 1e-9 && (f.sd - 200f64.sqrt()).abs() < 1e-9);
        assert!((relu.final_top5.unwrap().mean - 20.0).abs() < 1e-9);
        // Best: 30% and 40%.
        assert!((relu.best_top1.unwrap().mean - 35.0).abs() < 1e-9);
        // 0.9 − 0.1·k ≤ 0.5 first at k = 4 (step 40); 0.9 − 0.2·k at k = 2 (step 20).
        let s = relu.steps_to_threshold.unwrap();
        assert_eq!((s.mean, s.n), (30.0, 2));
        assert!((relu.images_per_s.unwrap().mean - 550.0).abs() < 1e-9);
        assert_eq!(relu.steps, 100);
        let tanh = &rows[1];
        assert_eq!(tanh.runs, ["tanh-s1"]);
        assert!(tanh.steps_to_threshold.is_none());
        let md = markdown(&rows, 0.5);
        assert!(md.contains("| relu | 2 | 40.00 ± 14.14 |"), "{md}");
        assert!(md.contains("steps to 50% train err"), "{md}");
        assert!(md.contains("| tanh | 1 | 70.00 |"), "{md}");
        assert!(md.contains("not reached in 100"), "{md}");
    }

    #[test]
    fn stat_ignores_non_finite_values() {
        let s = Stat::of([1.0, f64::NAN, 3.0]).unwrap();
        assert_eq!((s.mean, s.n), (2.0, 2));
        assert!(Stat::of([f64::NAN]).is_none());
    }
}
