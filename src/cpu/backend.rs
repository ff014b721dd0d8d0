//! The CPU engine as a [`Backend`]: buffers in an arena of host vectors, each op run at once on
//! the engine's own worker pool. An op takes its output buffers out of the arena for the call
//! (a move, not a copy) and puts them back, so inputs and outputs are distinct borrows and
//! nothing is allocated per step: convolution plans and scratch are made on a shape's first use.
use super::batchnorm::{bn_backward, bn_forward};
use super::conv::{conv_backward, conv_forward, ConvPlan, ConvScratch};
use super::dropout::dropout_in_place_at;
use super::linear::{linear_backward, linear_forward};
use super::lrn::{lrn_backward, lrn_forward};
use super::maxpool::{maxpool_backward, maxpool_forward};
use super::sgd::sgd_step;
use super::softmax::{softmax_xent_backward, softmax_xent_forward};
use super::views::{Back, WeightGrads, Weights};
use super::{CpuDevice, CpuError};
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

type Result<T> = std::result::Result<T, CpuError>;

/// A buffer of the CPU engine: an index into its arena and the length it was made with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuBuf {
    id: usize,
    len: usize,
    label: String,
}

impl CpuBuf {
    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The CPU engine's buffers and per-shape state.
#[derive(Debug)]
pub struct CpuBackend {
    device: CpuDevice,
    arena: Vec<Vec<f32>>,
    plans: Vec<(ConvShape, ConvPlan)>,
    scratch: Vec<ConvScratch>,
}

impl CpuBackend {
    /// An empty engine on `device`'s workers.
    pub fn new(device: &CpuDevice) -> CpuBackend {
        CpuBackend {
            device: device.clone(),
            arena: Vec::new(),
            plans: Vec::new(),
            scratch: vec![ConvScratch::default(); device.threads()],
        }
    }

    /// The worker pool it runs on.
    pub fn device(&self) -> &CpuDevice {
        &self.device
    }

    /// The values of `b`, read in place.
    pub fn slice(&self, b: &CpuBuf) -> &[f32] {
        &self.arena[b.id]
    }

    /// The values of `b`, to write in place (the input stage augments straight into it).
    pub fn slice_mut(&mut self, b: &CpuBuf) -> &mut [f32] {
        &mut self.arena[b.id]
    }

    fn check(op: &'static str, role: &str, b: &CpuBuf, want: usize) -> Result<()> {
        if b.len == want {
            return Ok(());
        }
        Err(CpuError::Input {
            what: op,
            reason: format!(
                "`{role}` ({}) holds {} values, the op's shape needs {want}",
                b.label, b.len
            ),
        })
    }

    /// Moves `b`'s storage out (put back with [`CpuBackend::put`]).
    fn take(&mut self, b: &CpuBuf) -> Vec<f32> {
        std::mem::take(&mut self.arena[b.id])
    }

    fn put(&mut self, b: &CpuBuf, v: Vec<f32>) {
        self.arena[b.id] = v;
    }

    /// The plan of `s`, made (and the scratch grown for it) on first use.
    fn plan(&mut self, s: &ConvShape) -> ConvPlan {
        if let Some((_, p)) = self.plans.iter().find(|(k, _)| k == s) {
            return *p;
        }
        let p = ConvPlan::new(s, self.device.threads());
        self.scratch.iter_mut().for_each(|sc| sc.fit(s, &p));
        self.plans.push((*s, p));
        p
    }

