//! `alexnet ingest`: scan a raw image folder, decode (by content), resize and centre-crop,
//! compute exact statistics, and write Parquet shards in the schema of [`crate::dataset`].
//!
//! Shard k of a directory output always holds the inputs `k·shard_rows .. (k+1)·shard_rows`
//! of the sorted input list (minus rejects), so a shard's bytes depend only on the inputs and
//! settings: runs are deterministic whatever `--jobs`, `--resume` redoes exactly the missing
//! shards, and `--shard I/N` (shards k with k mod N = I) lets N machines fill one folder.

mod decode;
mod error;
pub mod idx;
mod labels;
mod preprocess;
mod progress;
mod run;
pub(crate) mod scan;
mod writer;

pub use decode::{byte_cap, decode_image, read_image_file, Decoded, DEFAULT_MAX_PIXELS};
pub use error::IngestError;
pub use labels::{read_class_list, read_label_file};
pub use preprocess::{encode, resize_crop, resize_crop_with, resized_dims, JPEG_QUALITY};
pub use run::{ingest, IngestConfig, IngestSummary, RowOrder, ShardPart, StageTimes};
pub use scan::{scan, Input, Scan};
pub use writer::ShardWriter;
