//! Catching a run that has diverged before it writes a checkpoint.
//!
//! A diverging loss does not jump to NaN at once: with too high a rate it climbs through
//! 1e3, 1e15, inf, and the weights stay finite long enough to be saved. So the loop checks
//! every step's loss against two bounds, and a checkpoint is only written once its weights
//! are finite and give finite logits on a batch of real images.
//!
//! - **Ceiling:** [`CEILING`]·ln(classes). A model that guesses uniformly scores
//!   ln(classes); a hundred times that is a network whose logits differ by hundreds.
//! - **Jump:** more than [`JUMP`] times the running loss, once above ten times ln(classes).
//!   The second condition keeps a well-trained model (running loss 0.01) from stopping at
//!   one hard batch.
//!
//! Measured on 40 Fashion-MNIST images, batch 8, the tests' tiny model with He's init: at
//! lr 0.01 single steps reach 40–62 (27·ln 10) and the run still learns (1.8 by step 23);
//! at lr 0.1 steps reach 280 and 1183, then the loss sits at ln 10 for good (a dead
//! network); at lr 1 and above the loss passes 600 on step 2 and the weights overflow by
//! step 5. Ten times ln(classes) would stop the first run, so the ceiling is a hundred.

/// How far above its running value a step's loss may jump.
pub const JUMP: f64 = 100.0;
/// The loss ceiling, in multiples of ln(classes) (the loss of guessing uniformly).
pub const CEILING: f64 = 100.0;
/// Weight of a new step in the running loss (an exponential average over ~10 steps).
const RUNNING_WEIGHT: f64 = 0.1;

/// Why a loss counts as diverged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Blowup {
    /// NaN or inf.
    NotFinite,
    /// Above [`CEILING`]·ln(classes).
    AboveCeiling {
        /// The ceiling.
        ceiling: f64,
    },
    /// More than [`JUMP`] times the running loss.
    Jump {
        /// The running loss before this step.
        running: f64,
    },
}

impl std::fmt::Display for Blowup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Blowup::NotFinite => write!(f, "not a finite number"),
            Blowup::AboveCeiling { ceiling } => write!(
                f,
                "above {ceiling:.1}, {CEILING} times the loss of guessing uniformly"
            ),
            Blowup::Jump { running } => {
                write!(f, "over {JUMP}× its running value {running:.4}")
            }
        }
    }
}

/// Watches the training loss step by step.
#[derive(Clone, Debug)]
pub struct LossGuard {
    chance: f64,
    running: Option<f64>,
    /// Off (`divergence_guard = false`): only a NaN or infinite loss stops the run, since
    /// no step after it can compute anything.
    bounds: bool,
}

impl LossGuard {
    /// A guard for a model of `classes` classes.
    pub fn new(classes: usize) -> LossGuard {
        LossGuard {
            // One class would make chance 0 and every loss a blow-up; two is the least that
            // a classifier can be trained on.
            chance: (classes.max(2) as f64).ln(),
            running: None,
            bounds: true,
        }
    }

    /// This guard with the ceiling and the jump turned off (`--no-divergence-guard`), for a
    /// run that studies divergence or takes a deliberately aggressive first step.
    pub fn without_bounds(self) -> LossGuard {
        LossGuard {
            bounds: false,
            ..self
        }
    }

    /// Checks one step's mean loss; on success, folds it into the running value.
    pub fn check(&mut self, loss: f64) -> Result<(), Blowup> {
        if !loss.is_finite() {
            return Err(Blowup::NotFinite);
        }
        let ceiling = CEILING * self.chance;
        if !self.bounds {
            return Ok(());
        }
        if loss > ceiling {
            return Err(Blowup::AboveCeiling { ceiling });
        }
        if let Some(running) = self.running {
            if loss > JUMP * running && loss > 10.0 * self.chance {
                return Err(Blowup::Jump { running });
            }
        }
        self.running = Some(match self.running {
            None => loss,
            Some(r) => r + RUNNING_WEIGHT * (loss - r),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_bounds_only_a_non_finite_loss_stops() {
        let mut g = LossGuard::new(10).without_bounds();
        assert_eq!(g.check(1.0), Ok(()));
        assert_eq!(g.check(1e6), Ok(()), "above the ceiling and a jump");
        assert_eq!(g.check(f64::NAN), Err(Blowup::NotFinite));
        assert_eq!(g.check(f64::INFINITY), Err(Blowup::NotFinite));
        let mut on = LossGuard::new(10);
        assert!(matches!(on.check(1e6), Err(Blowup::AboveCeiling { .. })));
    }

    #[test]
    fn rising_losses_are_caught_and_ordinary_ones_pass() {
        let mut g = LossGuard::new(10); // chance 2.30, ceiling 230
                                        // The spikes of a noisy small-batch run that still learns (measured at lr 0.01).
        for l in [5.1, 40.0, 35.0, 21.4, 54.3, 61.6, 2.8, 2.5, 1.9] {
            g.check(l).unwrap();
        }
        assert_eq!(g.check(f64::NAN), Err(Blowup::NotFinite));
        assert_eq!(g.check(f64::INFINITY), Err(Blowup::NotFinite));
        assert!(matches!(g.check(5.2e15), Err(Blowup::AboveCeiling { .. })));
        // The lr 0.1 run's step 3, which never recovered.
        assert!(matches!(g.check(280.0), Err(Blowup::AboveCeiling { .. })));
        // A failed check leaves the running value alone.
        g.check(3.0).unwrap();

        // Near zero, one hard batch is not a divergence; a jump far past chance is.
        let mut g = LossGuard::new(10);
        for _ in 0..50 {
            g.check(0.01).unwrap();
        }
        g.check(5.0).unwrap();
        let mut g = LossGuard::new(10);
        for _ in 0..50 {
            g.check(0.01).unwrap();
        }
        let e = g.check(30.0).unwrap_err();
        assert!(matches!(e, Blowup::Jump { .. }), "{e:?}");
        assert!(e.to_string().contains("100"), "{e}");
    }
}
