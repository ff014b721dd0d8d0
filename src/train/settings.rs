//! Changes to a [`TrainConfig`] from the command line: `train`'s typed flags and `--set
//! KEY=VALUE` both become [`Setting`]s of one [`Patch`], applied by one function, so a flag
//! and the `--set` that names the same key cannot mean different things.
//!
//! A setting is a dotted `config.toml` key and a TOML value. The patch is written into the
//! configuration's TOML table and read back with the file's own rules, so an unknown key or
//! a wrong type is refused as a config file's would be, naming the flag or `--set` it came
//! from; the result is then validated once.
use super::config::{ConfigError, Schedule, TrainConfig};
use serde::Serialize;

/// One change: a dotted key of `config.toml`, its value, and what asked for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Setting {
    /// The dotted key (`lr`, `model.widths`, `schedule.kind`).
    pub key: String,
    /// The new value.
    pub value: toml::Value,
    /// What the user typed (`--lr 0.02`, `--set model.lrn=false`), for messages.
    pub origin: String,
}

/// Settings applied in order over a configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Patch(Vec<Setting>);

fn invalid(origin: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_string(),
        problem: problem.into(),
    }
}

impl Patch {
    /// Adds `key = value` on behalf of `origin` (a flag as typed). Fails only for a value
    /// TOML cannot hold (an integer above 2⁶³).
    pub fn push(
        &mut self,
        origin: impl Into<String>,
        key: &str,
        value: &impl Serialize,
    ) -> Result<(), ConfigError> {
        let origin = origin.into();
        let value =
            toml::Value::try_from(value).map_err(|e| invalid(&origin, format!("{key}: {e}")))?;
        self.0.push(Setting {
            key: key.into(),
            value,
            origin,
        });
        Ok(())
    }

    /// Adds a `--set KEY=VALUE`: VALUE is read as TOML, and a bare word that is not TOML is
    /// a string (`devices=cpu`).
    pub fn push_assignment(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let origin = format!("--set {assignment}");
        let (key, text) = assignment
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| invalid(&origin, "expected KEY=VALUE, e.g. model.lrn=false"))?;
        if key.split('.').any(str::is_empty) {
            return Err(invalid(&origin, format!("`{key}` has an empty part")));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {text}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(text.into()));
        self.0.push(Setting {
            key: key.into(),
            value,
            origin,
        });
        Ok(())
    }

    /// The settings, in order.
    pub fn settings(&self) -> &[Setting] {
        &self.0
    }

    /// True when nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The table of a schedule kind's defaults, which a new `schedule.kind` starts from (the
/// old kind's fields would be refused by the new one).
fn schedule_defaults(kind: &toml::Value) -> Option<toml::Table> {
    let s = match kind.as_str()? {
        "plateau" => Schedule::default(),
        "steps" => Schedule::Steps {
            milestones: Vec::new(),
            factor: 0.1,
        },
        "cosine" => Schedule::Cosine { min_lr: 0.0 },
        _ => return None,
    };
    toml::Table::try_from(&s).ok()
}

/// Writes one setting into the configuration's table.
fn write(doc: &mut toml::Table, s: &Setting) -> Result<(), ConfigError> {
    let path: Vec<&str> = s.key.split('.').collect();
    let (last, sections) = path.split_last().expect("split yields at least one part");
    let old_lr = doc.get("lr").and_then(toml::Value::as_float);
    let mut table = &mut *doc;
    for (i, part) in sections.iter().enumerate() {
        let at = path[..=i].join(".");
        table = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid(&s.origin, format!("`{at}` is a value, not a section")))?;
    }
    if *last == "kind" && table.get("kind").is_some_and(|k| *k != s.value) {
        if let Some(defaults) = schedule_defaults(&s.value) {
            *table = defaults;
        } else {
            table.clear();
        }
    }
    // `model.lrn` is the old spelling of `model.norm`: the one set now replaces the other's
    // current value instead of contradicting it.
    match s.key.as_str() {
        "model.lrn" => table.remove("norm"),
        "model.norm" => table.remove("lrn"),
        _ => None,
    };
    table.insert(last.to_string(), s.value.clone());
    if s.key == "lr" {
        scale_floor(doc, old_lr, s.value.as_float());
    }
    Ok(())
}

/// A schedule floor (`min_lr`) above a new, lower rate would refuse the run: it was set for
/// the old rate, so it is scaled by the same factor, which keeps the schedule's shape (the
/// plateau rule's number of drops).
fn scale_floor(doc: &mut toml::Table, old: Option<f64>, new: Option<f64>) {
    let (Some(old), Some(new)) = (old, new) else {
        return;
    };
    if !(new.is_finite() && new > 0.0 && old > 0.0) {
        return;
    }
    if let Some(toml::Value::Float(min_lr)) = doc
        .get_mut("schedule")
        .and_then(toml::Value::as_table_mut)
        .and_then(|t| t.get_mut("min_lr"))
    {
        if *min_lr > new {
            *min_lr *= new / old;
        }
    }
}

