//! The ingest run: plan shards, skip or clear existing output, process inputs on a rayon
//! pool in order, write shards on a writer thread, then write the rejects file.
use super::progress::Progress;
use super::writer::ShardWriter;
use super::{decode_image, encode, resize_crop_with, scan, IngestError, Input};
use crate::dataset::{
    footer_value, Encoding, InputsMeta, Reject, Resize, Row, ShardSet, INPUTS_KEY, RESIZE_KEY,
};
use crate::lock::{FolderLock, Mode, LOCK_FILE};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

/// `--shard I/N`: this process writes shards k with k mod N = I.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardPart {
    /// I, 0-based.
    pub index: usize,
    /// N.
    pub count: usize,
}

impl std::fmt::Display for ShardPart {
    /// `I/N`, as `--shard` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardPart {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 0/4")?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("`{i}` is not a number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a number"))?;
        if count == 0 || index >= count {
            return Err(format!("need 0 <= I < N, got {index}/{count}"));
        }
        Ok(Self { index, count })
    }
}

/// Everything an ingest run needs, validated by the CLI.
#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// Raw folder: class subfolders, or flat images with `labels`.
    pub raw: PathBuf,
    /// Output: a `.parquet` file, or a directory of `part-NNNNN.parquet` shards.
    pub out: PathBuf,
    /// Stored side S.
    pub size: usize,
    /// Pixel storage.
    pub encoding: Encoding,
    /// Label file for a flat folder.
    pub labels: Option<PathBuf>,
    /// Class order: a wnid list or an existing shard set.
    pub classes: Option<PathBuf>,
    /// Devkit synset list (wnid of ILSVRC id i on line i), for devkit ground truth.
    pub synsets: Option<PathBuf>,
    /// Inputs per shard (directory output).
    pub shard_rows: usize,
    /// Write only this part of the shards.
    pub shard: Option<ShardPart>,
    /// Worker threads.
    pub jobs: usize,
    /// Keep complete shards, redo the rest.
    pub resume: bool,
    /// Replace existing output.
    pub overwrite: bool,
    /// Any reject makes the run fail.
    pub strict: bool,
    /// Decompression-bomb guard, checked from the header.
    pub max_pixels: u64,
    /// Image bytes per row group (raw 256² images are 192 KiB each).
    pub row_group_bytes: usize,
    /// Show progress on stderr.
    pub progress: bool,
    /// Row order of the output.
    pub order: RowOrder,
    /// The resampling filter (recorded in every shard's footer).
    pub resize: Resize,
}

/// The order rows are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOrder {
    /// Scan order: classes in label order, files sorted by name within a class.
    Sorted,
    /// A permutation of the scan order fixed by the seed. Training reads row groups in a
    /// random order but shuffles rows only within windows of groups, so class-sorted shards
    /// would feed it batches from a few classes at a time; shuffled shards make every group
    /// a sample of all classes.
    Shuffled(u64),
}

impl IngestConfig {
    /// Defaults of the CLI for `raw` → `out`.
    pub fn new(raw: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            raw: raw.into(),
            out: out.into(),
            size: 256,
            encoding: Encoding::Raw,
            labels: None,
            classes: None,
            synsets: None,
            shard_rows: 1024,
            shard: None,
            jobs: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            resume: false,
            overwrite: false,
            strict: false,
            max_pixels: super::DEFAULT_MAX_PIXELS,
            row_group_bytes: 32 << 20,
            progress: false,
            order: RowOrder::Shuffled(0),
            resize: Resize::Lanczos3,
        }
    }
}

