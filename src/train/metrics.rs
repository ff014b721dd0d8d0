//! `RUN/metrics.jsonl`: one JSON object per line, a `step` record every `log_every` steps and an
//! `epoch` record at the end of each epoch. Written by appending and flushing each line, so a
//! crash loses at most the line being written; read back by `report` and by a resumed run,
//! which first cuts the records after its checkpoint's step.
//!
//! Numbers that are not finite (a diverged loss) are written as `null`, since JSON has no NaN,
//! and read back as NaN. Every line also holds `time`, the Unix time in seconds it was written
//! at, and each record goes to the run's TensorBoard event file too ([`super::tensorboard`]).
use super::tensorboard::EventWriter;
use serde::{Deserialize, Deserializer, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The file name inside a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What can go wrong with a metrics file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The file could not be opened, read or written.
    #[error("{path}: cannot read or write the metrics file")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file does not exist: the run has not logged anything.
    #[error("{path}: no metrics file; is this a run directory made by `alexnet train` (it writes metrics.jsonl)?")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A line is not a metrics record.
    #[error("{path}:{line}: not a metrics record; delete that line or the file to continue")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a number that may have been written as `null` (not finite) back as NaN.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One logged training step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps done so far, this one included (from 1).
    pub step: u64,
    /// The epoch this step belongs to (from 1).
    pub epoch: usize,
    /// Mean loss of this step's batch.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// Learning rate used for this step.
    pub lr: f64,
    /// Top-1 error in [0, 1] on the training batches since the previous step record, as
    /// trained (augmented, dropout on); absent in files written before it was logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1_error: Option<f64>,
    /// Training throughput since the previous step record.
    #[serde(deserialize_with = "nan_if_null")]
    pub images_per_s: f64,
    /// Seconds the GPU waited for the loader since the previous step record.
    #[serde(deserialize_with = "nan_if_null")]
    pub data_wait_s: f64,
    /// With two devices: seconds the step waited at the columns' exchanges since the previous
    /// step record (compute before each exchange included), and the bytes moved. With
    /// data-parallel replicas: seconds in the gradient all-reduce and the bytes this process
    /// handed to it (0 within one process, where the replicas are summed on the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<ExchangeRecord>,
}

/// The exchanges of a two-device or replicated run over one logging window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    /// Seconds waiting for the slices (compute before each exchange included).
    pub wait_s: f64,
    /// Seconds copying them host → device.
    pub host_s: f64,
    /// Bytes moved, both directions.
    pub bytes: u64,
}

/// One finished epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch that ended (from 1).
    pub epoch: usize,
    /// Steps done so far.
    pub step: u64,
    /// Mean training loss over the epoch.
    #[serde(deserialize_with = "nan_if_null")]
    pub train_loss: f64,
    /// Validation loss; `None` on epochs without validation.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Validation top-1 error in [0, 1]; `None` on epochs without validation.
    #[serde(default)]
    pub val_top1_error: Option<f64>,
    /// Validation top-5 error in [0, 1]; `None` on epochs without validation.
    #[serde(default)]
    pub val_top5_error: Option<f64>,
    /// Learning rate used during the epoch.
    pub lr: f64,
    /// Wall-clock seconds of the epoch, validation included.
    pub seconds: f64,
}

/// One configuration key that a `--resume` changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigChange {
    /// The dotted `config.toml` key.
    pub key: String,
    /// The value before, as TOML text (`(not set)` for an absent key).
    pub from: String,
    /// The value from the resume on.
    pub to: String,
}

/// A `--resume` that changed the configuration: from `step` on, these values hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// Steps done when the run resumed.
    pub step: u64,
    /// Epochs completed then.
    pub epoch: usize,
    /// What changed.
    pub changes: Vec<ConfigChange>,
}

/// A line of `metrics.jsonl`, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// `{"kind":"step",...}`.
    Step(StepRecord),
    /// `{"kind":"epoch",...}`.
    Epoch(EpochRecord),
    /// `{"kind":"resume",...}`: a resume changed the configuration.
    Resume(ResumeRecord),
}

impl Record {
    /// The step count at which the record was written.
    pub fn step(&self) -> u64 {
        match self {
            Record::Step(s) => s.step,
            Record::Epoch(e) => e.step,
            Record::Resume(r) => r.step,
        }
    }
}

/// Training seconds of epoch `epoch` (from 1) in `records`: each step record's window
/// (its steps since the record before) at its images per second. A resumed run starts its
/// epoch's clock from this, so the epoch record's `seconds` covers the whole epoch.
pub fn seconds_in_epoch(records: &[Record], epoch: usize, batch: usize) -> f64 {
    let mut before = 0u64;
    let mut seconds = 0.0;
    for r in records {
        if let Record::Step(s) = r {
            let images = (s.step.saturating_sub(before) as usize * batch) as f64;
            if s.epoch == epoch && s.images_per_s > 0.0 {
                seconds += images / s.images_per_s;
            }
            before = s.step;
        }
    }
    seconds
}

