//! Opening a set of shards: file discovery, consistency checks, merged statistics, and
//! reading whole row groups as decoded pixels.
use super::complete::{check_folder, Incomplete, InputsMeta};
use super::schema::{footer_entry, image_bytes, label_values};
use super::{parse_footer, DatasetError, Encoding, Reject, Resize, Stats, INPUTS_KEY, RESIZE_KEY};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use std::fs::File;
use std::path::{Path, PathBuf};

/// One row group of a set: which file, which group, and which global rows it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowGroupRef {
    /// Index into [`ShardSet::files`].
    pub file: usize,
    /// Row-group index within the file.
    pub group: usize,
    /// Global index of the group's first row.
    pub first_row: u64,
    /// Rows in the group.
    pub rows: usize,
}

#[derive(Clone)]
struct Shard {
    path: PathBuf,
    meta: ArrowReaderMetadata,
}

/// Pixels and labels of some rows, decoded.
pub(crate) struct Pixels {
    /// [rows, S, S, 3] u8.
    pub images: Vec<u8>,
    /// [rows].
    pub labels: Vec<i32>,
}

/// A set of shards read as one data set: same size, encoding and classes; statistics merged.
#[derive(Clone)]
pub struct ShardSet {
    shards: Vec<Shard>,
    files: Vec<PathBuf>,
    groups: Vec<RowGroupRef>,
    size: usize,
    encoding: Encoding,
    resize: Resize,
    classes: Vec<String>,
    stats: Stats,
    rejects: Vec<Reject>,
    bytes_on_disk: u64,
    incomplete: Vec<Incomplete>,
}

/// Expands files and directories into shard files: a directory contributes its
/// `*.parquet` files (not hidden, so in-progress temporaries are skipped) in name order.
/// A file named twice (directly, or also through its directory) is read once, where it
/// first appears. Returns each file with the index into `paths` of the directory it came
/// from (`None` for a file named directly).
fn shard_files(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Option<usize>)>, DatasetError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, p) in paths.iter().enumerate() {
        let meta = std::fs::metadata(p).map_err(|e| DatasetError::io(p, e))?;
        let (found, dir) = if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| DatasetError::io(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    name.ends_with(".parquet") && !name.starts_with('.') && f.is_file()
                })
                .collect();
            if found.is_empty() {
                return Err(DatasetError::NoShards { path: p.clone() });
            }
            found.sort();
            (found, Some(i))
        } else {
            (vec![p.clone()], None)
        };
        for f in found {
            // The same file reached by two spellings counts once: compare what it is.
            let key = std::fs::canonicalize(&f).map_err(|e| DatasetError::io(&f, e))?;
            if seen.insert(key) {
                out.push((f, dir));
            }
        }
    }
    if out.is_empty() {
        return Err(DatasetError::NoShards {
            path: PathBuf::from("(no paths given)"),
        });
    }
    Ok(out)
}