/// Seconds spent per stage, summed over worker threads (so they can exceed wall time).
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    /// Reading files.
    pub read: f64,
    /// Decoding to RGB.
    pub decode: f64,
    /// Resize and crop.
    pub resize: f64,
    /// Encoding for the `image` column (and decoding it back for statistics).
    pub encode: f64,
    /// The writer thread: statistics, Parquet encoding, zstd, disk.
    pub write: f64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct IngestSummary {
    /// Inputs found (all parts).
    pub inputs: usize,
    /// Inputs this run covered (its part).
    pub covered: usize,
    /// Rows in this run's shards (written and kept).
    pub rows: u64,
    /// Rejected inputs in this run's shards.
    pub rejects: usize,
    /// Shards written now.
    pub shards_written: usize,
    /// Complete shards kept by `--resume`.
    pub shards_kept: usize,
    /// Classes.
    pub classes: usize,
    /// Where the rejects were listed.
    pub rejects_path: PathBuf,
    /// Wall time.
    pub seconds: f64,
    /// Time per stage.
    pub times: StageTimes,
}

impl std::fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ingested {} images ({} rejected, see {}) from {} inputs in {} classes: {} shards written, {} kept, {:.1} s ({:.1} images/s)",
            self.rows,
            self.rejects,
            self.rejects_path.display(),
            self.covered,
            self.classes,
            self.shards_written,
            self.shards_kept,
            self.seconds,
            self.covered as f64 / self.seconds.max(1e-9)
        )
    }
}

struct Target {
    path: PathBuf,
    items: std::ops::Range<usize>,
    /// Shard number k.
    index: usize,
}

/// The [`INPUTS_KEY`] footer value of target `k` of `planned`: which inputs it was made
/// from, and how many the whole ingest has, so readers can tell a folder is complete.
fn inputs_meta(all: &[Input], t: &Target, planned: usize, order: RowOrder) -> InputsMeta {
    let inputs = &all[t.items.clone()];
    InputsMeta {
        order: Some(match order {
            RowOrder::Shuffled(seed) => format!("--order shuffled --seed {seed}"),
            RowOrder::Sorted => "--order sorted".into(),
        }),
        first: inputs.first().map(|i| i.source.clone()),
        last: inputs.last().map(|i| i.source.clone()),
        inputs: inputs.len(),
        total: Some(all.len()),
        shard: Some(t.index),
        shards: Some(planned),
    }
}

/// One processed input: the row and, for jpeg, the pixels a reader will decode.
struct Processed {
    row: Row,
    pixels: Option<Vec<u8>>,
}

#[derive(Default)]
struct Timers {
    read: AtomicU64,
    decode: AtomicU64,
    resize: AtomicU64,
    encode: AtomicU64,
}

fn timed<T>(acc: &AtomicU64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    acc.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

fn process(input: &Input, cfg: &IngestConfig, timers: &Timers) -> Result<Processed, Reject> {
    let reject = |reason: String| Reject {
        source: input.source.clone(),
        reason,
    };
    if let Some(why) = &input.bad_name {
        return Err(reject(why.clone()));
    }
    let bytes = timed(&timers.read, || {
        super::decode::read_image_file(&input.path, cfg.max_pixels)
    })
    .map_err(reject)?;
    let decoded = timed(&timers.decode, || decode_image(&bytes, cfg.max_pixels)).map_err(reject)?;
    let (w, h) = decoded.rgb.dimensions();
    let s = cfg.size as u32;
    let pixels = timed(&timers.resize, || {
        resize_crop_with(decoded.rgb, s, cfg.resize)
    })
    .map_err(reject)?;
    let (image, pixels) = timed(&timers.encode, || -> Result<_, String> {
        Ok(match cfg.encoding {
            Encoding::Raw => (pixels, None),
            Encoding::Png => (encode(Encoding::Png, pixels.clone(), s)?, Some(pixels)),
            Encoding::Jpeg => {
                let jpeg = encode(Encoding::Jpeg, pixels, s)?;
                // Statistics describe what readers get: the decoded JPEG, not the input to it.
                let back = image::load_from_memory(&jpeg)
                    .map_err(|e| e.to_string())?
                    .into_rgb8();
                (jpeg, Some(back.into_raw()))
            }
        })
    })
    .map_err(reject)?;
    Ok(Processed {
        row: Row {
            image,
            label: input.label,
            wnid: input.wnid.clone(),
            source: input.source.clone(),
            orig_width: w as i32,
            orig_height: h as i32,
        },
        pixels,
    })
}

/// [`process`], with a decoder panic on a hostile file turned into a reject instead of
/// taking the whole run down.
fn guarded(input: &Input, cfg: &IngestConfig, timers: &Timers) -> Result<Processed, Reject> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| process(input, cfg, timers)))
        .unwrap_or_else(|_| {
            Err(Reject {
                source: input.source.clone(),
                reason: "undecodable: the decoder panicked on this file".into(),
            })
        })
}

