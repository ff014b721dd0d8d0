//! The features file contract (docs/outputs.md "Features files"): one row per image with
//! `source` utf8, `label` int32, `wnid` utf8 and `features` a fixed-size list of f32, zstd
//! Parquet that pyarrow, DuckDB and Polars read as is. The footer key `alexnet.features`
//! holds JSON saying which layer of which checkpoint made the vectors.
//!
//! Written under a hidden temporary name and renamed into place when complete, so a reader
//! never sees half a file.
use super::ExportError;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Footer key of the [`FeaturesMeta`] JSON.
pub const FEATURES_META_KEY: &str = "alexnet.features";
/// Name of the vector column.
pub const FEATURES_COLUMN: &str = "features";
/// Rows per row group: 4096 rows of 4096 floats is 64 MiB, a good unit for readers.
const ROW_GROUP_ROWS: usize = 4096;

/// Where a features file's vectors came from (the footer's `alexnet.features` JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeaturesMeta {
    /// The layer: `conv5`, `fc6`, `fc7` or `logits`.
    pub layer: String,
    /// Length of each vector.
    pub width: usize,
    /// The checkpoint, as given.
    pub checkpoint: String,
    /// The shard files, in row order, relative to the features file's directory (absolute
    /// where no relative path exists), so a features file moved together with its shards,
    /// or read from any directory, still finds them. Files written by older versions hold
    /// the paths as typed, relative to the directory the export ran in; readers fall back
    /// to those.
    pub data: Vec<String>,
    /// Side of the centre crop fed to the network.
    pub input_size: usize,
    /// Side S of the stored images.
    pub stored_size: usize,
    /// `checkpoint` when the checkpoint's mean image was subtracted, `data` for the fallback.
    pub mean_image: String,
}

impl FeaturesMeta {
    /// Records `shards` for a features file written at `features`, relative to its directory.
    pub fn set_shards(&mut self, features: &Path, shards: &[PathBuf]) {
        let dir = absolute(features)
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        self.data = shards
            .iter()
            .map(|p| {
                let p = absolute(p);
                pathdiff::diff_paths(&p, &dir)
                    .unwrap_or(p)
                    .display()
                    .to_string()
            })
            .collect();
    }

    /// The shard files of a features file read from `features`: each stored path resolved
    /// against the file's directory, or taken as it is when only that exists (files written
    /// before paths were stored relative to the features file).
    pub fn shard_paths(&self, features: &Path) -> Vec<PathBuf> {
        let dir = features.parent().unwrap_or(Path::new(""));
        self.data
            .iter()
            .map(|d| {
                let stored = PathBuf::from(d);
                let beside = dir.join(&stored);
                if !beside.exists() && stored.exists() {
                    stored
                } else {
                    beside
                }
            })
            .collect()
    }
}

/// `path` made absolute (symlinks resolved where it exists), without failing.
fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    // Not there yet (the features file being written): canonicalise its directory.
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::canonicalize(dir) {
            return d.join(name);
        }
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The Arrow schema of a features file with vectors of `width` floats.
pub fn features_schema(width: usize) -> Schema {
    Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("label", DataType::Int32, false),
        Field::new("wnid", DataType::Utf8, false),
        Field::new(
            FEATURES_COLUMN,
            DataType::FixedSizeList(item_field(), width as i32),
            false,
        ),
    ])
}

/// The list's item field, named as pyarrow names it. Not nullable: a vector never has holes,
/// and without definition levels per float the reader decodes the column markedly faster.
fn item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Float32, false))
}

/// A features file being written.
pub struct FeatureWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// The temporary's owner: removed on drop unless committed.
    temp: Option<crate::atomic::Temp>,
    width: usize,
    schema: Arc<Schema>,
    /// `None` once closed; a writer dropped while `Some` deletes its temporary.
    writer: Option<ArrowWriter<File>>,
    rows: usize,
}

impl Drop for FeatureWriter {
    fn drop(&mut self) {
        // Dropped before `finish` (an error mid-export): close the file; dropping the
        // temporary then removes it, leaving no half-written file behind.
        drop(self.writer.take());
        drop(self.temp.take());
    }
}

