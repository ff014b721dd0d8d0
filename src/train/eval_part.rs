//! One part of a split evaluation (`alexnet eval --shard I/N --out PART`) and the merge of
//! the parts (`alexnet eval --merge PART…`), docs/job-arrays.md. A part holds counts, not
//! rates, so the merge adds them up to the whole set's score, and it holds what identifies
//! the checkpoints, the data and the views, so that parts that do not belong together are
//! refused instead of averaged.
use super::ensemble::{Ensemble, EnsembleReport, MemberResult};
use super::eval::{EvalCounts, View};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `format` field of every part file.
pub const PART_FORMAT: &str = "alexnet-eval-part";
/// The layout version of part files this build reads and writes.
pub const PART_VERSION: u32 = 1;

/// What can go wrong reading or merging parts; every message names the part file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalPartError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not a part, or a damaged one.
    #[error("{}: not an `eval --shard` part ({reason}); pass the files `alexnet eval --shard I/N --out PART` wrote", path.display())]
    NotAPart {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The parts do not make one whole evaluation.
    #[error("{0}")]
    Mismatch(String),
}

/// A checkpoint as a part names it: where it was read, and a digest of its bytes (what the
/// merge compares: the path may differ between machines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointId {
    /// The path the part was given.
    pub path: PathBuf,
    /// FNV-1a of the file's bytes, hexadecimal.
    pub digest: String,
}

impl CheckpointId {
    /// Reads `path` through once for its digest.
    pub fn of(path: &Path) -> Result<CheckpointId, EvalPartError> {
        let io = |source| EvalPartError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut h = crate::digest::fnv1a(b"");
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            h = crate::digest::fnv1a_update(h, &buf[..n]);
        }
        Ok(CheckpointId {
            path: path.to_path_buf(),
            digest: format!("{h:016x}"),
        })
    }
}

/// What every part of one evaluation must share.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartOf {
    /// `centre` or `ten-crop`.
    pub view: String,
    /// Rows in the whole set.
    pub data_rows: usize,
    /// A digest of the set's content (`ensemble::set_digest`).
    pub data_digest: String,
    /// The checkpoints, in the order given (an ensemble's members).
    pub checkpoints: Vec<CheckpointId>,
}

/// One part's file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPart {
    /// Always [`PART_FORMAT`].
    pub format: String,
    /// [`PART_VERSION`].
    pub version: u32,
    /// I of `--shard I/N`, from 0.
    pub part: usize,
    /// N.
    pub parts: usize,
    /// The rows scored, `[first, end)` in the set's file order.
    pub rows: [usize; 2],
    /// What the parts share.
    pub of: PartOf,
    /// The ensemble's counts (the one network's, for one checkpoint).
    pub ensemble: EvalCounts,
    /// Each checkpoint's own counts, in the order of `of.checkpoints`.
    pub members: Vec<EvalCounts>,
}

/// The spelling of a view in part files.
fn view_name(view: View) -> &'static str {
    match view {
        View::Centre => "centre",
        View::TenCrop => "ten-crop",
    }
}

impl EvalPart {
    /// Part `part` of `parts` from an evaluation of those rows.
    pub fn new(
        e: &Ensemble,
        (part, parts): (usize, usize),
        view: View,
        checkpoints: Vec<CheckpointId>,
    ) -> EvalPart {
        EvalPart {
            format: PART_FORMAT.into(),
            version: PART_VERSION,
            part,
            parts,
            rows: [e.rows.start, e.rows.end],
            of: PartOf {
                view: view_name(view).into(),
                data_rows: e.data_rows,
                data_digest: e.data_digest.clone(),
                checkpoints,
            },
            ensemble: e.counts,
            members: e.member_counts.clone(),
        }
    }

