//! Whether a folder of shards holds everything its ingest planned.
//!
//! Each shard's [`INPUTS_KEY`](super::INPUTS_KEY) footer entry says which slice of the sorted
//! input list it was made from ([`InputsMeta`]): its shard number, how many shards the ingest
//! planned and how many inputs it had in all. Shards only appear when complete (temporary
//! name, then rename), so a folder is complete exactly when every planned shard number is
//! present; a folder missing some (a killed ingest, a `--shard I/N` part still running)
//! reports how many inputs its shards cover. Shards written before these fields existed say
//! nothing, and nothing is claimed about them.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The [`INPUTS_KEY`](super::INPUTS_KEY) footer JSON of a shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputsMeta {
    /// `source` of the first input of the slice.
    pub first: Option<String>,
    /// `source` of the last input of the slice.
    pub last: Option<String>,
    /// Inputs in the slice (rows plus rejects).
    pub inputs: usize,
    /// Inputs of the whole ingest, every shard and every `--shard` part together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
    /// This shard's number k (`part-k`; 0 for a single-file output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<usize>,
    /// Shards the ingest planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<usize>,
    /// The row order the ingest used (`--order shuffled --seed 42`, `--order sorted`): the
    /// `--shard I/N` parts of one folder must agree on it, or their slices overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

impl InputsMeta {
    /// The footer value.
    pub fn to_json(&self) -> String {
        // Strings and integers only: serialisation cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a footer value; `None` when it is not this JSON.
    pub fn parse(text: &str) -> Option<InputsMeta> {
        serde_json::from_str(text).ok()
    }

    /// True when both describe the same slice of the same input list. Fields a shard of an
    /// older version lacks are not compared.
    pub fn same_slice(&self, other: &InputsMeta) -> bool {
        let opt = |a: Option<usize>, b: Option<usize>| a.is_none() || b.is_none() || a == b;
        self.first == other.first
            && self.last == other.last
            && self.inputs == other.inputs
            && opt(self.total, other.total)
            && opt(self.shard, other.shard)
            && opt(self.shards, other.shards)
            && (self.order.is_none() || other.order.is_none() || self.order == other.order)
    }

    /// How two shards of one folder disagree on the ingest that made them (row order, size
    /// of the input list, planned shards), in words; `None` when they agree or cannot tell.
    pub fn same_ingest(&self, other: &InputsMeta) -> Option<String> {
        if let (Some(a), Some(b)) = (&self.order, &other.order) {
            if a != b {
                return Some(format!("row order (`{a}` vs `{b}`)"));
            }
        }
        if let (Some(a), Some(b)) = (self.total, other.total) {
            if a != b {
                return Some(format!("inputs ({a} vs {b} in all: another RAW or labels)"));
            }
        }
        if let (Some(a), Some(b)) = (self.shards, other.shards) {
            if a != b {
                return Some(format!("planned shards ({a} vs {b}: another --shard-rows)"));
            }
        }
        None
    }
}

/// A folder of shards that lacks some of the shards its ingest planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// The folder.
    pub dir: PathBuf,
    /// Inputs the present shards cover.
    pub inputs: usize,
    /// Inputs of the whole ingest.
    pub total: usize,
    /// Shards present.
    pub shards: usize,
    /// Shards planned.
    pub planned: usize,
    /// The first missing shard number.
    pub first_missing: usize,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: incomplete: {} of {} inputs ({} of {} shards; part-{:05}.parquet is missing)",
            self.dir.display(),
            self.inputs,
            self.total,
            self.shards,
            self.planned,
            self.first_missing
        )
    }
}

/// Checks the shards found in `dir`, each with its parsed footer entry (`None` when absent
/// or unreadable). Returns the gap, or `None` when complete or when the shards do not say.
pub fn check_folder(dir: &Path, shards: &[Option<InputsMeta>]) -> Option<Incomplete> {
    let mut by_number = BTreeMap::new();
    let mut plan = None;
    for m in shards {
        let m = m.as_ref()?;
        let (total, k, planned) = (m.total?, m.shard?, m.shards?);
        match plan {
            None => plan = Some((total, planned)),
            // Shards of two different ingests: ingest refuses to write such a folder, so
            // leave the judgement to the other checks (classes, sizes).
            Some(p) if p != (total, planned) => return None,
            Some(_) => {}
        }
        by_number.insert(k, m.inputs);
    }
    let (total, planned) = plan?;
    let first_missing = (0..planned).find(|k| !by_number.contains_key(k))?;
    Some(Incomplete {
        dir: dir.to_path_buf(),
        inputs: by_number.values().sum(),
        total,
        shards: by_number.len(),
        planned,
        first_missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(k: usize, inputs: usize) -> Option<InputsMeta> {
        Some(InputsMeta {
            first: Some(format!("a/{k}.jpg")),
            last: Some(format!("b/{k}.jpg")),
            inputs,
            total: Some(25),
            shard: Some(k),
            shards: Some(3),
            order: None,
        })
    }

    #[test]
    fn a_missing_shard_is_reported_with_the_inputs_present() {
        let dir = Path::new("shards");
        assert_eq!(
            check_folder(dir, &[meta(0, 10), meta(1, 10), meta(2, 5)]),
            None
        );
        let gap = check_folder(dir, &[meta(0, 10), meta(2, 5)]).unwrap();
        assert_eq!((gap.inputs, gap.total, gap.first_missing), (15, 25, 1));
        assert!(
            gap.to_string().contains("incomplete: 15 of 25 inputs"),
            "{gap}"
        );
        // An older shard without the fields: nothing can be said.
        let mut old = meta(1, 10).unwrap();
        old.total = None;
        assert_eq!(check_folder(dir, &[meta(0, 10), Some(old.clone())]), None);
        assert!(old.same_slice(&meta(1, 10).unwrap()));
        assert!(!meta(1, 9).unwrap().same_slice(&meta(1, 10).unwrap()));
        let json = meta(2, 5).unwrap().to_json();
        assert_eq!(InputsMeta::parse(&json), meta(2, 5));
        // The version-1 footer (three fields) still parses.
        let v1 = InputsMeta::parse(r#"{"first":"a","inputs":3,"last":"b"}"#).unwrap();
        assert_eq!((v1.inputs, v1.total), (3, None));
    }
}
