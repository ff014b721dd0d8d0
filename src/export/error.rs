//! Errors of the exports (features, neighbours, filter and contact-sheet images). Every
//! message names the file it is about and says what to do.
use std::path::PathBuf;

/// Why an export could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] crate::model::CheckpointError),
    /// The shards could not be read.
    #[error(transparent)]
    Dataset(#[from] crate::dataset::DatasetError),
    /// The network could not be built or run.
    #[error(transparent)]
    Network(#[from] crate::model::NetworkError),
    /// A GPU transfer failed.
    #[error(transparent)]
    Gpu(#[from] crate::gpu::GpuError),
    /// Opening or running the network (on a GPU or the CPU engine) failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A file could not be read or written.
    #[error("{}: {source}; check the path and its permissions", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Parquet reader or writer failed.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The parquet crate's error.
        source: parquet::errors::ParquetError,
    },
    /// Building or reading an Arrow batch failed.
    #[error("{}: {source}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The arrow error.
        source: arrow_schema::ArrowError,
    },
    /// The checkpoint and the data (or the options) do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// A column of a shard or features file is missing or has the wrong type.
    #[error("{}: column `{column}` {reason}; write the file with `alexnet ingest` / `alexnet export-features`", path.display())]
    BadColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `--query` names neither a source nor a row of the features file.
    #[error("{}: no row has source `{query}` and it is not a row number below {rows}; pass a source path exactly as stored, or a row index", path.display())]
    QueryNotFound {
        /// The features file.
        path: PathBuf,
        /// The query as given.
        query: String,
        /// Rows in the file.
        rows: usize,
    },
    /// The output path was refused (it is an input, or exists without `--overwrite`).
    #[error(transparent)]
    Output(#[from] crate::output_check::OutputError),
    /// The output could not be written or renamed into place.
    #[error(transparent)]
    Write(#[from] crate::atomic::AtomicError),
    /// The network gave NaN or inf activations; nothing was written.
    #[error("{}: {layer} of row {row} ({input}) holds NaN or inf, so the checkpoint has diverged; nothing was written. Export from an earlier checkpoint", checkpoint.display())]
    NotFinite {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The layer exported.
        layer: &'static str,
        /// The global row.
        row: usize,
        /// Its `source` column.
        input: String,
    },
    /// The request needs more memory than the machine has.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemoryError),
    /// An image could not be written.
    #[error("{}: cannot write the image: {problem}; check that the directory exists and is writable", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// Why.
        problem: String,
    },
}

impl ExportError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ExportError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parquet(path: &std::path::Path, source: parquet::errors::ParquetError) -> Self {
        ExportError::Parquet {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn arrow(path: &std::path::Path, source: arrow_schema::ArrowError) -> Self {
        ExportError::Arrow {
            path: path.into(),
            source,
        }
    }
}
