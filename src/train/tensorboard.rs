//! TensorBoard event files in the run directory, written as training logs its metrics.
//!
//! A file `RUN/events.out.tfevents.<unix seconds>.<host>.alexnet` holds TFRecord frames (a
//! little-endian u64 length, the masked CRC32C of those 8 bytes, the data, the masked CRC32C of
//! the data) around `tensorflow.Event` protocol buffers: a `file_version` event, then one event
//! per metrics record with its scalars as `Summary.Value.simple_value`, and the run's
//! `config.toml` as a text summary (plugin `text`). A resumed run opens a new file that starts
//! with a `SessionLog START` at the first step it redoes, which tells TensorBoard to drop the
//! earlier file's events from that step on, as the resume cut them from metrics.jsonl.
//!
//! Written here rather than with a crate: the crates that write TensorBoard files
//! (`tensorboard-rs`, `syntaxdot-summary`) have not been maintained since 2022. The messages
//! are encoded with [`crate::protobuf`]; the real `tensorboard` package reads the files back
//! in python/tests/test_tensorboard.py.
use crate::protobuf::Msg;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends events to one TensorBoard event file, flushing after each.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Opens a new event file in `dir` named for `wall_time` (Unix seconds) and writes its
    /// version event.
    pub fn create(dir: &Path, wall_time: f64) -> std::io::Result<Self> {
        let host = hostname();
        let mut n = 0;
        // Two runs resumed within a second must not share a file name.
        let path = loop {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!(".{n}")
            };
            let p = dir.join(format!(
                "events.out.tfevents.{}.{host}.alexnet{suffix}",
                wall_time as u64
            ));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let mut w = EventWriter { path, file };
        w.append(event(wall_time, 0).string(3, "brain.Event:2"))?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes scalars at `step` (non-finite values are skipped: TensorBoard would draw them
    /// as spikes to infinity; metrics.jsonl keeps them as `null`).
    pub fn scalars(
        &mut self,
        wall_time: f64,
        step: u64,
        values: &[(&str, f64)],
    ) -> std::io::Result<()> {
        let mut summary = Msg::new();
        let mut any = false;
        for (tag, v) in values.iter().filter(|(_, v)| v.is_finite()) {
            // Summary.Value: tag (1), simple_value (2).
            summary = summary.msg(1, &Msg::new().string(1, tag).float(2, *v as f32));
            any = true;
        }
        if !any {
            return Ok(());
        }
        self.append(event(wall_time, step).msg(5, &summary))
    }

    /// Writes `text` (Markdown) as a text summary named `tag` at `step`.
    pub fn text(
        &mut self,
        wall_time: f64,
        step: u64,
        tag: &str,
        text: &str,
    ) -> std::io::Result<()> {
        // SummaryMetadata.plugin_data (1) = PluginData { plugin_name (1) }.
        let metadata = Msg::new().msg(1, &Msg::new().string(1, "text"));
        // TensorProto: dtype (1) DT_STRING = 7, tensor_shape (2) empty (a scalar),
        // string_val (8).
        let tensor = Msg::new()
            .int(1, 7)
            .msg(2, &Msg::new())
            .bytes(8, text.as_bytes());
        // Summary.Value: tag (1), tensor (8), metadata (9).
        let value = Msg::new().string(1, tag).msg(9, &metadata).msg(8, &tensor);
        self.append(event(wall_time, step).msg(5, &Msg::new().msg(1, &value)))
    }

    /// Writes a `SessionLog START` at `step`: TensorBoard drops the events of earlier files
    /// at this step and later (a resumed run redoes them).
    pub fn restart(&mut self, wall_time: f64, step: u64) -> std::io::Result<()> {
        // Event.session_log (7) = SessionLog { status (1) = START (1) }.
        self.append(event(wall_time, step).msg(7, &Msg::new().int(1, 1)))
    }

    fn append(&mut self, event: Msg) -> std::io::Result<()> {
        let data = event.into_bytes();
        let len = (data.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(data.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc(&len).to_le_bytes());
        frame.extend_from_slice(&data);
        frame.extend_from_slice(&masked_crc(&data).to_le_bytes());
        // One write per event, so a reader of a live run sees whole frames only.
        self.file.write_all(&frame)?;
        self.file.flush()
    }
}

fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let clean: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

/// TFRecord's checksum: CRC32C rotated right by 15 plus a constant, so that a CRC over data
/// that itself holds CRCs stays well distributed.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// An `Event` with its wall_time (1, double) and step (2, int64).
fn event(wall_time: f64, step: u64) -> Msg {
    Msg::new().double(1, wall_time).int(2, step as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_of_tensorflow_s_own_frame() {
        // CRC32C's check value (RFC 3720 B.4): 32 bytes of zeros give 0x8a9136aa; masked, as
        // tensorboard.summary.writer.record_writer.masked_crc32c(bytes(32)) gives, 0x0fd7fffa.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(masked_crc(&[0u8; 32]), 0x0fd7_fffa);
    }

    #[test]
    fn frames_are_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path(), 1_700_000_000.5).unwrap();
        w.scalars(
            1_700_000_001.0,
            7,
            &[("train/loss", 2.5), ("nan", f64::NAN)],
        )
        .unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        // Walk the frames: every length and checksum must hold, and there are two events.
        let (mut at, mut events) = (0, 0);
        while at < bytes.len() {
            let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            assert_eq!(crc, masked_crc(&bytes[at..at + 8]));
            let data = &bytes[at + 12..at + 12 + len];
            let dcrc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(dcrc, masked_crc(data));
            at += 16 + len;
            events += 1;
        }
        assert_eq!((at, events), (bytes.len(), 2));
        // The NaN was left out: one value, tagged train/loss, 2.5 as f32.
        let needle = 2.5f32.to_le_bytes();
        assert!(bytes.windows(4).any(|w| w == needle));
        assert!(!bytes.windows(3).any(|w| w == b"nan"));
    }
}
