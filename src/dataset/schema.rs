//! The shard contract, defined once: Arrow schema, the Hugging Face features entry, the
//! `alexnet` footer JSON and its companions, and conversion between rows and record batches.
use super::{DatasetError, Stats};
use arrow_array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray,
};
use arrow_schema::{DataType, Field, Fields, Schema};
use base64::Engine;
use parquet::file::metadata::KeyValue;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// The footer format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Footer key of the JSON metadata ([`FooterMeta`]).
pub const META_KEY: &str = "alexnet";
/// Footer key of the mean-image sums: base64 of little-endian u64, H,W,C, S·S·3 values.
pub const MEAN_IMAGE_KEY: &str = "alexnet.mean_image";
/// Footer key of the inputs rejected while writing this shard (JSON list of [`Reject`]);
/// kept in the shard so `--resume` can rebuild `rejects.jsonl` without redoing the shard.
pub const REJECTS_KEY: &str = "alexnet.rejects";
/// Footer key naming the slice of the sorted input list a shard was made from (JSON: first
/// and last `source`, number of inputs), so `--resume` can tell a shard of another run.
pub const INPUTS_KEY: &str = "alexnet.inputs";
/// Footer (and Arrow schema) key Hugging Face `datasets` reads its features from.
pub const HF_KEY: &str = "huggingface";

/// How the `image` column stores pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Binary of exactly S·S·3 bytes, RGB, H,W,C.
    Raw,
    /// Struct {bytes, path} with JPEG bytes (Hugging Face Image feature).
    Jpeg,
    /// Struct {bytes, path} with PNG bytes (Hugging Face Image feature).
    Png,
}

impl Encoding {
    /// The name used on the command line and in the footer.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Raw => "raw",
            Encoding::Jpeg => "jpeg",
            Encoding::Png => "png",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One image row as ingest writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Raw: S·S·3 RGB bytes; jpeg/png: the encoded file.
    pub image: Vec<u8>,
    /// Index into the class list.
    pub label: i32,
    /// Class folder name (WordNet id).
    pub wnid: String,
    /// Path relative to the raw root, `/`-separated.
    pub source: String,
    /// Upright width before resizing.
    pub orig_width: i32,
    /// Upright height before resizing.
    pub orig_height: i32,
}

/// One input that did not become a row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Path relative to the raw root.
    pub source: String,
    /// Why it was rejected.
    pub reason: String,
}

/// The `alexnet` footer JSON. Sums are exact; the f64 fields are derived from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FooterMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u64,
    /// Image side S.
    pub size: usize,
    /// Pixel storage.
    pub encoding: Encoding,
    /// WordNet ids in label order.
    pub classes: Vec<String>,
    /// Rows (images).
    pub count: u64,
    /// count·S·S.
    pub pixel_count: u64,
    /// Σ x over pixels.
    pub pixel_sum: [u64; 3],
    /// Σ x·xᵀ over pixels.
    pub pixel_outer_sum: [[u64; 3]; 3],
    /// Mean pixel.
    pub rgb_mean: [f64; 3],
    /// Population covariance.
    pub rgb_cov: [[f64; 3]; 3],
    /// Eigenvalues of `rgb_cov`, descending.
    pub pca_eigenvalues: [f64; 3],
    /// Row i: unit eigenvector i as [r,g,b].
    pub pca_eigenvectors: [[f64; 3]; 3],
}

impl FooterMeta {
    /// The footer JSON for `stats`.
    pub fn new(stats: &Stats, encoding: Encoding, classes: &[String]) -> Self {
        let (pca_eigenvalues, pca_eigenvectors) = stats.pca();
        Self {
            format_version: FORMAT_VERSION as u64,
            size: stats.size,
            encoding,
            classes: classes.to_vec(),
            count: stats.count,
            pixel_count: stats.pixel_count,
            pixel_sum: stats.pixel_sum,
            pixel_outer_sum: stats.pixel_outer_sum,
            rgb_mean: stats.rgb_mean(),
            rgb_cov: stats.rgb_cov(),
            pca_eigenvalues,
            pca_eigenvectors,
        }
    }
}

