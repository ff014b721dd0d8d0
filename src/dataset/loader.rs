//! The training loader: background threads read and decode whole row groups, one thread
//! assembles batches in the epoch's order, and a bounded channel holds `prefetch` batches.
//! The batch sequence depends only on (set, config, epoch), never on thread timing.
use super::order::epoch_order;
use super::shardset::Pixels;
use super::{DatasetError, ShardSet};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How an epoch orders rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shuffle {
    /// File order: global row 0, 1, 2, …
    None,
    /// Row groups permuted, then rows permuted within windows of row groups (see
    /// [`super::epoch_order`]); a function of (seed, epoch).
    Full,
}

/// Loader settings.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    /// Images per batch.
    pub batch: usize,
    /// Shuffle seed; with the epoch number it fixes the order.
    pub seed: u64,
    /// Row order.
    pub shuffle: Shuffle,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Threads reading and decoding row groups.
    pub threads: usize,
    /// Batches ready ahead of the consumer.
    pub prefetch: usize,
    /// Row groups per shuffle window for [`Shuffle::Full`]; memory holds about twice this
    /// many decoded groups (a raw 256² group is ~32 MiB).
    pub window_groups: usize,
    /// Only these positions of the epoch's order (`None`: all): a contiguous part of the set,
    /// such as one rank's share of a validation set or one `eval --shard`. Batches are cut
    /// from the part.
    pub span: Option<Range<usize>>,
    /// Only these rows of every batch (`None`: all): one rank's share of each global batch.
    /// Batches are still cut at `batch` from the whole order, so the global batches, their
    /// count and their order stay those of a loader without it; rows outside are never read
    /// out of their row group nor copied.
    pub take: Option<Range<usize>>,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch: 128,
            seed: 0,
            shuffle: Shuffle::Full,
            drop_last: true,
            threads: 4,
            prefetch: 4,
            window_groups: 16,
            span: None,
            take: None,
        }
    }
}

/// A batch of images in the loader's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// `[B,S,S,3]` u8, RGB, H,W,C.
    pub images: Vec<u8>,
    /// `[B]` class indices.
    pub labels: Vec<i32>,
    /// `[B]` global row indices.
    pub rows: Vec<u64>,
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for a batch without images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Part `part` of `parts` (from 0) of `len` rows in order: contiguous, the sizes differing by
/// at most one, together every row once. How validation splits across ranks and `eval
/// --shard I/N` splits a set.
pub fn part_of(len: usize, part: usize, parts: usize) -> Range<usize> {
    let parts = parts.max(1);
    let at = |k: usize| (len as u128 * k.min(parts) as u128 / parts as u128) as usize;
    at(part)..at(part + 1)
}

/// Reads the given global rows, in the given order (random access by row group; each
/// needed group is read once). For export and evaluation.
pub fn read_rows(set: &ShardSet, rows: &[u64]) -> Result<Batch, DatasetError> {
    let mut loaded: HashMap<usize, Pixels> = HashMap::new();
    let px = set.size() * set.size() * 3;
    let mut batch = Batch {
        images: Vec::with_capacity(rows.len() * px),
        labels: Vec::with_capacity(rows.len()),
        rows: rows.to_vec(),
    };
    for &row in rows {
        let g = set.group_of(row)?;
        if let std::collections::hash_map::Entry::Vacant(e) = loaded.entry(g) {
            e.insert(set.read_group(g)?);
        }
        copy_row(set, &loaded, g, row, px, &mut batch);
    }
    Ok(batch)
}

fn copy_row(
    set: &ShardSet,
    loaded: &HashMap<usize, Pixels>,
    g: usize,
    row: u64,
    px: usize,
    batch: &mut Batch,
) {
    // Callers insert group g before copying; a missing group would be a loader bug.
    if let Some(p) = loaded.get(&g) {
        let i = (row - set.row_groups()[g].first_row) as usize;
        batch
            .images
            .extend_from_slice(&p.images[i * px..(i + 1) * px]);
        batch.labels.push(p.labels[i]);
    }
}

/// Gate that keeps reader threads at most `allowed` groups ahead in the need sequence.
struct Gate {
    allowed: Mutex<usize>,
    cv: Condvar,
}

