//! Writing one shard: rows into row groups sized by a byte budget, statistics and rejects
//! into the footer, under the project's one writer's temporary (`crate::atomic`), renamed
//! into place only when complete.
//! A writer dropped before [`ShardWriter::finish`] (a full disk, an error elsewhere, a
//! shard `--strict` discards) deletes its temporary, so a failed run leaves nothing behind.
use super::IngestError;
use crate::atomic::Temp;
use crate::dataset::{
    arrow_schema, footer_key_values, record_batch, Encoding, Reject, Row, Stats, INPUTS_KEY,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A shard being written.
pub struct ShardWriter {
    tmp_path: PathBuf,
    /// `None` once closed; a writer dropped while `Some` deletes its temporary.
    writer: Option<ArrowWriter<File>>,
    /// The temporary, removed on drop unless committed.
    temp: Option<Temp>,
    encoding: Encoding,
    classes: Vec<String>,
    pending: Vec<Row>,
    pending_bytes: usize,
    budget: usize,
    stats: Stats,
    rejects: Vec<Reject>,
}

impl ShardWriter {
    /// Starts `final_path` (written under a temporary); row groups close once their image
    /// bytes reach `row_group_bytes`. `inputs` goes to the footer under [`INPUTS_KEY`].
    pub fn create(
        final_path: &Path,
        encoding: Encoding,
        classes: &[String],
        size: usize,
        row_group_bytes: usize,
        inputs: &str,
    ) -> Result<Self, IngestError> {
        let (temp, file) = Temp::file(final_path)?;
        let tmp_path = temp.path().to_path_buf();
        let image_cols = [
            ColumnPath::from("image"),
            ColumnPath::from(vec!["image".to_string(), "bytes".to_string()]),
        ];
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            // Row groups are cut by our byte budget, not by row count.
            .set_max_row_group_row_count(None);
        for c in image_cols {
            // Pixels never repeat and min/max of image bytes is meaningless.
            props = props
                .set_column_dictionary_enabled(c.clone(), false)
                .set_column_statistics_enabled(c, EnabledStatistics::None);
        }
        let schema = Arc::new(arrow_schema(encoding, classes));
        let mut writer = match ArrowWriter::try_new(file, schema, Some(props.build())) {
            Ok(w) => w,
            Err(source) => {
                return Err(IngestError::Parquet {
                    path: tmp_path,
                    source,
                });
            }
        };
        writer.append_key_value_metadata(KeyValue::new(INPUTS_KEY.into(), inputs.to_string()));
        Ok(Self {
            tmp_path,
            writer: Some(writer),
            temp: Some(temp),
            encoding,
            classes: classes.to_vec(),
            pending: Vec::new(),
            pending_bytes: 0,
            budget: row_group_bytes.max(1),
            stats: Stats::new(size),
            rejects: Vec::new(),
        })
    }

    /// Adds the footer entry `key` = `value` (written with the footer at [`ShardWriter::finish`]).
    pub fn add_footer_entry(&mut self, key: &str, value: &str) {
        if let Some(w) = self.writer.as_mut() {
            w.append_key_value_metadata(KeyValue::new(key.into(), value.to_string()));
        }
    }

    /// Adds a row; `pixels` are its stored pixels as a reader will decode them.
    pub fn push(&mut self, row: Row, pixels: Option<&[u8]>) -> Result<(), IngestError> {
        self.stats.add_image(pixels.unwrap_or(&row.image));
        self.pending_bytes += row.image.len();
        self.pending.push(row);
        if self.pending_bytes >= self.budget {
            self.flush_group()?;
        }
        Ok(())
    }

    /// Records an input that did not become a row.
    pub fn reject(&mut self, reject: Reject) {
        self.rejects.push(reject);
    }

    fn flush_group(&mut self) -> Result<(), IngestError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = record_batch(&self.tmp_path, self.encoding, &self.classes, &self.pending)?;
        let perr = |source| IngestError::Parquet {
            path: self.tmp_path.clone(),
            source,
        };
        let writer = self.writer.as_mut().ok_or_else(|| {
            IngestError::Config(format!(
                "{}: written after finish (a bug)",
                self.tmp_path.display()
            ))
        })?;
        writer.write(&batch).map_err(perr)?;
        writer.flush().map_err(perr)?;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// Rejects recorded so far.
    pub fn rejects(&self) -> &[Reject] {
        &self.rejects
    }

    /// Writes the footer, syncs, and renames the shard into place. Returns its row count
    /// and rejects.
    pub fn finish(mut self) -> Result<(u64, Vec<Reject>), IngestError> {
        self.flush_group()?;
        let Some(mut writer) = self.writer.take() else {
            return Err(IngestError::Config(format!(
                "{}: finished twice (a bug)",
                self.tmp_path.display()
            )));
        };
        for kv in footer_key_values(&self.stats, self.encoding, &self.classes, &self.rejects) {
            writer.append_key_value_metadata(kv);
        }
        let tmp = self.tmp_path.clone();
        let file = writer.into_inner().map_err(|source| IngestError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        if let Some(temp) = self.temp.take() {
            // Synced before the rename, so the rename never becomes visible before the data.
            temp.commit(Some(file))?;
        }
        Ok((self.stats.count, std::mem::take(&mut self.rejects)))
    }

    /// Gives the shard up: its temporary is deleted and nothing is renamed into place.
    /// Returns its row count and rejects, for the summary.
    pub fn discard(mut self) -> (u64, Vec<Reject>) {
        (self.stats.count, std::mem::take(&mut self.rejects))
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // Close the file before its temporary is deleted; its contents no longer matter.
        drop(self.writer.take());
        drop(self.temp.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_given_up_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-00000.parquet");
        let classes = vec!["a".to_string()];
        let mut w = ShardWriter::create(&path, Encoding::Raw, &classes, 2, 1 << 20, "{}").unwrap();
        assert!(w.tmp_path.exists());
        w.push(
            Row {
                image: (0..12).collect(),
                label: 0,
                wnid: "a".into(),
                source: "a/x.png".into(),
                orig_width: 2,
                orig_height: 2,
            },
            None,
        )
        .unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let w = ShardWriter::create(&path, Encoding::Raw, &classes, 2, 1 << 20, "{}").unwrap();
        assert_eq!(w.discard().0, 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
