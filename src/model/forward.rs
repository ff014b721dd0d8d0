//! `alexnet forward`: the tensor-in, tensor-out door for checking the network against any other
//! framework. Reads `images` `[N,3,H,W]` f32 from a safetensors file, writes `logits` and the
//! activations docs/outputs.md names (`conv1` … `conv5`, `fc6`, `fc7`) to another.
use super::{Checkpoint, CheckpointError, NetworkError};
use crate::cpu::CpuError;
use crate::device::{Device, DeviceError};
use crate::gpu::GpuError;
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

/// What can go wrong in `forward`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The checkpoint could not be read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// A GPU operation failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The CPU engine failed.
    #[error(transparent)]
    Cpu(#[from] CpuError),
    /// The device does not fit this machine.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Opening or running the engine failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// The input file is unusable.
    #[error("{}: {reason}", path.display())]
    Input {
        /// The input file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The output path was refused.
    #[error(transparent)]
    OutputPath(#[from] crate::output_check::OutputError),
    /// The output could not be written (or renamed into place).
    #[error(transparent)]
    Write(#[from] crate::atomic::AtomicError),
    /// The output could not be written.
    #[error("{}: {reason}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// A `forward` request.
#[derive(Clone, Debug)]
pub struct ForwardJob {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// safetensors file with `images` `[N,3,H,W]` f32, already preprocessed.
    pub input: PathBuf,
    /// safetensors file to write.
    pub out: PathBuf,
    /// The device (`auto`: a GPU if there is one, else the CPU engine).
    pub device: Device,
    /// Replace `out` if it exists (an output that is the input or the checkpoint is
    /// refused anyway).
    pub overwrite: bool,
}

fn read_images(path: &Path) -> Result<(Vec<usize>, Vec<f32>), ForwardError> {
    let bad = |reason: String| ForwardError::Input {
        path: path.into(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let t = st
        .tensor("images")
        .map_err(|_| bad("no tensor `images` [N,3,H,W] f32 in the file".into()))?;
    if t.dtype() != Dtype::F32 || t.shape().len() != 4 || t.shape()[1] != 3 {
        return Err(bad(format!(
            "`images` is {:?} {:?}; it must be f32 [N,3,H,W]",
            t.dtype(),
            t.shape()
        )));
    }
    Ok((t.shape().to_vec(), super::checkpoint::f32_values(t.data())))
}

/// Runs the evaluation-mode network (no dropout) on the input and writes every activation.
pub fn forward(job: &ForwardJob) -> Result<(), ForwardError> {
    use crate::output_check::{check, Format, Output};
    let inputs = [job.input.as_path(), job.checkpoint.as_path()];
    check(&Output::new(
        &job.out,
        Format::Safetensors,
        &inputs,
        job.overwrite,
    ))?;
    let (shape, images) = read_images(&job.input)?;
    let ck = Checkpoint::load(&job.checkpoint, Some(shape[2]))?;
    let size = ck.config.input_size;
    if shape[2] != size || shape[3] != size {
        return Err(ForwardError::Input {
            path: job.input.clone(),
            reason: format!(
                "images are {}×{} but the model takes {size}×{size}",
                shape[2], shape[3]
            ),
        });
    }
    let tensors =
        crate::engine::infer::activations(job.device, &ck.config, &ck.params, shape[0], &images)?;
    let out_err = |reason: String| ForwardError::Output {
        path: job.out.clone(),
        reason,
    };
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| out_err(e.to_string()))?;
    crate::atomic::write_at_path(&job.out, |tmp| {
        safetensors::serialize_to_file(views, None, tmp).map_err(|e| out_err(e.to_string()))
    })
}