fn is_file_output(out: &Path) -> bool {
    out.extension().is_some_and(|e| e == "parquet")
}

fn rejects_path(cfg: &IngestConfig) -> PathBuf {
    if is_file_output(&cfg.out) {
        cfg.out.with_extension("rejects.jsonl")
    } else {
        match cfg.shard {
            None => cfg.out.join("rejects.jsonl"),
            Some(p) => cfg
                .out
                .join(format!("rejects-{}-of-{}.jsonl", p.index, p.count)),
        }
    }
}

/// Shards the whole ingest of `n` inputs makes (all `--shard` parts together).
fn planned_shards(cfg: &IngestConfig, n: usize) -> usize {
    if is_file_output(&cfg.out) {
        1
    } else {
        n.div_ceil(cfg.shard_rows.max(1))
    }
}

fn plan(cfg: &IngestConfig, n: usize) -> Vec<Target> {
    if is_file_output(&cfg.out) {
        return vec![Target {
            path: cfg.out.clone(),
            items: 0..n,
            index: 0,
        }];
    }
    let rows = cfg.shard_rows.max(1);
    (0..planned_shards(cfg, n))
        .filter(|k| cfg.shard.is_none_or(|p| k % p.count == p.index))
        .map(|k| Target {
            path: cfg.out.join(format!("part-{k:05}.parquet")),
            items: k * rows..((k + 1) * rows).min(n),
            index: k,
        })
        .collect()
}

/// Existing files that belong to this run's output: its targets, their temporaries, its
/// rejects file, and (for a whole-set directory run) any other shard in the folder.
fn existing_output(cfg: &IngestConfig, targets: &[Target]) -> Result<Vec<PathBuf>, IngestError> {
    let mut found: Vec<PathBuf> = targets
        .iter()
        .map(|t| t.path.clone())
        .chain([rejects_path(cfg)])
        .filter(|p| p.exists())
        .collect();
    if !is_file_output(&cfg.out) && cfg.shard.is_none() && cfg.out.is_dir() {
        for e in std::fs::read_dir(&cfg.out).map_err(|e| IngestError::io(&cfg.out, e))? {
            let p = e.map_err(|e| IngestError::io(&cfg.out, e))?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let shardish = (name.starts_with("part-") && name.ends_with(".parquet"))
                || (name.starts_with(".part-") && name.ends_with(".tmp"))
                || (name.starts_with("rejects") && name.ends_with(".jsonl"));
            if shardish && !found.contains(&p) {
                found.push(p);
            }
        }
    }
    Ok(found)
}

/// Refuses a `--shard I/N` part whose folder already holds shards of other parts made with
/// other settings: their slices of the input list would overlap and leave gaps while the
/// folder looked complete.
fn check_other_parts(
    cfg: &IngestConfig,
    targets: &[Target],
    scan: &super::Scan,
    planned: usize,
) -> Result<(), IngestError> {
    let Some(first) = targets.first() else {
        return Ok(());
    };
    let ours = inputs_meta(&scan.inputs, first, planned, cfg.order);
    let Ok(entries) = std::fs::read_dir(&cfg.out) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let shard = name.starts_with("part-") && name.ends_with(".parquet");
        if !shard || targets.iter().any(|t| t.path == p) {
            continue;
        }
        let set = ShardSet::open(std::slice::from_ref(&p))?;
        let theirs = footer_value(&p, INPUTS_KEY)?.and_then(|v| InputsMeta::parse(&v));
        let what = if set.size() != cfg.size {
            Some(format!("--size {} (this part: {})", set.size(), cfg.size))
        } else if set.encoding() != cfg.encoding {
            Some(format!(
                "--encoding {} (this part: {})",
                set.encoding(),
                cfg.encoding
            ))
        } else if set.classes() != scan.classes {
            Some("a different class list".to_string())
        } else if set.resize() != cfg.resize {
            Some(format!(
                "--resize {} (this part: {})",
                set.resize(),
                cfg.resize
            ))
        } else {
            theirs.and_then(|t| t.same_ingest(&ours))
        };
        if let Some(what) = what {
            return Err(IngestError::OtherPart { path: p, what });
        }
    }
    Ok(())
}

