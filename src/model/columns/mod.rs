//! The paper's two-GPU model: every layer's kernels (conv1…conv5) and neurons (fc6…fc8) split
//! in two columns, one per device, with the same math as [`super::Network`] on one device.
//!
//! Where a layer reads both columns its input is exchanged: conv3 (and any conv with
//! `groups = 1` after conv1) gets the whole previous output, fc6 the whole flattened conv5,
//! fc7 and fc8 the whole previous layer; the logits are exchanged so both devices compute the
//! loss. LRN's window crosses the column boundary, so each column's LRN runs over its channels
//! plus a halo of `2·⌊size/2⌋` channels from the other column (enough for the scale of the
//! halo's inner channels, which the backward pass needs), and the backward pass exchanges the
//! same halo of output gradients. A layer that read both columns gets, in backward, a partial
//! input gradient from each column; each column sums its own half (one exchange).
//!
//! Dropout masks are drawn over the whole `[N,F]` layer after the exchange (and applied to the
//! partial gradients before their sum, which commutes), so they equal the one-device masks.
//! Parameters split along their first (output) axis: column d holds the d-th half of every
//! tensor, which is the d-th half of its flat data. Exchanges go through the host
//! ([`exchange`]); the step waits at each one, nothing is overlapped yet.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
pub mod exchange;

use super::geometry::Geometry;
use super::network::param_data;
use super::params::{param_specs, ParamSpec, Params};
use super::{Dropout, ModelConfig, NetworkError};
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::dropout::SeedSlot;
use crate::gpu::step::{StepBuffer, StepScalars};
use crate::gpu::{self, BindCache, Gpu, GpuError, Recorder, Tensor};
use crate::shape::{ConvShape, LinearShape, LrnParams, PoolShape};
pub use exchange::ExchangeStats;
use exchange::{Exchanger, Side};
use std::cell::Cell;

type Result<T> = std::result::Result<T, NetworkError>;

/// Buffers of one column's LRN over its channels plus the halo.
struct LrnCol {
    /// Channels of the extended tensors (own + halo).
    ext_c: usize,
    /// Where the own channels start in the extended tensors (0 on column 0, halo on 1).
    own_at: usize,
    /// Where the halo starts.
    halo_at: usize,
    ext_x: Tensor,
    ext_y: Tensor,
    scale: Tensor,
    d_ext_y: Tensor,
    d_ext_x: Tensor,
    /// The LRN output of the own channels (the pool's input) and its gradient.
    own_y: Tensor,
    d_own_y: Tensor,
}

impl LrnCol {
    /// Records the copy of the own channels (`m.k` of them) of `ext`, one of the extended
    /// tensors, into `out` `[N,C',hw]`.
    fn copy_own(&self, rec: &mut Recorder<'_>, m: Move, ext: &Tensor, out: &Tensor) -> Result<()> {
        let from = (ext, Slice::at(self.ext_c, self.own_at));
        channels::copy(rec, m, from, (out, Slice::at(m.k, 0)), false)?;
        Ok(())
    }
}

/// One column's buffers of a conv stage.
struct ConvCol {
    conv: ConvShape,
    /// Whether the convolution reads both columns (an exchanged, whole-width input).
    reads_both: bool,
    /// The whole-width input and its partial gradient, when `reads_both`.
    full_in: Option<(Tensor, Tensor)>,
    act: Tensor,
    d_act: Tensor,
    lrn: Option<LrnCol>,
    pool: Option<(PoolShape, Tensor, Tensor)>,
}

impl ConvCol {
    fn output(&self) -> &Tensor {
        match (&self.pool, &self.lrn) {
            (Some((_, y, _)), _) => y,
            (None, Some(l)) => &l.own_y,
            (None, None) => &self.act,
        }
    }
    fn d_output(&self) -> &Tensor {
        match (&self.pool, &self.lrn) {
            (Some((_, _, dy)), _) => dy,
            (None, Some(l)) => &l.d_own_y,
            (None, None) => &self.d_act,
        }
    }
}

