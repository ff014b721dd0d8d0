//! What a pipeline needs to know of each command besides its arguments: which paths it reads
//! and writes, and how it treats an output that is already there.
use super::{Command, ConfigSource};
use std::path::{Path, PathBuf};

/// How a command treats an output left by an earlier run of the same stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rerun {
    /// It continues the work there (`ingest` keeps complete shards, `train` resumes the
    /// run): with other arguments that would mix two settings in one output.
    Continues,
    /// It computes the output again (or checks it, as `import-idx` does).
    Replaces,
}

impl Command {
    /// Makes every relative path, input or output, relative to `base` (a pipeline's
    /// `work_dir`), except a train stage's `config` file, which belongs with the pipeline and
    /// is taken from `file_dir` (the pipeline file's directory); fills in outputs whose
    /// default depends on another path (`report`'s).
    pub fn resolve_paths(&mut self, base: &Path, file_dir: &Path) {
        let r = |p: &mut PathBuf| *p = base.join(&*p);
        let ro = |p: &mut Option<PathBuf>| p.iter_mut().for_each(r);
        let rv = |v: &mut Vec<PathBuf>| v.iter_mut().for_each(r);
        match self {
            Command::Devices(_) | Command::Completions(_) => {}
            Command::Train(a) => {
                rv(&mut a.data);
                rv(&mut a.val);
                r(&mut a.out);
                ro(&mut a.init_from);
                if let Some(ConfigSource::File(p)) = &mut a.config {
                    *p = file_dir.join(&*p);
                }
            }
            Command::Eval(a) => {
                rv(&mut a.checkpoint);
                rv(&mut a.data);
                ro(&mut a.out);
                ro(&mut a.sheet);
                ro(&mut a.classes);
            }
            Command::Forward(a) => {
                r(&mut a.checkpoint);
                r(&mut a.input);
                r(&mut a.out);
            }
            Command::Ingest(a) => {
                r(&mut a.raw);
                r(&mut a.out);
                ro(&mut a.labels);
                ro(&mut a.classes);
                ro(&mut a.synsets);
            }
            Command::Inspect(a) => rv(&mut a.data),
            Command::Report(a) => {
                rv(&mut a.runs);
                ro(&mut a.out);
                a.out = Some(a.image());
            }
            Command::Import(a) => {
                r(&mut a.input);
                r(&mut a.out);
            }
            Command::ImportIdx(a) => {
                r(&mut a.images);
                r(&mut a.labels);
                r(&mut a.out);
                if let Some(c) = &mut a.classes {
                    if c != "fashion-mnist" {
                        *c = base.join(&*c).to_string_lossy().into_owned();
                    }
                }
            }
            Command::ExportFeatures(a) => {
                r(&mut a.checkpoint);
                rv(&mut a.data);
                r(&mut a.out);
            }
            Command::Neighbors(a) => {
                r(&mut a.features);
                ro(&mut a.sheet);
                rv(&mut a.data);
                ro(&mut a.query_image);
                ro(&mut a.checkpoint);
            }
            Command::Filters(a) => {
                r(&mut a.checkpoint);
                r(&mut a.out);
            }
            Command::Export(a) => {
                r(&mut a.checkpoint);
                r(&mut a.out);
            }
            Command::Run(a) => r(&mut a.pipeline),
            Command::Predict(a) => {
                rv(&mut a.checkpoint);
                ro(&mut a.sheet);
                rv(&mut a.inputs);
                ro(&mut a.classes);
                rv(&mut a.data);
            }
            Command::Man(a) => r(&mut a.dir),
        }
    }

    /// The paths the command creates; all must exist for a stage to count as done.
    pub fn outputs(&self) -> Vec<&Path> {
        match self {
            Command::Train(a) => vec![&a.out],
            Command::Ingest(a) => vec![&a.out],
            Command::ImportIdx(a) => vec![&a.out],
            Command::Import(a) => vec![&a.out],
            Command::ExportFeatures(a) => vec![&a.out],
            Command::Forward(a) => vec![&a.out],
            Command::Filters(a) => vec![&a.out],
            Command::Export(a) => vec![&a.out],
            Command::Man(a) => vec![&a.dir],
            Command::Eval(a) => a.out.iter().chain(&a.sheet).map(PathBuf::as_path).collect(),
            Command::Predict(a) => a.sheet.iter().map(PathBuf::as_path).collect(),
            Command::Report(a) => a.out.iter().map(PathBuf::as_path).collect(),
            Command::Neighbors(a) => a.sheet.iter().map(PathBuf::as_path).collect(),
            Command::Devices(_)
            | Command::Inspect(_)
            | Command::Run(_)
            | Command::Completions(_) => Vec::new(),
        }
    }

