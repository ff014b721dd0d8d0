//! Reading a buffer back without draining the queue. [`Tensor::download`] waits for every
//! submitted step; a [`ReadbackRing`] instead queues a copy into one of a few mapped staging
//! buffers and returns at once, and the copy is collected later, after the steps queued
//! behind it have started. The training loop reads each logging window's loss rows so: the
//! GPU never idles while the host looks at the numbers.
use super::{Gpu, GpuError, Result, Tensor};
use std::collections::VecDeque;
use std::sync::mpsc::{channel, Receiver};

/// A copy in flight: which slot, its submission, how many floats, and the map callback's
/// answer.
struct InFlight {
    slot: usize,
    submission: wgpu::SubmissionIndex,
    len: usize,
    mapped: Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// A few staging buffers used in turn; at most `slots` copies are in flight.
pub struct ReadbackRing {
    label: String,
    buffers: Vec<wgpu::Buffer>,
    in_flight: VecDeque<InFlight>,
    next: usize,
}

impl ReadbackRing {
    /// `slots` staging buffers of `len` floats each.
    pub fn new(gpu: &Gpu, len: usize, slots: usize, label: &str) -> ReadbackRing {
        let buffers = (0..slots.max(1))
            .map(|i| {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("{label}.staging{i}")),
                    size: (len.max(1) * 4) as u64,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
            .collect();
        ReadbackRing {
            label: label.into(),
            buffers,
            in_flight: VecDeque::new(),
            next: 0,
        }
    }

    /// Copies in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Queues a copy of `src`'s first `len` floats and returns without waiting. With every
    /// slot in flight, the oldest must be collected first ([`ReadbackRing::collect`]).
    pub fn start(&mut self, gpu: &Gpu, src: &Tensor, len: usize) -> Result<()> {
        let fail = |reason: String| GpuError::Readback {
            label: self.label.clone(),
            reason,
        };
        if self.in_flight.len() == self.buffers.len() {
            return Err(fail(format!(
                "all {} staging buffers are in flight; collect one first",
                self.buffers.len()
            )));
        }
        let slot = self.next;
        let buffer = &self.buffers[slot];
        let bytes = (len * 4) as u64;
        if bytes > buffer.size() || bytes > src.bytes() {
            return Err(fail(format!(
                "{len} floats do not fit the {}-float staging buffer or the {}-float source",
                buffer.size() / 4,
                src.bytes() / 4
            )));
        }
        let mut encoder = gpu.encoder("readback.copy");
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(&src.buffer, 0, buffer, 0, bytes);
        }
        let submission = gpu.submit(encoder);
        let (tx, mapped) = channel();
        buffer.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver lives in `in_flight` until collected; a send error means the
            // ring was dropped and nobody is waiting.
            let _ = tx.send(r);
        });
        self.in_flight.push_back(InFlight {
            slot,
            submission,
            len,
            mapped,
        });
        self.next = (slot + 1) % self.buffers.len();
        Ok(())
    }

    /// The oldest copy's floats, waiting only for that copy's submission (the steps queued
    /// after it keep running). `None` when nothing is in flight.
    pub fn collect(&mut self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        let Some(f) = self.in_flight.pop_front() else {
            return Ok(None);
        };
        let fail = |reason: String| GpuError::Readback {
            label: self.label.clone(),
            reason,
        };
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(f.submission),
                timeout: None,
            })
            .map_err(|e| fail(e.to_string()))?;
        let answer = match f.mapped.try_recv() {
            Ok(answer) => answer,
            // A backend may resolve the mapping one maintenance later than the copy: wait
            // for everything then, which is what a plain download does anyway.
            Err(_) => {
                gpu.wait()?;
                f.mapped.recv().map_err(|e| fail(e.to_string()))?
            }
        };
        answer.map_err(|e| fail(e.to_string()))?;
        let buffer = &self.buffers[f.slot];
        let out = {
            let view = buffer
                .get_mapped_range(..)
                .map_err(|e| fail(e.to_string()))?;
            bytemuck::cast_slice::<u8, f32>(&view)[..f.len].to_vec()
        };
        buffer.unmap();
        Ok(Some(out))
    }
}
