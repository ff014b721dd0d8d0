//! Checks on a command's output path before anything is computed: an output that is one of
//! the command's inputs is always refused (`export-features … shards/ shards/part-00000.parquet`
//! once replaced a shard with features), and an existing output is only replaced when the
//! user says `--overwrite`.
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
    #[error("{}: the output is inside {}, a folder given as data, where it would be read as one of its shards; write it elsewhere", out.display(), dir.display())]
    InsideData {
        /// The output as given.
        out: PathBuf,
        /// The data folder.
        dir: PathBuf,
    },
    /// The output exists and `--overwrite` was not given.
    #[error("{}: already exists; pass --overwrite to replace it, or choose another output path", .0.display())]
    Exists(PathBuf),
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

/// Refuses `out` when it is one of `inputs` (files or folders), when it is a `.parquet`
/// file directly inside a folder among `inputs` (it would join that shard set), or when it
/// exists and `overwrite` is false.
pub fn check_output(out: &Path, inputs: &[&Path], overwrite: bool) -> Result<(), OutputError> {
    if let Some(&input) = inputs.iter().find(|i| same_file(out, i)) {
        return Err(OutputError::IsInput {
            out: out.into(),
            input: input.into(),
        });
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let parquet = out.extension().is_some_and(|e| e == "parquet");
    for &input in inputs {
        if parquet && input.is_dir() && same_file(parent, input) {
            return Err(OutputError::InsideData {
                out: out.into(),
                dir: input.into(),
            });
        }
    }
    if !overwrite && std::fs::symlink_metadata(out).is_ok() {
        return Err(OutputError::Exists(out.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_existing_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let shards = dir.path().join("shards");
        std::fs::create_dir(&shards).unwrap();
        let shard = shards.join("part-00000.parquet");
        std::fs::write(&shard, b"x").unwrap();
        let other = dir.path().join("feat.parquet");
        // Another spelling of the same file is still the input.
        let again = shards.join("..").join("shards").join("part-00000.parquet");
        for overwrite in [false, true] {
            let e = check_output(&again, &[&shards, &shard], overwrite).unwrap_err();
            assert!(matches!(e, OutputError::IsInput { .. }), "{e}");
            let e = check_output(&shards.join("new.parquet"), &[&shards], overwrite).unwrap_err();
            assert!(matches!(e, OutputError::InsideData { .. }), "{e}");
        }
        check_output(&other, &[&shards], false).unwrap();
        std::fs::write(&other, b"y").unwrap();
        let e = check_output(&other, &[&shards], false).unwrap_err();
        assert!(e.to_string().contains("--overwrite"), "{e}");
        check_output(&other, &[&shards], true).unwrap();
    }
}
