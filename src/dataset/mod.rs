//! Reading shards: the schema and footer metadata (defined once, here, and used by `ingest`
//! to write), merged statistics, row-group access, shuffling and the background loader that
//! feeds training.
//!
//! A shard set is one `.parquet` file, a directory of `part-*.parquet` shards, or several of
//! either. Global row indices count rows across the files in the order [`ShardSet::files`]
//! lists them.

mod error;
mod inspect;
mod loader;
mod order;
mod schema;
mod shardset;
mod stats;

pub use error::DatasetError;
pub use inspect::{inspect, InspectReport};
pub use loader::{read_rows, Batch, Loader, LoaderConfig, Shuffle};
pub use order::epoch_order;
pub use schema::{
    arrow_schema, footer_key_values, footer_value, hf_features_json, parse_footer, record_batch,
    Encoding, FooterMeta, Reject, Row, FORMAT_VERSION, HF_KEY, INPUTS_KEY, MEAN_IMAGE_KEY,
    META_KEY, REJECTS_KEY,
};
pub use shardset::{RowGroupRef, ShardSet};
pub use stats::Stats;