fn check_kept(
    path: &Path,
    cfg: &IngestConfig,
    classes: &[String],
    inputs: &InputsMeta,
) -> Result<(u64, Vec<Reject>), IngestError> {
    let set = ShardSet::open(&[path.to_path_buf()])?;
    let kept = footer_value(path, INPUTS_KEY)?.and_then(|v| InputsMeta::parse(&v));
    let what = if !kept.is_some_and(|k| k.same_slice(inputs)) {
        Some("other inputs (a different folder, file list or --shard-rows)".to_string())
    } else if set.size() != cfg.size {
        Some(format!("--size {} (this run: {})", set.size(), cfg.size))
    } else if set.encoding() != cfg.encoding {
        Some(format!(
            "--encoding {} (this run: {})",
            set.encoding(),
            cfg.encoding
        ))
    } else if set.classes() != classes {
        Some("a different class list".to_string())
    } else if set.resize() != cfg.resize {
        Some(format!(
            "--resize {} (this run: {})",
            set.resize(),
            cfg.resize
        ))
    } else {
        None
    };
    if let Some(what) = what {
        return Err(IngestError::ResumeMismatch {
            path: path.into(),
            what,
        });
    }
    Ok((set.len() as u64, set.rejects().to_vec()))
}

/// Shards the writer thread finished or (under `--strict`) discarded: (target index,
/// rows, rejects), and its busy time.
struct Written {
    done: Vec<(usize, u64, Vec<Reject>)>,
    discarded: Vec<(usize, u64, Vec<Reject>)>,
    busy: Duration,
}

/// The writer thread: one shard open at a time, in the order the main thread sends them.
/// Under `strict`, a shard with rejects is discarded rather than renamed into place, so a
/// `--resume` after the inputs are fixed redoes it instead of keeping it.
fn write_shards(
    rx: std::sync::mpsc::Receiver<Msg>,
    plans: &[(PathBuf, String)],
    (encoding, resize): (Encoding, Resize),
    classes: &[String],
    (size, budget, strict): (usize, usize, bool),
) -> Result<Written, IngestError> {
    let mut out = Written {
        done: Vec::new(),
        discarded: Vec::new(),
        busy: Duration::ZERO,
    };
    let mut current: Option<(usize, ShardWriter)> = None;
    for msg in rx {
        let t = Instant::now();
        match msg {
            Msg::Begin(i) => {
                let mut w =
                    ShardWriter::create(&plans[i].0, encoding, classes, size, budget, &plans[i].1)?;
                w.add_footer_entry(RESIZE_KEY, resize.as_str());
                current = Some((i, w));
            }
            Msg::Items(items) => {
                if let Some((_, w)) = current.as_mut() {
                    for item in items {
                        match item {
                            Ok(p) => w.push(p.row, p.pixels.as_deref())?,
                            Err(r) => w.reject(r),
                        }
                    }
                }
            }
            Msg::End => {
                if let Some((i, w)) = current.take() {
                    if strict && !w.rejects().is_empty() {
                        let (rows, rejects) = w.discard();
                        out.discarded.push((i, rows, rejects));
                    } else {
                        let (rows, rejects) = w.finish()?;
                        out.done.push((i, rows, rejects));
                    }
                }
            }
        }
        out.busy += t.elapsed();
    }
    Ok(out)
}

