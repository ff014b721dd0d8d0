//! The network in evaluation mode on any engine — a GPU adapter or the CPU engine — for
//! validation, `eval`, `export-features` and `predict`: stored u8 images in, the centre crop
//! or any other views through the input stage, the reported activations out.
use super::input::InputStage;
use super::EngineError;
use crate::cpu::{CpuDevice, HostInput};
use crate::device::{Device, Resolved};
use crate::gpu::coop::Precision;
use crate::gpu::Gpu;
use crate::model::CpuNetwork;
use crate::model::{ModelConfig, Network, Params};
use crate::shape::AugmentDraw;
use std::cell::RefCell;

/// The CPU engine's network with its input stage, sized for one batch.
#[derive(Debug)]
pub struct CpuStage {
    /// The network.
    pub net: CpuNetwork,
    /// Its input stage.
    pub input: HostInput,
}

impl CpuStage {
    /// A network for `batch` images of `stored`² cropped to the model's input, with the
    /// training set's mean image `[S,S,3]`, on a pool of `threads` workers (0: one per core).
    pub fn new(
        config: &ModelConfig,
        batch: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
        threads: usize,
    ) -> Result<CpuStage, EngineError> {
        let device = CpuDevice::new(threads)?;
        Ok(CpuStage {
            net: CpuNetwork::new(&device, config, batch, params)?,
            input: HostInput::new(batch, stored, config.input_size, mean, config.input_scale),
        })
    }

    /// Augments the kept images with `draws` into the network's input.
    pub fn augment(&mut self, draws: &[AugmentDraw]) -> Result<(), EngineError> {
        let CpuStage { net, input } = self;
        let device = net.device().clone();
        device.install(|| input.augment(draws, net.input_mut()))?;
        Ok(())
    }
}

/// A network that scores batches, borrowed from wherever it lives.
pub enum Scorer<'a> {
    /// On a GPU adapter.
    Gpu {
        /// The device.
        gpu: &'a Gpu,
        /// The network.
        net: &'a Network,
        /// Its input stage.
        input: &'a InputStage,
    },
    /// On the CPU engine.
    Cpu(&'a RefCell<CpuStage>),
}

impl Scorer<'_> {
    /// Images per batch.
    pub fn batch(&self) -> usize {
        match self {
            Scorer::Gpu { net, .. } => net.batch(),
            Scorer::Cpu(s) => s.borrow().net.batch(),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> ModelConfig {
        match self {
            Scorer::Gpu { net, .. } => net.config.clone(),
            Scorer::Cpu(s) => s.borrow().net.config.clone(),
        }
    }

    /// Keeps a batch `[N,S,S,3]` u8 (exactly N images) for the next [`Scorer::forward`].
    pub fn upload_images(&self, images: &[u8]) -> Result<(), EngineError> {
        match self {
            Scorer::Gpu { gpu, input, .. } => input.upload_images(gpu, images)?,
            Scorer::Cpu(s) => s.borrow_mut().input.set_images(images)?,
        }
        Ok(())
    }

    /// The evaluation-mode forward pass (no dropout) of the kept images seen through `draws`.
    pub fn forward(&self, draws: &[AugmentDraw]) -> Result<(), EngineError> {
        match self {
            Scorer::Gpu { gpu, net, input } => {
                let mut enc = gpu.encoder("eval");
                {
                    let mut rec = net.recorder(gpu, &mut enc);
                    input.record(&mut rec, draws, net.input())?;
                    net.record_forward(&mut rec, None)?;
                }
                gpu.submit(enc);
            }
            Scorer::Cpu(s) => {
                let mut s = s.borrow_mut();
                s.augment(draws)?;
                s.net.forward(None)?;
            }
        }
        Ok(())
    }

    /// The shape of the reported activation `name` (`conv1` … `fc7`, `logits`).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match self {
            Scorer::Gpu { net, .. } => net
                .activations()
                .into_iter()
                .find(|a| a.0 == name)
                .map(|a| a.1),
            Scorer::Cpu(s) => s
                .borrow()
                .net
                .activations()
                .into_iter()
                .find(|a| a.0 == name)
                .map(|a| a.1),
        }
    }

    /// The values of the reported activation `name` after the last forward pass.
    pub fn download(&self, name: &str) -> Result<Vec<f32>, EngineError> {
        let missing =
            || EngineError::Mismatch(format!("the network reports no activation `{name}`"));
        match self {
            Scorer::Gpu { gpu, net, .. } => {
                let acts = net.activations();
                let t = acts.iter().find(|a| a.0 == name).ok_or_else(missing)?;
                Ok(t.2.download(gpu)?)
            }
            Scorer::Cpu(s) => {
                let s = s.borrow();
                let acts = s.net.activations();
                let t = acts.iter().find(|a| a.0 == name).ok_or_else(missing)?;
                Ok(t.2.to_vec())
            }
        }
    }
}

