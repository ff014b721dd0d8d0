//! The backward pass on both columns, the forward's layer list read in reverse.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
use super::super::layers::{input_of, ColumnInput};
use super::super::Dropout;
use super::buffers::ColOp;
use super::{ColumnNetwork, Result};
use crate::backend::Grad;
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::dropout::SeedSlot;
use crate::gpu::{self, GpuError, Tensor};

impl ColumnNetwork {
    /// Layer `i`'s own output gradient on column `d`.
    fn col_dy(&self, d: usize, i: usize) -> Result<&Tensor> {
        self.col(d, i).dy.as_ref().ok_or_else(|| {
            GpuError::Invalid {
                op: "columns",
                reason: format!("layer {} has no gradient buffer", self.layers[i].block),
            }
            .into()
        })
    }

    /// Records layer `i`'s weight and bias gradients on both columns from its own output
    /// gradient (the activation's derivative already applied) and its input.
    fn weight_grads(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        i: usize,
        prev: Option<usize>,
    ) -> Result<()> {
        for d in 0..2 {
            let x = self.col_input(d, i, prev);
            let dy = self.col_dy(d, i)?;
            let [_, _, dw, db] = self.col_params(d, i)?;
            let mut rec = self.rec(d, &mut encs[d]);
            rec.set_scope(self.layers[i].block);
            match self.col(d, i).op {
                ColOp::Conv(shape, _) => {
                    gpu::conv::backward_weight(&mut rec, &shape, dy, x, dw, false)?;
                    gpu::conv::backward_bias(&mut rec, &shape, dy, db, false)?;
                }
                ColOp::Linear(shape, _) => {
                    gpu::gemm::linear_backward_weight(&mut rec, &shape, dy, x, dw, false)?;
                    gpu::gemm::linear_backward_bias(&mut rec, &shape, dy, db, false)?;
                }
                _ => {}
            }
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
        let dropout = dropout.filter(|dr| dr.p > 0.0);
        let training = dropout.is_some();
        let n = self.batch();
        let last = self.layers.len() - 1;
        let classes = self.geometry.fcs[2].linear.fout;
        for d in 0..2 {
            let c = &self.cols[d];
            let logits = self.logits_of(d)?;
            let mut rec = self.rec(d, &mut encs[d]);
            rec.set_scope("loss");
            gpu::softmax_xent::backward(&mut rec, n, classes, logits, &c.labels, &c.d_logits)?;
            // Both devices hold the whole dlogits; each keeps its own classes.
            let k = classes / 2;
            channels::copy(
                &mut rec,
                Move { n, k, hw: 1 },
                (&c.d_logits, Slice::at(classes, d * k)),
                (self.col_dy(d, last)?, Slice::at(k, 0)),
                false,
            )?;
        }
        for i in (0..self.layers.len()).rev() {
            let block = self.layers[i].block;
            let prev = input_of(&self.layers, i, training);
            match self.col(0, i).op {
                // Its consumer masked the partial gradients before their sum.
                ColOp::Dropout { .. } => {}
                ColOp::Lrn(params) => {
                    let Some(p) = prev else { continue };
                    let l = [self.lrn_ext(0, i)?, self.lrn_ext(1, i)?];
                    let own = [self.col_dy(0, i)?, self.col_dy(1, i)?];
                    self.halo(encs, l, n, own, l.map(|e| &e.d_ext_y))?;
                    for d in 0..2 {
                        let e = l[d];
                        {
                            let mut rec = self.rec(d, &mut encs[d]);
                            rec.set_scope(block);
                            let (dy, dx) = (&e.d_ext_y, &e.d_ext_x);
                            let dims = [n, e.ext_c, e.hw, 1];
                            let t = Grad {
                                x: &e.ext_x,
                                y: &e.ext_y,
                                dy,
                                dx: Some(dx),
                            };
                            gpu::lrn::backward(&mut rec, &params, dims, t, &e.scale)?;
                        }
                        let target = self.col_dy(d, p)?;
                        self.copy_own(d, &mut encs[d], e, n, &e.d_ext_x, target)?;
                    }
                }
                ColOp::Pool(ps) => {
                    let Some(p) = prev else { continue };
                    for d in 0..2 {
                        let (x, dy, dx) =
                            (&self.col(d, p).y, self.col_dy(d, i)?, self.col_dy(d, p)?);
                        let mut rec = self.rec(d, &mut encs[d]);
                        rec.set_scope(block);
                        gpu::maxpool::backward(&mut rec, &ps, x, dy, dx)?;
                    }
                }
                ColOp::Conv(..) | ColOp::Linear(..) => {
                    self.product_backward(encs, i, prev, dropout)?;
                }
            }
        }
        Ok(())
    }

    /// The backward pass of conv or linear layer `i`: the activation's derivative, the input
    /// gradient (summed across columns when the layer read both, with the weight gradients
    /// computed meanwhile) and the weight gradients.
    fn product_backward(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        i: usize,
        prev: Option<usize>,
        dropout: Option<Dropout>,
    ) -> Result<()> {
        let block = self.layers[i].block;
        for d in 0..2 {
            let (y, dy) = (&self.col(d, i).y, self.col_dy(d, i)?);
            let act = match self.col(d, i).op {
                ColOp::Conv(_, act) => Some(act),
                ColOp::Linear(_, act) => act,
                _ => None,
            };
            if let Some(act) = act {
                let mut rec = self.rec(d, &mut encs[d]);
                rec.set_scope(block);
                gpu::activation::backward(&mut rec, act, dy, y)?;
            }
        }
        let Some(p) = prev else {
            // conv1's input is the images: no input gradient.
            return self.weight_grads(encs, i, prev);
        };
        let both = self.layers[i].columns == ColumnInput::Both;
        for d in 0..2 {
            let cl = self.col(d, i);
            let [w, ..] = self.col_params(d, i)?;
            let dy = self.col_dy(d, i)?;
            // A layer reading both columns leaves a partial gradient of its whole input;
            // one reading its own half writes the producer's gradient directly.
            let dx = match &cl.d_in {
                Some(part) if both => part,
                _ => self.col_dy(d, p)?,
            };
            let mut rec = self.rec(d, &mut encs[d]);
            rec.set_scope(block);
            match cl.op {
                ColOp::Conv(shape, _) => {
                    gpu::conv::backward_input(&mut rec, &shape, dy, w, dx, false)?
                }
                ColOp::Linear(shape, _) => {
                    gpu::gemm::linear_backward_input(&mut rec, &shape, dy, w, dx, false)?
                }
                _ => {}
            }
        }
        if !both {
            return self.weight_grads(encs, i, prev);
        }
        // Through a dropout layer: its mask is elementwise, so it goes on each partial
        // before the sum, and the sum lands in the dropout's producer.
        let mut target = p;
        if let (ColOp::Dropout { slot }, Some(dr)) = (self.col(0, p).op, dropout) {
            for d in 0..2 {
                let part = self
                    .col(d, i)
                    .d_in
                    .as_ref()
                    .ok_or_else(|| missing(self, i))?;
                let seed = SeedSlot {
                    step: &self.steps[d],
                    slot,
                };
                let mut rec = self.rec(d, &mut encs[d]);
                rec.set_scope(self.layers[p].block);
                gpu::dropout::backward(&mut rec, part, seed, dr.p)?;
            }
            target = input_of(&self.layers, p, true).ok_or_else(|| missing(self, p))?;
        }
        let part0 = self
            .col(0, i)
            .d_in
            .as_ref()
            .ok_or_else(|| missing(self, i))?;
        let part1 = self
            .col(1, i)
            .d_in
            .as_ref()
            .ok_or_else(|| missing(self, i))?;
        let own = [self.col_dy(0, target)?, self.col_dy(1, target)?];
        self.reduce(encs, self.own_move(target), [part0, part1], own, |encs| {
            self.weight_grads(encs, i, prev)
        })
    }
}

/// A buffer the layer list promised is absent: a bug, reported instead of wrong numbers.
fn missing(net: &ColumnNetwork, i: usize) -> super::super::NetworkError {
    GpuError::Invalid {
        op: "columns",
        reason: format!("layer {} lacks a buffer of the split", net.layers[i].block),
    }
    .into()
}