enum Msg {
    Begin(usize),
    Items(Vec<Result<Processed, Reject>>),
    End,
}

/// Runs an ingest. Bad images become rejects; errors are reserved for problems with the
/// folder, label files, output, or disk (and for rejects under `--strict`).
pub fn ingest(cfg: &IngestConfig) -> Result<IngestSummary, IngestError> {
    let start = Instant::now();
    if cfg.size == 0 || cfg.shard_rows == 0 || cfg.jobs == 0 || cfg.max_pixels == 0 {
        return Err(IngestError::Config(
            "--size, --shard-rows, --jobs and --max-pixels must be at least 1".into(),
        ));
    }
    if cfg.shard.is_some() && is_file_output(&cfg.out) {
        return Err(IngestError::Config(format!(
            "{}: --shard needs a directory output (OUT not ending in .parquet)",
            cfg.out.display()
        )));
    }
    if is_file_output(&cfg.out) && cfg.out.is_dir() {
        return Err(IngestError::Config(format!(
            "{}: is a directory, but an OUT ending in .parquet names one file; give a file path, or a folder name without .parquet",
            cfg.out.display()
        )));
    }
    check_out_not_in_raw(&cfg.raw, &cfg.out)?;
    if is_file_output(&cfg.out) {
        // The one output check: never a label or class file, nor a file inside a shard or
        // run folder (it would join that set). An existing OUT is --resume's or
        // --overwrite's to judge, below.
        use crate::output_check::{check, Format, Output};
        let mut inputs = vec![cfg.raw.as_path()];
        inputs.extend(
            [&cfg.labels, &cfg.classes, &cfg.synsets]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path),
        );
        check(&Output::new(&cfg.out, Format::Parquet, &inputs, true))?;
    }
    check_memory(cfg)?;
    let mut scan = scan(
        &cfg.raw,
        cfg.labels.as_deref(),
        cfg.classes.as_deref(),
        cfg.synsets.as_deref(),
    )?;
    if let RowOrder::Shuffled(seed) = cfg.order {
        // The permutation depends only on the seed and the scan, so `--shard I/N` parts on
        // different machines and `--resume` agree on which inputs each shard holds.
        crate::dataset::SplitMix64(seed).shuffle(&mut scan.inputs);
    }
    let targets = plan(cfg, scan.inputs.len());
    let planned = planned_shards(cfg, scan.inputs.len());
    let _lock = lock_output(cfg)?;
    // Temporaries of a killed ingest (or any alexnet) are junk, not output to resume.
    if is_file_output(&cfg.out) {
        crate::atomic::remove_stale_beside(&cfg.out);
    } else {
        crate::atomic::remove_stale_in(&cfg.out);
    }
    let existing = existing_output(cfg, &targets)?;
    if !existing.is_empty() {
        if cfg.overwrite {
            for p in &existing {
                std::fs::remove_file(p).map_err(|e| IngestError::io(p, e))?;
            }
        } else if !cfg.resume {
            return Err(IngestError::OutputExists(if is_file_output(&cfg.out) {
                cfg.out.clone()
            } else {
                existing[0].clone()
            }));
        }
    }

    // Per target: (rows, rejects), filled from kept shards now and written shards later.
    let mut results: Vec<Option<(u64, Vec<Reject>)>> = vec![None; targets.len()];
    let mut kept = 0;
    if cfg.resume {
        for (i, t) in targets.iter().enumerate() {
            if t.path.exists() {
                let meta = inputs_meta(&scan.inputs, t, planned, cfg.order);
                results[i] = Some(check_kept(&t.path, cfg, &scan.classes, &meta)?);
                kept += 1;
            }
        }
    }
    if cfg.shard.is_some() {
        check_other_parts(cfg, &targets, &scan, planned)?;
    }
    if cfg.resume && cfg.shard.is_none() && !is_file_output(&cfg.out) {
        // A shard this run would not write is left from a bigger or differently cut run;
        // readers would mix it in, so refuse rather than keep it.
        for p in existing
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        {
            if !targets.iter().any(|t| &t.path == p) {
                return Err(IngestError::ResumeMismatch {
                    path: p.clone(),
                    what: "a shard number this run does not write (fewer inputs or another --shard-rows)".into(),
                });
            }
        }
    }
    let todo: Vec<usize> = (0..targets.len())
        .filter(|&i| results[i].is_none())
        .collect();
    let covered: usize = targets.iter().map(|t| t.items.len()).sum();
    let remaining: u64 = todo.iter().map(|&i| targets[i].items.len() as u64).sum();

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.jobs)
        .build()
        .map_err(|e| IngestError::Pool {
            jobs: cfg.jobs,
            reason: e.to_string(),
        })?;
    let timers = Timers::default();
    let mut progress = Progress::new(remaining, cfg.progress);
    let (tx, rx) = sync_channel::<Msg>(2);
    let sizes = (cfg.size, cfg.row_group_bytes, cfg.strict);
    let encoding = (cfg.encoding, cfg.resize);
    let classes = scan.classes.clone();
    let plans: Vec<(PathBuf, String)> = targets
        .iter()
        .map(|t| {
            (
                t.path.clone(),
                inputs_meta(&scan.inputs, t, planned, cfg.order).to_json(),
            )
        })
        .collect();
    let written = std::thread::scope(|s| -> Result<_, IngestError> {
        let writer = s.spawn(move || write_shards(rx, &plans, encoding, &classes, sizes));
        // Enough inputs per step to keep every worker busy, few enough to bound memory.
        let step = (cfg.jobs * 8).max(8);
        'targets: for &i in &todo {
            if tx.send(Msg::Begin(i)).is_err() {
                break;
            }
            let items = &scan.inputs[targets[i].items.clone()];
            for chunk in items.chunks(step) {
                let out: Vec<_> = pool.install(|| {
                    chunk
                        .par_iter()
                        .map(|inp| guarded(inp, cfg, &timers))
                        .collect()
                });
                progress.add(chunk.len() as u64);
                if tx.send(Msg::Items(out)).is_err() {
                    break 'targets;
                }
            }
            if tx.send(Msg::End).is_err() {
                break;
            }
        }
        drop(tx);
        writer
            .join()
            .map_err(|_| IngestError::Config("the shard writer thread panicked".into()))?
    });
    progress.finish();
    let Written {
        done,
        discarded,
        busy: write_time,
    } = written?;
    let shards_written = done.len();
    for (i, rows, rejects) in done.into_iter().chain(discarded) {
        results[i] = Some((rows, rejects));
    }

    let mut rows = 0;
    let mut rejects = Vec::new();
    for (r, rj) in results.into_iter().flatten() {
        rows += r;
        rejects.extend(rj);
    }
    let rpath = rejects_path(cfg);
    write_rejects(&rpath, &rejects)?;
    if cfg.strict && !rejects.is_empty() {
        return Err(IngestError::Strict {
            count: rejects.len(),
            first: format!("{}: {}", rejects[0].source, rejects[0].reason),
            rejects: rpath,
        });
    }
    let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 * 1e-9;
    Ok(IngestSummary {
        inputs: scan.inputs.len(),
        covered,
        rows,
        rejects: rejects.len(),
        shards_written,
        shards_kept: kept,
        classes: scan.classes.len(),
        rejects_path: rpath,
        seconds: start.elapsed().as_secs_f64(),
        times: StageTimes {
            read: secs(&timers.read),
            decode: secs(&timers.decode),
            resize: secs(&timers.resize),
            encode: secs(&timers.encode),
            write: write_time.as_secs_f64(),
        },
    })
}

