//! Finding the inputs and their labels: class subfolders (ImageNet train layout or any
//! `<class>/<files>` tree), or a flat folder with a label file (ImageNet val).
use super::labels::{read_class_list, read_label_file};
use super::IngestError;
use std::path::{Path, PathBuf};

/// One input file and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Path relative to the raw root, `/`-separated (the `source` column).
    pub source: String,
    /// Index into the class list.
    pub label: i32,
    /// Class name.
    pub wnid: String,
}

/// All inputs, sorted by `source`, and the class list that labels index.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Inputs in sorted `source` order; shard k is a fixed slice of this list.
    pub inputs: Vec<Input>,
    /// WordNet ids (class names) in label order.
    pub classes: Vec<String>,
}

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "bmp", "webp"];

fn is_image_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, IngestError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| IngestError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !hidden(p))
        .collect();
    v.sort();
    Ok(v)
}

fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    for p in entries(dir)? {
        if p.is_dir() {
            images_under(&p, out)?;
        } else if is_image_name(&p) {
            out.push(p);
        }
    }
    Ok(())
}

fn source_of(raw: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(raw).unwrap_or(p);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Scans `raw`. With `labels` it is a flat folder labelled by that file (`synsets` maps
/// devkit ids to wnids); otherwise each subfolder is a class. `classes` fixes the label
/// order (a wnid list, or an existing shard set whose classes to reuse).
pub fn scan(
    raw: &Path,
    labels: Option<&Path>,
    classes: Option<&Path>,
    synsets: Option<&Path>,
) -> Result<Scan, IngestError> {
    if !raw.is_dir() {
        return Err(IngestError::MissingRaw(raw.into()));
    }
    let given = classes.map(read_class_list).transpose()?;
    let top = entries(raw)?;
    let mut inputs = Vec::new();
    let class_list;
    if let Some(label_path) = labels {
        let files: Vec<PathBuf> = top
            .iter()
            .filter(|p| p.is_file() && is_image_name(p))
            .cloned()
            .collect();
        if files.is_empty() {
            return Err(IngestError::EmptyRaw(raw.into()));
        }
        let wnids = read_label_file(label_path, &files, synsets)?;
        class_list = match given {
            Some(c) => c,
            None => {
                let mut c = wnids.clone();
                c.sort();
                c.dedup();
                c
            }
        };
        for (p, wnid) in files.iter().zip(wnids) {
            let label = class_index(&class_list, &wnid, classes.unwrap_or(label_path))?;
            inputs.push(Input {
                path: p.clone(),
                source: source_of(raw, p),
                label,
                wnid,
            });
        }
    } else {
        let dirs: Vec<&PathBuf> = top.iter().filter(|p| p.is_dir()).collect();
        if dirs.is_empty() {
            return Err(if top.iter().any(|p| is_image_name(p)) {
                IngestError::FlatNeedsLabels(raw.into())
            } else {
                IngestError::EmptyRaw(raw.into())
            });
        }
        let names: Vec<String> = dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        class_list = given.unwrap_or_else(|| names.clone());
        for (dir, wnid) in dirs.iter().zip(names) {
            let mut files = Vec::new();
            images_under(dir, &mut files)?;
            if files.is_empty() {
                continue;
            }
            let label = class_index(&class_list, &wnid, classes.unwrap_or(raw))?;
            for p in files {
                inputs.push(Input {
                    source: source_of(raw, &p),
                    path: p,
                    label,
                    wnid: wnid.clone(),
                });
            }
        }
    }
    if inputs.is_empty() {
        return Err(IngestError::EmptyRaw(raw.into()));
    }
    inputs.sort_by(|a, b| a.source.cmp(&b.source));
    Ok(Scan {
        inputs,
        classes: class_list,
    })
}

fn class_index(classes: &[String], wnid: &str, list: &Path) -> Result<i32, IngestError> {
    classes
        .iter()
        .position(|c| c == wnid)
        .map(|i| i as i32)
        .ok_or_else(|| IngestError::Labels {
            path: list.into(),
            reason: format!(
                "class `{wnid}` of the images is not in the class list ({} classes); the label/class file does not match the images",
                classes.len()
            ),
        })
}
