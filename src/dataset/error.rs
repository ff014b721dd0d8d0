//! Errors of shard reading; each names the file and says what to do.
use std::path::PathBuf;

/// Everything that can go wrong opening or reading a shard set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Parquet layer failed on a file.
    #[error("{path}: not a readable Parquet file ({source}); re-create it with alexnet ingest")]
    Parquet {
        /// The shard.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Arrow failed building or reading a batch.
    #[error("{path}: {source}")]
    Arrow {
        /// The shard (or output) concerned.
        path: PathBuf,
        /// The underlying error.
        source: arrow_schema::ArrowError,
    },
    /// A path given as data holds no shards.
    #[error("{path}: no .parquet shards found; give a shard file or a directory written by alexnet ingest")]
    NoShards {
        /// The path given.
        path: PathBuf,
    },
    /// The file has no `alexnet` footer key, or the key is malformed.
    #[error(
        "{path}: bad alexnet footer metadata: {reason}; re-create the shard with alexnet ingest"
    )]
    BadMetadata {
        /// The shard.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The footer's `format_version` is not one this build reads.
    #[error("{path}: shard format_version {found} is not supported (this build reads {supported}); re-ingest with this version of alexnet or upgrade alexnet")]
    UnknownVersion {
        /// The shard.
        path: PathBuf,
        /// The version found in the footer.
        found: u64,
        /// The version this build reads.
        supported: u32,
    },
    /// Two shards of one set disagree on size, encoding or classes.
    #[error("{first} and {other} disagree on {what}; they cannot be read as one data set (re-ingest one of them with matching --size/--encoding/--classes/--seed/--order and the same RAW)")]
    Mismatch {
        /// The first shard of the set.
        first: PathBuf,
        /// The shard that disagrees with it.
        other: PathBuf,
        /// Which property differs, with both values.
        what: String,
    },
    /// A column is missing or has the wrong type or length.
    #[error("{path}: column `{column}`: {reason}; re-create the shard with alexnet ingest")]
    BadColumn {
        /// The shard.
        path: PathBuf,
        /// The column name.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored JPEG/PNG image did not decode to an S×S RGB image.
    #[error("{path}: row {row}: stored image does not decode: {reason}; re-create the shard with alexnet ingest")]
    StoredImage {
        /// The shard.
        path: PathBuf,
        /// Row index within the shard.
        row: u64,
        /// What went wrong.
        reason: String,
    },
    /// A global row index past the end of the set.
    #[error("row {row} is out of range: the shard set has {len} rows")]
    RowOutOfRange {
        /// The requested row.
        row: u64,
        /// Rows in the set.
        len: u64,
    },
    /// Statistics of different image sizes cannot be merged.
    #[error("cannot merge statistics of {a}×{a} and {b}×{b} images; use shards of one --size")]
    StatsSize {
        /// Size of the first.
        a: usize,
        /// Size of the second.
        b: usize,
    },
    /// A row's label is not an index into the footer's class list.
    #[error("{path}: row {row} has label {label}, but the footer's class list has {classes} classes (labels 0..{classes}); the shard was altered after ingest: fix that row or re-create the shard with alexnet ingest")]
    BadLabel {
        /// The shard.
        path: PathBuf,
        /// Row index within the shard, from 0.
        row: u64,
        /// The label found.
        label: i64,
        /// Classes in the footer.
        classes: usize,
    },
    /// The footer's `count` is not the number of rows in the file.
    #[error("{path}: the footer says {footer} images but the file holds {rows} rows; the shard was altered after ingest: re-create it with alexnet ingest")]
    CountMismatch {
        /// The shard.
        path: PathBuf,
        /// `count` in the footer.
        footer: u64,
        /// Rows in the row groups.
        rows: i64,
    },
    /// A loader thread died.
    #[error("data loader thread failed: {0}")]
    Loader(String),
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Self::Parquet {
            path: path.into(),
            source,
        }
    }
}