impl ShardSet {
    /// Opens files, directories of shards, or several of either. Refuses shards whose size,
    /// encoding or classes disagree (naming both files) and merges their statistics.
    pub fn open(paths: &[PathBuf]) -> Result<ShardSet, DatasetError> {
        let found = shard_files(paths)?;
        let files: Vec<PathBuf> = found.iter().map(|(f, _)| f.clone()).collect();
        // Per directory argument, the completion entries of its shards.
        let mut per_dir: Vec<Vec<Option<InputsMeta>>> = vec![Vec::new(); paths.len()];
        // Per directory argument, its first shard with a completion entry.
        let mut dir_head: Vec<Option<(PathBuf, InputsMeta)>> = vec![None; paths.len()];
        let mut shards = Vec::with_capacity(files.len());
        let mut groups = Vec::new();
        let mut head: Option<(PathBuf, usize, Encoding, Vec<String>, Stats)> = None;
        let mut rejects = Vec::new();
        let mut resize: Option<(PathBuf, Resize)> = None;
        let mut first_row = 0u64;
        let mut bytes_on_disk = 0;
        for (path, dir) in &found {
            let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
            bytes_on_disk += file.metadata().map(|m| m.len()).unwrap_or(0);
            let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                .map_err(|e| DatasetError::parquet(path, e))?;
            let kv = meta.metadata().file_metadata().key_value_metadata();
            let (fm, stats, rj) = parse_footer(path, kv)?;
            let rows_in_file: i64 = meta
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.num_rows())
                .sum();
            if rows_in_file != fm.count as i64 {
                // Statistics, completeness and training all rely on the footer describing
                // exactly these rows.
                return Err(DatasetError::CountMismatch {
                    path: path.clone(),
                    footer: fm.count,
                    rows: rows_in_file,
                });
            }
            if let Some(d) = dir {
                let entry = footer_entry(kv, INPUTS_KEY).and_then(InputsMeta::parse);
                // `--shard I/N` parts made with another --seed or input list would duplicate
                // and drop rows while looking complete.
                if let Some(m) = &entry {
                    match &dir_head[*d] {
                        None => dir_head[*d] = Some((path.clone(), m.clone())),
                        Some((first, h)) => {
                            if let Some(what) = h.same_ingest(m) {
                                return Err(DatasetError::Mismatch {
                                    first: first.clone(),
                                    other: path.clone(),
                                    what,
                                });
                            }
                        }
                    }
                }
                per_dir[*d].push(entry);
            }
            rejects.extend(rj);
            let filter = match footer_entry(kv, RESIZE_KEY) {
                None => Resize::Lanczos3,
                Some(v) => Resize::parse(v).ok_or_else(|| DatasetError::BadMetadata {
                    path: path.clone(),
                    reason: format!("`{RESIZE_KEY}` is {v:?}, not lanczos3 or bilinear"),
                })?,
            };
            // Two filters in one set would train on two slightly different pixel statistics
            // and leave predict no single filter to repeat.
            match &resize {
                None => resize = Some((path.clone(), filter)),
                Some((first, r)) if *r != filter => {
                    return Err(DatasetError::Mismatch {
                        first: first.clone(),
                        other: path.clone(),
                        what: format!("resize filter (--resize {r} vs {filter})"),
                    })
                }
                Some(_) => {}
            }
            match &mut head {
                None => head = Some((path.clone(), fm.size, fm.encoding, fm.classes, stats)),
                Some((first, size, enc, classes, merged)) => {
                    let what = if fm.size != *size {
                        Some(format!("size ({} vs {})", size, fm.size))
                    } else if fm.encoding != *enc {
                        Some(format!("encoding ({} vs {})", enc, fm.encoding))
                    } else if fm.classes != *classes {
                        Some(format!(
                            "classes ({} vs {} classes, or a different order)",
                            classes.len(),
                            fm.classes.len()
                        ))
                    } else {
                        None
                    };
                    if let Some(what) = what {
                        return Err(DatasetError::Mismatch {
                            first: first.clone(),
                            other: path.clone(),
                            what,
                        });
                    }
                    merged.merge(&stats)?;
                }
            }
            let index = shards.len();
            for (g, rg) in meta.metadata().row_groups().iter().enumerate() {
                let rows = rg.num_rows().max(0) as usize;
                groups.push(RowGroupRef {
                    file: index,
                    group: g,
                    first_row,
                    rows,
                });
                first_row += rows as u64;
            }
            shards.push(Shard {
                path: path.clone(),
                meta,
            });
        }
        let (_, size, encoding, classes, stats) = head.ok_or_else(|| DatasetError::NoShards {
            path: PathBuf::from("(no paths given)"),
        })?;
        let incomplete = per_dir
            .iter()
            .enumerate()
            .filter_map(|(i, entries)| check_folder(&paths[i], entries))
            .collect();
        Ok(ShardSet {
            shards,
            files,
            groups,
            size,
            encoding,
            resize: resize.map_or(Resize::Lanczos3, |(_, r)| r),
            classes,
            stats,
            rejects,
            bytes_on_disk,
            incomplete,
        })
    }

    /// Folders given that lack shards their ingest planned (see [`super::complete`]); empty
    /// when every folder is complete or cannot tell. Files named one by one are the caller's
    /// choice and never count as incomplete.
    pub fn incomplete(&self) -> &[Incomplete] {
        &self.incomplete
    }

    /// The first `rows` rows of the set (all of them if it has fewer), as a set of its own:
    /// a cheap sample for checks that need one batch of real data.
    pub fn head(&self, rows: usize) -> ShardSet {
        let mut out = self.clone();
        let mut left = rows;
        out.groups.retain_mut(|g| {
            if left == 0 {
                return false;
            }
            // The group is still read whole; only its first `rows` rows are handed out.
            g.rows = g.rows.min(left);
            left -= g.rows;
            true
        });
        out
    }

    /// Rows (images) in the set.
    pub fn len(&self) -> usize {
        self.groups.iter().map(|g| g.rows).sum()
    }

    /// True when the set holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image side S.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Pixel storage of the set.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The filter `ingest --resize` stored the images with (the footer's [`RESIZE_KEY`];
    /// Lanczos3 for shards written before it was recorded).
    pub fn resize(&self) -> Resize {
        self.resize
    }

    /// WordNet ids in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Merged statistics of all files.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The shard files, in global row order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Inputs the ingest runs that wrote these shards rejected.
    pub fn rejects(&self) -> &[Reject] {
        &self.rejects
    }

    /// Total size of the shard files in bytes.
    pub fn bytes_on_disk(&self) -> u64 {
        self.bytes_on_disk
    }

    /// All row groups in global row order.
    pub fn row_groups(&self) -> &[RowGroupRef] {
        &self.groups
    }

    /// Index into [`ShardSet::row_groups`] of the group holding global row `row`.
    pub(crate) fn group_of(&self, row: u64) -> Result<usize, DatasetError> {
        let g = self
            .groups
            .partition_point(|g| g.first_row + g.rows as u64 <= row);
        if g >= self.groups.len() {
            return Err(DatasetError::RowOutOfRange {
                row,
                len: self.len() as u64,
            });
        }
        Ok(g)
    }

    /// Reads row group `g` (index into [`ShardSet::row_groups`]) and decodes its images.
    pub(crate) fn read_group(&self, g: usize) -> Result<Pixels, DatasetError> {
        self.read_group_rows(g, None)
    }

    /// [`ShardSet::read_group`], decoding only the rows `keep` marks (by place in the group;
    /// `None`: all): a rank that trains on some rows of a group never pays for decoding the
    /// others' JPEGs. Rows left out hold zero pixels (still checked for a valid label).
    pub(crate) fn read_group_rows(
        &self,
        g: usize,
        keep: Option<&[bool]>,
    ) -> Result<Pixels, DatasetError> {
        let rg = self.groups[g];
        let shard = &self.shards[rg.file];
        let path = &shard.path;
        let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
        let schema = shard.meta.parquet_schema();
        // Leaves 0.. are image (1 or 2 leaves) then label; project by root column.
        let mask = ProjectionMask::roots(schema, [0, 1]);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, shard.meta.clone())
            .with_row_groups(vec![rg.group])
            .with_projection(mask)
            .with_batch_size(rg.rows.max(1))
            .build()
            .map_err(|e| DatasetError::parquet(path, e))?;
        let file_row: u64 = self.groups[..g]
            .iter()
            .filter(|o| o.file == rg.file)
            .map(|o| o.rows as u64)
            .sum();
        let px = self.size * self.size * 3;
        let mut out = Pixels {
            images: Vec::with_capacity(rg.rows * px),
            labels: Vec::with_capacity(rg.rows),
        };
        for batch in reader {
            let batch = batch.map_err(|source| DatasetError::Arrow {
                path: path.clone(),
                source,
            })?;
            let bytes = image_bytes(path, batch.column(0).as_ref())?;
            let labels = label_values(path, batch.column(1).as_ref())?;
            for (i, &label) in labels.iter().enumerate() {
                // Row numbers count from the file's first row, as a user sees the file.
                let row = file_row + out.labels.len() as u64;
                if label < 0 || label as usize >= self.classes.len() {
                    return Err(DatasetError::BadLabel {
                        path: path.clone(),
                        row,
                        label: label as i64,
                        classes: self.classes.len(),
                    });
                }
                let data = bytes.value(i);
                let at = out.labels.len();
                if keep.is_some_and(|k| !k.get(at).copied().unwrap_or(true)) {
                    out.images.resize(out.images.len() + px, 0);
                    out.labels.push(label);
                    continue;
                }
                match self.encoding {
                    Encoding::Raw => {
                        if data.len() != px {
                            return Err(DatasetError::BadColumn {
                                path: path.clone(),
                                column: "image".into(),
                                reason: format!(
                                    "row {row} has {} bytes, expected {px}",
                                    data.len()
                                ),
                            });
                        }
                        out.images.extend_from_slice(data);
                    }
                    Encoding::Jpeg | Encoding::Png => {
                        decode_stored(path, row, data, self.size, &mut out.images)?
                    }
                }
                out.labels.push(label);
            }
        }
        Ok(out)
    }
}

/// Decodes a stored JPEG/PNG (always S×S RGB, written by ingest) and appends its pixels.
fn decode_stored(
    path: &Path,
    row: u64,
    data: &[u8],
    size: usize,
    out: &mut Vec<u8>,
) -> Result<(), DatasetError> {
    let err = |reason: String| DatasetError::StoredImage {
        path: path.into(),
        row,
        reason,
    };
    let img = image::load_from_memory(data).map_err(|e| err(e.to_string()))?;
    let rgb = img.to_rgb8();
    if rgb.width() as usize != size || rgb.height() as usize != size {
        return Err(err(format!(
            "{}×{} instead of {size}×{size}",
            rgb.width(),
            rgb.height()
        )));
    }
    out.extend_from_slice(rgb.as_raw());
    Ok(())
}