/// Appends records to a metrics file and the run's TensorBoard event file, flushing each.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
    events: EventWriter,
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Opens a TensorBoard event file in `run_dir` and writes the run's `config.toml` (saved
/// before the metrics open) into it as text; a resumed run first marks `restart_at`.
fn open_events(run_dir: &Path, restart_at: Option<u64>) -> Result<EventWriter, MetricsError> {
    let now = unix_now();
    let mut events = EventWriter::create(run_dir, now).map_err(io(run_dir))?;
    let step = restart_at.unwrap_or(0);
    if let Some(step) = restart_at {
        events.restart(now, step).map_err(io(events.path()))?;
    }
    if let Ok(config) = std::fs::read_to_string(run_dir.join("config.toml")) {
        // Indented four spaces: Markdown's code block, so TensorBoard shows the TOML as written.
        let text: String = config.lines().map(|l| format!("    {l}\n")).collect();
        events
            .text(now, step, "config", &text)
            .map_err(io(events.path()))?;
    }
    Ok(events)
}

impl MetricsWriter {
    /// Opens `RUN/metrics.jsonl` for a fresh run, emptying any earlier file.
    pub fn create(run_dir: &Path) -> Result<Self, MetricsError> {
        let path = run_dir.join(METRICS_FILE);
        let file = File::create(&path).map_err(io(&path))?;
        let events = open_events(run_dir, None)?;
        Ok(MetricsWriter { path, file, events })
    }

