//! The GPU engine as a [`Backend`]: each op is recorded by its launcher into the caller's
//! [`Recorder`], so a whole step is one encoder and one submit. The values that change every
//! step (SGD hyper-parameters, dropout seeds) go into the step's [`StepBuffer`] rather than
//! into a kernel's own uniform, so the bind groups stay the same from step to step and the
//! cache stops growing after the first; the buffer is written only when a value changes.
use super::dropout::SeedSlot;
use super::step::{StepBuffer, StepScalars};
use super::{activation, batchnorm, conv, dropout, gemm, lrn, maxpool, sgd, softmax_xent};
use super::{Gpu, GpuError, Recorder, Result, Tensor};
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};
use std::cell::Cell;

/// A GPU pass: the device, the recorder ops go into (none while only allocating, uploading
/// or reading back), and the step's scalars.
pub struct GpuPass<'r, 'a> {
    gpu: &'a Gpu,
    rec: Option<&'r mut Recorder<'a>>,
    step: &'r StepBuffer,
    values: &'r Cell<StepScalars>,
}

impl<'r, 'a> GpuPass<'r, 'a> {
    /// A pass recording into `rec`.
    pub fn new(
        rec: &'r mut Recorder<'a>,
        step: &'r StepBuffer,
        values: &'r Cell<StepScalars>,
    ) -> GpuPass<'r, 'a> {
        GpuPass {
            gpu: rec.gpu(),
            rec: Some(rec),
            step,
            values,
        }
    }

    /// A pass that only allocates, uploads and reads back (an op is an error).
    pub fn idle(
        gpu: &'a Gpu,
        step: &'r StepBuffer,
        values: &'r Cell<StepScalars>,
    ) -> GpuPass<'r, 'a> {
        GpuPass {
            gpu,
            rec: None,
            step,
            values,
        }
    }

    /// Submits what was recorded so far and goes on in a fresh encoder, so a download sees
    /// it (the column split's exchanges go through the host mid-step). Nothing on an idle pass.
    pub fn submit_so_far(&mut self) {
        if let Some(r) = self.rec.as_deref_mut() {
            let gpu = r.gpu();
            let enc = std::mem::replace(r.encoder(), gpu.encoder("columns.step"));
            gpu.submit(enc);
        }
    }

    /// The recorder ops go into (an error on an idle pass), for launchers outside the
    /// [`Backend`] ops (the column split's channel moves).
    pub fn recorder(&mut self) -> Result<&mut Recorder<'a>> {
        self.rec()
    }

    fn rec(&mut self) -> Result<&mut Recorder<'a>> {
        self.rec.as_deref_mut().ok_or_else(|| GpuError::Invalid {
            op: "record",
            reason: "an op was given to a pass without a recorder".into(),
        })
    }

    /// Changes the step's scalars, writing them (before the next submit) only if they differ.
    fn write_step(&self, f: impl FnOnce(&mut StepScalars)) {
        let mut v = self.values.get();
        f(&mut v);
        if v != self.values.get() {
            self.values.set(v);
            self.step.write(self.gpu, &v);
        }
    }
}

impl Backend for GpuPass<'_, '_> {
    type Buf = Tensor;
    type Error = GpuError;

    fn alloc(&mut self, len: usize, label: &str) -> Result<Tensor> {
        Ok(Tensor::zeros(self.gpu, len, label))
    }

    fn upload(&mut self, dst: &Tensor, data: &[f32]) -> Result<()> {
        dst.upload(self.gpu, data)
    }

    fn upload_labels(&mut self, dst: &Tensor, labels: &[i32]) -> Result<()> {
        if labels.len() != dst.len {
            return Err(GpuError::Invalid {
                op: "labels",
                reason: format!("{} labels for a buffer of {}", labels.len(), dst.len),
            });
        }
        // The shaders read labels as u32 (the walk has checked they are in range).
        let words: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        self.gpu
            .queue
            .write_buffer(&dst.buffer, 0, bytemuck::cast_slice(&words));
        Ok(())
    }

