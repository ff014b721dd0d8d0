//! The learning-rate schedule as the command line sets it: `--schedule KIND` with
//! `--min-lr` and `--milestones`, over the schedule a config file (or the default) gave.
use super::config::Schedule;

impl Schedule {
    /// The schedule after `--schedule kind` (keeping this one's settings when the kind is
    /// the same, the kind's defaults otherwise), `--min-lr` and `--milestones` (a comma list
    /// of epochs; required by `steps` unless this schedule already has them). The error says
    /// which flag is wrong and what it takes.
    pub fn with_flags(
        &self,
        kind: Option<&str>,
        min_lr: Option<f64>,
        milestones: Option<&str>,
    ) -> Result<Schedule, String> {
        let mut s = match (kind, self) {
            (None, s) => s.clone(),
            (Some("plateau"), s @ Schedule::Plateau { .. }) => s.clone(),
            (Some("plateau"), _) => Schedule::default(),
            (Some("cosine"), s @ Schedule::Cosine { .. }) => s.clone(),
            (Some("cosine"), _) => Schedule::Cosine { min_lr: 0.0 },
            (Some("steps"), s @ Schedule::Steps { .. }) => s.clone(),
            (Some("steps"), _) => Schedule::Steps {
                milestones: Vec::new(),
                factor: 0.1,
            },
            (Some(other), _) => {
                return Err(format!(
                    "--schedule {other}: expected plateau (the paper's: divide by 10 when validation error stops improving), steps (with --milestones) or cosine"
                ))
            }
        };
        if let Some(list) = milestones {
            let parsed: Result<Vec<usize>, _> =
                list.split(',').map(|v| v.trim().parse::<usize>()).collect();
            match (&mut s, parsed) {
                (Schedule::Steps { milestones, .. }, Ok(v)) => *milestones = v,
                (Schedule::Steps { .. }, Err(_)) => {
                    return Err(format!(
                        "--milestones {list:?}: expected epoch numbers separated by commas, e.g. 30,60,80"
                    ))
                }
                _ => return Err("--milestones applies to --schedule steps only".into()),
            }
        }
        if let Some(v) = min_lr {
            match &mut s {
                Schedule::Plateau { min_lr, .. } | Schedule::Cosine { min_lr } => *min_lr = v,
                Schedule::Steps { .. } => {
                    return Err("--min-lr applies to --schedule plateau or cosine only".into())
                }
            }
        }
        if let Schedule::Steps { milestones, .. } = &s {
            if milestones.is_empty() {
                return Err(
                    "--schedule steps needs --milestones, e.g. --milestones 30,60,80".into(),
                );
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_pick_the_kind_and_keep_or_default_its_settings() {
        let plateau = Schedule::default();
        assert_eq!(plateau.with_flags(None, None, None).unwrap(), plateau);
        assert_eq!(
            plateau
                .with_flags(Some("cosine"), Some(1e-4), None)
                .unwrap(),
            Schedule::Cosine { min_lr: 1e-4 }
        );
        assert_eq!(
            plateau
                .with_flags(Some("steps"), None, Some("30, 60"))
                .unwrap(),
            Schedule::Steps {
                milestones: vec![30, 60],
                factor: 0.1
            }
        );
        match plateau
            .with_flags(Some("plateau"), Some(1e-3), None)
            .unwrap()
        {
            Schedule::Plateau {
                patience, min_lr, ..
            } => assert_eq!((patience, min_lr), (5, 1e-3)),
            s => panic!("{s:?}"),
        }
        for (kind, min, ms, want) in [
            (Some("linear"), None, None, "--schedule linear"),
            (Some("steps"), None, None, "needs --milestones"),
            (Some("steps"), None, Some("3,x"), "--milestones \"3,x\""),
            (Some("cosine"), None, Some("3"), "steps only"),
            (
                Some("steps"),
                Some(0.1),
                Some("3"),
                "plateau or cosine only",
            ),
        ] {
            let e = plateau.with_flags(kind, min, ms).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }
}
