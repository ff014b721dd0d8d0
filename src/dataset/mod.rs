//! Reading shards: the schema and footer metadata (defined once, here, and used by `ingest`
//! to write), merged statistics, row-group access, shuffling and the background loader that
//! feeds training.
//!
//! A shard set is one `.parquet` file, a directory of `part-*.parquet` shards, or several of
//! either. Global row indices count rows across the files in the order [`ShardSet::files`]
//! lists them.
//!
//! Shuffling: [`Shuffle::Full`] permutes the row groups of all files, then the rows within
//! windows of [`LoaderConfig::window_groups`] groups (see [`epoch_order`]), so an epoch over
//! ImageNet holds about two windows of decoded row groups in memory, never the whole set.
//! Rows within one row group come from one shard, i.e. from neighbouring classes, so a
//! larger window mixes classes better at the cost of memory.
//!
//! ```no_run
//! use alexnet::dataset::{Loader, LoaderConfig, ShardSet, Shuffle};
//! let set = ShardSet::open(&["shards".into()])?;
//! let mean = set.stats().mean_image(); // [S,S,3] f32, 0..255
//! let cfg = LoaderConfig { batch: 128, seed: 1, shuffle: Shuffle::Full, ..LoaderConfig::default() };
//! for epoch in 0..90 {
//!     let mut loader = Loader::epoch(&set, &cfg, epoch, 0);
//!     for batch in &mut loader {
//!         let batch = batch?; // batch.images: [B,S,S,3] u8, batch.labels: [B] i32
//!     }
//!     eprintln!("epoch {epoch}: waited {:?} for data", loader.wait_time());
//! }
//! # Ok::<(), alexnet::dataset::DatasetError>(())
//! ```

mod class_counts;
pub mod complete;
mod error;
mod inspect;
mod loader;
mod order;
pub mod resize;
mod schema;
mod shardset;
mod stats;

pub use complete::{Incomplete, InputsMeta};
pub use error::DatasetError;
pub use inspect::{inspect, InspectReport};
pub use loader::{part_of, read_rows, Batch, Loader, LoaderConfig, Shuffle};
pub use order::epoch_order;
pub(crate) use order::SplitMix64;
pub use resize::{Resize, RESIZE_KEY};
pub use schema::{
    arrow_schema, footer_key_values, footer_value, hf_features_json, parse_footer, record_batch,
    Encoding, FooterMeta, Reject, Row, FORMAT_VERSION, HF_KEY, INPUTS_KEY, MEAN_IMAGE_KEY,
    META_KEY, REJECTS_KEY,
};
pub use shardset::{RowGroupRef, ShardSet};
pub use stats::Stats;