impl FeatureWriter {
    /// Starts `path` for vectors of `meta.width` floats.
    pub fn create(path: &Path, meta: &FeaturesMeta) -> Result<FeatureWriter, ExportError> {
        let (temp, file) = crate::atomic::Temp::file(path)?;
        let tmp = temp.path().to_path_buf();
        let vectors = ColumnPath::from(vec![
            FEATURES_COLUMN.to_string(),
            "list".to_string(),
            "item".to_string(),
        ]);
        // Serialising plain strings and numbers cannot fail; the fallback keeps us panic-free.
        let json = serde_json::to_string(meta).unwrap_or_default();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            // Floats never repeat and their min/max is of no use to a reader.
            .set_column_dictionary_enabled(vectors.clone(), false)
            .set_column_statistics_enabled(vectors, EnabledStatistics::None)
            .set_key_value_metadata(Some(vec![KeyValue::new(FEATURES_META_KEY.into(), json)]))
            .build();
        let schema = Arc::new(features_schema(meta.width));
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .map_err(|e| ExportError::parquet(&tmp, e))?;
        Ok(FeatureWriter {
            path: path.into(),
            tmp,
            temp: Some(temp),
            width: meta.width,
            schema,
            writer: Some(writer),
            rows: 0,
        })
    }

    /// Appends rows; `features` holds `labels.len()` vectors back to back.
    pub fn write(
        &mut self,
        sources: &[&str],
        labels: &[i32],
        wnids: &[&str],
        features: &[f32],
    ) -> Result<(), ExportError> {
        let n = labels.len();
        if sources.len() != n || wnids.len() != n || features.len() != n * self.width {
            return Err(ExportError::Mismatch(format!(
                "{}: {} sources, {} labels, {} wnids and {} floats do not make rows of width {} (a caller bug)",
                self.path.display(),
                sources.len(),
                n,
                wnids.len(),
                features.len(),
                self.width
            )));
        }
        let values = Arc::new(Float32Array::from(features.to_vec()));
        let list = FixedSizeListArray::try_new(item_field(), self.width as i32, values, None)
            .map_err(|e| ExportError::arrow(&self.tmp, e))?;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(sources)),
            Arc::new(Int32Array::from(labels.to_vec())),
            Arc::new(StringArray::from_iter_values(wnids)),
            Arc::new(list),
        ];
        let batch = RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| ExportError::arrow(&self.tmp, e))?;
        let writer = self.writer.as_mut().ok_or_else(|| {
            ExportError::Mismatch(format!(
                "{}: written after finish (a caller bug)",
                self.path.display()
            ))
        })?;
        writer
            .write(&batch)
            .map_err(|e| ExportError::parquet(&self.tmp, e))?;
        self.rows += n;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Closes the file and renames it into place.
    pub fn finish(mut self) -> Result<PathBuf, ExportError> {
        if let (Some(writer), Some(temp)) = (self.writer.take(), self.temp.take()) {
            let file = writer
                .into_inner()
                .map_err(|e| ExportError::parquet(&self.tmp, e))?;
            temp.commit(Some(file))?;
        }
        Ok(self.path.clone())
    }
}

/// A features file opened for reading: its names and labels in memory, vectors by row group.
pub struct FeatureFile {
    path: PathBuf,
    meta: ArrowReaderMetadata,
    /// Length of each vector.
    pub width: usize,
    /// `source` of every row.
    pub sources: Vec<String>,
    /// `wnid` of every row.
    pub wnids: Vec<String>,
    /// `label` of every row.
    pub labels: Vec<i32>,
    /// The footer's provenance, when the file has it (files written elsewhere may not).
    pub provenance: Option<FeaturesMeta>,
    /// Global index of each row group's first row, with the total row count at the end.
    group_starts: Vec<usize>,
}

