//! Label and class files: `LOC_val_solution.csv`, the devkit ground truth with its synset
//! list, a wnid list, or the classes of an existing shard set.
use super::IngestError;
use crate::dataset::ShardSet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn read(path: &Path) -> Result<String, IngestError> {
    std::fs::read_to_string(path).map_err(|e| IngestError::io(path, e))
}

fn first_tokens(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The class list in label order: from a `.parquet` file or shard directory (its footer
/// classes, so val labels line up with train), or a text file with a wnid first on each line.
pub fn read_class_list(path: &Path) -> Result<Vec<String>, IngestError> {
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    if is_parquet || path.is_dir() {
        let set = ShardSet::open(&[path.to_path_buf()])?;
        return Ok(set.classes().to_vec());
    }
    let text = read(path)?;
    let classes = first_tokens(&text);
    if classes.is_empty() {
        return Err(IngestError::Labels {
            path: path.into(),
            reason: "class list is empty; give one wnid per line".into(),
        });
    }
    // A repeated wnid would leave one label unused and make HF datasets refuse the shards.
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let numbered = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| l.split_whitespace().next().map(|w| (i + 1, w)));
    for (line, wnid) in numbered {
        if let Some(first) = seen.insert(wnid, line) {
            return Err(IngestError::Labels {
                path: path.into(),
                reason: format!(
                    "`{wnid}` is on line {first} and again on line {line}; each class must appear once (its line number is its label)"
                ),
            });
        }
    }
    Ok(classes)
}

/// The wnid of each of `files` (flat folder, sorted by name) from a label file:
/// `ImageId,PredictionString` CSV (the wnid starts the prediction string) or the devkit
/// ground truth (one 1-based ILSVRC id per line, in file-name order, mapped by `synsets`).
pub fn read_label_file(
    path: &Path,
    files: &[PathBuf],
    synsets: Option<&Path>,
) -> Result<Vec<String>, IngestError> {
    let text = read(path)?;
    let bad = |reason: String| IngestError::Labels {
        path: path.into(),
        reason,
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .peekable();
    let first = lines.peek().copied().unwrap_or("");
    if first.contains(',') {
        drop(lines);
        // Image id → (wnid, line number, line), to name both lines of a conflict.
        let mut map: HashMap<String, (String, usize, &str)> = HashMap::new();
        for (n, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() {
                continue;
            }
            let (id, pred) = line.split_once(',').unwrap_or((line, ""));
            if id == "ImageId" {
                continue;
            }
            let wnid = pred
                .split_whitespace()
                .next()
                .ok_or_else(|| bad(format!("line `{line}` has no wnid after the comma")))?;
            if let Some((other, m, before)) = map.get(id) {
                if other != wnid {
                    return Err(bad(format!(
                        "`{id}` has two labels: line {m} `{before}` and line {n} `{line}`; keep one"
                    )));
                }
                continue;
            }
            map.insert(id.to_string(), (wnid.to_string(), n, line));
        }
        let mut missing = Vec::new();
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            match map.get(&stem) {
                Some((w, ..)) => out.push(w.clone()),
                None => missing.push(stem),
            }
        }
        if !missing.is_empty() {
            return Err(bad(format!(
                "no label for {} of the {} images (first: {}); the label file does not match the images",
                missing.len(),
                files.len(),
                missing[0]
            )));
        }
        return Ok(out);
    }
    let synsets = synsets.ok_or_else(|| {
        bad("looks like devkit ground truth (one id per line); also give --synsets FILE (wnid of ILSVRC id i on line i)".into())
    })?;
    let wnids = first_tokens(&read(synsets)?);
    let ids: Vec<&str> = lines.collect();
    if ids.len() != files.len() {
        return Err(bad(format!(
            "{} labels for {} images; the label file does not match the images",
            ids.len(),
            files.len()
        )));
    }
    ids.iter()
        .enumerate()
        .map(|(i, s)| {
            let id: usize = s
                .parse()
                .map_err(|_| bad(format!("line {}: `{s}` is not an ILSVRC id", i + 1)))?;
            id.checked_sub(1)
                .and_then(|k| wnids.get(k))
                .cloned()
                .ok_or_else(|| {
                    bad(format!(
                        "line {}: id {id} is outside 1..={} of {}",
                        i + 1,
                        wnids.len(),
                        synsets.display()
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_devkit_label_files_map_files_to_wnids() {
        let t = tempfile::tempdir().unwrap();
        let files: Vec<PathBuf> = [
            "ILSVRC2012_val_00000001.JPEG",
            "ILSVRC2012_val_00000002.JPEG",
        ]
        .iter()
        .map(|n| t.path().join(n))
        .collect();
        let csv = t.path().join("LOC_val_solution.csv");
        std::fs::write(
            &csv,
            "ImageId,PredictionString\nILSVRC2012_val_00000002,n02 1 2 3 4 n02 5 6 7 8\nILSVRC2012_val_00000001,n09 0 0 9 9\n",
        )
        .unwrap();
        assert_eq!(read_label_file(&csv, &files, None).unwrap(), ["n09", "n02"]);
        let gt = t.path().join("gt.txt");
        let syn = t.path().join("synsets.txt");
        std::fs::write(&gt, "3\n1\n").unwrap();
        std::fs::write(&syn, "n05 a\nn06 b\nn07 c\n").unwrap();
        assert_eq!(
            read_label_file(&gt, &files, Some(&syn)).unwrap(),
            ["n07", "n05"]
        );
        assert!(read_label_file(&gt, &files, None).is_err());
        std::fs::write(&gt, "4\n1\n").unwrap();
        assert!(read_label_file(&gt, &files, Some(&syn)).is_err());
        // The same image twice: agreeing lines are one label, conflicting ones an error
        // that quotes both.
        std::fs::write(
            &csv,
            "ImageId,PredictionString\nILSVRC2012_val_00000001,n09 0\nILSVRC2012_val_00000002,n02 1\nILSVRC2012_val_00000001,n09 0\n",
        )
        .unwrap();
        assert_eq!(read_label_file(&csv, &files, None).unwrap(), ["n09", "n02"]);
        std::fs::write(
            &csv,
            "ImageId,PredictionString\nILSVRC2012_val_00000001,n09 0\n\nILSVRC2012_val_00000001,n02 1\n",
        )
        .unwrap();
        let e = read_label_file(&csv, &files, None).unwrap_err().to_string();
        assert!(
            e.contains("line 2 `ILSVRC2012_val_00000001,n09 0`")
                && e.contains("line 4 `ILSVRC2012_val_00000001,n02 1`"),
            "{e}"
        );
    }

    #[test]
    fn a_class_listed_twice_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let list = t.path().join("classes.txt");
        std::fs::write(&list, "a\nb tench\n\na\nc\n").unwrap();
        let e = read_class_list(&list).unwrap_err().to_string();
        assert!(e.contains("`a` is on line 1 and again on line 4"), "{e}");
        std::fs::write(&list, "a\nb\nc\n").unwrap();
        assert_eq!(read_class_list(&list).unwrap(), ["a", "b", "c"]);
    }
}