/// The Arrow schema of a shard, with the Hugging Face features entry in its metadata.
///
/// `datasets` applies the `huggingface` key to a field only when the field equals the
/// feature's own Arrow field, nullability and integer width included. So `label` is the
/// ClassLabel's field (int64, nullable, never null) in every encoding, and jpeg/png shards are
/// wholly the schema `datasets` writes for its `Image` feature (every field nullable). Raw
/// shards' other fields are non-nullable: plain values there, which `datasets` reads as such.
pub fn arrow_schema(encoding: Encoding, classes: &[String]) -> Schema {
    let (image, nullable) = match encoding {
        Encoding::Raw => (DataType::Binary, false),
        Encoding::Jpeg | Encoding::Png => (DataType::Struct(image_struct_fields()), true),
    };
    let fields = vec![
        Field::new("image", image, nullable),
        Field::new("label", DataType::Int64, true),
        Field::new("wnid", DataType::Utf8, nullable),
        Field::new("source", DataType::Utf8, nullable),
        Field::new("orig_width", DataType::Int32, nullable),
        Field::new("orig_height", DataType::Int32, nullable),
    ];
    let meta = HashMap::from([(HF_KEY.to_string(), hf_features_json(encoding, classes))]);
    Schema::new_with_metadata(fields, meta)
}

fn image_struct_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

/// The `huggingface` metadata: `image` as an Image feature (jpeg/png) or binary (raw), and
/// `label` as a ClassLabel named by the wnids.
pub fn hf_features_json(encoding: Encoding, classes: &[String]) -> String {
    let value = |dtype: &str| serde_json::json!({"dtype": dtype, "_type": "Value"});
    let image = match encoding {
        Encoding::Raw => value("binary"),
        Encoding::Jpeg | Encoding::Png => serde_json::json!({"_type": "Image"}),
    };
    serde_json::json!({"info": {"features": {
        "image": image,
        "label": {"names": classes, "_type": "ClassLabel"},
        "wnid": value("string"),
        "source": value("string"),
        "orig_width": value("int32"),
        "orig_height": value("int32"),
    }}})
    .to_string()
}

/// Builds the record batch of `rows`; `path` only names the output in errors.
pub fn record_batch(
    path: &Path,
    encoding: Encoding,
    classes: &[String],
    rows: &[Row],
) -> Result<RecordBatch, DatasetError> {
    let bytes = BinaryArray::from_iter_values(rows.iter().map(|r| r.image.as_slice()));
    let image: ArrayRef = match encoding {
        Encoding::Raw => Arc::new(bytes),
        Encoding::Jpeg | Encoding::Png => {
            // HF reads `path` only for its extension and as a name; the source path serves.
            let names = StringArray::from_iter_values(rows.iter().map(|r| r.source.as_str()));
            Arc::new(
                StructArray::try_new(
                    image_struct_fields(),
                    vec![Arc::new(bytes), Arc::new(names)],
                    None,
                )
                .map_err(|source| DatasetError::Arrow {
                    path: path.into(),
                    source,
                })?,
            )
        }
    };
    let label: ArrayRef = Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| i64::from(r.label)),
    ));
    let cols: Vec<ArrayRef> = vec![
        image,
        label,
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.wnid.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.source.as_str()),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.orig_width),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.orig_height),
        )),
    ];
    RecordBatch::try_new(Arc::new(arrow_schema(encoding, classes)), cols).map_err(|source| {
        DatasetError::Arrow {
            path: path.into(),
            source,
        }
    })
}

/// The image bytes of row `i` of an `image` column (raw binary, or the struct's `bytes`).
pub(crate) fn image_bytes<'a>(
    path: &Path,
    column: &'a dyn Array,
) -> Result<&'a BinaryArray, DatasetError> {
    let bad = |reason: &str| DatasetError::BadColumn {
        path: path.into(),
        column: "image".into(),
        reason: reason.into(),
    };
    if let Some(b) = column.as_any().downcast_ref::<BinaryArray>() {
        return Ok(b);
    }
    let s = column
        .as_any()
        .downcast_ref::<StructArray>()
        .ok_or_else(|| bad("neither binary nor struct {bytes, path}"))?;
    s.column_by_name("bytes")
        .and_then(|b| b.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| bad("struct has no binary `bytes` field"))
}