    /// Opens `RUN/metrics.jsonl` for a run resumed from a checkpoint taken at `step`: records
    /// written after that step (by the part of the run that the checkpoint does not hold) are
    /// cut, atomically, then new records append. A missing file starts empty.
    pub fn resume(run_dir: &Path, step: u64) -> Result<Self, MetricsError> {
        let path = run_dir.join(METRICS_FILE);
        if path.exists() {
            // The kept lines as they were, with the times they were written at.
            let text: String = read_lines(&path)?
                .into_iter()
                .filter(|(_, r)| r.step() <= step)
                .map(|(line, _)| line + "\n")
                .collect();
            crate::atomic::write_bytes(&path, text.as_bytes()).map_err(|e| io(&path)(e.into()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let events = open_events(run_dir, Some(step + 1))?;
        Ok(MetricsWriter { path, file, events })
    }

    /// Appends one record as one line and flushes it to the file.
    pub fn write(&mut self, record: &Record) -> Result<(), MetricsError> {
        let now = unix_now();
        // One write call per line, so a reader never sees half a line from a live run
        // (up to the OS's atomic append size, far above a record's ~200 bytes).
        self.file
            .write_all(to_line(record, now).as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(io(&self.path))?;
        self.events
            .scalars(now, record.step(), &scalars(record))
            .map_err(io(self.events.path()))
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The TensorBoard event file being written.
    pub fn events_path(&self) -> &Path {
        self.events.path()
    }
}

/// A record's TensorBoard scalars: tag and value (docs/checkpoints.md lists them).
fn scalars(r: &Record) -> Vec<(&'static str, f64)> {
    match r {
        Record::Step(s) => {
            let mut v = vec![
                ("train/loss", s.loss),
                ("train/lr", s.lr),
                ("train/images_per_s", s.images_per_s),
                ("train/data_wait_s", s.data_wait_s),
            ];
            if let Some(e) = s.top1_error {
                v.push(("train/top1_error", e));
            }
            v
        }
        Record::Epoch(e) => {
            let mut v = vec![
                ("epoch/train_loss", e.train_loss),
                ("epoch/lr", e.lr),
                ("epoch/seconds", e.seconds),
            ];
            for (tag, x) in [
                ("val/loss", e.val_loss),
                ("val/top1_error", e.val_top1_error),
                ("val/top5_error", e.val_top5_error),
            ] {
                if let Some(x) = x {
                    v.push((tag, x));
                }
            }
            v
        }
        // What a resume changed is text, not a scalar: metrics.jsonl keeps it.
        Record::Resume(_) => Vec::new(),
    }
}

/// A record as it is written: its fields, then `time`.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    record: &'a Record,
    time: f64,
}

fn to_line(r: &Record, time: f64) -> String {
    // A record is plain numbers and an enum tag; serde_json cannot fail on it (non-finite
    // floats become null, which the reader maps back to NaN).
    let mut s = serde_json::to_string(&Line { record: r, time }).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads every record of a metrics file, in order. A last line without its newline that does
/// not parse is the trace of a crash mid-write and is dropped; any other bad line is an error.
pub fn read_metrics(path: &Path) -> Result<Vec<Record>, MetricsError> {
    Ok(read_lines(path)?.into_iter().map(|(_, r)| r).collect())
}

/// Every record of a metrics file with its line (trimmed), as [`read_metrics`] reads them.
fn read_lines(path: &Path) -> Result<Vec<(String, Record)>, MetricsError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MetricsError::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(io(path)(e)),
    };
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut line = String::new();
    let mut n = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io(path))? == 0 {
            break;
        }
        n += 1;
        let complete = line.ends_with('\n');
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(text) {
            Ok(r) => out.push((text.to_string(), r)),
            Err(_) if !complete => break,
            Err(source) => {
                return Err(MetricsError::Parse {
                    path: path.to_path_buf(),
                    line: n,
                    source,
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: f64) -> Record {
        Record::Step(StepRecord {
            step,
            epoch: 1,
            loss,
            lr: 0.01,
            top1_error: None,
            images_per_s: 100.0,
            data_wait_s: 0.5,
            exchange: None,
        })
    }

    fn epoch(epoch: usize, step: u64, val: Option<f64>) -> Record {
        Record::Epoch(EpochRecord {
            epoch,
            step,
            train_loss: 2.0,
            val_loss: val.map(|v| v * 2.0),
            val_top1_error: val,
            val_top5_error: val.map(|v| v / 2.0),
            lr: 0.01,
            seconds: 12.5,
        })
    }

    #[test]
    fn lines_have_the_documented_fields() {
        let s = to_line(&step(3, 1.5), 1.0);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in [
            "kind",
            "step",
            "epoch",
            "loss",
            "lr",
            "images_per_s",
            "data_wait_s",
            "time",
        ] {
            assert!(keys.contains(&k), "{k} missing in {s}");
        }
        assert_eq!(v["kind"], "step");
        let v: serde_json::Value =
            serde_json::from_str(&to_line(&epoch(1, 10, Some(0.3)), 1.0)).unwrap();
        assert_eq!(v["kind"], "epoch");
        for k in [
            "epoch",
            "step",
            "train_loss",
            "val_loss",
            "val_top1_error",
            "val_top5_error",
            "lr",
            "seconds",
            "time",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
    }

    #[test]
    fn write_then_read_back_with_nan_and_missing_validation() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        let recs = vec![
            step(1, 2.3),
            step(2, f64::NAN),
            epoch(1, 2, None),
            epoch(2, 4, Some(0.25)),
        ];
        for r in &recs {
            w.write(r).unwrap();
        }
        let back = read_metrics(w.path()).unwrap();
        assert_eq!(back.len(), 4);
        match &back[1] {
            Record::Step(s) => assert!(s.loss.is_nan()),
            other => panic!("{other:?}"),
        }
        assert_eq!(back[0], recs[0]);
        assert_eq!(back[2..], recs[2..]);
    }

    #[test]
    fn resume_cuts_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        for s in 1..=10 {
            w.write(&step(s, 1.0)).unwrap();
        }
        w.write(&epoch(1, 10, Some(0.5))).unwrap();
        drop(w);
        let mut w = MetricsWriter::resume(dir.path(), 6).unwrap();
        w.write(&step(7, 0.9)).unwrap();
        let back = read_metrics(w.path()).unwrap();
        let steps: Vec<u64> = back.iter().map(Record::step).collect();
        assert_eq!(steps, vec![1, 2, 3, 4, 5, 6, 7]);
        // Kept lines keep the time they were first written at; every line has one.
        let times: Vec<f64> = std::fs::read_to_string(w.path())
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["time"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        assert_eq!(times.len(), 7);
        assert!(
            times.windows(2).all(|t| t[0] <= t[1]) && times[0] > 1.7e9,
            "{times:?}"
        );
        // Each opening wrote its own event file.
        let events = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("tfevents")
            })
            .count();
        assert_eq!(events, 2);
        // A resume with nothing logged yet starts an empty file.
        let empty = tempfile::tempdir().unwrap();
        MetricsWriter::resume(empty.path(), 5).unwrap();
        assert!(read_metrics(&empty.path().join(METRICS_FILE))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn torn_last_line_is_dropped_but_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(METRICS_FILE);
        let good = to_line(&step(1, 1.0), 1.0);
        std::fs::write(&p, format!("{good}{{\"kind\":\"st")).unwrap();
        assert_eq!(read_metrics(&p).unwrap().len(), 1);
        std::fs::write(&p, format!("{good}garbage\n{good}")).unwrap();
        let e = read_metrics(&p).unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl:2"), "{e}");
        let e = read_metrics(&dir.path().join("nope.jsonl")).unwrap_err();
        assert!(matches!(e, MetricsError::Missing { .. }), "{e}");
    }
}
