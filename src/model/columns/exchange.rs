//! Host-staged exchanges between the two column devices. wgpu has no peer-to-peer copy, so a
//! slice goes: pack on the sender (one kernel into a contiguous buffer) → copy into a mapped
//! staging buffer → host → `write_buffer` on the receiver → unpack there. Both directions of
//! an exchange share one submit per device and one wait, so each exchange is one copy per
//! direction.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::{Gpu, GpuError, Recorder, Tensor};
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
    /// the host (compute still running before the pack is included: the split's
    /// synchronisation cost).
    pub wait_s: f64,
    /// Seconds copying the slices host → device (`write_buffer`) and unmapping.
    pub host_s: f64,
}

/// An exchange between [`Exchanger::send`] and [`Exchanger::receive`].
pub struct InFlight {
    link: usize,
    m: Move,
    done: [wgpu::SubmissionIndex; 2],
    mapped: std::sync::mpsc::Receiver<(usize, Result<(), String>)>,
    t0: Instant,
}

fn busy() -> GpuError {
    GpuError::Invalid {
        op: "columns.exchange",
        reason: "an exchange started while another was in flight (staging buffers are shared)"
            .into(),
    }
}

/// Links by size, created on first use, and the counters. One exchange is in flight at a
/// time, so exchanges of one size share their buffers.
#[derive(Default)]
pub struct Exchanger {
    links: RefCell<Vec<Link>>,
    busy: Cell<bool>,
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
        let flight = self.send(gpus, encs, m, from)?;
        self.receive(gpus, encs, flight, to, accumulate)
    }

    /// The first half of [`Self::swap`]: packs `from[d]`, submits everything recorded so far
    /// and starts the copies to the host. Work recorded into `encs` before
    /// [`Self::receive`] runs on the devices while the slices travel.
    pub fn send(
        &self,
        gpus: &[Gpu; 2],
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        from: [Side<'_>; 2],
    ) -> Result<InFlight, GpuError> {
        if self.busy.replace(true) {
            return Err(busy());
        }
        let len = m.n * m.k * m.hw;
        let mut links = self.links.borrow_mut();
        let link = match links.iter().position(|l| l.len == len) {
            Some(i) => i,
            None => {
                links.push(Link::new(gpus, len));
                links.len() - 1
            }
        };
        let l = &links[link];
        let bytes = (len * 4) as u64;
        for d in 0..2 {
            let packed = (&l.send[d], Slice::at(m.k, 0));
            channels::copy(
                &mut Recorder::new(&gpus[d], &mut encs[d]),
                m,
                from[d],
                packed,
                false,
            )?;
            encs[d].copy_buffer_to_buffer(&l.send[d].buffer, 0, &l.back[d], 0, bytes);
        }
        let t0 = Instant::now();
        let done = [0, 1].map(|d| {
            let enc = std::mem::replace(&mut encs[d], gpus[d].encoder("columns.step"));
            gpus[d].submit(enc)
        });
        let (tx, rx) = std::sync::mpsc::channel();
        for d in 0..2 {
            let tx = tx.clone();
            l.back[d]
                .slice(..bytes)
                .map_async(wgpu::MapMode::Read, move |r| {
                    // The receiver lives until both results are in; a send cannot fail.
                    let _ = tx.send((d, r.map_err(|e| e.to_string())));
                });
        }
        Ok(InFlight {
            link,
            m,
            done,
            mapped: rx,
            t0,
        })
    }

    /// The second half of [`Self::swap`]: submits what was recorded since [`Self::send`],
    /// waits for the slices, writes each to the other device and records the unpacking into
    /// `to[d]`.
    pub fn receive(
        &self,
        gpus: &[Gpu; 2],
        encs: &mut [wgpu::CommandEncoder; 2],
        flight: InFlight,
        to: [Side<'_>; 2],
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let fail = |reason: String| GpuError::Invalid {
            op: "columns.exchange",
            reason,
        };
        for d in 0..2 {
            let enc = std::mem::replace(&mut encs[d], gpus[d].encoder("columns.step"));
            gpus[d].submit(enc);
        }
        let InFlight {
            link,
            m,
            done,
            mapped,
            t0,
        } = flight;
        for (d, idx) in done.into_iter().enumerate() {
            gpus[d]
                .device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| fail(format!("device {d} did not finish: {e}")))?;
        }
        for _ in 0..2 {
            let (d, r) = mapped
                .recv()
                .map_err(|_| fail("a staging buffer was never mapped".into()))?;
            r.map_err(|e| fail(format!("mapping device {d}'s staging buffer: {e}")))?;
        }
        let t1 = Instant::now();
        let links = self.links.borrow();
        let l = &links[link];
        let bytes = l.len as u64 * 4;
        for d in 0..2 {
            {
                let view = l.back[d]
                    .get_mapped_range(..bytes)
                    .map_err(|e| fail(format!("reading device {d}'s staging buffer: {e}")))?;
                gpus[1 - d]
                    .queue
                    .write_buffer(&l.recv[1 - d].buffer, 0, &view);
            }
            l.back[d].unmap();
        }
        for d in 0..2 {
            let packed = (&l.recv[d], Slice::at(m.k, 0));
            channels::copy(
                &mut Recorder::new(&gpus[d], &mut encs[d]),
                m,
                packed,
                to[d],
                accumulate,
            )?;
        }
        self.busy.set(false);
        self.wait.set(self.wait.get() + (t1 - t0));
        self.host.set(self.host.get() + t1.elapsed());
        self.bytes.set(self.bytes.get() + 2 * bytes);
        self.count.set(self.count.get() + 1);
        Ok(())
    }
}
