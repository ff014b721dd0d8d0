//! The one check every command makes on a file it is about to write, before anything is
//! computed (docs/outputs.md):
//! - never one of the command's inputs, however spelled (`export-features … shards/
//!   shards/part-00000.parquet` once replaced a shard with features);
//! - never a file inside a folder given as data, nor inside a shard folder or a training run
//!   folder that the command did not create (`report RUN --out RUN/last.safetensors` once
//!   replaced the checkpoint), except the one file a command keeps there (`RUN/report.png`);
//! - never a folder, and the extension its format implies (`--sheet x.parquet` is refused);
//! - nothing existing without `--overwrite`.
//!
//! It also removes temporaries that a killed alexnet left in the output's folder
//! (`crate::atomic::remove_stale`), since every command that writes a file passes here.
use std::path::{Path, PathBuf};

/// Why an output path was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The output is one of the inputs.
    #[error("{}: the output is also an input ({}); writing it would destroy the input, so choose another output path", out.display(), input.display())]
    IsInput {
        /// The output as given.
        out: PathBuf,
        /// The input it names, as given.
        input: PathBuf,
    },
    /// The output would land in a folder given as data, where readers take it for a shard.
    #[error("{}: the output is inside {}, a folder given as input, whose files belong to that data set (a .parquet file there would be read as one of its shards); write it elsewhere", out.display(), dir.display())]
    InsideData {
        /// The output as given.
        out: PathBuf,
        /// The data folder.
        dir: PathBuf,
    },
    /// The output would land inside a shard folder or a run folder.
    #[error("{}: the output is inside {}, {what}, whose files belong to the command that made it; write it elsewhere", out.display(), dir.display())]
    InsideManaged {
        /// The output as given.
        out: PathBuf,
        /// The folder.
        dir: PathBuf,
        /// What the folder is (`a shard folder written by alexnet ingest`).
        what: &'static str,
    },
    /// The output names an existing folder.
    #[error("{}: is a folder; name a file to write (for example {})", out.display(), out.join(format!("out.{ext}")).display())]
    IsFolder {
        /// The output as given.
        out: PathBuf,
        /// The extension the format implies.
        ext: &'static str,
    },
    /// The output's extension is not the one its format implies.
    #[error("{}: {what} is written as {}; name the output with that extension", out.display(), want.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(" or "))]
    Extension {
        /// The output as given.
        out: PathBuf,
        /// The format (`a PNG image`).
        what: &'static str,
        /// The extensions it may have.
        want: &'static [&'static str],
    },
    /// The output exists and `--overwrite` was not given.
    #[error("{}: already exists; pass --overwrite to replace it, or choose another output path", .0.display())]
    Exists(PathBuf),
}

/// What a command writes, which fixes the extension its output must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// A PNG image (`filters`, `report`, `neighbors --sheet`).
    Png,
    /// A JSON file (`eval --out`, `report --table`'s table).
    Json,
    /// A Markdown file (`report --table`'s table).
    Markdown,
    /// A Parquet file (`export-features`, `ingest OUT.parquet`).
    Parquet,
    /// A safetensors file (`forward`, `import torchvision`, `export weights`).
    Safetensors,
    /// An ONNX model (`export onnx`).
    Onnx,
}

impl Format {
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Png => &["png"],
            Format::Json => &["json"],
            Format::Markdown => &["md"],
            Format::Parquet => &["parquet"],
            Format::Safetensors => &["safetensors"],
            Format::Onnx => &["onnx"],
        }
    }

    fn what(self) -> &'static str {
        match self {
            Format::Png => "a PNG image",
            Format::Json => "JSON",
            Format::Markdown => "a Markdown table",
            Format::Parquet => "Parquet",
            Format::Safetensors => "safetensors",
            Format::Onnx => "an ONNX model",
        }
    }
}

/// A file a command is about to write, for [`check`].
#[derive(Clone, Debug)]
pub struct Output<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its format.
    pub format: Format,
    /// Every file and folder the command reads.
    pub inputs: &'a [&'a Path],
    /// `--overwrite`: an existing file may be replaced.
    pub overwrite: bool,
    /// The one file name the command keeps inside a run folder it reads (`report.png`).
    pub own_name: Option<&'a str>,
}

impl<'a> Output<'a> {
    /// An output of `format` at `path` for a command reading `inputs`.
    pub fn new(path: &'a Path, format: Format, inputs: &'a [&'a Path], overwrite: bool) -> Self {
        Output {
            path,
            format,
            inputs,
            overwrite,
            own_name: None,
        }
    }
}

/// What a folder is, when alexnet made it as a whole: a shard folder or a training run.
fn managed(dir: &Path) -> Option<&'static str> {
    let has = |name: &str| std::fs::symlink_metadata(dir.join(name)).is_ok();
    if has("last.safetensors")
        || has("metrics.jsonl")
        || has("config.toml") && has(crate::lock::LOCK_FILE)
    {
        return Some("a training run folder");
    }
    if has(crate::lock::LOCK_FILE) {
        return Some("a folder written by alexnet ingest or train");
    }
    let shards = std::fs::read_dir(dir).ok()?.flatten().any(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.starts_with("part-") && n.ends_with(".parquet")
    });
    shards.then_some("a shard folder")
}