    /// The paths the command reads (files or folders), for the pipeline's check that no
    /// stage reads what only a later stage writes.
    pub fn inputs(&self) -> Vec<&Path> {
        fn o(p: &Option<PathBuf>) -> Vec<&Path> {
            p.iter().map(PathBuf::as_path).collect()
        }
        fn v(p: &[PathBuf]) -> Vec<&Path> {
            p.iter().map(PathBuf::as_path).collect()
        }
        match self {
            Command::Train(a) => {
                let mut all = [v(&a.data), v(&a.val), o(&a.init_from)].concat();
                if let Some(ConfigSource::File(f)) = &a.config {
                    all.push(f);
                }
                all
            }
            Command::Eval(a) => [v(&a.checkpoint), v(&a.data), o(&a.classes)].concat(),
            Command::Forward(a) => vec![&a.checkpoint, &a.input],
            Command::Ingest(a) => [
                vec![a.raw.as_path()],
                o(&a.labels),
                o(&a.classes),
                o(&a.synsets),
            ]
            .concat(),
            Command::Inspect(a) => v(&a.data),
            Command::Report(a) => v(&a.runs),
            Command::Import(a) => vec![&a.input],
            Command::ImportIdx(a) => vec![&a.images, &a.labels],
            Command::ExportFeatures(a) => [vec![a.checkpoint.as_path()], v(&a.data)].concat(),
            Command::Neighbors(a) => [
                vec![a.features.as_path()],
                v(&a.data),
                o(&a.query_image),
                o(&a.checkpoint),
            ]
            .concat(),
            Command::Filters(a) => vec![&a.checkpoint],
            Command::Export(a) => vec![&a.checkpoint],
            Command::Predict(a) => {
                [v(&a.checkpoint), v(&a.inputs), o(&a.classes), v(&a.data)].concat()
            }
            Command::Devices(_) | Command::Run(_) | Command::Completions(_) | Command::Man(_) => {
                Vec::new()
            }
        }
    }

    /// How the command treats its own earlier output.
    pub fn rerun(&self) -> Rerun {
        match self {
            Command::Ingest(a) if a.overwrite => Rerun::Replaces,
            Command::Train(_) | Command::Ingest(_) => Rerun::Continues,
            _ => Rerun::Replaces,
        }
    }

    /// Argument keys that change only what is printed, not what is written: a change to
    /// them neither re-runs a finished stage nor counts as other settings.
    pub fn cosmetic_keys(&self) -> &'static [&'static str] {
        match self {
            Command::Train(_) => &["quiet", "json"],
            Command::Ingest(_) => &["quiet", "jobs"],
            Command::ExportFeatures(_) => &["quiet"],
            _ => &[],
        }
    }

    /// Checks a stage can run before any stage does (values the types allow but the
    /// command refuses), so a mistake in stage 5 shows before hours of stage 1.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Command::ImportIdx(a) => a.check(),
            Command::Ingest(a) => a.check(),
            Command::Train(a) => a.effective_config().map(drop).map_err(|e| e.to_string()),
            Command::Run(_) => {
                Err("a pipeline cannot run another pipeline; copy its stages into this file".into())
            }
            _ => Ok(()),
        }
    }

    /// Sets the flags that make a pipeline's second run continue its own work: `ingest`
    /// resumes an existing `out`, `train` resumes from `out/last.safetensors`, and a stage
    /// whose earlier output this pipeline wrote (`owned`) may replace it.
    pub fn prepare_rerun(&mut self, owned: bool) {
        match self {
            Command::Ingest(a) if !a.overwrite => a.resume = a.out.exists(),
            Command::Train(a) => a.resume = a.out.join(crate::train::run::LAST).exists(),
            Command::ExportFeatures(a) if owned => a.overwrite = true,
            Command::Import(a) if owned => a.overwrite = true,
            Command::Forward(a) if owned => a.overwrite = true,
            Command::Eval(a) if owned => a.overwrite = true,
            Command::Report(a) if owned => a.overwrite = true,
            Command::Neighbors(a) if owned => a.overwrite = true,
            Command::Filters(a) if owned => a.overwrite = true,
            _ => {}
        }
    }
}