/// A network that scores batches, owned: what `eval`, `export-features` and `predict` open.
// One lives per command, so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Inference {
    /// On a GPU adapter.
    Gpu {
        /// The device.
        gpu: Gpu,
        /// The network.
        net: Network,
        /// Its input stage.
        input: InputStage,
    },
    /// On the CPU engine.
    Cpu(RefCell<CpuStage>),
}

impl Inference {
    /// Opens `device` and builds the network of `config` for `batch` images of `stored`², with
    /// the mean image `[S,S,3]` the model trained with.
    pub fn open(
        device: Device,
        config: &ModelConfig,
        batch: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Inference, EngineError> {
        Self::open_at(Precision::Fp32, device, config, batch, stored, mean, params)
    }

    /// [`Inference::open`] with the matrix products at `precision` on a GPU adapter
    /// ([`Gpu::with_precision`]; the CPU engine runs f32 and says so under `mixed`).
    pub fn open_at(
        precision: Precision,
        device: Device,
        config: &ModelConfig,
        batch: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Inference, EngineError> {
        Ok(match device.resolve()? {
            Resolved::Cpu => {
                if precision == Precision::Mixed {
                    eprintln!(
                        "warning: --precision mixed: the CPU engine has no f16 kernels; running fp32"
                    );
                }
                Inference::Cpu(RefCell::new(CpuStage::new(
                    config, batch, stored, mean, params, 0,
                )?))
            }
            Resolved::Adapter(i) => {
                let gpu = Gpu::with_precision(i, precision)?;
                let net = Network::new(&gpu, config, batch, params)?;
                let input = InputStage::new(
                    &gpu,
                    batch,
                    stored,
                    config.input_size,
                    mean,
                    config.input_scale,
                );
                Inference::Gpu { gpu, net, input }
            }
        })
    }

    /// The network, borrowed.
    pub fn scorer(&self) -> Scorer<'_> {
        match self {
            Inference::Gpu { gpu, net, input } => Scorer::Gpu { gpu, net, input },
            Inference::Cpu(s) => Scorer::Cpu(s),
        }
    }
}

/// One reported activation: its name, dims and values.
pub type Activation = (String, Vec<usize>, Vec<f32>);

/// The activations `alexnet forward` reports (name, dims, values) of the evaluation-mode
/// network on `device`, for `n` preprocessed images `[N,3,I,I]` (not the u8 input stage).
pub fn activations(
    device: Device,
    config: &ModelConfig,
    params: &Params,
    n: usize,
    images: &[f32],
) -> Result<Vec<Activation>, EngineError> {
    let mut out = Vec::new();
    match device.resolve()? {
        Resolved::Adapter(i) => {
            let gpu = Gpu::new(i)?;
            let net = Network::new(&gpu, config, n, params)?;
            net.input().upload(&gpu, images)?;
            let mut enc = gpu.encoder("forward");
            net.record_forward(&mut net.recorder(&gpu, &mut enc), None)?;
            gpu.submit(enc);
            for (name, dims, t) in net.activations() {
                out.push((name.to_string(), dims, t.download(&gpu)?));
            }
        }
        Resolved::Cpu => {
            let mut net = CpuNetwork::new(&CpuDevice::new(0)?, config, n, params)?;
            net.upload_input(images)?;
            net.forward(None)?;
            for (name, dims, t) in net.activations() {
                out.push((name.to_string(), dims, t.to_vec()));
            }
        }
    }
    Ok(out)
}

/// Softmax of one row of logits, in f64.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    log_softmax(logits).into_iter().map(f64::exp).collect()
}

/// Log-softmax of one row of logits, in f64: finite for any finite row (a confident wrong
/// answer costs its true, large loss instead of a clamped probability's), NaN if any logit
/// is not finite.
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let lse = logits
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|&v| v as f64 - max - lse).collect()
}
