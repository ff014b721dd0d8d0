//! What one data-parallel GPU replica is: the whole network on one device ([`GpuReplica`])
//! or the paper's two columns on two ([`ColumnReplica`]). The replica driver
//! ([`super::replicas_gpu::Replicas`]) runs either through [`ReplicaNet`], so the rule of a
//! replicated step (rows per replica, gradient sum, the same SGD step) is written once.
use super::input::InputStage;
use super::EngineError;
use crate::backend::{Dropout, SgdHyper};
use crate::gpu::{Gpu, Recorder};
use crate::model::{ColumnNetwork, ModelConfig, Network, Params};
use crate::shape::AugmentDraw;
use std::cell::OnceCell;

/// What the GPU replica driver needs from one replica's network.
pub trait ReplicaNet: Sized {
    /// Logical devices one replica takes.
    const DEVICES: usize;

    /// A replica on `adapters` (`DEVICES` of them) for `rows` images of `stored`² with the
    /// training set's mean image `mean` `[S,S,3]`, holding `params`.
    fn open(
        adapters: &[usize],
        config: &ModelConfig,
        rows: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Self, EngineError>;

    /// Makes the replica hold rows `first_row..` of the global batch (its dropout masks are
    /// those rows of the global batch's).
    fn set_first_row(&mut self, first_row: usize);

    /// Freezes `block` and every layer before it (`train --freeze`).
    fn freeze_through(&mut self, block: &str) -> Result<(), EngineError>;

    /// Uploads the replica's rows and submits forward, loss and backward, without waiting.
    fn submit_forward_backward(
        &self,
        images: &[u8],
        labels: &[i32],
        draws: &[AugmentDraw],
        dropout: Dropout,
    ) -> Result<(), EngineError>;

    /// Per-image (loss, top-1, top-5) `[rows,3]` of the last forward pass.
    fn stats(&self) -> Result<Vec<f32>, EngineError>;

    /// The gradients of the last backward pass.
    fn download_grads(&self) -> Result<Params, EngineError>;

    /// Replaces the gradients with `grads` and submits one SGD step with them.
    fn submit_sgd(&self, grads: &Params, hyper: SgdHyper) -> Result<(), EngineError>;

    /// Replaces the momentum (resuming).
    fn upload_momentum(&self, m: &Params) -> Result<(), EngineError>;

    /// The whole model's parameters.
    fn download_params(&self) -> Result<Params, EngineError>;

    /// The whole model's momentum.
    fn download_momentum(&self) -> Result<Params, EngineError>;

    /// The replica's devices (`[index] name` each), for `train`'s description.
    fn describe(&self) -> String;

    /// A one-device network holding the replica's current weights, with its device and
    /// input stage, for validation.
    fn scorer(&self) -> Result<(&Gpu, &Network, &InputStage), EngineError>;
}

fn adapter_name(gpu: &Gpu) -> String {
    format!("[{}] {}", gpu.adapter.index, gpu.adapter.name)
}

fn input_stage(
    gpu: &Gpu,
    config: &ModelConfig,
    rows: usize,
    stored: usize,
    mean: &[f32],
) -> InputStage {
    InputStage::new(
        gpu,
        rows,
        stored,
        config.input_size,
        mean,
        config.input_scale,
    )
}

/// One replica of the whole network: its device, its network for its rows, and its input
/// stage.
pub struct GpuReplica {
    /// The device (its own wgpu device, even when another replica uses the same adapter).
    pub gpu: Gpu,
    /// The network, sized for the replica's rows.
    pub net: Network,
    /// Its input stage, sized for the same rows.
    pub input: InputStage,
}

impl ReplicaNet for GpuReplica {
    const DEVICES: usize = 1;

    fn open(
        adapters: &[usize],
        config: &ModelConfig,
        rows: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Self, EngineError> {
        let gpu = Gpu::new(adapters[0])?;
        let net = Network::new(&gpu, config, rows, params)?;
        let input = input_stage(&gpu, config, rows, stored, mean);
        Ok(GpuReplica { gpu, net, input })
    }

    fn set_first_row(&mut self, first_row: usize) {
        self.net.set_first_row(first_row);
    }

    fn freeze_through(&mut self, block: &str) -> Result<(), EngineError> {
        Ok(self.net.freeze_through(block)?)
    }

    fn submit_forward_backward(
        &self,
        images: &[u8],
        labels: &[i32],
        draws: &[AugmentDraw],
        dropout: Dropout,
    ) -> Result<(), EngineError> {
        let (gpu, net) = (&self.gpu, &self.net);
        self.input.upload_images(gpu, images)?;
        net.upload_labels(gpu, labels)?;
        let mut enc = gpu.encoder("replica.forward_backward");
        {
            let mut rec = net.recorder(gpu, &mut enc);
            self.input.record(&mut rec, draws, net.input())?;
            net.record_forward(&mut rec, Some(dropout))?;
            net.record_loss(&mut rec)?;
            net.record_backward(&mut rec, Some(dropout))?;
        }
        gpu.submit(enc);
        Ok(())
    }

    fn stats(&self) -> Result<Vec<f32>, EngineError> {
        Ok(self.net.stats().download(&self.gpu)?)
    }

    fn download_grads(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_grads(&self.gpu)?)
    }