/// An epoch's batches, produced in the background. Iterate to get them; dropping it stops
/// the threads.
pub struct Loader {
    rx: Option<Receiver<Result<Batch, DatasetError>>>,
    waited: Duration,
    batches: usize,
    stop: Arc<AtomicBool>,
    gate: Arc<Gate>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader {
    /// Starts epoch `epoch`, skipping its first `skip_batches` batches (to resume mid-epoch).
    pub fn epoch(set: &ShardSet, cfg: &LoaderConfig, epoch: u64, skip_batches: usize) -> Loader {
        let set = Arc::new(set.clone());
        let batch = cfg.batch.max(1);
        let mut order = epoch_order(&set, cfg.shuffle, cfg.seed, epoch, cfg.window_groups);
        if let Some(span) = &cfg.span {
            let end = span.end.min(order.len());
            order = order[span.start.min(end)..end].to_vec();
        }
        let n = order.len();
        let total = if cfg.drop_last {
            n / batch
        } else {
            n.div_ceil(batch)
        };
        let take = cfg.take.clone().unwrap_or(0..batch);
        let batches: Vec<Range<usize>> = (skip_batches.min(total)..total)
            .map(|b| {
                let end = ((b + 1) * batch).min(n);
                (b * batch + take.start).min(end)..(b * batch + take.end).min(end)
            })
            .collect();

        // Groups in order of first need, and the last batch that needs each.
        let mut seq = Vec::new();
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        let mut first_use: HashMap<usize, usize> = HashMap::new();
        for (b, r) in batches.iter().enumerate() {
            for &row in &order[r.clone()] {
                // Rows come from the set itself, so group_of cannot fail here.
                let g = set.group_of(row).unwrap_or(0);
                first_use.entry(g).or_insert_with(|| {
                    seq.push(g);
                    b
                });
                last_use.insert(g, b);
            }
        }
        // Readers may run ahead by the most groups any batch keeps alive, plus one per
        // thread; fewer could deadlock, more only costs memory.
        let mut live = vec![0i64; batches.len() + 1];
        for (g, &f) in &first_use {
            live[f] += 1;
            live[last_use[g] + 1] -= 1;
        }
        let mut cur = 0i64;
        let mut max_live = 0i64;
        for d in &live {
            cur += d;
            max_live = max_live.max(cur);
        }
        // Which rows of each group this loader hands out, when it hands out only some: the
        // readers decode no others.
        let keep: Option<Arc<HashMap<usize, Vec<bool>>>> =
            (cfg.span.is_some() || cfg.take.is_some()).then(|| {
                let mut keep: HashMap<usize, Vec<bool>> = HashMap::new();
                for r in &batches {
                    for &row in &order[r.clone()] {
                        let g = set.group_of(row).unwrap_or(0);
                        let rg = set.row_groups()[g];
                        let mask = keep.entry(g).or_insert_with(|| vec![false; rg.rows]);
                        if let Some(m) = mask.get_mut((row - rg.first_row) as usize) {
                            *m = true;
                        }
                    }
                }
                Arc::new(keep)
            });
        let threads_n = cfg.threads.max(1);
        let gate = Arc::new(Gate {
            allowed: Mutex::new(max_live as usize + threads_n),
            cv: Condvar::new(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(seq);
        let next = Arc::new(AtomicUsize::new(0));
        let (gtx, grx) = std::sync::mpsc::channel::<(usize, Result<Pixels, DatasetError>)>();
        let mut threads = Vec::new();
        for _ in 0..threads_n {
            let keep = keep.clone();
            let (set, seq, next, gate, stop, gtx) = (
                set.clone(),
                seq.clone(),
                next.clone(),
                gate.clone(),
                stop.clone(),
                gtx.clone(),
            );
            threads.push(std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= seq.len() {
                    return;
                }
                {
                    let Ok(mut allowed) = gate.allowed.lock() else {
                        return;
                    };
                    while i >= *allowed && !stop.load(Ordering::SeqCst) {
                        let Ok(a) = gate.cv.wait(allowed) else { return };
                        allowed = a;
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let g = seq[i];
                let mask = keep.as_ref().and_then(|k| k.get(&g)).map(Vec::as_slice);
                if gtx.send((g, set.read_group_rows(g, mask))).is_err() {
                    return;
                }
            }));
        }
        drop(gtx);

        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let (gate2, stop2) = (gate.clone(), stop.clone());
        let n_batches = batches.len();
        threads.push(std::thread::spawn(move || {
            let px = set.size() * set.size() * 3;
            let mut loaded: HashMap<usize, Pixels> = HashMap::new();
            for (b, r) in batches.into_iter().enumerate() {
                let rows = order[r].to_vec();
                let mut out = Batch {
                    images: Vec::with_capacity(rows.len() * px),
                    labels: Vec::with_capacity(rows.len()),
                    rows: Vec::new(),
                };
                for &row in &rows {
                    let g = set.group_of(row).unwrap_or(0);
                    while !loaded.contains_key(&g) {
                        match grx.recv() {
                            Ok((got, Ok(p))) => {
                                loaded.insert(got, p);
                            }
                            Ok((_, Err(e))) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                            Err(_) => {
                                let _ = tx.send(Err(DatasetError::Loader(
                                    "reader threads ended early".into(),
                                )));
                                return;
                            }
                        }
                    }
                    copy_row(&set, &loaded, g, row, px, &mut out);
                }
                out.rows = rows;
                let done: Vec<usize> = loaded
                    .keys()
                    .copied()
                    .filter(|g| last_use.get(g) == Some(&b))
                    .collect();
                for g in &done {
                    loaded.remove(g);
                }
                if let Ok(mut a) = gate2.allowed.lock() {
                    *a += done.len();
                }
                gate2.cv.notify_all();
                if tx.send(Ok(out)).is_err() || stop2.load(Ordering::SeqCst) {
                    return;
                }
            }
        }));
        Loader {
            rx: Some(rx),
            waited: Duration::ZERO,
            batches: n_batches,
            stop,
            gate,
            threads,
        }
    }

    /// Batches this epoch yields (after skipping).
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Total time the consumer has spent blocked waiting for batches.
    pub fn wait_time(&self) -> Duration {
        self.waited
    }
}

impl Iterator for Loader {
    type Item = Result<Batch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        let t = Instant::now();
        let got = self.rx.as_ref()?.recv().ok();
        self.waited += t.elapsed();
        got
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Dropping the receiver unblocks the assembler's send; waking the gate frees readers.
        self.rx = None;
        self.gate.cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
