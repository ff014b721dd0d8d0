//! The text columns of shards (`source`, `wnid`) in global row order. The dataset layer reads
//! pixels and labels only; exports also need the names, so they read them here, column by
//! column, without touching the (large) image column.
use super::ExportError;
use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::path::{Path, PathBuf};

/// `source` and `wnid` of every row of `files`, in the order given (a
/// [`crate::dataset::ShardSet::files`] list gives global row order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardNames {
    /// Path of each image relative to the raw root.
    pub sources: Vec<String>,
    /// Class folder name of each image.
    pub wnids: Vec<String>,
}

/// Reads `source` and `wnid` from each of `files` in order.
pub fn read_shard_names(files: &[PathBuf]) -> Result<ShardNames, ExportError> {
    let mut out = ShardNames::default();
    for path in files {
        let cols = read_utf8_columns(path, &["source", "wnid"])?;
        let mut it = cols.into_iter();
        if let (Some(s), Some(w)) = (it.next(), it.next()) {
            out.sources.extend(s);
            out.wnids.extend(w);
        }
    }
    Ok(out)
}

/// Reads the named utf8 columns of one Parquet file, each as a vector of all its rows.
pub(crate) fn read_utf8_columns(
    path: &Path,
    names: &[&str],
) -> Result<Vec<Vec<String>>, ExportError> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| ExportError::parquet(path, e))?;
    let arrow = builder.schema().clone();
    let mut roots = Vec::with_capacity(names.len());
    for name in names {
        let i = arrow.index_of(name).map_err(|_| ExportError::BadColumn {
            path: path.into(),
            column: (*name).into(),
            reason: "is missing".into(),
        })?;
        roots.push(i);
    }
    // Top-level Arrow fields map one to one onto the Parquet schema's root columns.
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()
        .map_err(|e| ExportError::parquet(path, e))?;
    let mut out = vec![Vec::new(); names.len()];
    for batch in reader {
        let batch = batch.map_err(|e| ExportError::arrow(path, e))?;
        for (k, name) in names.iter().enumerate() {
            // The projected batch keeps the file's column order, so look up by name.
            let col = batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| ExportError::BadColumn {
                    path: path.into(),
                    column: (*name).into(),
                    reason: "is not utf8".into(),
                })?;
            out[k].extend((0..col.len()).map(|i| col.value(i).to_string()));
        }
    }
    Ok(out)
}