    fn submit_sgd(&self, grads: &Params, hyper: SgdHyper) -> Result<(), EngineError> {
        let (gpu, net) = (&self.gpu, &self.net);
        net.upload_grads(gpu, grads)?;
        let mut enc = gpu.encoder("replica.sgd");
        {
            let mut rec = net.recorder(gpu, &mut enc);
            net.record_sgd(&mut rec, hyper)?;
        }
        gpu.submit(enc);
        Ok(())
    }

    fn upload_momentum(&self, m: &Params) -> Result<(), EngineError> {
        Ok(self.net.upload_momentum(&self.gpu, m)?)
    }

    fn download_params(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_params(&self.gpu)?)
    }

    fn download_momentum(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_momentum(&self.gpu)?)
    }

    fn describe(&self) -> String {
        adapter_name(&self.gpu)
    }

    fn scorer(&self) -> Result<(&Gpu, &Network, &InputStage), EngineError> {
        Ok((&self.gpu, &self.net, &self.input))
    }
}

/// One replica of the paper's two columns on two devices, each with its input stage (both
/// augment the replica's rows the same way), and a one-device copy on device 0 for
/// validation, built on first use.
pub struct ColumnReplica {
    /// Both columns, sized for the replica's rows.
    pub net: ColumnNetwork,
    inputs: [InputStage; 2],
    stored: usize,
    mean: Vec<f32>,
    eval: OnceCell<(Network, InputStage)>,
}

impl ReplicaNet for ColumnReplica {
    const DEVICES: usize = 2;

    fn open(
        adapters: &[usize],
        config: &ModelConfig,
        rows: usize,
        stored: usize,
        mean: &[f32],
        params: &Params,
    ) -> Result<Self, EngineError> {
        let gpus = [Gpu::new(adapters[0])?, Gpu::new(adapters[1])?];
        let inputs = [0, 1].map(|d| input_stage(&gpus[d], config, rows, stored, mean));
        let net = ColumnNetwork::new(gpus, config, rows, params)?;
        Ok(ColumnReplica {
            net,
            inputs,
            stored,
            mean: mean.to_vec(),
            eval: OnceCell::new(),
        })
    }

    fn set_first_row(&mut self, first_row: usize) {
        self.net.set_first_row(first_row);
    }

    fn freeze_through(&mut self, block: &str) -> Result<(), EngineError> {
        Ok(self.net.freeze_through(block)?)
    }

    fn submit_forward_backward(
        &self,
        images: &[u8],
        labels: &[i32],
        draws: &[AugmentDraw],
        dropout: Dropout,
    ) -> Result<(), EngineError> {
        let net = &self.net;
        net.upload_labels(labels)?;
        let mut encs = net.encoders("replica.forward_backward");
        for (d, input) in self.inputs.iter().enumerate() {
            input.upload_images(net.gpu(d), images)?;
            let mut rec = Recorder::new(net.gpu(d), &mut encs[d]);
            input.record(&mut rec, draws, net.input(d))?;
        }
        // The columns submit at each exchange; this submits what follows the last one.
        net.record_forward(&mut encs, Some(dropout))?;
        net.record_loss(&mut encs)?;
        net.record_backward(&mut encs, Some(dropout))?;
        net.submit(encs);
        Ok(())
    }

    fn stats(&self) -> Result<Vec<f32>, EngineError> {
        Ok(self.net.stats().download(self.net.gpu(0))?)
    }

    fn download_grads(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_grads()?)
    }

    fn submit_sgd(&self, grads: &Params, hyper: SgdHyper) -> Result<(), EngineError> {
        let net = &self.net;
        net.upload_grads(grads)?;
        let mut encs = net.encoders("replica.sgd");
        net.record_sgd(&mut encs, hyper)?;
        net.submit(encs);
        Ok(())
    }

    fn upload_momentum(&self, m: &Params) -> Result<(), EngineError> {
        Ok(self.net.upload_momentum(m)?)
    }

    fn download_params(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_params()?)
    }

    fn download_momentum(&self) -> Result<Params, EngineError> {
        Ok(self.net.download_momentum()?)
    }

    fn describe(&self) -> String {
        format!(
            "{} + {}",
            adapter_name(self.net.gpu(0)),
            adapter_name(self.net.gpu(1))
        )
    }

    fn scorer(&self) -> Result<(&Gpu, &Network, &InputStage), EngineError> {
        // The split computes the one-device function, so a one-device copy scores it.
        let params = self.net.download_params()?;
        let gpu = self.net.gpu(0);
        if self.eval.get().is_none() {
            let config = &self.net.config;
            let rows = self.net.batch();
            let one = Network::new(gpu, config, rows, &params)?;
            let input = input_stage(gpu, config, rows, self.stored, &self.mean);
            let _ = self.eval.set((one, input));
        }
        let (one, input) = self.eval.get().ok_or_else(|| {
            EngineError::NotBuilt("the validation network could not be built".into())
        })?;
        one.upload_params(gpu, &params)?;
        Ok((gpu, one, input))
    }
}