/// One column's buffers of a fully connected layer.
struct FcCol {
    /// Own neurons `[N,F/2]`: x·Wᵀ + b, then the activation in place (hidden layers).
    act: Tensor,
    /// Both columns' neurons `[N,F]` after the exchange.
    full: Tensor,
    /// `full` with dropout applied (hidden layers).
    dropped: Tensor,
    /// Gradient of the own neurons `[N,F/2]`.
    d: Tensor,
    /// Partial gradient of the layer's whole-width input `[N,fin]`.
    d_in: Tensor,
}

/// One device's half of the network.
struct Column {
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    momentum: Vec<Tensor>,
    input: Tensor,
    labels: Tensor,
    convs: Vec<ConvCol>,
    /// conv5's output, all channels, flattened: fc6's input `[N,C5·h·w]`.
    flat: Tensor,
    fcs: Vec<FcCol>,
    d_logits: Tensor,
    stats: Tensor,
}

/// The network split over two devices for a fixed batch size.
pub struct ColumnNetwork {
    /// The configuration.
    pub config: ModelConfig,
    /// The whole model's layer shapes.
    pub geometry: Geometry,
    gpus: [Gpu; 2],
    specs: Vec<ParamSpec>,
    cols: [Column; 2],
    lrn: LrnParams,
    ex: Exchanger,
    caches: [BindCache; 2],
    steps: [StepBuffer; 2],
    step_values: Cell<StepScalars>,
}

fn halves(what: &str, n: usize) -> Result<usize> {
    if n % 2 != 0 {
        return Err(GpuError::Invalid {
            op: "columns",
            reason: format!("{what} is {n}; the two-column split needs it even"),
        }
        .into());
    }
    Ok(n / 2)
}

impl Column {
    fn new(
        gpu: &Gpu,
        d: usize,
        geo: &Geometry,
        specs: &[ParamSpec],
        halo: usize,
    ) -> Result<Column> {
        let n = geo.batch;
        let mk = |len: usize, label: &str| Tensor::zeros(gpu, len, &format!("col{d}.{label}"));
        let half_specs: Vec<usize> = specs.iter().map(|s| s.len() / 2).collect();
        let set = |what: &str| -> Vec<Tensor> {
            specs
                .iter()
                .zip(&half_specs)
                .map(|(s, &len)| mk(len, &format!("{}.{what}", s.name)))
                .collect()
        };
        let mut convs = Vec::with_capacity(5);
        for (i, st) in geo.convs.iter().enumerate() {
            let full = st.conv;
            let reads_both = i > 0 && full.groups == 1;
            let own_c = halves(&format!("{} width", st.name), full.c_out)?;
            // A grouped conv (groups 2) reads only its own column: half the input channels,
            // one group per column.
            let own_input = i > 0 && !reads_both;
            let conv = ConvShape {
                c_in: if own_input { full.c_in / 2 } else { full.c_in },
                c_out: own_c,
                groups: if own_input { full.groups / 2 } else { 1 },
                ..full
            };
            let hw = conv.out_h() * conv.out_w();
            let full_in = reads_both.then(|| {
                let len = full.n * full.c_in * full.h * full.w;
                (
                    mk(len, &format!("{}.full_in", st.name)),
                    mk(len, &format!("{}.d_full_in", st.name)),
                )
            });
            let lrn = if st.lrn {
                if own_c < halo {
                    return Err(GpuError::Invalid {
                        op: "columns",
                        reason: format!(
                            "{} has {own_c} channels per column, fewer than the LRN halo of {halo}",
                            st.name
                        ),
                    }
                    .into());
                }
                let ext_c = own_c + halo;
                let ext = |what: &str| mk(n * ext_c * hw, &format!("{}.{what}", st.name));
                Some(LrnCol {
                    ext_c,
                    own_at: if d == 0 { 0 } else { halo },
                    halo_at: if d == 0 { own_c } else { 0 },
                    ext_x: ext("lrn_ext_x"),
                    ext_y: ext("lrn_ext_y"),
                    scale: ext("lrn_scale"),
                    d_ext_y: ext("lrn_d_ext_y"),
                    d_ext_x: ext("lrn_d_ext_x"),
                    own_y: mk(n * own_c * hw, &format!("{}.lrn", st.name)),
                    d_own_y: mk(n * own_c * hw, &format!("{}.d_lrn", st.name)),
                })
            } else {
                None
            };
            let pool = st.pool.map(|p| {
                let p = PoolShape { c: own_c, ..p };
                let len = p.output_len();
                (
                    p,
                    mk(len, &format!("{}.pool", st.name)),
                    mk(len, &format!("{}.d_pool", st.name)),
                )
            });
            convs.push(ConvCol {
                conv,
                reads_both,
                full_in,
                act: mk(n * own_c * hw, &format!("{}.act", st.name)),
                d_act: mk(n * own_c * hw, &format!("{}.d_act", st.name)),
                lrn,
                pool,
            });
        }
        let mut fcs = Vec::with_capacity(3);
        for f in &geo.fcs {
            let l = f.linear;
            let own = halves(&format!("{} width", f.name), l.fout)?;
            fcs.push(FcCol {
                act: mk(n * own, &format!("{}.act", f.name)),
                full: mk(n * l.fout, &format!("{}.full", f.name)),
                dropped: mk(
                    if f.hidden { n * l.fout } else { 0 },
                    &format!("{}.dropped", f.name),
                ),
                d: mk(n * own, &format!("{}.d", f.name)),
                d_in: mk(n * l.fin, &format!("{}.d_in", f.name)),
            });
        }
        Ok(Column {
            params: set("param"),
            grads: set("grad"),
            momentum: set("momentum"),
            input: mk(geo.input_len(), "input"),
            labels: mk(n, "labels"),
            convs,
            flat: mk(n * geo.flatten, "flat"),
            fcs,
            d_logits: mk(geo.logits_len(), "d_logits"),
            stats: mk(n * 3, "stats"),
        })
    }
}

