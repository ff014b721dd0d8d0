//! The learning-rate schedule as a small state machine that the training loop drives once per
//! epoch (and, for the cosine rule, once per step), and that serialises (JSON, into a
//! checkpoint's metadata) so a resumed run continues with the same rate and plateau count.
//!
//! Epochs are numbered from 1: epoch `e` is the e-th pass over the training set.
use super::config::Schedule;
use serde::{Deserialize, Serialize};

/// A change of learning rate, for the log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrChange {
    /// The rate before.
    pub from: f64,
    /// The rate from the next epoch on.
    pub to: f64,
    /// The epoch at whose end the rate changed.
    pub after_epoch: usize,
}

/// The schedule's configuration together with its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The rule.
    pub rule: Schedule,
    /// The rate of the first epoch.
    pub base_lr: f64,
    /// The rate in force now.
    pub lr: f64,
    /// Best validation error seen so far (plateau only).
    pub best_error: Option<f64>,
    /// The epoch the plateau count runs from: the last new best, or the last drop.
    pub since_epoch: usize,
    /// Drops so far.
    pub drops: usize,
}

impl LrSchedule {
    /// A fresh schedule starting at `base_lr`.
    pub fn new(rule: Schedule, base_lr: f64) -> Self {
        LrSchedule {
            rule,
            base_lr,
            lr: base_lr,
            best_error: None,
            since_epoch: 0,
            drops: 0,
        }
    }