impl FeatureFile {
    /// Opens `path` and reads every column but the vectors.
    pub fn open(path: &Path) -> Result<FeatureFile, ExportError> {
        let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
            .map_err(|e| ExportError::parquet(path, e))?;
        let bad = |column: &str, reason: &str| ExportError::BadColumn {
            path: path.into(),
            column: column.into(),
            reason: reason.into(),
        };
        let width = match meta
            .schema()
            .field_with_name(FEATURES_COLUMN)
            .map(|f| f.data_type().clone())
        {
            Ok(DataType::FixedSizeList(item, w)) if *item.data_type() == DataType::Float32 => {
                w.max(0) as usize
            }
            Ok(_) => return Err(bad(FEATURES_COLUMN, "is not a fixed-size list of float32")),
            Err(_) => return Err(bad(FEATURES_COLUMN, "is missing")),
        };
        let provenance = meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == FEATURES_META_KEY))
            .and_then(|e| e.value.as_deref())
            .and_then(|v| serde_json::from_str(v).ok());
        let mut group_starts = vec![0];
        for rg in meta.metadata().row_groups() {
            let last = group_starts[group_starts.len() - 1];
            group_starts.push(last + rg.num_rows().max(0) as usize);
        }
        let text = super::shard_columns::read_utf8_columns(path, &["source", "wnid"])?;
        let mut text = text.into_iter();
        let (sources, wnids) = (
            text.next().unwrap_or_default(),
            text.next().unwrap_or_default(),
        );
        let labels = read_labels(path, &meta)?;
        Ok(FeatureFile {
            path: path.into(),
            meta,
            width,
            sources,
            wnids,
            labels,
            provenance,
            group_starts,
        })
    }

    /// Rows in the file.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a file without rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of row groups.
    pub fn row_groups(&self) -> usize {
        self.group_starts.len() - 1
    }

    /// Global index of row group `g`'s first row.
    pub fn group_start(&self, g: usize) -> usize {
        self.group_starts[g]
    }

    /// The vectors of row group `g`, `[rows, width]` back to back.
    pub fn read_group(&self, g: usize) -> Result<Vec<f32>, ExportError> {
        let path = &self.path;
        let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
        let root = self
            .meta
            .schema()
            .index_of(FEATURES_COLUMN)
            .map_err(|e| ExportError::arrow(path, e))?;
        let mask = ProjectionMask::roots(self.meta.parquet_schema(), [root]);
        let rows = self.group_starts[g + 1] - self.group_starts[g];
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.meta.clone())
            .with_row_groups(vec![g])
            .with_projection(mask)
            .with_batch_size(rows.max(1))
            .build()
            .map_err(|e| ExportError::parquet(path, e))?;
        let mut out = Vec::with_capacity(rows * self.width);
        for batch in reader {
            let batch = batch.map_err(|e| ExportError::arrow(path, e))?;
            let list =
                batch
                    .column(0)
                    .as_fixed_size_list_opt()
                    .ok_or_else(|| ExportError::BadColumn {
                        path: path.clone(),
                        column: FEATURES_COLUMN.into(),
                        reason: "is not a fixed-size list".into(),
                    })?;
            if list.null_count() > 0 {
                return Err(ExportError::BadColumn {
                    path: path.clone(),
                    column: FEATURES_COLUMN.into(),
                    reason: "has null vectors".into(),
                });
            }
            let values = list
                .values()
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| ExportError::BadColumn {
                    path: path.clone(),
                    column: FEATURES_COLUMN.into(),
                    reason: "items are not float32".into(),
                })?;
            let start = list.value_offset_at(0);
            let n = batch.num_rows() * self.width;
            out.extend_from_slice(&values.values()[start..start + n]);
        }
        Ok(out)
    }

    /// The vector of one row.
    pub fn row(&self, row: usize) -> Result<Vec<f32>, ExportError> {
        if row >= self.len() {
            return Err(ExportError::QueryNotFound {
                path: self.path.clone(),
                query: row.to_string(),
                rows: self.len(),
            });
        }
        let g = self.group_starts.partition_point(|&s| s <= row) - 1;
        let data = self.read_group(g)?;
        let i = row - self.group_starts[g];
        Ok(data[i * self.width..(i + 1) * self.width].to_vec())
    }
}

fn read_labels(path: &Path, meta: &ArrowReaderMetadata) -> Result<Vec<i32>, ExportError> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let bad = |reason: &str| ExportError::BadColumn {
        path: path.into(),
        column: "label".into(),
        reason: reason.into(),
    };
    let root = meta
        .schema()
        .index_of("label")
        .map_err(|_| bad("is missing"))?;
    let mask = ProjectionMask::roots(meta.parquet_schema(), [root]);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
        .with_projection(mask)
        .with_batch_size(65536)
        .build()
        .map_err(|e| ExportError::parquet(path, e))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| ExportError::arrow(path, e))?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| bad("is not int32"))?;
        out.extend_from_slice(col.values());
    }
    Ok(out)
}