/// The values of a `label` column: int64 (what alexnet writes, and what `datasets` writes for a
/// ClassLabel) or int32 (raw shards from earlier versions of alexnet), without nulls and within
/// i32.
pub(crate) fn label_values(path: &Path, column: &dyn Array) -> Result<Vec<i32>, DatasetError> {
    let bad = |reason: String| DatasetError::BadColumn {
        path: path.into(),
        column: "label".into(),
        reason,
    };
    if column.null_count() > 0 {
        return Err(bad(format!(
            "has {} null labels; every row needs a class",
            column.null_count()
        )));
    }
    if let Some(a) = column.as_any().downcast_ref::<Int32Array>() {
        return Ok(a.values().to_vec());
    }
    let a = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| {
            bad(format!(
                "is {}, expected int32 or int64",
                column.data_type()
            ))
        })?;
    a.values()
        .iter()
        .map(|&v| i32::try_from(v).map_err(|_| bad(format!("value {v} is not a class index"))))
        .collect()
}

/// Footer key-value entries for a shard: the JSON, the mean-image sums, the rejects and the
/// Hugging Face features.
pub fn footer_key_values(
    stats: &Stats,
    encoding: Encoding,
    classes: &[String],
    rejects: &[Reject],
) -> Vec<KeyValue> {
    let meta = FooterMeta::new(stats, encoding, classes);
    // Serialising plain numbers and strings cannot fail; the fallback keeps us panic-free.
    let json = serde_json::to_string(&meta).unwrap_or_default();
    let mut le = Vec::with_capacity(stats.mean_image_sum.len() * 8);
    for v in &stats.mean_image_sum {
        le.extend_from_slice(&v.to_le_bytes());
    }
    let mean = base64::engine::general_purpose::STANDARD.encode(le);
    let rejects = serde_json::to_string(rejects).unwrap_or_default();
    vec![
        KeyValue::new(META_KEY.into(), json),
        KeyValue::new(MEAN_IMAGE_KEY.into(), mean),
        KeyValue::new(REJECTS_KEY.into(), rejects),
        // Also in the Arrow schema; a plain footer key lets non-Arrow readers find it too.
        KeyValue::new(HF_KEY.into(), hf_features_json(encoding, classes)),
    ]
}

/// The value of footer entry `key` among `kv`, if present.
pub(crate) fn footer_entry<'a>(kv: Option<&'a Vec<KeyValue>>, key: &str) -> Option<&'a str> {
    kv.and_then(|kv| kv.iter().find(|e| e.key == key))
        .and_then(|e| e.value.as_deref())
}

/// The raw value of footer key `key` of the shard at `path`, if present.
pub fn footer_value(path: &Path, key: &str) -> Result<Option<String>, DatasetError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| DatasetError::parquet(path, e))?;
    Ok(reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|e| e.key == key))
        .and_then(|e| e.value.clone()))
}

