//! Errors that stop an ingest run. Bad input images are not errors: they become rejects.
use std::path::PathBuf;

/// Why `alexnet ingest` could not run or finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The raw folder does not exist or is not a directory.
    #[error(
        "{0}: no such folder; give the folder of class subfolders (or flat val images) to ingest"
    )]
    MissingRaw(PathBuf),
    /// The raw folder holds no image files.
    #[error(
        "{0}: no .jpg/.jpeg/.png/.bmp/.webp files found (in the folder or its class subfolders)"
    )]
    EmptyRaw(PathBuf),
    /// Flat images without a label file.
    #[error("{0}: holds images but no class subfolders; give --labels FILE (LOC_val_solution.csv or the devkit ground truth) for a flat val folder")]
    FlatNeedsLabels(PathBuf),
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The output path was refused (an input, or inside a shard or run folder).
    #[error(transparent)]
    Output(#[from] crate::output_check::OutputError),
    /// An output could not be written or renamed into place.
    #[error(transparent)]
    Write(#[from] crate::atomic::AtomicError),
    /// The label, class or synset file does not match the images.
    #[error("{path}: {reason}")]
    Labels {
        /// The label/class/synset file.
        path: PathBuf,
        /// What does not match, and what to do.
        reason: String,
    },
    /// The output already exists.
    #[error("{0}: output already exists; pass --resume to finish it or --overwrite to replace it")]
    OutputExists(PathBuf),
    /// A kept shard was written with different settings.
    #[error("{path}: existing shard was written with {what}; pass --overwrite to rebuild it")]
    ResumeMismatch {
        /// The existing shard.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// Another `--shard` part in the folder was made with other settings.
    #[error("{path}: another part of this --shard ingest was written with {what}; every part must use the same RAW, --seed, --order, --size, --encoding, --shard-rows and classes (run this part with that part's settings, or ingest every part again)")]
    OtherPart {
        /// A shard of the other part.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// Writing or reading a shard failed.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// The Parquet writer failed.
    #[error("{path}: writing Parquet failed: {source}")]
    Parquet {
        /// The shard being written.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// `--strict` and some inputs were rejected.
    #[error(
        "{count} input(s) rejected (first: {first}); see {rejects}. The shards holding them were not written: fix or remove those files and run again with --resume, or drop --strict to skip them"
    )]
    Strict {
        /// Number of rejects.
        count: usize,
        /// The first, as `source: reason`.
        first: String,
        /// The rejects file.
        rejects: PathBuf,
    },
    /// Another process writes the output.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// The settings need more memory than the machine has.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// The worker pool could not start.
    #[error("cannot start {jobs} worker threads: {reason}")]
    Pool {
        /// Threads asked for.
        jobs: usize,
        /// Why.
        reason: String,
    },
}

impl IngestError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
