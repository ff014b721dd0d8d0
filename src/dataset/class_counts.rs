//! Images per class of a shard set, from the `label` column alone (the image column is never
//! read), so `train` can say which classes the rejects left empty before it spends an epoch.
use super::schema::label_values;
use super::{DatasetError, ShardSet};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::fs::File;

impl ShardSet {
    /// How many rows each class holds, indexed by label. A label outside the class list is
    /// left to the loader, which names its file and row.
    pub fn class_counts(&self) -> Result<Vec<u64>, DatasetError> {
        let mut counts = vec![0u64; self.classes().len()];
        for path in self.files() {
            let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| DatasetError::parquet(path, e))?;
            let at = builder
                .schema()
                .index_of("label")
                .map_err(|_| DatasetError::BadColumn {
                    path: path.clone(),
                    column: "label".into(),
                    reason: "is missing".into(),
                })?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), [at]);
            let reader = builder
                .with_projection(mask)
                .with_batch_size(1 << 16)
                .build()
                .map_err(|e| DatasetError::parquet(path, e))?;
            for batch in reader {
                let batch = batch.map_err(|source| DatasetError::Arrow {
                    path: path.clone(),
                    source,
                })?;
                for l in label_values(path, batch.column(0).as_ref())? {
                    if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
                        *c += 1;
                    }
                }
            }
        }
        Ok(counts)
    }
}
