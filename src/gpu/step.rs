//! The values that change every training step (learning rate and the other SGD
//! hyper-parameters, dropout seeds) in one small uniform buffer that the SGD and dropout
//! kernels read. Keeping them out of the kernels' own uniforms lets a network reuse the same
//! bind groups every step ([`super::BindCache`]); one write per step updates them all.
use super::kernel::View;
use super::Gpu;

/// The WGSL `Step` uniform (`shaders/sgd.wgsl`, `shaders/dropout.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepScalars {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Padding to 16 bytes.
    pub _pad: u32,
    /// Dropout seeds by slot (the network uses 0 for fc6 and 1 for fc7).
    pub seeds: [u32; 4],
}

/// A device buffer holding one [`StepScalars`].
pub struct StepBuffer {
    /// The uniform buffer.
    pub buffer: wgpu::Buffer,
}

impl StepBuffer {
    /// A buffer holding `s`.
    pub fn new(gpu: &Gpu, s: &StepScalars) -> StepBuffer {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step.scalars"),
            size: std::mem::size_of::<StepScalars>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let b = StepBuffer { buffer };
        b.write(gpu, s);
        b
    }

    /// Replaces the values, ordered before the next submit.
    pub fn write(&self, gpu: &Gpu, s: &StepScalars) {
        gpu.queue
            .write_buffer(&self.buffer, 0, bytemuck::bytes_of(s));
    }

    /// The whole buffer as a binding.
    pub fn view(&self) -> View<'_> {
        View {
            buffer: &self.buffer,
            offset: 0,
            size: std::mem::size_of::<StepScalars>() as u64,
        }
    }
}