    /// Runs `f` over the outputs `outs` (taken out of the arena) with the arena for inputs.
    fn with_outs<const K: usize>(
        &mut self,
        outs: [&CpuBuf; K],
        f: impl FnOnce(&[Vec<f32>], &mut [Vec<f32>; K], &mut [ConvScratch]) + Send,
    ) {
        let mut taken: [Vec<f32>; K] = std::array::from_fn(|i| self.take(outs[i]));
        let (arena, scratch, device) = (&self.arena, &mut self.scratch, &self.device);
        device.install(|| f(arena, &mut taken, scratch));
        for (b, v) in outs.into_iter().zip(taken) {
            self.put(b, v);
        }
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;
    type Error = CpuError;

    fn alloc(&mut self, len: usize, label: &str) -> Result<CpuBuf> {
        self.arena.push(vec![0.0; len]);
        Ok(CpuBuf {
            id: self.arena.len() - 1,
            len,
            label: label.to_string(),
        })
    }

    fn upload(&mut self, dst: &CpuBuf, data: &[f32]) -> Result<()> {
        Self::check("upload", "data", dst, data.len())?;
        self.arena[dst.id].copy_from_slice(data);
        Ok(())
    }

    fn upload_labels(&mut self, dst: &CpuBuf, labels: &[i32]) -> Result<()> {
        // Stored as their bits: the loss reads them back as i32.
        self.upload(dst, bytemuck::cast_slice(labels))
    }

    fn download(&mut self, src: &CpuBuf) -> Result<Vec<f32>> {
        Ok(self.arena[src.id].clone())
    }

    fn copy(&mut self, src: &CpuBuf, dst: &CpuBuf) -> Result<()> {
        Self::check("copy", "dst", dst, src.len)?;
        let mut d = self.take(dst);
        d.copy_from_slice(&self.arena[src.id]);
        self.put(dst, d);
        Ok(())
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &CpuBuf,
        p: Pair<'_, CpuBuf>,
        y: &CpuBuf,
    ) -> Result<()> {
        Self::check("conv", "x", x, s.input_len())?;
        Self::check("conv", "y", y, s.output_len())?;
        Self::check("conv", "w", p.w, s.weight_len())?;
        let plan = self.plan(s);
        let (xi, wi, bi) = (x.id, p.w.id, p.b.id);
        self.with_outs([y], |a, [y], sc| {
            let p = Weights {
                w: &a[wi],
                b: &a[bi],
            };
            conv_forward(s, &plan, act, &a[xi], p, y, sc)
        });
        Ok(())
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, CpuBuf>,
        w: &CpuBuf,
        g: Pair<'_, CpuBuf>,
    ) -> Result<()> {
        Self::check("conv", "dy", t.dy, s.output_len())?;
        Self::check("conv", "dw", g.w, s.weight_len())?;
        let plan = self.plan(s);
        let (xi, yi, wi) = (t.x.id, t.y.id, w.id);
        match t.dx {
            Some(dx) => {
                Self::check("conv", "dx", dx, s.input_len())?;
                self.with_outs([t.dy, g.w, g.b, dx], |a, [dy, gw, gb, dx], sc| {
                    let (x, y, w) = (&a[xi], &a[yi], &a[wi]);
                    conv_backward(
                        s,
                        &plan,
                        act,
                        Back {
                            x,
                            y,
                            dy,
                            dx: Some(dx),
                        },
                        w,
                        WeightGrads { dw: gw, db: gb },
                        sc,
                    )
                })
            }
            None => self.with_outs([t.dy, g.w, g.b], |a, [dy, gw, gb], sc| {
                let (x, y, w) = (&a[xi], &a[yi], &a[wi]);
                conv_backward(
                    s,
                    &plan,
                    act,
                    Back { x, y, dy, dx: None },
                    w,
                    WeightGrads { dw: gw, db: gb },
                    sc,
                )
            }),
        }
        Ok(())
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &CpuBuf,
        p: Pair<'_, CpuBuf>,
        y: &CpuBuf,
    ) -> Result<()> {
        Self::check("linear", "x", x, s.n * s.fin)?;
        Self::check("linear", "y", y, s.n * s.fout)?;
        Self::check("linear", "w", p.w, s.fout * s.fin)?;
        let threads = self.device.threads();
        let (xi, wi, bi) = (x.id, p.w.id, p.b.id);
        self.with_outs([y], |a, [y], _| {
            let p = Weights {
                w: &a[wi],
                b: &a[bi],
            };
            linear_forward(s, act, &a[xi], p, y, threads)
        });
        Ok(())
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, CpuBuf>,
        w: &CpuBuf,
        g: Pair<'_, CpuBuf>,
    ) -> Result<()> {
        Self::check("linear", "dy", t.dy, s.n * s.fout)?;
        Self::check("linear", "dw", g.w, s.fout * s.fin)?;
        let threads = self.device.threads();
        let (xi, yi, wi) = (t.x.id, t.y.id, w.id);
        match t.dx {
            Some(dx) => {
                Self::check("linear", "dx", dx, s.n * s.fin)?;
                self.with_outs([t.dy, g.w, g.b, dx], |a, [dy, gw, gb, dx], _| {
                    let (x, y, w) = (&a[xi], &a[yi], &a[wi]);
                    linear_backward(
                        s,
                        act,
                        Back {
                            x,
                            y,
                            dy,
                            dx: Some(dx),
                        },
                        w,
                        WeightGrads { dw: gw, db: gb },
                        threads,
                    )
                })
            }
            None => self.with_outs([t.dy, g.w, g.b], |a, [dy, gw, gb], _| {
                let (x, y, w) = (&a[xi], &a[yi], &a[wi]);
                linear_backward(
                    s,
                    act,
                    Back { x, y, dy, dx: None },
                    w,
                    WeightGrads { dw: gw, db: gb },
                    threads,
                )
            }),
        }
        Ok(())
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &CpuBuf,
        y: &CpuBuf,
        saved: &CpuBuf,
    ) -> Result<()> {
        let len = dims.iter().product();
        for (role, b) in [("x", x), ("y", y), ("scale", saved)] {
            Self::check("lrn", role, b, len)?;
        }
        let xi = x.id;
        self.with_outs([y, saved], |a, [y, scale], _| {
            lrn_forward(p, dims, &a[xi], y, scale)
        });
        Ok(())
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, CpuBuf>,
        saved: &CpuBuf,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        Self::check("lrn", "dx", dx, dims.iter().product())?;
        let (xi, yi, si) = (t.x.id, t.y.id, saved.id);
        self.with_outs([t.dy, dx], |a, [dy, dx], _| {
            lrn_backward(p, dims, &a[xi], &a[yi], &a[si], dy, dx)
        });
        Ok(())
    }

    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &CpuBuf,
        p: Pair<'_, CpuBuf>,
        st: BnState<'_, CpuBuf>,
        y: &CpuBuf,
    ) -> Result<()> {
        for (role, b, want) in [
            ("x", x, s.len()),
            ("y", y, s.len()),
            ("gamma", p.w, s.c),
            ("beta", p.b, s.c),
            ("running_mean", st.mean, s.c),
            ("running_var", st.var, s.c),
            ("saved", st.saved, 2 * s.c),
        ] {
            Self::check("batchnorm", role, b, want)?;
        }
        let (xi, gi, bi, train) = (x.id, p.w.id, p.b.id, mode.batch_stats());
        self.with_outs([st.mean, st.var, y, st.saved], |a, [m, v, y, sv], _| {
            bn_forward(s, train, &a[xi], [&a[gi], &a[bi]], [m, v], [y, sv])
        });
        Ok(())
    }

    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, CpuBuf>,
        gamma: &CpuBuf,
        saved: &CpuBuf,
        g: Pair<'_, CpuBuf>,
    ) -> Result<()> {
        for (role, b, want) in [
            ("x", t.x, s.len()),
            ("dy", t.dy, s.len()),
            ("gamma", gamma, s.c),
            ("saved", saved, 2 * s.c),
            ("dgamma", g.w, s.c),
            ("dbeta", g.b, s.c),
        ] {
            Self::check("batchnorm", role, b, want)?;
        }
        let (xi, dyi, gi, si, train) = (t.x.id, t.dy.id, gamma.id, saved.id, mode.batch_stats());
        match t.dx {
            Some(dx) => {
                Self::check("batchnorm", "dx", dx, s.len())?;
                self.with_outs([dx, g.w, g.b], |a, [dx, dg, db], _| {
                    let t = [&a[xi][..], &a[dyi][..]];
                    bn_backward(s, train, t, &a[gi], &a[si], Some(dx), [dg, db])
                });
            }
            None => self.with_outs([g.w, g.b], |a, [dg, db], _| {
                let t = [&a[xi][..], &a[dyi][..]];
                bn_backward(s, train, t, &a[gi], &a[si], None, [dg, db])
            }),
        }
        Ok(())
    }