    fn download(&mut self, src: &Tensor) -> Result<Vec<f32>> {
        src.download(self.gpu)
    }

    fn scope(&mut self, block: &'static str) {
        if let Some(r) = self.rec.as_deref_mut() {
            r.set_scope(block);
        }
    }

    fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        super::kernel::expect_len("copy", "dst", dst, src.len)?;
        let bytes = src.bytes();
        self.rec()?
            .encoder()
            .copy_buffer_to_buffer(&src.buffer, 0, &dst.buffer, 0, bytes);
        Ok(())
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        y: &Tensor,
    ) -> Result<()> {
        conv::forward(self.rec()?, s, x, p.w, p.b, y, Some(act))
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, Tensor>,
        w: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> Result<()> {
        let rec = self.rec()?;
        activation::backward(rec, act, t.dy, t.y)?;
        conv::backward_params(rec, s, [t.dy, t.x], [g.w, g.b], false)?;
        if let Some(dx) = t.dx {
            conv::backward_input(rec, s, t.dy, w, dx, false)?;
        }
        Ok(())
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        y: &Tensor,
    ) -> Result<()> {
        gemm::linear_forward(self.rec()?, s, x, p.w, Some(p.b), y, act)
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, Tensor>,
        w: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> Result<()> {
        let rec = self.rec()?;
        if let Some(act) = act {
            activation::backward(rec, act, t.dy, t.y)?;
        }
        gemm::linear_backward_weight(rec, s, t.dy, t.x, g.w, false)?;
        gemm::linear_backward_bias(rec, s, t.dy, g.b, false)?;
        if let Some(dx) = t.dx {
            gemm::linear_backward_input(rec, s, t.dy, w, dx, false)?;
        }
        Ok(())
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &Tensor,
        y: &Tensor,
        saved: &Tensor,
    ) -> Result<()> {
        lrn::forward(self.rec()?, p, dims, x, y, saved)
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, Tensor>,
        saved: &Tensor,
    ) -> Result<()> {
        lrn::backward(self.rec()?, p, dims, t, saved)
    }

    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        st: BnState<'_, Tensor>,
        y: &Tensor,
    ) -> Result<()> {
        let train = mode.batch_stats();
        let (pair, running) = ([p.w, p.b], [st.mean, st.var]);
        batchnorm::forward(self.rec()?, s, train, x, pair, running, [y, st.saved])
    }

    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, Tensor>,
        gamma: &Tensor,
        saved: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> Result<()> {
        let train = mode.batch_stats();
        let (ins, st) = ([t.x, t.dy], [gamma, saved]);
        batchnorm::backward(self.rec()?, s, train, ins, st, [g.w, g.b], t.dx)
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &Tensor,
        y: &Tensor,
        _saved: Option<&Tensor>,
    ) -> Result<()> {
        maxpool::forward(self.rec()?, s, x, y)
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, Tensor>,
        _saved: Option<&Tensor>,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        maxpool::backward(self.rec()?, s, t.x, t.dy, dx)
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &Tensor) -> Result<()> {
        self.write_step(|s| s.seeds[seed.slot as usize] = seed.seed);
        let slot = SeedSlot {
            step: self.step,
            slot: seed.slot,
        };
        dropout::forward_at(self.rec()?, v, slot, p, seed.offset)
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &Tensor,
        labels: &Tensor,
        stats: &Tensor,
    ) -> Result<()> {
        softmax_xent::forward(self.rec()?, labels.len, classes, logits, labels, stats)
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &Tensor,
        labels: &Tensor,
        dlogits: &Tensor,
    ) -> Result<()> {
        softmax_xent::backward(self.rec()?, labels.len, classes, logits, labels, dlogits)
    }

    fn sgd(&mut self, h: SgdHyper, w: &Tensor, v: &Tensor, g: &Tensor) -> Result<()> {
        self.write_step(|s| {
            s.lr = h.lr;
            s.momentum = h.momentum;
            s.weight_decay = h.weight_decay;
        });
        let step = self.step;
        sgd::step(self.rec()?, w, v, g, step)
    }
}
