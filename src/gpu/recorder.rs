//! Where launchers put their dispatches: a [`Recorder`] around a command encoder keeps one
//! compute pass open across consecutive dispatches, takes bind groups from a [`BindCache`]
//! (so a network that records the same step again allocates nothing), and, with a
//! [`KernelTimer`], puts each dispatch in its own pass between two GPU timestamps.
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use super::kernel::{self, Launch};
use super::{Gpu, GpuError, Result};

#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    shader: &'static str,
    entry: &'static str,
    params: Vec<u8>,
    views: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Bind groups (with their uniform buffers) by what they bind: a network records the same
/// dispatches every step, so after the first step every lookup hits and a step allocates no
/// GPU object. Values that change every step (the learning rate, dropout seeds) live in a
/// [`super::step::StepBuffer`] the kernels read, not in their uniforms, so they do not miss.
/// Owned by whoever owns the bound buffers, and dropped with them.
#[derive(Default)]
pub struct BindCache {
    map: RefCell<HashMap<BindKey, wgpu::BindGroup>>,
}

impl BindCache {
    /// An empty cache.
    pub fn new() -> BindCache {
        BindCache::default()
    }

    /// Bind groups held (a test checks this stops growing after the first step).
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, gpu: &Gpu, l: &Launch<'_>) -> wgpu::BindGroup {
        let key = BindKey {
            shader: l.program.shader().name,
            entry: l.entry.name,
            params: l.params.to_vec(),
            views: l
                .views
                .iter()
                .map(|v| (v.buffer.clone(), v.offset, v.size))
                .collect(),
        };
        self.map
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| kernel::bind_group(gpu, l))
            .clone()
    }
}

/// One timed dispatch: its label (`layer shader.entry`), GPU time and work.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// `scope shader.entry`, e.g. `conv2 conv.forward`.
    pub label: String,
    /// Milliseconds between the timestamps around its pass.
    pub ms: f64,
    /// Floating-point operations (0 when not a matrix product).
    pub flops: f64,
}

/// GPU timestamps around every dispatch recorded through a [`Recorder`] that carries it.
/// Needs [`wgpu::Features::TIMESTAMP_QUERY`] (NVIDIA through Vulkan and lavapipe both have it).
pub struct KernelTimer {
    set: wgpu::QuerySet,
    capacity: u32,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    rows: RefCell<Vec<(String, f64)>>,
    period_ns: f64,
}

impl KernelTimer {
    /// A timer for up to `capacity` dispatches, or `None` when the device has no timestamps.
    pub fn new(gpu: &Gpu, capacity: u32) -> Option<KernelTimer> {
        if !gpu
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return None;
        }
        let count = 2 * capacity.max(1);
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("timer.queries"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = u64::from(count) * 8;
        let buffer = |label, usage| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Some(KernelTimer {
            set,
            capacity: capacity.max(1),
            resolve: buffer(
                "timer.resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "timer.readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            rows: RefCell::new(Vec::new()),
            period_ns: f64::from(gpu.queue.get_timestamp_period()),
        })
    }

    /// Dispatches timed so far.
    pub fn len(&self) -> usize {
        self.rows.borrow().len()
    }

    /// Whether nothing was timed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next pair of query indices, or `None` when full (later dispatches go untimed).
    fn push(&self, label: String, flops: f64) -> Option<u32> {
        let mut rows = self.rows.borrow_mut();
        let i = rows.len() as u32;
        if i >= self.capacity {
            return None;
        }
        rows.push((label, flops));
        Some(i)
    }

    /// Records the resolve of every timestamp so far and the copy to the readback buffer
    /// (after the dispatches, in the same encoder).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = 2 * self.len() as u32;
        if n == 0 {
            return;
        }
        enc.resolve_query_set(&self.set, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, u64::from(n) * 8);
    }