impl TrainConfig {
    /// Applies the patch: each setting in order, read back as a config file is (an unknown
    /// key or a wrong type names the setting's origin), then the whole is validated. On an
    /// error the configuration is unchanged.
    pub fn apply(&mut self, patch: &Patch) -> Result<(), ConfigError> {
        if patch.is_empty() {
            return Ok(());
        }
        let mut doc = toml::Table::try_from(&*self)?;
        for s in patch.settings() {
            write(&mut doc, s)?;
            toml::Value::Table(doc.clone())
                .try_into::<TrainConfig>()
                .map_err(|e| invalid(&s.origin, e.message().trim().to_string()))?;
        }
        let cfg: TrainConfig = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| invalid("command line", e.message().trim()))?;
        let origin = match patch.settings() {
            [one] => one.origin.clone(),
            _ => "command line".to_string(),
        };
        cfg.validate(&origin)?;
        *self = cfg;
        Ok(())
    }

    /// Sets one key, as `train --set KEY=VALUE` does: `model.lrn=false`,
    /// `augment.lighting_std=0`, `model.widths=[8,32,48,48,64,256,256]`,
    /// `schedule.kind="steps"` (a new kind starts from its defaults).
    pub fn set(&mut self, assignment: &str) -> Result<(), ConfigError> {
        let mut p = Patch::default();
        p.push_assignment(assignment)?;
        self.apply(&p)
    }
}

/// A learning-rate schedule's kind, as `--schedule` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The paper's: ÷10 when validation error stops improving.
    Plateau,
    /// ÷10 after each of `milestones`.
    Steps,
    /// Half a cosine down to `min_lr`.
    Cosine,
}

/// Parses `--widths`: exactly seven positive integers separated by commas.
pub fn parse_widths(s: &str) -> Result<[usize; 7], String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let bad = || {
        format!("widths {s:?}: expected seven positive integers c1,c2,c3,c4,c5,f6,f7 (the paper: 96,256,384,384,256,4096,4096)")
    };
    if parts.len() != 7 {
        return Err(bad());
    }
    let mut out = [0usize; 7];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p.parse().map_err(|_| bad())?;
        if *o == 0 {
            return Err(bad());
        }
    }
    Ok(out)
}