/// Writes `rejects` as JSON lines, atomically; a failed write leaves no temporary.
fn write_rejects(path: &Path, rejects: &[Reject]) -> Result<(), IngestError> {
    let mut text = String::new();
    for r in rejects {
        text += &serde_json::to_string(r).unwrap_or_default();
        text.push('\n');
    }
    Ok(crate::atomic::write_bytes(path, text.as_bytes())?)
}

/// `path` made absolute with its symbolic links resolved, as far as it exists (the rest
/// appended as written), so two spellings of one place compare equal.
fn resolved(path: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(path).ok()?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p, c| p.join(c)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = existing.parent()?;
    }
}

/// Refuses an output inside the raw folder: the next ingest of RAW would scan the shards
/// folder as a class (or the output as an input).
fn check_out_not_in_raw(raw: &Path, out: &Path) -> Result<(), IngestError> {
    let (Some(r), Some(o)) = (resolved(raw), resolved(out)) else {
        return Ok(());
    };
    if o.starts_with(&r) {
        return Err(IngestError::Config(format!(
            "{}: the output is inside the raw folder {}, so a later ingest of it would read the shards as a class; write the shards outside it",
            out.display(),
            raw.display()
        )));
    }
    Ok(())
}

/// Refuses settings whose buffers cannot fit in memory: the mean-image sums (S·S·3 u64,
/// for the shard being written and for merging), and the images in flight (`jobs`·8 per
/// chunk, up to three chunks queued, a decoded copy for jpeg/png) plus one row group.
fn check_memory(cfg: &IngestConfig) -> Result<(), IngestError> {
    let px = (cfg.size as u128).pow(2) * 3;
    let in_flight = (cfg.jobs as u128 * 8).max(8) * 3 * 2;
    let need = px * 8 * 2 + px * in_flight + cfg.row_group_bytes as u128;
    crate::memory::check(
        format!(
            "--size {} with --jobs {} ({} per stored image)",
            cfg.size,
            cfg.jobs,
            crate::memory::Bytes(px)
        ),
        need,
        "lower --size (the paper: 256) or --jobs",
    )?;
    Ok(())
}