    fn pool_saved(&mut self, s: &PoolShape) -> Result<Option<CpuBuf>> {
        // The index of each window's first maximum within its plane, as u32 bits.
        self.alloc(s.output_len(), "maxpool.arg").map(Some)
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &CpuBuf,
        y: &CpuBuf,
        saved: Option<&CpuBuf>,
    ) -> Result<()> {
        Self::check("maxpool", "x", x, s.input_len())?;
        Self::check("maxpool", "y", y, s.output_len())?;
        let arg = saved.ok_or_else(|| missing_saved("maxpool"))?;
        Self::check("maxpool", "arg", arg, s.output_len())?;
        let xi = x.id;
        self.with_outs([y, arg], |a, [y, arg], _| {
            maxpool_forward(s, &a[xi], y, bytemuck::cast_slice_mut(arg))
        });
        Ok(())
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, CpuBuf>,
        saved: Option<&CpuBuf>,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        Self::check("maxpool", "dx", dx, s.input_len())?;
        let arg = saved.ok_or_else(|| missing_saved("maxpool"))?;
        let (ai, di) = (arg.id, t.dy.id);
        self.with_outs([dx], |a, [dx], _| {
            maxpool_backward(s, bytemuck::cast_slice(&a[ai]), &a[di], dx)
        });
        Ok(())
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &CpuBuf) -> Result<()> {
        self.with_outs([v], |_, [v], _| {
            dropout_in_place_at(p, seed.seed, seed.offset as usize, v)
        });
        Ok(())
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &CpuBuf,
        labels: &CpuBuf,
        stats: &CpuBuf,
    ) -> Result<()> {
        Self::check("softmax_xent", "logits", logits, labels.len * classes)?;
        Self::check("softmax_xent", "stats", stats, labels.len * 3)?;
        let (zi, li) = (logits.id, labels.id);
        self.with_outs([stats], |a, [st], _| {
            softmax_xent_forward(classes, &a[zi], bytemuck::cast_slice(&a[li]), st)
        });
        Ok(())
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &CpuBuf,
        labels: &CpuBuf,
        dlogits: &CpuBuf,
    ) -> Result<()> {
        Self::check("softmax_xent", "logits", logits, labels.len * classes)?;
        Self::check("softmax_xent", "dlogits", dlogits, labels.len * classes)?;
        let (zi, li) = (logits.id, labels.id);
        self.with_outs([dlogits], |a, [d], _| {
            softmax_xent_backward(classes, &a[zi], bytemuck::cast_slice(&a[li]), d)
        });
        Ok(())
    }

    fn sgd(&mut self, h: SgdHyper, w: &CpuBuf, v: &CpuBuf, g: &CpuBuf) -> Result<()> {
        Self::check("sgd", "v", v, w.len)?;
        Self::check("sgd", "g", g, w.len)?;
        let gi = g.id;
        self.with_outs([w, v], |a, [w, v], _| {
            sgd_step(w, v, &a[gi], h.lr, h.momentum, h.weight_decay)
        });
        Ok(())
    }
}

fn missing_saved(op: &'static str) -> CpuError {
    CpuError::Input {
        what: op,
        reason: "called without the buffer Backend::pool_saved made for it".into(),
    }
}