/// Parses `--milestones`: epoch numbers separated by commas.
pub fn parse_milestones(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("milestones {s:?}: expected epoch numbers separated by commas, e.g. 30,60,80")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{Devices, Shuffle};

    fn patch(items: &[(&str, &str, toml::Value)]) -> Patch {
        let mut p = Patch::default();
        for (origin, key, v) in items {
            p.push(*origin, key, v).unwrap();
        }
        p
    }

    #[test]
    fn set_reaches_nested_keys_parses_toml_and_names_mistakes() {
        let mut c = TrainConfig::default();
        c.set("model.lrn=false").unwrap();
        c.set("augment.lighting_std = 0").unwrap();
        c.set("model.widths=[8,32,48,48,64,256,256]").unwrap();
        c.set("model.pool_size=2").unwrap();
        c.set("seed=7").unwrap();
        c.set("max_steps=40").unwrap();
        c.set("schedule.kind=\"cosine\"").unwrap();
        c.set("schedule.min_lr=0.001").unwrap();
        assert_eq!(c.model.norm, crate::model::Norm::None);
        c.set("model.norm=batch").unwrap();
        assert_eq!(c.model.norm, crate::model::Norm::Batch);
        c.set("model.lrn=true").unwrap();
        assert_eq!(c.model.norm, crate::model::Norm::Lrn);
        // The two-column split runs batch normalisation too (each column its channels).
        let mut two = TrainConfig::default();
        two.set("devices=\"0,1\"").unwrap();
        two.set("model.norm=batch").unwrap();
        assert_eq!(two.model.norm, crate::model::Norm::Batch);
        assert_eq!(c.augment.lighting_std, 0.0);
        assert_eq!(c.model.widths, [8, 32, 48, 48, 64, 256, 256]);
        assert_eq!((c.model.pool_size, c.seed, c.max_steps), (2, 7, Some(40)));
        assert_eq!(c.schedule, Schedule::Cosine { min_lr: 0.001 });
        // Back to plateau: the kind's defaults, not a refusal for missing fields.
        c.set("schedule.kind=plateau").unwrap();
        assert_eq!(c.schedule, Schedule::default());
        // A bare word is a string.
        c.set("shuffle=none").unwrap();
        assert_eq!(c.shuffle, Shuffle::None);
        let err = |a: &str| TrainConfig::default().set(a).unwrap_err().to_string();
        assert!(err("model.lrm=false").contains("lrm"));
        assert!(err("model.lrn=3").contains("--set model.lrn=3"));
        assert!(err("seed.x=1").contains("`seed` is a value"));
        assert!(err("lr").contains("KEY=VALUE"));
        assert!(err("model..x=1").contains("empty part"));
        // Validation runs: pooling that skips pixels is refused.
        assert!(err("model.pool_stride=4").contains("pool_stride 4"));
        // A failed set leaves the configuration as it was.
        let mut d = TrainConfig::default();
        assert!(d.set("batch=0").is_err());
        assert_eq!(d, TrainConfig::default());
    }

    #[test]
    fn precision_flag_and_set_are_one_key_written_only_when_mixed() {
        use crate::gpu::coop::Precision;
        let mut flag = Patch::default();
        flag.push("--precision mixed", "precision", &Precision::Mixed)
            .unwrap();
        let mut by_flag = TrainConfig::default();
        by_flag.apply(&flag).unwrap();
        let mut by_set = TrainConfig::default();
        by_set.set("precision=mixed").unwrap();
        assert_eq!(by_flag.precision, Precision::Mixed);
        assert_eq!(by_flag, by_set);
        assert!(by_flag.to_toml().unwrap().contains("precision = \"mixed\""));
        // fp32 is the default and stays out of config.toml, so older files read the same.
        let text = TrainConfig::default().to_toml().unwrap();
        assert!(!text.contains("precision"), "{text}");
        let e = TrainConfig::default()
            .set("precision=bf16")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--set precision=bf16") && e.contains("mixed"),
            "{e}"
        );
    }

    #[test]
    fn typed_values_and_assignments_meet_in_one_patch() {
        let mut p = patch(&[
            ("--epochs 2", "epochs", 2.into()),
            ("--steps 1", "max_steps", 1.into()),
            ("--lr 0.02", "lr", 0.02.into()),
        ]);
        let devices: Devices = "0,0".parse().unwrap();
        p.push("--devices 0,0", "devices", &devices).unwrap();
        p.push("--shuffle none", "shuffle", &Shuffle::None).unwrap();
        p.push(
            "--widths",
            "model.widths",
            &[16usize, 32, 48, 48, 32, 256, 256],
        )
        .unwrap();
        // A later --set wins over the flag, in order.
        p.push_assignment("epochs=5").unwrap();
        let mut c = TrainConfig::default();
        c.apply(&p).unwrap();
        assert_eq!((c.epochs, c.max_steps, c.lr), (5, Some(1), 0.02));
        assert_eq!(c.devices, devices);
        assert_eq!(c.shuffle, Shuffle::None);
        assert_eq!(c.model.widths, [16, 32, 48, 48, 32, 256, 256]);
        // Nothing set: nothing changes.
        let before = c.clone();
        c.apply(&Patch::default()).unwrap();
        assert_eq!(c, before);
    }

    #[test]
    fn errors_name_the_flag_and_leave_the_config_alone() {
        for (p, want) in [
            (
                patch(&[("--dropout 1", "dropout", 1.0.into())]),
                "dropout 1",
            ),
            (
                patch(&[
                    ("--devices 0,0,0", "devices", "0,0,0".into()),
                    ("--columns 2", "columns", 2.into()),
                ]),
                "--columns 2 takes them in pairs",
            ),
            (patch(&[("--steps 0", "max_steps", 0.into())]), "max_steps"),
            (
                patch(&[("--min-lr 0.1", "schedule.min_lr", 0.1.into())]),
                "between 0 and lr",
            ),
            (
                patch(&[("--schedule steps", "schedule.kind", "steps".into())]),
                "--milestones",
            ),
            (
                patch(&[
                    ("--schedule steps", "schedule.kind", "steps".into()),
                    ("--min-lr 0", "schedule.min_lr", 0.0.into()),
                ]),
                "--min-lr 0: unknown field `min_lr`",
            ),
        ] {
            let mut c = TrainConfig::default();
            let e = c.apply(&p).unwrap_err().to_string();
            assert!(e.contains(want), "{p:?}: {e}");
            assert_eq!(c, TrainConfig::default());
        }
    }

    #[test]
    fn a_rate_below_the_schedule_floor_scales_the_floor() {
        // The paper's plateau floor is 1e-5: --lr 1e-6 used to be refused.
        let mut c = TrainConfig::default();
        c.apply(&patch(&[("--lr 1e-6", "lr", 1e-6.into())]))
            .unwrap();
        match c.schedule {
            Schedule::Plateau { min_lr, .. } => {
                assert!((min_lr - 1e-9).abs() < 1e-21, "{min_lr}")
            }
            other => panic!("{other:?}"),
        }
        // A rate above the floor leaves it alone.
        let mut c = TrainConfig::default();
        c.set("lr=0.02").unwrap();
        assert_eq!(c.schedule, Schedule::default());
    }

    #[test]
    fn widths_and_milestones_spellings() {
        assert_eq!(
            parse_widths("8, 16,16,16,16,32,32"),
            Ok([8, 16, 16, 16, 16, 32, 32])
        );
        for bad in ["1,2,3", "1,2,3,4,5,6,0", "a,b,c,d,e,f,g", ""] {
            assert!(parse_widths(bad).unwrap_err().contains("seven"), "{bad}");
        }
        assert_eq!(parse_milestones("30, 60"), Ok(vec![30, 60]));
        assert!(parse_milestones("3,x").unwrap_err().contains("\"3,x\""));
    }
}
