//! Host-staged exchanges between the two column devices. wgpu has no peer-to-peer copy, so a
//! slice goes: pack on the sender (one kernel into a contiguous buffer) → copy into a mapped
//! staging buffer → host → `write_buffer` on the receiver → unpack there. Both directions of
//! an exchange share one submit per device and one wait, so each exchange is one copy per
//! direction.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::{Gpu, GpuError, Tensor};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

/// The buffers of one exchange size, on both devices.
struct Link {
    len: usize,
    send: [Tensor; 2],
    back: [wgpu::Buffer; 2],
    recv: [Tensor; 2],
}

impl Link {
    fn new(gpus: &[Gpu; 2], len: usize) -> Link {
        let back = |g: &Gpu| {
            g.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("columns.staging"),
                size: (len.max(1) * 4) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        Link {
            len,
            send: [0, 1].map(|d| Tensor::zeros(&gpus[d], len, "columns.send")),
            back: [back(&gpus[0]), back(&gpus[1])],
            recv: [0, 1].map(|d| Tensor::zeros(&gpus[d], len, "columns.recv")),
        }
    }
}

/// Exchange counters since the last [`Exchanger::take_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Exchanges (each both directions).
    pub exchanges: u64,
    /// Bytes moved, both directions together.
    pub bytes: u64,
    /// Seconds from submitting the work before an exchange until both sides' slices were on
    /// the host (compute still running is included: the split's synchronisation cost).
    pub wait_s: f64,
    /// Seconds copying the slices host → device (`write_buffer`) and unmapping.
    pub host_s: f64,
}

/// Links by size, created on first use, and the counters.
#[derive(Default)]
pub struct Exchanger {
    links: RefCell<Vec<Link>>,
    wait: Cell<Duration>,
    host: Cell<Duration>,
    bytes: Cell<u64>,
    count: Cell<u64>,
}

/// One side of an exchange: a tensor and the channel slice in it.
pub type Side<'a> = (&'a Tensor, Slice);

impl Exchanger {
    /// Counters since the last call, then zeroed.
    pub fn take_stats(&self) -> ExchangeStats {
        ExchangeStats {
            exchanges: self.count.replace(0),
            bytes: self.bytes.replace(0),
            wait_s: self.wait.replace(Duration::ZERO).as_secs_f64(),
            host_s: self.host.replace(Duration::ZERO).as_secs_f64(),
        }
    }

    /// Device `d` sends slice `from[d]` (shape `m`) and receives the other device's into
    /// `to[d]`, copied or added. Everything recorded in `encs` so far is submitted first;
    /// `encs` continue with the unpacking.
    pub fn swap(
        &self,
        gpus: &[Gpu; 2],
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        from: [Side<'_>; 2],
        to: [Side<'_>; 2],
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let len = m.n * m.k * m.hw;
        let mut links = self.links.borrow_mut();
        let li = match links.iter().position(|l| l.len == len) {
            Some(i) => i,
            None => {
                links.push(Link::new(gpus, len));
                links.len() - 1
            }
        };
        let link = &links[li];
        let packed = Slice::at(m.k, 0);
        let bytes = (len * 4) as u64;
        for d in 0..2 {
            channels::copy(
                &gpus[d],
                &mut encs[d],
                m,
                from[d],
                (&link.send[d], packed),
                false,
            )?;
            encs[d].copy_buffer_to_buffer(&link.send[d].buffer, 0, &link.back[d], 0, bytes);
        }
        let t0 = Instant::now();
        let done = [0, 1].map(|d| {
            let enc = std::mem::replace(&mut encs[d], gpus[d].encoder("columns.step"));
            gpus[d].submit(enc)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        for d in 0..2 {
            let tx = tx.clone();
            link.back[d]
                .slice(..bytes)
                .map_async(wgpu::MapMode::Read, move |r| {
                    // The receiver lives until both results are in; a send cannot fail.
                    let _ = tx.send((d, r));
                });
        }
        for (d, idx) in done.into_iter().enumerate() {
            gpus[d]
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| GpuError::Invalid {
                    op: "columns.exchange",
                    reason: format!("device {d} did not finish: {e}"),
                })?;
        }
        for _ in 0..2 {
            let (d, r) = rx.recv().map_err(|_| GpuError::Invalid {
                op: "columns.exchange",
                reason: "a staging buffer was never mapped".into(),
            })?;
            r.map_err(|e| GpuError::Invalid {
                op: "columns.exchange",
                reason: format!("mapping device {d}'s staging buffer: {e}"),
            })?;
        }
        let t1 = Instant::now();
        for d in 0..2 {
            {
                let view =
                    link.back[d]
                        .get_mapped_range(..bytes)
                        .map_err(|e| GpuError::Invalid {
                            op: "columns.exchange",
                            reason: format!("reading device {d}'s staging buffer: {e}"),
                        })?;
                gpus[1 - d]
                    .queue
                    .write_buffer(&link.recv[1 - d].buffer, 0, &view);
            }
            link.back[d].unmap();
        }
        for d in 0..2 {
            channels::copy(
                &gpus[d],
                &mut encs[d],
                m,
                (&link.recv[d], packed),
                to[d],
                accumulate,
            )?;
        }
        self.wait.set(self.wait.get() + (t1 - t0));
        self.host.set(self.host.get() + t1.elapsed());
        self.bytes.set(self.bytes.get() + 2 * bytes);
        self.count.set(self.count.get() + 1);
        Ok(())
    }
}