    /// The rate to use now.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Call before training step `step` (counted from 1) of a run planned at `total` steps;
    /// returns the rate for that step. Only the cosine rule moves here: it depends on the step
    /// alone, so a resumed run follows the same curve. `total` is the planned length (epochs ×
    /// steps per epoch), not a `--steps` cut, so stopping early and resuming changes nothing.
    pub fn begin_step(&mut self, step: u64, total: u64) -> f64 {
        if let Schedule::Cosine { min_lr } = self.rule {
            let t = (step.saturating_sub(1) as f64 / total.max(1) as f64).min(1.0);
            self.lr =
                min_lr + (self.base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        }
        self.lr
    }

    /// Call after epoch `epoch` ends, with its validation top-1 error if the run evaluated this
    /// epoch (`None` otherwise, or when there is no validation set). Returns the change of rate
    /// for the next epoch, if any.
    ///
    /// Plateau: the count of epochs without a new best runs from the last new best or the
    /// last drop, so a new rate gets `patience` epochs to show its effect before the next drop
    /// (the paper: "divide by 10 when the validation error rate stopped improving with the
    /// current learning rate"). A run without validation never drops under this rule.
    /// Steps: the rate is `base_lr · factor^k` where k counts milestones `≤ epoch`.
    pub fn end_epoch(&mut self, epoch: usize, val_error: Option<f64>) -> Option<LrChange> {
        let from = self.lr;
        match &self.rule {
            Schedule::Plateau {
                patience,
                factor,
                min_lr,
            } => {
                // NaN is never an improvement: a diverged run must not reset the count.
                let err = val_error.filter(|e| !e.is_nan())?;
                if self.best_error.is_none_or(|b| err < b) {
                    self.best_error = Some(err);
                    self.since_epoch = epoch;
                    return None;
                }
                // Tolerate a rounding hair above min_lr, so 0.01·0.1³ counts as having reached 1e-5.
                let at_floor = self.lr <= *min_lr * (1.0 + 1e-9);
                if epoch.saturating_sub(self.since_epoch) >= *patience && !at_floor {
                    self.lr = (self.lr * factor).max(*min_lr);
                    self.since_epoch = epoch;
                    self.drops += 1;
                }
            }
            Schedule::Steps { milestones, factor } => {
                let k = milestones.iter().filter(|&&m| m <= epoch).count();
                self.lr = self.base_lr * factor.powi(k as i32);
                self.drops = k;
            }
            Schedule::Cosine { .. } => {}
        }
        (self.lr != from).then_some(LrChange {
            from,
            to: self.lr,
            after_epoch: epoch,
        })
    }

    /// The state as JSON, for a checkpoint's `__metadata__`.
    pub fn to_json(&self) -> String {
        // Serialising plain numbers and an enum of plain numbers cannot fail; NaN/inf would
        // become null, which `from_json` rejects with a message rather than mis-resuming.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads the state written by [`LrSchedule::to_json`]; `origin` names the checkpoint.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, ScheduleError> {
        serde_json::from_str(text).map_err(|source| ScheduleError {
            origin: origin.to_string(),
            source,
        })
    }
}

/// The schedule state stored in a checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: the learning-rate schedule state is unreadable; resume with --init-from instead of --resume to start a fresh schedule")]
pub struct ScheduleError {
    /// The checkpoint or file the state came from.
    pub origin: String,
    /// The JSON error.
    pub source: serde_json::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plateau(patience: usize) -> LrSchedule {
        LrSchedule::new(
            Schedule::Plateau {
                patience,
                factor: 0.1,
                min_lr: 1e-5,
            },
            0.01,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
    }

    #[test]
    fn plateau_drops_after_patience_epochs_without_a_new_best() {
        let mut s = plateau(2);
        assert_eq!(s.end_epoch(1, Some(0.50)), None);
        assert_eq!(s.end_epoch(2, Some(0.40)), None);
        assert_eq!(s.end_epoch(3, Some(0.41)), None); // 1 epoch without a best
        let c = s
            .end_epoch(4, Some(0.40))
            .expect("equal is not better: drop"); // 2 epochs
        assert_eq!(c.after_epoch, 4);
        assert!(close(c.from, 0.01) && close(c.to, 0.001), "{c:?}");
        // The new rate gets `patience` epochs before the next drop.
        assert_eq!(s.end_epoch(5, Some(0.45)), None);
        assert!(s.end_epoch(6, Some(0.45)).is_some());
        assert!(close(s.lr(), 1e-4));
        assert_eq!(s.drops, 2);
    }

    #[test]
    fn plateau_stops_at_min_lr() {
        let mut s = plateau(1);
        s.end_epoch(1, Some(0.5));
        let mut drops = 0;
        for e in 2..20 {
            if s.end_epoch(e, Some(0.6)).is_some() {
                drops += 1;
            }
        }
        assert_eq!(drops, 3, "0.01 → 1e-5 is three drops");
        assert!(close(s.lr(), 1e-5));
    }

    #[test]
    fn plateau_ignores_epochs_without_validation_and_nan() {
        let mut s = plateau(1);
        s.end_epoch(1, Some(0.5));
        assert_eq!(s.end_epoch(2, None), None);
        assert_eq!(s.best_error, Some(0.5));
        // Epoch 3 is two epochs after the best: with val_every = 2 that is past patience 1.
        assert!(s.end_epoch(3, Some(f64::NAN)).is_none());
        assert!(s.end_epoch(3, Some(0.55)).is_some());
    }

    #[test]
    fn steps_follow_milestones() {
        let mut s = LrSchedule::new(
            Schedule::Steps {
                milestones: vec![2, 4],
                factor: 0.5,
            },
            1.0,
        );
        let lrs: Vec<f64> = (1..=5)
            .map(|e| {
                s.end_epoch(e, None);
                s.lr()
            })
            .collect();
        assert_eq!(lrs, vec![1.0, 0.5, 0.5, 0.25, 0.25]);
    }

    #[test]
    fn cosine_falls_from_lr_to_min_lr_over_the_planned_steps() {
        let mut s = LrSchedule::new(Schedule::Cosine { min_lr: 0.001 }, 0.021);
        let total = 10;
        let lrs: Vec<f64> = (1..=total).map(|t| s.begin_step(t, total)).collect();
        assert!(close(lrs[0], 0.021), "the first step runs at the full rate");
        // Step 6 starts half way: the midpoint of lr and min_lr.
        assert!(close(lrs[5], 0.011), "{lrs:?}");
        assert!(lrs.windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
        // The last step is one step short of the floor: 0.001 + 0.02·(1 + cos(0.9π))/2.
        let want = 0.001 + 0.02 * 0.5 * (1.0 + (0.9 * std::f64::consts::PI).cos());
        assert!(close(lrs[9], want), "{} vs {want}", lrs[9]);
        // Epoch ends change nothing, and report no drop.
        assert_eq!(s.end_epoch(1, Some(0.5)), None);
        assert!(close(s.lr(), want));
        // Past the plan (a run extended by more epochs on resume) stays at the floor.
        assert!(close(s.begin_step(40, total), 0.001));
        // The other rules ignore steps.
        let mut p = plateau(1);
        assert_eq!(p.begin_step(7, 10), 0.01);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = plateau(3);
        s.end_epoch(1, Some(0.3));
        s.end_epoch(2, Some(0.35));
        let back = LrSchedule::from_json(&s.to_json(), "ckpt").unwrap();
        assert_eq!(back, s);
        // The resumed schedule behaves as the original would have.
        let mut a = s.clone();
        let mut b = back;
        for e in 3..8 {
            assert_eq!(a.end_epoch(e, Some(0.4)), b.end_epoch(e, Some(0.4)));
        }
        let e = LrSchedule::from_json("{}", "runs/x/last.safetensors").unwrap_err();
        assert!(e.to_string().contains("runs/x/last.safetensors"), "{e}");
    }
}