/// Checks `o` against every rule in the module doc, then removes stale temporaries beside it.
pub fn check(o: &Output<'_>) -> Result<(), OutputError> {
    let out = o.path;
    if let Some(&input) = o.inputs.iter().find(|i| same_file(out, i)) {
        return Err(OutputError::IsInput {
            out: out.into(),
            input: input.into(),
        });
    }
    let want = o.format.extensions();
    if out.is_dir() {
        return Err(OutputError::IsFolder {
            out: out.into(),
            ext: want[0],
        });
    }
    let ext = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if !ext.is_some_and(|e| want.contains(&e.as_str())) {
        return Err(OutputError::Extension {
            out: out.into(),
            what: o.format.what(),
            want,
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let own = o
        .own_name
        .is_some_and(|n| out.file_name().is_some_and(|f| f == n));
    if !own {
        for &input in o.inputs {
            if input.is_dir() && same_file(parent, input) {
                return Err(OutputError::InsideData {
                    out: out.into(),
                    dir: input.into(),
                });
            }
        }
        if let Some(what) = managed(parent) {
            return Err(OutputError::InsideManaged {
                out: out.into(),
                dir: parent.into(),
                what,
            });
        }
    }
    if !o.overwrite && std::fs::symlink_metadata(out).is_ok() {
        return Err(OutputError::Exists(out.into()));
    }
    crate::atomic::remove_stale_beside(out);
    Ok(())
}

/// True when `a` and `b` are the same file or folder, however spelled (links, `..`).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_data_and_run_folders_and_existing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shards = dir.path().join("shards");
        std::fs::create_dir(&shards).unwrap();
        let shard = shards.join("part-00000.parquet");
        std::fs::write(&shard, b"x").unwrap();
        let other = dir.path().join("feat.parquet");
        let pq = Format::Parquet;
        // Another spelling of the same file is still the input.
        let again = shards.join("..").join("shards").join("part-00000.parquet");
        for overwrite in [false, true] {
            let e = check(&Output::new(&again, pq, &[&shards, &shard], overwrite)).unwrap_err();
            assert!(matches!(e, OutputError::IsInput { .. }), "{e}");
            let new = shards.join("new.parquet");
            let e = check(&Output::new(&new, pq, &[&shards], overwrite)).unwrap_err();
            assert!(matches!(e, OutputError::InsideData { .. }), "{e}");
            // A shard folder is one even when not given as input.
            let png = shards.join("sheet.png");
            let e = check(&Output::new(&png, Format::Png, &[], overwrite)).unwrap_err();
            assert!(matches!(e, OutputError::InsideManaged { .. }), "{e}");
        }
        check(&Output::new(&other, pq, &[&shards], false)).unwrap();
        std::fs::write(&other, b"y").unwrap();
        let e = check(&Output::new(&other, pq, &[&shards], false)).unwrap_err();
        assert!(e.to_string().contains("--overwrite"), "{e}");
        check(&Output::new(&other, pq, &[&shards], true)).unwrap();
        // The format's extension, whatever the case; a folder is never a file output.
        let e = check(&Output::new(&shard, Format::Png, &[], true)).unwrap_err();
        assert!(matches!(e, OutputError::Extension { .. }), "{e}");
        check(&Output::new(
            &dir.path().join("A.PNG"),
            Format::Png,
            &[],
            false,
        ))
        .unwrap();
        let e = check(&Output::new(&shards, Format::Json, &[], true)).unwrap_err();
        assert!(e.to_string().contains("out.json"), "{e}");
        // A run folder keeps its own report and nothing else of ours.
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::write(run.join("last.safetensors"), b"w").unwrap();
        let report = run.join("report.png");
        let e = check(&Output::new(&report, Format::Png, &[], false)).unwrap_err();
        assert!(matches!(e, OutputError::InsideManaged { .. }), "{e}");
        let runs: [&Path; 1] = [&run];
        let mut o = Output::new(&report, Format::Png, &runs, false);
        o.own_name = Some("report.png");
        check(&o).unwrap();
        let ck = run.join("last.safetensors");
        let e = check(&Output::new(&ck, Format::Safetensors, &[], true)).unwrap_err();
        assert!(e.to_string().contains("training run"), "{e}");
    }
}
