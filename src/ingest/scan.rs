//! Finding the inputs and their labels: class subfolders (ImageNet train layout or any
//! `<class>/<files>` tree), or a flat folder with a label file (ImageNet val).
//!
//! Symbolic links are followed, but every directory is read at most once, known by its
//! device and inode: a link back up the tree (`a/up -> ..`) or a loop of links adds
//! nothing and cannot make the scan run forever. A file linked from two places is two
//! inputs. A top-level folder holding shards (`.parquet`) and no images is an output of an
//! earlier ingest, not a class, and is skipped. Hidden entries are skipped.
use super::labels::{read_class_list, read_label_file};
use super::IngestError;
use std::collections::HashSet;
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
    /// Why the input cannot be stored as it is named (a file name that is not UTF-8, which
    /// the `source` column cannot hold exactly); it becomes a reject with this reason.
    pub bad_name: Option<String>,
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

/// True when `p`'s extension is one of the image formats ingest and predict read from folders.
pub(crate) fn is_image_name(p: &Path) -> bool {
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

/// Directories already read, by what they are rather than how they are reached.
#[derive(Default)]
struct Visited(HashSet<(u64, u64)>);

impl Visited {
    /// Marks `dir` as read; false if it already was (or cannot be identified).
    fn first_visit(&mut self, dir: &Path) -> bool {
        match dir_id(dir) {
            Some(id) => self.0.insert(id),
            None => false,
        }
    }
}

#[cfg(unix)]
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_id(dir: &Path) -> Option<(u64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(dir).ok()?.hash(&mut h);
    Some((0, h.finish()))
}

/// Appends the images below `dir` (a class folder, already marked as visited) to `out`.
fn images_under(dir: &Path, seen: &mut Visited, out: &mut Vec<PathBuf>) -> Result<(), IngestError> {
    for p in entries(dir)? {
        if p.is_dir() {
            if seen.first_visit(&p) {
                images_under(&p, seen, out)?;
            }
        } else if is_image_name(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// True for a folder an ingest wrote: shards in it and no image anywhere below.
fn holds_only_shards(dir: &Path, images: &[PathBuf]) -> bool {
    images.is_empty()
        && entries(dir).is_ok_and(|v| {
            v.iter()
                .any(|p| p.extension().is_some_and(|e| e == "parquet"))
        })
}

/// `p` relative to `raw`, `/`-separated, and whether it is exact (every part UTF-8).
fn source_of(raw: &Path, p: &Path) -> (String, bool) {
    let rel = p.strip_prefix(raw).unwrap_or(p);
    let exact = rel.components().all(|c| c.as_os_str().to_str().is_some());
    let text = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    (text, exact)
}

/// The [`Input::bad_name`] of a source that is not exact.
fn name_problem(source: &str, exact: bool) -> Option<String> {
    (!exact).then(|| {
        format!("the file name is not valid UTF-8 (shown here as `{source}`), which the source column cannot store exactly; rename the file")
    })
}

/// Checks that a label, class or synset file given on the command line exists, so its
/// absence is reported as such rather than as a folder without images.
fn check_given(path: Option<&Path>, flag: &str, what: &str) -> Result<(), IngestError> {
    match path {
        Some(p) if !p.exists() => Err(IngestError::Labels {
            path: p.into(),
            reason: format!("no such file (given as {flag}); give {what}"),
        }),
        _ => Ok(()),
    }
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
    check_given(
        labels,
        "--labels",
        "the label file of the flat folder (LOC_val_solution.csv or the devkit ground truth)",
    )?;
    check_given(
        classes,
        "--classes",
        "a file of wnids, one per line, or existing shards",
    )?;
    check_given(
        synsets,
        "--synsets",
        "the devkit synset list (the wnid of ILSVRC id i on line i)",
    )?;
    if !raw.is_dir() {
        return Err(IngestError::MissingRaw(raw.into()));
    }
    let given = classes.map(read_class_list).transpose()?;
    let top = entries(raw)?;
    let mut inputs = Vec::new();
    let class_list;
    if let Some(label_path) = labels {
        // As in a class folder, anything image-named that is not a folder is kept, so that a
        // FIFO or device becomes a reject with its reason at decode instead of vanishing.
        let files: Vec<PathBuf> = top
            .iter()
            .filter(|p| !p.is_dir() && is_image_name(p))
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
            let (source, exact) = source_of(raw, p);
            inputs.push(Input {
                path: p.clone(),
                bad_name: name_problem(&source, exact),
                source,
                label,
                wnid,
            });
        }
    } else {
        let mut seen = Visited::default();
        seen.first_visit(raw);
        // Every class folder is its own class's, even if a link elsewhere reaches it first;
        // two names for one folder make the second an empty class.
        let class_dirs: Vec<&PathBuf> = top.iter().filter(|p| p.is_dir()).collect();
        let owned: Vec<bool> = class_dirs.iter().map(|d| seen.first_visit(d)).collect();
        // Each class folder with the images below it; shard folders are not classes.
        let mut dirs: Vec<(&PathBuf, Vec<PathBuf>)> = Vec::new();
        for (d, own) in class_dirs.into_iter().zip(owned) {
            let mut files = Vec::new();
            if own {
                images_under(d, &mut seen, &mut files)?;
            }
            if !holds_only_shards(d, &files) {
                dirs.push((d, files));
            }
        }
        if dirs.is_empty() {
            return Err(if top.iter().any(|p| is_image_name(p)) {
                IngestError::FlatNeedsLabels(raw.into())
            } else {
                IngestError::EmptyRaw(raw.into())
            });
        }
        let mut names = Vec::with_capacity(dirs.len());
        for (d, _) in &dirs {
            let name = d.file_name().unwrap_or_default();
            // A class name goes into every row and the footer; it must be exact.
            let name = name.to_str().ok_or_else(|| {
                IngestError::Config(format!(
                    "{}: the class folder name is not valid UTF-8, which the wnid column cannot store exactly; rename the folder",
                    d.display()
                ))
            })?;
            names.push(name.to_string());
        }
        class_list = given.unwrap_or_else(|| names.clone());
        for ((_, files), wnid) in dirs.into_iter().zip(names) {
            if files.is_empty() {
                continue;
            }
            let label = class_index(&class_list, &wnid, classes.unwrap_or(raw))?;
            for p in files {
                let (source, exact) = source_of(raw, &p);
                inputs.push(Input {
                    bad_name: name_problem(&source, exact),
                    source,
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