impl ColumnNetwork {
    /// Allocates both columns for `batch` images on `gpus` and uploads `params` (the whole
    /// model, in the ordinary names; momentum starts at 0).
    pub fn new(
        gpus: [Gpu; 2],
        config: &ModelConfig,
        batch: usize,
        params: &Params,
    ) -> Result<ColumnNetwork> {
        let geometry = Geometry::new(config, batch)?;
        let specs = param_specs(config)?;
        for s in &specs {
            halves(&format!("the first axis of {}", s.name), s.shape[0])?;
        }
        let lrn = LrnParams::default();
        let halo = 2 * (lrn.size / 2);
        let cols = [
            Column::new(&gpus[0], 0, &geometry, &specs, halo)?,
            Column::new(&gpus[1], 1, &geometry, &specs, halo)?,
        ];
        let steps = [0, 1].map(|d| StepBuffer::new(&gpus[d], &StepScalars::default()));
        let net = ColumnNetwork {
            config: config.clone(),
            geometry,
            gpus,
            specs,
            cols,
            lrn,
            ex: Exchanger::default(),
            caches: [BindCache::new(), BindCache::new()],
            steps,
            step_values: Cell::new(StepScalars::default()),
        };
        net.upload_params(params)?;
        Ok(net)
    }

    /// Images per batch.
    pub fn batch(&self) -> usize {
        self.geometry.batch
    }

    /// Device `d` (0 or 1).
    pub fn gpu(&self, d: usize) -> &Gpu {
        &self.gpus[d]
    }

    /// Both devices.
    pub fn gpus(&self) -> &[Gpu; 2] {
        &self.gpus
    }

    /// Column `d`'s input `[N,3,I,I]`: both columns take the same images.
    pub fn input(&self, d: usize) -> &Tensor {
        &self.cols[d].input
    }

    /// Per-image (loss, top-1 hit, top-5 hit) `[N,3]` on device 0 after [`Self::record_loss`].
    pub fn stats(&self) -> &Tensor {
        &self.cols[0].stats
    }

    /// The whole logits `[N,classes]` on device 0 after a forward pass.
    pub fn logits(&self) -> &Tensor {
        &self.cols[0].fcs[2].full
    }

    /// Exchange counters since the last call.
    pub fn take_exchange_stats(&self) -> ExchangeStats {
        self.ex.take_stats()
    }

    fn upload_set(&self, pick: impl Fn(&Column) -> &Vec<Tensor>, src: &Params) -> Result<()> {
        for (i, spec) in self.specs.iter().enumerate() {
            let data = param_data(src, spec)?;
            let half = spec.len() / 2;
            for d in 0..2 {
                pick(&self.cols[d])[i].upload(&self.gpus[d], &data[d * half..(d + 1) * half])?;
            }
        }
        Ok(())
    }