    /// Reads a part file, refusing anything else.
    pub fn read(path: &Path) -> Result<EvalPart, EvalPartError> {
        let text = std::fs::read_to_string(path).map_err(|source| EvalPartError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let not = |reason: String| EvalPartError::NotAPart {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| not(format!("not JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(PART_FORMAT) => {}
            _ => return Err(not(format!("no `format: {PART_FORMAT}`"))),
        }
        let version = value.get("version").and_then(|v| v.as_u64());
        if version != Some(u64::from(PART_VERSION)) {
            return Err(not(format!(
                "version {version:?}; this build reads version {PART_VERSION}: make the parts with the same alexnet"
            )));
        }
        let part: EvalPart = serde_json::from_value(value).map_err(|e| not(e.to_string()))?;
        if part.members.len() != part.of.checkpoints.len() || part.rows[0] > part.rows[1] {
            return Err(not("its counts do not fit its checkpoints or rows".into()));
        }
        Ok(part)
    }
}

/// The whole evaluation from its parts: every part I of N once, all of one evaluation (the
/// same checkpoints by content, data, view and N), their rows covering the set end to end.
/// Returns the report `eval` prints for the whole set, with the members' paths as the first
/// part names them.
pub fn merge_parts(parts: &[(PathBuf, EvalPart)]) -> Result<EnsembleReport, EvalPartError> {
    let Some((first_path, first)) = parts.first() else {
        return Err(EvalPartError::Mismatch(
            "eval --merge: no parts given; pass every PART that `eval --shard I/N --out PART` wrote".into(),
        ));
    };
    let n = first.parts;
    let missing = |given: &[usize]| -> EvalPartError {
        // At most a screenful of names: a damaged file could make N absurd.
        let names: Vec<String> = (0..n)
            .filter(|i| !given.contains(i))
            .take(16)
            .map(|i| format!("{i}/{n}"))
            .collect();
        EvalPartError::Mismatch(format!(
            "eval --merge: {} of the {n} parts given; part(s) {}{} missing; run `alexnet eval --shard I/N --out PART` for them and pass every part",
            parts.len(),
            names.join(", "),
            if n - given.len() > names.len() { ", …" } else { "" }
        ))
    };
    if n > parts.len() {
        // Before anything is sized by N.
        let given: Vec<usize> = parts.iter().map(|(_, p)| p.part).collect();
        return Err(missing(&given));
    }
    let mut by_index: Vec<Option<&Path>> = vec![None; n];
    for (path, p) in parts {
        let differs = |what: &str| {
            EvalPartError::Mismatch(format!(
                "{} and {}: the parts are of different evaluations ({what}); merge only the parts of one `eval --shard I/N` run",
                first_path.display(),
                path.display()
            ))
        };
        if p.parts != n {
            return Err(differs(&format!(
                "{}/{} against {}/{}",
                p.part, p.parts, first.part, n
            )));
        }
        if p.of.view != first.of.view {
            return Err(differs(&format!(
                "views {} and {}",
                first.of.view, p.of.view
            )));
        }
        if p.of.data_rows != first.of.data_rows || p.of.data_digest != first.of.data_digest {
            return Err(differs("other data"));
        }
        let digests = |q: &EvalPart| -> Vec<String> {
            q.of.checkpoints.iter().map(|c| c.digest.clone()).collect()
        };
        if digests(p) != digests(first) {
            return Err(differs("other checkpoints"));
        }
        let want = crate::dataset::part_of(p.of.data_rows, p.part, n);
        if p.part >= n || p.rows != [want.start, want.end] {
            return Err(EvalPartError::NotAPart {
                path: path.clone(),
                reason: format!(
                    "part {}/{n} holds rows {}..{}, not its share of the {} rows",
                    p.part, p.rows[0], p.rows[1], p.of.data_rows
                ),
            });
        }
        if let Some(other) = by_index[p.part].replace(path) {
            return Err(EvalPartError::Mismatch(format!(
                "part {}/{n} given twice: {} and {}; pass each part once",
                p.part,
                other.display(),
                path.display()
            )));
        }
    }
    if by_index.iter().any(Option::is_none) {
        let given: Vec<usize> = (0..n).filter(|&i| by_index[i].is_some()).collect();
        return Err(missing(&given));
    }
    let sum = |pick: &dyn Fn(&EvalPart) -> EvalCounts| {
        parts
            .iter()
            .fold(EvalCounts::default(), |acc, (_, p)| acc.merge(&pick(p)))
    };
    let members = first
        .of
        .checkpoints
        .iter()
        .enumerate()
        .map(|(m, c)| MemberResult {
            checkpoint: c.path.clone(),
            result: sum(&|p| p.members[m]).result(),
        })
        .collect();
    Ok(EnsembleReport {
        ensemble: sum(&|p| p.ensemble).result(),
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(i: usize, n: usize, rows: usize, top1: u64) -> (PathBuf, EvalPart) {
        let r = crate::dataset::part_of(rows, i, n);
        let counts = EvalCounts {
            count: r.len() as u64,
            loss_sum: 0.5 * r.len() as f64,
            top1,
            top5: r.len() as u64,
            non_finite: 0,
        };
        let p = EvalPart {
            format: PART_FORMAT.into(),
            version: PART_VERSION,
            part: i,
            parts: n,
            rows: [r.start, r.end],
            of: PartOf {
                view: "centre".into(),
                data_rows: rows,
                data_digest: "d".into(),
                checkpoints: vec![CheckpointId {
                    path: "a.safetensors".into(),
                    digest: "c".into(),
                }],
            },
            ensemble: counts,
            members: vec![counts],
        };
        (PathBuf::from(format!("p{i}.json")), p)
    }

    #[test]
    fn parts_in_any_order_sum_to_the_whole_and_bad_sets_are_refused() {
        let parts = vec![part(2, 3, 10, 1), part(0, 3, 10, 2), part(1, 3, 10, 0)];
        let r = merge_parts(&parts).unwrap();
        assert_eq!(r.ensemble.count, 10);
        assert!((r.ensemble.top1_accuracy - 0.3).abs() < 1e-12);
        assert!((r.ensemble.loss - 0.5).abs() < 1e-12);
        assert_eq!(r.members[0].checkpoint, PathBuf::from("a.safetensors"));
        let e = merge_parts(&parts[..2]).unwrap_err().to_string();
        assert!(
            e.contains("2 of the 3 parts given; part(s) 1/3 missing"),
            "{e}"
        );
        let mut gap = parts.clone();
        gap[2] = part(0, 3, 10, 2);
        gap[2].0 = "again.json".into();
        gap.push(part(2, 3, 10, 1));
        let e = merge_parts(&gap[1..]).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        let e = merge_parts(&[parts[0].clone(), parts[2].clone(), parts[2].clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1/3 given twice"), "{e}");
        let mut dup = parts.clone();
        dup[2] = part(0, 3, 10, 2);
        let e = merge_parts(&dup).unwrap_err().to_string();
        assert!(e.contains("given twice") && e.contains("p0.json"), "{e}");
        let mut other = parts.clone();
        other[1].1.of.checkpoints[0].digest = "x".into();
        let e = merge_parts(&other).unwrap_err().to_string();
        assert!(
            e.contains("other checkpoints") && e.contains("p0.json"),
            "{e}"
        );
        let mut ten = parts.clone();
        ten[0].1.of.view = "ten-crop".into();
        let e = merge_parts(&ten).unwrap_err().to_string();
        assert!(e.contains("views"), "{e}");
        let mut shifted = parts.clone();
        shifted[0].1.rows = [6, 9];
        let e = merge_parts(&shifted).unwrap_err().to_string();
        assert!(e.contains("p2.json") && e.contains("6..9"), "{e}");
    }
}