/// Parses a shard's footer into its metadata, exact statistics and rejects. Rejects an
/// unknown `format_version`, naming `path`.
pub fn parse_footer(
    path: &Path,
    kv: Option<&Vec<KeyValue>>,
) -> Result<(FooterMeta, Stats, Vec<Reject>), DatasetError> {
    let bad = |reason: String| DatasetError::BadMetadata {
        path: path.into(),
        reason,
    };
    let get = |key: &str| footer_entry(kv, key);
    let json = get(META_KEY).ok_or_else(|| bad(format!("no `{META_KEY}` key")))?;
    // Check the version before the full parse, so a future layout still gets the right error.
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("`{META_KEY}` is not JSON: {e}")))?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad("no numeric format_version".into()))?;
    if version != FORMAT_VERSION as u64 {
        return Err(DatasetError::UnknownVersion {
            path: path.into(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let meta: FooterMeta =
        serde_json::from_value(value).map_err(|e| bad(format!("`{META_KEY}`: {e}")))?;
    let b64 = get(MEAN_IMAGE_KEY).ok_or_else(|| bad(format!("no `{MEAN_IMAGE_KEY}` key")))?;
    let le = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| bad(format!("`{MEAN_IMAGE_KEY}` is not base64: {e}")))?;
    let want = meta.size * meta.size * 3;
    if le.len() != want * 8 {
        return Err(bad(format!(
            "`{MEAN_IMAGE_KEY}` holds {} bytes, expected {} (S·S·3 u64)",
            le.len(),
            want * 8
        )));
    }
    let mean_image_sum = le
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let rejects = match get(REJECTS_KEY) {
        Some(s) => serde_json::from_str(s).map_err(|e| bad(format!("`{REJECTS_KEY}`: {e}")))?,
        None => Vec::new(),
    };
    let stats = Stats {
        size: meta.size,
        count: meta.count,
        pixel_count: meta.pixel_count,
        pixel_sum: meta.pixel_sum,
        pixel_outer_sum: meta.pixel_outer_sum,
        mean_image_sum,
    };
    Ok((meta, stats, rejects))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_rejects_future_versions() {
        let mut stats = Stats::new(2);
        stats.add_image(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 250]);
        let classes = vec!["n1".to_string(), "n2".to_string()];
        let rejects = vec![Reject {
            source: "a/b.JPEG".into(),
            reason: "zero bytes".into(),
        }];
        let mut kv = footer_key_values(&stats, Encoding::Png, &classes, &rejects);
        let (meta, back, rj) = parse_footer(Path::new("x.parquet"), Some(&kv)).unwrap();
        assert_eq!(back, stats);
        assert_eq!(rj, rejects);
        assert_eq!(meta.classes, classes);
        assert_eq!(meta.encoding, Encoding::Png);
        kv[0].value = Some(
            kv[0]
                .value
                .clone()
                .unwrap()
                .replace("\"format_version\":1", "\"format_version\":99"),
        );
        let err = parse_footer(Path::new("x.parquet"), Some(&kv)).unwrap_err();
        assert!(err.to_string().contains("x.parquet") && err.to_string().contains("99"));
    }

    #[test]
    fn image_shards_follow_hugging_face_and_raw_shards_keep_their_contract() {
        let classes = vec!["n1".to_string()];
        let raw = arrow_schema(Encoding::Raw, &classes);
        let class_label = Field::new("label", DataType::Int64, true);
        // Every encoding's label is the ClassLabel's own field, so `datasets` names classes.
        assert_eq!(raw.field(1), &class_label);
        assert!(raw
            .fields()
            .iter()
            .filter(|f| f.name() != "label")
            .all(|f| !f.is_nullable()));
        for enc in [Encoding::Raw, Encoding::Jpeg, Encoding::Png] {
            let s = arrow_schema(enc, &classes);
            assert_eq!(s.field(1), &class_label, "{enc}");
            if enc != Encoding::Raw {
                // What `datasets.Features({"image": Image(), "label": ClassLabel(...)})` writes.
                assert!(s.fields().iter().all(|f| f.is_nullable()), "{enc}");
                assert_eq!(
                    s.field(0).data_type(),
                    &DataType::Struct(image_struct_fields())
                );
            }
            let row = Row {
                image: vec![1, 2, 3],
                label: 3,
                wnid: "n1".into(),
                source: "n1/a.png".into(),
                orig_width: 4,
                orig_height: 5,
            };
            let b = record_batch(Path::new("x"), enc, &classes, &[row]).unwrap();
            assert_eq!(b.column(1).data_type(), &DataType::Int64, "{enc}");
            assert_eq!(label_values(Path::new("x"), b.column(1)).unwrap(), [3]);
        }
        let p = Path::new("s.parquet");
        let wide = Int64Array::from(vec![0, 3, 7]);
        assert_eq!(label_values(p, &wide).unwrap(), [0, 3, 7]);
        assert_eq!(
            label_values(p, &Int32Array::from(vec![2, 1])).unwrap(),
            [2, 1]
        );
        let e = label_values(p, &Int64Array::from(vec![Some(1), None]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.parquet") && e.contains("null"), "{e}");
        let e = label_values(p, &Int64Array::from(vec![1i64 << 40]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a class index"), "{e}");
        let e = label_values(p, &StringArray::from(vec!["a"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("int32 or int64"), "{e}");
    }
}