    fn download_set(&self, pick: impl Fn(&Column) -> &Vec<Tensor>) -> Result<Params> {
        let mut out = Params::zeros(&self.config)?;
        for (i, dst) in out.tensors.iter_mut().enumerate() {
            let mut data = pick(&self.cols[0])[i].download(&self.gpus[0])?;
            data.extend(pick(&self.cols[1])[i].download(&self.gpus[1])?);
            dst.data = data;
        }
        Ok(out)
    }

    /// Replaces the parameters (the whole model; each column takes its half).
    pub fn upload_params(&self, params: &Params) -> Result<()> {
        self.upload_set(|c| &c.params, params)
    }

    /// Replaces the SGD momentum.
    pub fn upload_momentum(&self, momentum: &Params) -> Result<()> {
        self.upload_set(|c| &c.momentum, momentum)
    }

    /// The whole model's parameters, both columns joined.
    pub fn download_params(&self) -> Result<Params> {
        self.download_set(|c| &c.params)
    }

    /// The whole model's momentum.
    pub fn download_momentum(&self) -> Result<Params> {
        self.download_set(|c| &c.momentum)
    }

    /// The gradients of the last backward pass (tests).
    pub fn download_grads(&self) -> Result<Params> {
        self.download_set(|c| &c.grads)
    }

    /// Writes the batch's labels to both devices before the next submit.
    pub fn upload_labels(&self, labels: &[i32]) -> Result<()> {
        if labels.len() != self.batch() {
            return Err(GpuError::Invalid {
                op: "labels",
                reason: format!("{} labels for a batch of {}", labels.len(), self.batch()),
            }
            .into());
        }
        let words: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        for d in 0..2 {
            self.gpus[d].queue.write_buffer(
                &self.cols[d].labels.buffer,
                0,
                bytemuck::cast_slice(&words),
            );
        }
        Ok(())
    }

    /// A recorder into `enc` on device `d`, with that device's bind-group cache.
    fn rec<'a>(&'a self, d: usize, enc: &'a mut wgpu::CommandEncoder) -> Recorder<'a> {
        Recorder::new(&self.gpus[d], enc).with_cache(&self.caches[d])
    }

    fn write_step(&self, f: impl FnOnce(&mut StepScalars)) {
        let mut v = self.step_values.get();
        f(&mut v);
        self.step_values.set(v);
        for d in 0..2 {
            self.steps[d].write(&self.gpus[d], &v);
        }
    }

    /// New encoders, one per device.
    pub fn encoders(&self, label: &str) -> [wgpu::CommandEncoder; 2] {
        [self.gpus[0].encoder(label), self.gpus[1].encoder(label)]
    }

    /// Submits both encoders; returns device 0's submission.
    pub fn submit(&self, encs: [wgpu::CommandEncoder; 2]) -> wgpu::SubmissionIndex {
        let [e0, e1] = encs;
        self.gpus[1].submit(e1);
        self.gpus[0].submit(e0)
    }

    fn w(&self, d: usize, layer: usize) -> (&Tensor, &Tensor) {
        let c = &self.cols[d];
        (&c.params[2 * layer], &c.params[2 * layer + 1])
    }

    fn g(&self, d: usize, layer: usize) -> (&Tensor, &Tensor) {
        let c = &self.cols[d];
        (&c.grads[2 * layer], &c.grads[2 * layer + 1])
    }

