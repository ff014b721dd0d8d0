//! What `--resume` may change. A run's past steps were taken with its settings; some can
//! change from the next step on without making the past a lie (the rate, the schedule, the
//! length of the run, how often it logs), others cannot (the network, the seed of every random
//! stream, the batch and the row order that the saved position indexes). A change of the
//! first kind is applied and written to `metrics.jsonl` as a `resume` record; one of the
//! second kind is refused, naming the key.
use super::config::{Schedule, TrainConfig};
use super::metrics::ConfigChange;
use super::schedule::LrSchedule;
use super::TrainError;
use std::collections::BTreeMap;

/// Keys (or key prefixes, ending in `.`) a resume may not change, and why.
const FIXED: &[(&str, &str)] = &[
    (
        "model.",
        "the checkpoint holds the weights of the network the run was made with",
    ),
    ("init", "the weights were initialised at the run's start"),
    (
        "seed",
        "the shuffling, augmentation and dropout of the steps already taken came from it, and the rest of the epoch continues their streams",
    ),
    (
        "batch",
        "the saved position in the epoch and the step count are counted in batches",
    ),
    ("shuffle", "the saved position indexes the epoch's row order"),
];

/// Every leaf of a configuration by its dotted key, as TOML text.
fn leaves(cfg: &TrainConfig) -> BTreeMap<String, String> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(t) = toml::Table::try_from(cfg) {
        walk("", &t, &mut out);
    }
    out
}

/// The keys whose values differ between the run's configuration and the resumed one, or an
/// error naming the first that a resume may not change.
pub(super) fn changes(
    saved: &TrainConfig,
    asked: &TrainConfig,
) -> Result<Vec<ConfigChange>, TrainError> {
    let (a, b) = (leaves(saved), leaves(asked));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let none = "(not set)".to_string();
    let mut out = Vec::new();
    for key in keys {
        let (from, to) = (a.get(key).unwrap_or(&none), b.get(key).unwrap_or(&none));
        if from == to {
            continue;
        }
        let fixed = FIXED.iter().find(|(k, _)| {
            if let Some(prefix) = k.strip_suffix('.') {
                key.starts_with(&format!("{prefix}."))
            } else {
                key == k
            }
        });
        if let Some((_, why)) = fixed {
            return Err(TrainError::ResumeChange {
                key: key.clone(),
                from: from.clone(),
                to: to.clone(),
                why: why.to_string(),
            });
        }
        out.push(ConfigChange {
            key: key.clone(),
            from: from.clone(),
            to: to.clone(),
        });
    }
    Ok(out)
}

/// The schedule state after a resume that changed `lr` or the schedule: the new rule and
/// base rate, as if the run had started with them, keeping what it has seen (the best
/// validation error, the epoch the plateau count runs from, and the drops so far when the
/// kind is the same). `epoch`: epochs completed.
pub(super) fn rebase(old: &LrSchedule, cfg: &TrainConfig, epoch: usize) -> LrSchedule {
    let mut s = LrSchedule::new(cfg.schedule.clone(), cfg.lr);
    s.best_error = old.best_error;
    s.since_epoch = old.since_epoch;
    let same_kind = std::mem::discriminant(&old.rule) == std::mem::discriminant(&cfg.schedule);
    s.drops = if same_kind { old.drops } else { 0 };
    match &cfg.schedule {
        Schedule::Plateau { factor, min_lr, .. } => {
            s.lr = (cfg.lr * factor.powi(s.drops as i32)).max(*min_lr)
        }
        Schedule::Steps { .. } => {
            s.end_epoch(epoch, None);
        }
        // The cosine rule sets the rate before every step.
        Schedule::Cosine { .. } => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_changes_are_listed_and_fixed_ones_named() {
        let saved = TrainConfig::default();
        let mut asked = saved.clone();
        asked.set("lr=0.001").unwrap();
        asked.set("epochs=3").unwrap();
        asked.set("max_steps=9").unwrap();
        let c = changes(&saved, &asked).unwrap();
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["epochs", "lr", "max_steps"]);
        assert_eq!((c[1].from.as_str(), c[1].to.as_str()), ("0.01", "0.001"));
        assert_eq!(c[2].from, "(not set)");
        assert!(changes(&saved, &saved).unwrap().is_empty());
        for set in [
            "seed=7",
            "batch=64",
            "shuffle=none",
            "model.lrn=false",
            "model.norm=batch",
            "init=he",
        ] {
            let mut asked = saved.clone();
            asked.set(set).unwrap();
            let e = changes(&saved, &asked).unwrap_err().to_string();
            // The old spelling `model.lrn` is compared as what it sets, `model.norm`.
            let key = set
                .split('=')
                .next()
                .unwrap()
                .replace("model.lrn", "model.norm");
            assert!(e.contains(&format!("`{key}`")), "{set}: {e}");
            assert!(e.contains("--init-from"), "{set}: {e}");
        }
    }

    #[test]
    fn rebase_keeps_drops_and_moves_the_rate() {
        let mut old = LrSchedule::new(Schedule::default(), 0.01);
        old.drops = 2;
        old.lr = 1e-4;
        old.best_error = Some(0.3);
        let cfg = TrainConfig {
            lr: 0.02,
            ..Default::default()
        };
        let s = rebase(&old, &cfg, 5);
        assert!((s.lr - 2e-4).abs() < 1e-12, "{}", s.lr);
        assert_eq!((s.drops, s.best_error, s.base_lr), (2, Some(0.3), 0.02));
        let cfg = TrainConfig {
            lr: 0.1,
            schedule: Schedule::Steps {
                milestones: vec![2, 4],
                factor: 0.1,
            },
            ..Default::default()
        };
        let s = rebase(&old, &cfg, 3);
        assert!(
            (s.lr - 0.01).abs() < 1e-12,
            "one milestone passed: {}",
            s.lr
        );
    }
}
