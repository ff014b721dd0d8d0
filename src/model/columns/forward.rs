//! The forward pass on both columns, a loop over the layer list.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
use super::super::layers::input_of;
use super::super::Dropout;
use super::buffers::{ColLayer, ColOp};
use super::{ColumnNetwork, Result};
use crate::gpu::channels::Move;
use crate::gpu::dropout::SeedSlot;
use crate::gpu::{self, GpuError, Tensor};

impl ColumnNetwork {
    /// The move of layer `p`'s own output (`[N, C/2, …]`, or `[N, F/2]`) in an exchange.
    pub(super) fn own_move(&self, p: usize) -> Move {
        let out = &self.layers[p].out;
        Move {
            n: out[0],
            k: out[1] / 2,
            hw: out[2..].iter().product(),
        }
    }

    /// The column's layer `i`.
    pub(super) fn col(&self, d: usize, i: usize) -> &ColLayer {
        &self.cols[d].layers[i]
    }

    /// What layer `i` of column `d` reads: its exchanged whole input, the producer's whole
    /// output (after a linear or dropout layer), the producer's own half, or the images.
    pub(super) fn col_input(&self, d: usize, i: usize, prev: Option<usize>) -> &Tensor {
        let cl = self.col(d, i);
        if let Some(full) = &cl.full_in {
            return full;
        }
        match prev {
            None => &self.cols[d].input,
            Some(p) => {
                let pl = self.col(d, p);
                pl.whole_out().unwrap_or(&pl.y)
            }
        }
    }

    /// The (weight, bias) parameters of layer `i` on column `d`, and their gradients.
    pub(super) fn col_params(&self, d: usize, i: usize) -> Result<[&Tensor; 4]> {
        let (w, b) = self.layers[i].params.ok_or_else(|| GpuError::Invalid {
            op: "columns",
            reason: format!("layer {} has no parameters", self.layers[i].block),
        })?;
        let c = &self.cols[d];
        Ok([&c.params[w], &c.params[b], &c.grads[w], &c.grads[b]])
    }

    /// Records the forward pass on both columns from their inputs to the whole logits (on
    /// both devices). `encs` are submitted at each exchange and continue after it.
    pub fn record_forward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        dropout: Option<Dropout>,
    ) -> Result<()> {
        let dropout = dropout.filter(|dr| dr.p > 0.0);
        if let Some(dr) = dropout {
            self.write_step(|v| v.seeds[..2].copy_from_slice(&dr.seeds));
        }
        let training = dropout.is_some();
        let n = self.batch();
        for i in 0..self.layers.len() {
            let block = self.layers[i].block;
            let prev = input_of(&self.layers, i, training);
            if let (Some(p), Some(_)) = (prev, &self.col(0, i).full_in) {
                let own = [0, 1].map(|d| &self.col(d, p).y);
                let full = [0, 1].map(|d| self.col(d, i).full_in.as_ref().unwrap_or(own[d]));
                self.gather(encs, self.own_move(p), own, full)?;
            }
            if let (ColOp::Lrn(_), Some(p)) = (self.col(0, i).op, prev) {
                let own = [0, 1].map(|d| &self.col(d, p).y);
                let l = [self.lrn_ext(0, i)?, self.lrn_ext(1, i)?];
                self.halo(encs, l, n, own, l.map(|e| &e.ext_x))?;
            }
            for d in 0..2 {
                let cl = self.col(d, i);
                let x = self.col_input(d, i, prev);
                match cl.op {
                    ColOp::Conv(shape, act) => {
                        let [w, b, ..] = self.col_params(d, i)?;
                        let mut rec = self.rec(d, &mut encs[d]);
                        rec.set_scope(block);
                        gpu::conv::forward(&mut rec, &shape, x, w, b, &cl.y, Some(act))?;
                    }
                    ColOp::Lrn(params) => {
                        let e = self.lrn_ext(d, i)?;
                        {
                            let mut rec = self.rec(d, &mut encs[d]);
                            rec.set_scope(block);
                            let (xs, ys) = (&e.ext_x, &e.ext_y);
                            // LRN reads a map as H·W values: [N,C,H·W,1].
                            let dims = [n, e.ext_c, e.hw, 1];
                            gpu::lrn::forward(&mut rec, &params, dims, xs, ys, &e.scale)?;
                        }
                        self.copy_own(d, &mut encs[d], e, n, &e.ext_y, &cl.y)?;
                    }
                    ColOp::Pool(p) => {
                        let mut rec = self.rec(d, &mut encs[d]);
                        rec.set_scope(block);
                        gpu::maxpool::forward(&mut rec, &p, x, &cl.y)?;
                    }
                    ColOp::Linear(shape, act) => {
                        let [w, b, ..] = self.col_params(d, i)?;
                        let mut rec = self.rec(d, &mut encs[d]);
                        rec.set_scope(block);
                        gpu::gemm::linear_forward(&mut rec, &shape, x, w, Some(b), &cl.y, act)?;
                    }
                    ColOp::Dropout { slot } => {
                        if let Some(dr) = dropout {
                            encs[d].copy_buffer_to_buffer(&x.buffer, 0, &cl.y.buffer, 0, x.bytes());
                            let seed = SeedSlot {
                                step: &self.steps[d],
                                slot,
                            };
                            let mut rec = self.rec(d, &mut encs[d]);
                            rec.set_scope(block);
                            gpu::dropout::forward(&mut rec, &cl.y, seed, dr.p)?;
                        }
                    }
                }
            }
            // A linear layer's neurons are exchanged at once: every reader of its output
            // (dropout, the next linear layer, the loss) reads both columns'.
            if let ColOp::Linear(..) = self.col(0, i).op {
                let own = [0, 1].map(|d| &self.col(d, i).y);
                let full = [0, 1].map(|d| self.col(d, i).full_out.as_ref().unwrap_or(own[d]));
                self.gather(encs, self.own_move(i), own, full)?;
            }
        }
        Ok(())
    }

    /// Layer `i`'s LRN buffers on column `d`.
    pub(super) fn lrn_ext(&self, d: usize, i: usize) -> Result<&super::buffers::LrnExt> {
        self.col(d, i).lrn.as_ref().ok_or_else(|| {
            GpuError::Invalid {
                op: "columns",
                reason: format!("layer {} has no LRN buffers", self.layers[i].block),
            }
            .into()
        })
    }
}