    /// Waits for the GPU, reads the times of the dispatches since the last read and starts a
    /// new round.
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<KernelTime>> {
        let rows = std::mem::take(&mut *self.rows.borrow_mut());
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let bytes = rows.len() as u64 * 16;
        let (tx, rx) = std::sync::mpsc::channel();
        self.readback
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                // The receiver outlives the wait below; a send error cannot happen.
                let _ = tx.send(r);
            });
        gpu.wait()?;
        let fail = |reason: String| GpuError::Readback {
            label: "timer.readback".into(),
            reason,
        };
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let ticks: Vec<u64> = {
            let view = self
                .readback
                .get_mapped_range(..bytes)
                .map_err(|e| fail(e.to_string()))?;
            bytemuck::cast_slice::<u8, u64>(&view).to_vec()
        };
        self.readback.unmap();
        Ok(rows
            .into_iter()
            .zip(ticks.chunks_exact(2))
            .map(|((label, flops), t)| KernelTime {
                label,
                ms: t[1].saturating_sub(t[0]) as f64 * self.period_ns / 1e6,
                flops,
            })
            .collect())
    }
}

/// Records launches into an encoder (see the module doc). Dropping it ends the open pass, so
/// the encoder can be used or finished again.
pub struct Recorder<'a> {
    gpu: &'a Gpu,
    // Declared before `enc`, and ended in `Drop`: the pass locks the encoder while it lives.
    pass: Option<wgpu::ComputePass<'static>>,
    enc: &'a mut wgpu::CommandEncoder,
    cache: Option<&'a BindCache>,
    timer: Option<&'a KernelTimer>,
    scope: Cow<'static, str>,
}

impl<'a> Recorder<'a> {
    /// A recorder that makes a fresh bind group per launch (tests, one-off work).
    pub fn new(gpu: &'a Gpu, enc: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        Recorder {
            gpu,
            pass: None,
            enc,
            cache: None,
            timer: None,
            scope: Cow::Borrowed(""),
        }
    }

    /// Takes bind groups from `cache`.
    pub fn with_cache(mut self, cache: &'a BindCache) -> Recorder<'a> {
        self.cache = Some(cache);
        self
    }

    /// Times every launch with `timer`.
    pub fn with_timer(mut self, timer: Option<&'a KernelTimer>) -> Recorder<'a> {
        self.timer = timer;
        self
    }

    /// The device.
    pub fn gpu(&self) -> &'a Gpu {
        self.gpu
    }

    /// Names the layer the next launches belong to (the first word of their timer label).
    pub fn set_scope(&mut self, scope: impl Into<Cow<'static, str>>) {
        self.scope = scope.into();
    }

    /// The encoder, for copies and clears between launches (ends the open pass).
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.enc
    }

    /// Records `l`: its pipeline (built once per device), its bind group (from the cache when
    /// there is one) and the dispatch.
    pub fn launch(&mut self, l: &Launch<'_>) -> Result<()> {
        kernel::check_views(l)?;
        kernel::check_program(self.gpu, &l.program)?;
        if l.groups.contains(&0) {
            // Nothing to do (an empty tensor); an empty dispatch is legal but pointless.
            return Ok(());
        }
        let pipeline = kernel::pipeline(self.gpu, &l.program, l.entry, l.constants);
        let bind = match self.cache {
            Some(c) => c.get(self.gpu, l),
            None => kernel::bind_group(self.gpu, l),
        };
        let label = if self.scope.is_empty() {
            l.label()
        } else {
            format!("{} {}", self.scope, l.label())
        };
        let timed = self
            .timer
            .and_then(|t| t.push(label.clone(), l.flops).map(|i| (t, i)));
        if let Some((t, i)) = timed {
            self.pass = None;
            let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&label),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &t.set,
                    beginning_of_pass_write_index: Some(2 * i),
                    end_of_pass_write_index: Some(2 * i + 1),
                }),
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(l.groups[0], l.groups[1], l.groups[2]);
            return Ok(());
        }
        let enc = &mut *self.enc;
        let pass = self.pass.get_or_insert_with(|| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("alexnet.compute"),
                timestamp_writes: None,
            })
            .forget_lifetime()
        });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(l.groups[0], l.groups[1], l.groups[2]);
        Ok(())
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        self.pass = None;
    }
}
