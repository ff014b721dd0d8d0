//! f32 tensors in storage buffers: allocation, upload, zero-fill and (blocking) readback.
use wgpu::util::DeviceExt;

use super::{Gpu, GpuError, Result};

/// A flat f32 array in one storage buffer. Shapes live with the ops; the tensor only knows its
/// element count and its label ("<op>.<role>", shown by GPU debuggers and in errors).
pub struct Tensor {
    /// The storage buffer (STORAGE | COPY_SRC | COPY_DST).
    pub buffer: wgpu::Buffer,
    /// Number of f32 elements.
    pub len: usize,
    /// Label given at allocation.
    pub label: String,
}

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Tensor {
    /// A zero-filled tensor of `len` elements (wgpu zero-initialises new buffers).
    pub fn zeros(gpu: &Gpu, len: usize, label: &str) -> Tensor {
        // A zero-sized binding is invalid; keep at least one element of storage.
        let bytes = (len.max(1) * 4) as u64;
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: USAGE,
            mapped_at_creation: false,
        });
        Tensor {
            buffer,
            len,
            label: label.to_string(),
        }
    }

    /// A tensor holding a copy of `data`.
    pub fn from_slice(gpu: &Gpu, data: &[f32], label: &str) -> Tensor {
        if data.is_empty() {
            return Tensor::zeros(gpu, 0, label);
        }
        let buffer = gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: USAGE,
            });
        Tensor {
            buffer,
            len: data.len(),
            label: label.to_string(),
        }
    }

    /// A tensor holding u32 values (class labels); the shaders read them as `array<u32>`.
    pub fn from_u32(gpu: &Gpu, data: &[u32], label: &str) -> Tensor {
        let floats: &[f32] = bytemuck::cast_slice(data);
        Tensor::from_slice(gpu, floats, label)
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.len as u64 * 4
    }

    /// Overwrite the tensor with `data` (same length), ordered before the next submit.
    pub fn upload(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.len {
            return Err(GpuError::Invalid {
                op: "upload",
                reason: format!(
                    "tensor `{}` holds {} elements, got {}",
                    self.label,
                    self.len,
                    data.len()
                ),
            });
        }
        gpu.queue
            .write_buffer(&self.buffer, 0, bytemuck::cast_slice(data));
        Ok(())
    }

    /// Record a zero-fill of the whole tensor (gradient buffers before accumulation).
    pub fn record_zero(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.clear_buffer(&self.buffer, 0, None);
    }

    /// Copy the tensor to the host. Submits a copy and blocks: for tests and metrics only.
    pub fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = self.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tensor.staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = gpu.encoder("tensor.download");
        encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes);
        gpu.submit(encoder);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            // The receiver outlives the poll below; a send error cannot happen.
            let _ = tx.send(r);
        });
        gpu.wait()?;
        let fail = |reason: String| GpuError::Readback {
            label: self.label.clone(),
            reason,
        };
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| fail(e.to_string()))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}