/// Creates the output's folder and locks it for this run: the folder's own lock, shared
/// between the `--shard` parts of one ingest and exclusive otherwise, and each part's own.
/// A single-file output is locked through a hidden file beside it.
fn lock_output(cfg: &IngestConfig) -> Result<Vec<FolderLock>, IngestError> {
    let what = "alexnet ingest";
    if is_file_output(&cfg.out) {
        let parent = cfg
            .out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| IngestError::io(parent, e))?;
        let name = cfg.out.file_name().unwrap_or_default().to_string_lossy();
        let lock = parent.join(format!(".{name}.lock"));
        return Ok(vec![FolderLock::acquire(
            &lock,
            &cfg.out,
            what,
            Mode::Exclusive,
        )?]);
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| IngestError::io(&cfg.out, e))?;
    let folder = cfg.out.join(LOCK_FILE);
    Ok(match cfg.shard {
        None => vec![FolderLock::acquire(
            &folder,
            &cfg.out,
            what,
            Mode::Exclusive,
        )?],
        Some(p) => {
            let own = cfg
                .out
                .join(format!(".alexnet-{}-of-{}.lock", p.index, p.count));
            vec![
                FolderLock::acquire(&folder, &cfg.out, what, Mode::Shared)?,
                FolderLock::acquire(&own, &cfg.out, what, Mode::Exclusive)?,
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_part_parses_and_plans_disjoint_covering_shards() {
        assert_eq!(
            "1/4".parse::<ShardPart>(),
            Ok(ShardPart { index: 1, count: 4 })
        );
        for bad in ["4/4", "1", "a/2", "0/0"] {
            assert!(bad.parse::<ShardPart>().is_err(), "{bad}");
        }
        let mut seen = Vec::new();
        for i in 0..3 {
            let mut cfg = IngestConfig::new("raw", "out");
            cfg.shard_rows = 4;
            cfg.shard = Some(ShardPart { index: i, count: 3 });
            for t in plan(&cfg, 30) {
                seen.extend(t.items.clone());
                assert!(t
                    .path
                    .ends_with(format!("part-{:05}.parquet", t.items.start / 4)));
            }
        }
        seen.sort();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
    }
}