    /// On each device copies `keep[d].0` into `keep[d].1` (shape `km`), then swaps: device d
    /// sends `from[d]` and receives into `to[d]` (shape `m`), copied or added.
    #[allow(clippy::too_many_arguments)]
    fn keep_and_swap(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        km: Move,
        keep: [(Side<'_>, Side<'_>); 2],
        m: Move,
        from: [Side<'_>; 2],
        to: [Side<'_>; 2],
        accumulate: bool,
    ) -> Result<()> {
        for d in 0..2 {
            channels::copy(
                &mut self.rec(d, &mut encs[d]),
                km,
                keep[d].0,
                keep[d].1,
                false,
            )?;
        }
        self.ex.swap(&self.gpus, encs, m, from, to, accumulate)?;
        Ok(())
    }

    /// `own[d]` `[N,k,hw]` of each column into channels `d·k..` of `full[d]` `[N,2k,hw]`.
    fn gather(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        own: [&Tensor; 2],
        full: [&Tensor; 2],
    ) -> Result<()> {
        let own_s = |d: usize| (own[d], Slice::at(m.k, 0));
        let full_s = |d: usize, at: usize| (full[d], Slice::at(2 * m.k, at * m.k));
        self.keep_and_swap(
            encs,
            m,
            [0, 1].map(|d| (own_s(d), full_s(d, d))),
            m,
            [0, 1].map(own_s),
            [0, 1].map(|d| full_s(d, 1 - d)),
            false,
        )
    }

    /// Sums the partial gradients `partial[d]` `[N,2k,hw]` of a whole-width input: each column
    /// gets its own half `[N,k,hw]` in `own[d]`. `overlap` records work that needs neither
    /// (the layer's weight gradients); it runs on the devices while the halves travel.
    fn reduce(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        partial: [&Tensor; 2],
        own: [&Tensor; 2],
        overlap: impl FnOnce(&mut [wgpu::CommandEncoder; 2]) -> Result<()>,
    ) -> Result<()> {
        let own_s = |d: usize| (own[d], Slice::at(m.k, 0));
        let part_s = |d: usize, at: usize| (partial[d], Slice::at(2 * m.k, at * m.k));
        let flight = self
            .ex
            .send(&self.gpus, encs, m, [0, 1].map(|d| part_s(d, 1 - d)))?;
        overlap(encs)?;
        for d in 0..2 {
            channels::copy(
                &mut self.rec(d, &mut encs[d]),
                m,
                part_s(d, d),
                own_s(d),
                false,
            )?;
        }
        self.ex
            .receive(&self.gpus, encs, flight, [0, 1].map(own_s), true)?;
        Ok(())
    }

    /// Fills the halo channels of `ext[d]` from the other column's `own` tensors (`[N,C',hw]`).
    fn halo(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        stage: usize,
        own: [&Tensor; 2],
        ext: [&Tensor; 2],
    ) -> Result<()> {
        let l = [0, 1].map(|d| self.lrn_col(d, stage));
        let own_c = self.cols[0].convs[stage].conv.c_out;
        let halo = l[0].ext_c - own_c;
        let m = Move {
            n: self.batch(),
            k: halo,
            hw: self.hw(stage),
        };
        let ext_s = |d: usize, at: usize| (ext[d], Slice::at(l[d].ext_c, at));
        // Column 0 sends its last channels, column 1 its first.
        let sent = [own_c - halo, 0];
        self.keep_and_swap(
            encs,
            Move { k: own_c, ..m },
            [0, 1].map(|d| ((own[d], Slice::at(own_c, 0)), ext_s(d, l[d].own_at))),
            m,
            [0, 1].map(|d| (own[d], Slice::at(own_c, sent[d]))),
            [0, 1].map(|d| ext_s(d, l[d].halo_at)),
            false,
        )
    }

    fn lrn_col(&self, d: usize, stage: usize) -> &LrnCol {
        // Only called for stages built with LRN.
        self.cols[d].convs[stage]
            .lrn
            .as_ref()
            .expect("stage has LRN")
    }

    fn hw(&self, stage: usize) -> usize {
        let c = &self.cols[0].convs[stage].conv;
        c.out_h() * c.out_w()
    }

    fn stage_input(&self, d: usize, i: usize) -> &Tensor {
        let col = &self.cols[d];
        match &col.convs[i].full_in {
            Some((x, _)) => x,
            None if i == 0 => &col.input,
            None => col.convs[i - 1].output(),
        }
    }

    /// Records the forward pass on both columns from their inputs to the whole logits (on
    /// both devices). `encs` are submitted at each exchange and continue after it.
    pub fn record_forward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        let act = self.config.activation;
        let dropout = dropout.filter(|dr| dr.p > 0.0);
        if let Some(dr) = dropout {
            self.write_step(|v| v.seeds[..2].copy_from_slice(&dr.seeds));
        }
        let n = self.batch();
        for i in 0..5 {
            if self.cols[0].convs[i].reads_both {
                let prev = &self.cols[0].convs[i - 1];
                let [_, c, h, w] = match &prev.pool {
                    Some((p, _, _)) => [p.n, p.c, p.out_h(), p.out_w()],
                    None => [n, prev.conv.c_out, prev.conv.out_h(), prev.conv.out_w()],
                };
                let own = [0, 1].map(|d| self.cols[d].convs[i - 1].output());
                let full = [0, 1].map(|d| &self.cols[d].convs[i].full_in.as_ref().expect("full").0);
                self.gather(encs, Move { n, k: c, hw: h * w }, own, full)?;
            }
            for d in 0..2 {
                let cc = &self.cols[d].convs[i];
                let (w, b) = self.w(d, i);
                let x = self.stage_input(d, i);
                let mut rec = self.rec(d, &mut encs[d]);
                gpu::conv::forward(&mut rec, &cc.conv, x, w, b, &cc.act, Some(act))?;
            }
            if self.cols[0].convs[i].lrn.is_some() {
                let own = [0, 1].map(|d| &self.cols[d].convs[i].act);
                let ext = [0, 1].map(|d| &self.lrn_col(d, i).ext_x);
                self.halo(encs, i, own, ext)?;
                let hw = self.hw(i);
                for d in 0..2 {
                    let l = self.lrn_col(d, i);
                    let mut rec = self.rec(d, &mut encs[d]);
                    let (ext_x, ext_y) = (&l.ext_x, &l.ext_y);
                    gpu::lrn::forward(&mut rec, n, l.ext_c, hw, &self.lrn, ext_x, ext_y, &l.scale)?;
                    let own_c = self.cols[d].convs[i].conv.c_out;
                    l.copy_own(&mut rec, Move { n, k: own_c, hw }, &l.ext_y, &l.own_y)?;
                }
            }
            for d in 0..2 {
                let cc = &self.cols[d].convs[i];
                if let Some((ps, y, _)) = &cc.pool {
                    let x = cc.lrn.as_ref().map(|l| &l.own_y).unwrap_or(&cc.act);
                    gpu::maxpool::forward(&mut self.rec(d, &mut encs[d]), ps, x, y)?;
                }
            }
        }
        // fc6 reads all of conv5: its flattened output is [N, C5·h·w] in C,H,W order, so the
        // columns' halves are channel slices with hw = h·w.
        let [_, c5, h5, w5] = self.geometry.convs[4].out_dims();
        let own = [0, 1].map(|d| self.cols[d].convs[4].output());
        let flat = [0, 1].map(|d| &self.cols[d].flat);
        self.gather(
            encs,
            Move {
                n,
                k: c5 / 2,
                hw: h5 * w5,
            },
            own,
            flat,
        )?;
        for j in 0..3 {
            let f = &self.geometry.fcs[j];
            let l = f.linear;
            for d in 0..2 {
                let x = self.fc_input(d, j, dropout.is_some());
                let (w, b) = self.w(d, 5 + j);
                let fc = &self.cols[d].fcs[j];
                let s = LinearShape {
                    n,
                    fin: l.fin,
                    fout: l.fout / 2,
                };
                let a = f.hidden.then_some(act);
                let mut rec = self.rec(d, &mut encs[d]);
                gpu::gemm::linear_forward(&mut rec, &s, x, w, Some(b), &fc.act, a)?;
            }
            let own = [0, 1].map(|d| &self.cols[d].fcs[j].act);
            let full = [0, 1].map(|d| &self.cols[d].fcs[j].full);
            self.gather(
                encs,
                Move {
                    n,
                    k: l.fout / 2,
                    hw: 1,
                },
                own,
                full,
            )?;
            if let Some(dr) = dropout.filter(|_| f.hidden) {
                for d in 0..2 {
                    let fc = &self.cols[d].fcs[j];
                    let enc = &mut encs[d];
                    enc.copy_buffer_to_buffer(
                        &fc.full.buffer,
                        0,
                        &fc.dropped.buffer,
                        0,
                        fc.full.bytes(),
                    );
                    let seed = SeedSlot {
                        step: &self.steps[d],
                        slot: j as u32,
                    };
                    gpu::dropout::forward(&mut self.rec(d, enc), &fc.dropped, seed, dr.p)?;
                }
            }
        }
        Ok(())
    }

    /// The whole-width input of fully connected layer `j` (0 = fc6) on column `d`.
    fn fc_input(&self, d: usize, j: usize, dropout: bool) -> &Tensor {
        let col = &self.cols[d];
        match j {
            0 => &col.flat,
            _ if dropout => &col.fcs[j - 1].dropped,
            _ => &col.fcs[j - 1].full,
        }
    }

    /// Records the per-image loss and hits of the last forward pass (both devices compute
    /// them; device 0's are [`Self::stats`]).
    pub fn record_loss(&self, encs: &mut [wgpu::CommandEncoder; 2]) -> Result<()> {
        let l = self.geometry.fcs[2].linear;
        for d in 0..2 {
            let c = &self.cols[d];
            gpu::softmax_xent::forward(
                &mut self.rec(d, &mut encs[d]),
                l.n,
                l.fout,
                &c.fcs[2].full,
                &c.labels,
                &c.stats,
            )?;
        }
        Ok(())
    }

    /// Records the backward pass: every column's parameter gradients (written, not
    /// accumulated). `dropout` must be what the forward pass used.
    pub fn record_backward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        let act = self.config.activation;
        let dropout = dropout.filter(|dr| dr.p > 0.0);
        let n = self.batch();
        let l8 = self.geometry.fcs[2].linear;
        for d in 0..2 {
            let c = &self.cols[d];
            let mut rec = self.rec(d, &mut encs[d]);
            gpu::softmax_xent::backward(
                &mut rec,
                n,
                l8.fout,
                &c.fcs[2].full,
                &c.labels,
                &c.d_logits,
            )?;
            // Both devices hold the whole dlogits; each keeps its own classes.
            let k = l8.fout / 2;
            channels::copy(
                &mut rec,
                Move { n, k, hw: 1 },
                (&c.d_logits, Slice::at(l8.fout, d * k)),
                (&c.fcs[2].d, Slice::at(k, 0)),
                false,
            )?;
        }
        for j in (0..3).rev() {
            let l = self.geometry.fcs[j].linear;
            let own = l.fout / 2;
            for d in 0..2 {
                let fc = &self.cols[d].fcs[j];
                let (w, _) = self.w(d, 5 + j);
                let s = LinearShape {
                    n,
                    fin: l.fin,
                    fout: own,
                };
                let mut rec = self.rec(d, &mut encs[d]);
                gpu::gemm::linear_backward_input(&mut rec, &s, &fc.d, w, &fc.d_in, false)?;
                if let (Some(dr), true) = (dropout, j > 0) {
                    // The mask is elementwise, so it can go on each partial before the sum.
                    let seed = SeedSlot {
                        step: &self.steps[d],
                        slot: (j - 1) as u32,
                    };
                    gpu::dropout::backward(&mut rec, &fc.d_in, seed, dr.p)?;
                }
            }
            let weight_grads = |encs: &mut [wgpu::CommandEncoder; 2]| -> Result<()> {
                for d in 0..2 {
                    let fc = &self.cols[d].fcs[j];
                    let x = self.fc_input(d, j, dropout.is_some());
                    let (dw, db) = self.g(d, 5 + j);
                    let s = LinearShape {
                        n,
                        fin: l.fin,
                        fout: own,
                    };
                    let mut rec = self.rec(d, &mut encs[d]);
                    gpu::gemm::linear_backward_weight(&mut rec, &s, &fc.d, x, dw, false)?;
                    gpu::gemm::linear_backward_bias(&mut rec, &s, &fc.d, db, false)?;
                }
                Ok(())
            };
            let partial = [0, 1].map(|d| &self.cols[d].fcs[j].d_in);
            if j > 0 {
                let own_d = [0, 1].map(|d| &self.cols[d].fcs[j - 1].d);
                let m = Move {
                    n,
                    k: l.fin / 2,
                    hw: 1,
                };
                self.reduce(encs, m, partial, own_d, weight_grads)?;
                for d in 0..2 {
                    let h = &self.cols[d].fcs[j - 1];
                    gpu::activation::backward(&mut self.rec(d, &mut encs[d]), act, &h.d, &h.act)?;
                }
            } else {
                let [_, c5, h5, w5] = self.geometry.convs[4].out_dims();
                let own_d = [0, 1].map(|d| self.cols[d].convs[4].d_output());
                let m = Move {
                    n,
                    k: c5 / 2,
                    hw: h5 * w5,
                };
                self.reduce(encs, m, partial, own_d, weight_grads)?;
            }
        }
        for i in (0..5).rev() {
            for d in 0..2 {
                let cc = &self.cols[d].convs[i];
                if let Some((ps, _, dy)) = &cc.pool {
                    let (x, dx) = match &cc.lrn {
                        Some(l) => (&l.own_y, &l.d_own_y),
                        None => (&cc.act, &cc.d_act),
                    };
                    gpu::maxpool::backward(&mut self.rec(d, &mut encs[d]), ps, x, dy, dx)?;
                }
            }
            if self.cols[0].convs[i].lrn.is_some() {
                let own = [0, 1].map(|d| &self.lrn_col(d, i).d_own_y);
                let ext = [0, 1].map(|d| &self.lrn_col(d, i).d_ext_y);
                self.halo(encs, i, own, ext)?;
                let hw = self.hw(i);
                for d in 0..2 {
                    let cc = &self.cols[d].convs[i];
                    let l = self.lrn_col(d, i);
                    let mut rec = self.rec(d, &mut encs[d]);
                    gpu::lrn::backward(
                        &mut rec, n, l.ext_c, hw, &self.lrn, &l.ext_x, &l.scale, &l.d_ext_y,
                        &l.d_ext_x,
                    )?;
                    let m = Move {
                        n,
                        k: cc.conv.c_out,
                        hw,
                    };
                    l.copy_own(&mut rec, m, &l.d_ext_x, &cc.d_act)?;
                }
            }
            for d in 0..2 {
                let cc = &self.cols[d].convs[i];
                let mut rec = self.rec(d, &mut encs[d]);
                gpu::activation::backward(&mut rec, act, &cc.d_act, &cc.act)?;
                if i == 0 {
                    continue;
                }
                let (w, _) = self.w(d, i);
                let dx = match &cc.full_in {
                    Some((_, dfull)) => dfull,
                    None => self.cols[d].convs[i - 1].d_output(),
                };
                gpu::conv::backward_input(&mut rec, &cc.conv, &cc.d_act, w, dx, false)?;
            }
            let weight_grads = |encs: &mut [wgpu::CommandEncoder; 2]| -> Result<()> {
                for d in 0..2 {
                    let cc = &self.cols[d].convs[i];
                    let (dw, db) = self.g(d, i);
                    let x = self.stage_input(d, i);
                    let mut rec = self.rec(d, &mut encs[d]);
                    gpu::conv::backward_weight(&mut rec, &cc.conv, &cc.d_act, x, dw, false)?;
                    gpu::conv::backward_bias(&mut rec, &cc.conv, &cc.d_act, db, false)?;
                }
                Ok(())
            };
            if self.cols[0].convs[i].reads_both {
                let c = self.geometry.convs[i].conv;
                let partial =
                    [0, 1].map(|d| &self.cols[d].convs[i].full_in.as_ref().expect("full").1);
                let own = [0, 1].map(|d| self.cols[d].convs[i - 1].d_output());
                let m = Move {
                    n,
                    k: c.c_in / 2,
                    hw: c.h * c.w,
                };
                self.reduce(encs, m, partial, own, weight_grads)?;
            } else {
                weight_grads(encs)?;
            }
        }
        Ok(())
    }

    /// Records one SGD step on each column's parameters (the update of [`super::Network`]).
    pub fn record_sgd(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        hyper: gpu::sgd::SgdHyper,
    ) -> Result<()> {
        self.write_step(|v| {
            v.lr = hyper.lr;
            v.momentum = hyper.momentum;
            v.weight_decay = hyper.weight_decay;
        });
        for d in 0..2 {
            let c = &self.cols[d];
            let mut rec = self.rec(d, &mut encs[d]);
            for ((w, v), g) in c.params.iter().zip(&c.momentum).zip(&c.grads) {
                gpu::sgd::step(&mut rec, w, v, g, &self.steps[d])?;
            }
        }
        Ok(())
    }
}
