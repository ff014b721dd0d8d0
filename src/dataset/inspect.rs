//! `alexnet inspect`: what a shard set holds, as text or as the merged footer JSON.
use super::{DatasetError, FooterMeta, ShardSet};
use std::path::PathBuf;

/// A summary of a shard set.
pub struct InspectReport {
    /// The opened set.
    pub set: ShardSet,
}

impl InspectReport {
    /// The merged statistics in the footer's field names.
    pub fn json(&self) -> String {
        let meta = FooterMeta::new(self.set.stats(), self.set.encoding(), self.set.classes());
        let mut v = serde_json::to_value(&meta).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("files".into(), self.set.files().len().into());
            o.insert("rejects".into(), self.set.rejects().len().into());
            o.insert("bytes_on_disk".into(), self.set.bytes_on_disk().into());
            let gaps: Vec<serde_json::Value> = self
                .set
                .incomplete()
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "dir": g.dir.display().to_string(),
                        "inputs": g.inputs,
                        "total_inputs": g.total,
                        "shards": g.shards,
                        "planned_shards": g.planned,
                    })
                })
                .collect();
            o.insert("incomplete".into(), gaps.into());
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// Human-readable lines.
    pub fn text(&self) -> String {
        let s = &self.set;
        let st = s.stats();
        let (vals, vecs) = st.pca();
        let classes = s.classes();
        let shown: Vec<&str> = classes.iter().take(5).map(|c| c.as_str()).collect();
        let more = if classes.len() > 5 { ", …" } else { "" };
        let f3 = |v: [f64; 3]| format!("[{:.3}, {:.3}, {:.3}]", v[0], v[1], v[2]);
        let mut out = String::new();
        for gap in s.incomplete() {
            out += &format!(
                "{gap}; finish it with alexnet ingest --resume (train refuses it without --allow-incomplete)\n"
            );
        }
        out += &format!("files:        {}\n", s.files().len());
        out += &format!("images:       {}\n", s.len());
        out += &format!("rejects:      {}\n", s.rejects().len());
        out += &format!(
            "classes:      {} ({}{more})\n",
            classes.len(),
            shown.join(", ")
        );
        out += &format!("size:         {0}×{0}\n", s.size());
        out += &format!("encoding:     {}\n", s.encoding());
        out += &format!("row groups:   {}\n", s.row_groups().len());
        out += &format!(
            "bytes:        {} ({:.1} MiB)\n",
            s.bytes_on_disk(),
            s.bytes_on_disk() as f64 / (1024.0 * 1024.0)
        );
        out += &format!("rgb_mean:     {}\n", f3(st.rgb_mean()));
        let cov = st.rgb_cov();
        out += &format!("rgb_cov:      {}\n", cov.map(f3).join(" "));
        out += &format!("pca values:   {}\n", f3(vals));
        out += &format!("pca vectors:  {}\n", vecs.map(f3).join(" "));
        out
    }
}

/// Opens `paths` as one shard set for inspection.
pub fn inspect(paths: &[PathBuf]) -> Result<InspectReport, DatasetError> {
    Ok(InspectReport {
        set: ShardSet::open(paths)?,
    })
}
