//! The hybrid split's per-op rules: which form each op reads its tensors in and writes them
//! in. Conv, LRN and pooling run on each worker's rows with the parameters whole on every
//! worker (data parallel); a linear layer reads its input whole (every image of the global
//! batch) and writes each worker's share of its output neurons, from that share of its
//! weight's rows (model parallel); the loss runs on the whole logits on every worker.
use super::buf::{Form, HBuf, Part};
use super::Hybrid;
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::model::NetworkError;
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

type Result<T> = std::result::Result<T, NetworkError>;

/// The rows of an `[n, …]` tensor.
fn rows<T>(b: &HBuf<T>, n: usize) -> Part {
    Part::Rows {
        n,
        f: b.len / n.max(1),
    }
}

impl<B> Hybrid<B>
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    /// Images on this process's worker `k` of a batch of `n`.
    fn rows_of(&self, k: usize, n: usize) -> usize {
        super::buf::share(self.global(k), self.workers(), n).len()
    }

    /// Neurons on this process's worker `k` of a layer of `f`.
    fn cols_of(&self, k: usize, f: usize) -> usize {
        super::buf::share(self.global(k), self.workers(), f).len()
    }
}

impl<B> Backend for Hybrid<B>
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    type Buf = HBuf<B::Buf>;
    type Error = NetworkError;

    fn alloc(&mut self, len: usize, label: &str) -> Result<HBuf<B::Buf>> {
        Ok(HBuf::new(len, label))
    }

    fn upload(&mut self, dst: &HBuf<B::Buf>, data: &[f32]) -> Result<()> {
        let s = self.write_whole(dst, Form::Whole)?;
        for (w, s) in self.workers.iter_mut().zip(s) {
            w.upload(s, data)?;
        }
        Ok(())
    }

    fn upload_labels(&mut self, dst: &HBuf<B::Buf>, labels: &[i32]) -> Result<()> {
        let s = self.write_whole(dst, Form::Whole)?;
        for (w, s) in self.workers.iter_mut().zip(s) {
            w.upload_labels(s, labels)?;
        }
        Ok(())
    }

    fn download(&mut self, src: &HBuf<B::Buf>) -> Result<Vec<f32>> {
        self.host(src)
    }

    fn scope(&mut self, block: &'static str) {
        self.workers.iter_mut().for_each(|w| w.scope(block));
    }

    fn copy(&mut self, src: &HBuf<B::Buf>, dst: &HBuf<B::Buf>) -> Result<()> {
        let (from, to) = match (src.form.get(), src.split.get()) {
            (Form::Part, Some(p)) => (self.read_part(src, p)?, self.write_part(dst, p)?),
            (Form::Partial, _) => (
                self.whole_stores(src)?,
                self.write_whole(dst, Form::Partial)?,
            ),
            _ => (self.read_whole(src)?, self.write_whole(dst, Form::Whole)?),
        };
        for ((w, s), d) in self.workers.iter_mut().zip(from).zip(to) {
            w.copy(s, d)?;
        }
        Ok(())
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &HBuf<B::Buf>,
        p: Pair<'_, HBuf<B::Buf>>,
        y: &HBuf<B::Buf>,
    ) -> Result<()> {
        let xs = self.read_part(x, rows(x, s.n))?;
        let (ws, bs) = (self.read_whole(p.w)?, self.read_whole(p.b)?);
        let ys = self.write_part(y, rows(y, s.n))?;
        for k in 0..self.workers.len() {
            let sk = ConvShape {
                n: self.rows_of(k, s.n),
                ..*s
            };
            let pk = Pair {
                w: &ws[k],
                b: &bs[k],
            };
            self.workers[k].conv_forward(&sk, act, &xs[k], pk, &ys[k])?;
        }
        Ok(())
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, HBuf<B::Buf>>,
        w: &HBuf<B::Buf>,
        g: Pair<'_, HBuf<B::Buf>>,
    ) -> Result<()> {
        let n = s.n;
        let (xs, ys) = (
            self.read_part(t.x, rows(t.x, n))?,
            self.read_part(t.y, rows(t.y, n))?,
        );
        let dys = self.read_part(t.dy, rows(t.dy, n))?;
        let dxs = match t.dx {
            Some(d) => Some(self.write_part(d, rows(d, n))?),
            None => None,
        };
        let ws = self.read_whole(w)?;
        // Each worker's weight gradient is its rows' share of the global batch's (the loss
        // is already the mean over every row): their sum, taken at SGD, is the gradient.
        let gw = self.write_whole(g.w, Form::Partial)?;
        let gb = self.write_whole(g.b, Form::Partial)?;
        for k in 0..self.workers.len() {
            let sk = ConvShape {
                n: self.rows_of(k, n),
                ..*s
            };
            let tk = Grad {
                x: &xs[k],
                y: &ys[k],
                dy: &dys[k],
                dx: dxs.map(|d| &d[k]),
            };
            let gk = Pair {
                w: &gw[k],
                b: &gb[k],
            };
            self.workers[k].conv_backward(&sk, act, tk, &ws[k], gk)?;
        }
        // Written in place: any whole copy is stale.
        t.dy.form.set(Form::Part);
        Ok(())
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &HBuf<B::Buf>,
        p: Pair<'_, HBuf<B::Buf>>,
        y: &HBuf<B::Buf>,
    ) -> Result<()> {
        let xs = self.read_whole(x)?;
        let ws = self.read_part(
            p.w,
            Part::Rows {
                n: s.fout,
                f: s.fin,
            },
        )?;
        let bs = self.read_part(p.b, Part::Rows { n: s.fout, f: 1 })?;
        let ys = self.write_part(y, Part::Cols { n: s.n, f: s.fout })?;
        for k in 0..self.workers.len() {
            let sk = LinearShape {
                fout: self.cols_of(k, s.fout),
                ..*s
            };
            let pk = Pair {
                w: &ws[k],
                b: &bs[k],
            };
            self.workers[k].linear_forward(&sk, act, &xs[k], pk, &ys[k])?;
        }
        Ok(())
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, HBuf<B::Buf>>,
        w: &HBuf<B::Buf>,
        g: Pair<'_, HBuf<B::Buf>>,
    ) -> Result<()> {
        let cols = Part::Cols { n: s.n, f: s.fout };
        let (wrows, brows) = (
            Part::Rows {
                n: s.fout,
                f: s.fin,
            },
            Part::Rows { n: s.fout, f: 1 },
        );
        let xs = self.read_whole(t.x)?;
        let (ys, dys) = (self.read_part(t.y, cols)?, self.read_part(t.dy, cols)?);
        // Each worker's neurons give a partial sum of the input's gradient over all of them.
        let dxs = match t.dx {
            Some(d) => Some(self.write_whole(d, Form::Partial)?),
            None => None,
        };
        let ws = self.read_part(w, wrows)?;
        // A worker's rows of the weight gradient are whole: they see every image.
        let (gw, gb) = (self.write_part(g.w, wrows)?, self.write_part(g.b, brows)?);
        for k in 0..self.workers.len() {
            let sk = LinearShape {
                fout: self.cols_of(k, s.fout),
                ..*s
            };
            let tk = Grad {
                x: &xs[k],
                y: &ys[k],
                dy: &dys[k],
                dx: dxs.map(|d| &d[k]),
            };
            let gk = Pair {
                w: &gw[k],
                b: &gb[k],
            };
            self.workers[k].linear_backward(&sk, act, tk, &ws[k], gk)?;
        }
        t.dy.form.set(Form::Part);
        Ok(())
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &HBuf<B::Buf>,
        y: &HBuf<B::Buf>,
        saved: &HBuf<B::Buf>,
    ) -> Result<()> {
        let n = dims[0];
        let xs = self.read_part(x, rows(x, n))?;
        let ys = self.write_part(y, rows(y, n))?;
        let ss = self.write_part(saved, rows(saved, n))?;
        for k in 0..self.workers.len() {
            let dk = [self.rows_of(k, n), dims[1], dims[2], dims[3]];
            self.workers[k].lrn_forward(p, dk, &xs[k], &ys[k], &ss[k])?;
        }
        Ok(())
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, HBuf<B::Buf>>,
        saved: &HBuf<B::Buf>,
    ) -> Result<()> {
        let n = dims[0];
        let (xs, ys) = (
            self.read_part(t.x, rows(t.x, n))?,
            self.read_part(t.y, rows(t.y, n))?,
        );
        let dys = self.read_part(t.dy, rows(t.dy, n))?;
        let ss = self.read_part(saved, rows(saved, n))?;
        let dxs = match t.dx {
            Some(d) => Some(self.write_part(d, rows(d, n))?),
            None => None,
        };
        for k in 0..self.workers.len() {
            let dk = [self.rows_of(k, n), dims[1], dims[2], dims[3]];
            let tk = Grad {
                x: &xs[k],
                y: &ys[k],
                dy: &dys[k],
                dx: dxs.map(|d| &d[k]),
            };
            self.workers[k].lrn_backward(p, dk, tk, &ss[k])?;
        }
        Ok(())
    }

    fn bn_forward(
        &mut self,
        _s: &BnShape,
        _mode: Mode,
        _x: &HBuf<B::Buf>,
        _p: Pair<'_, HBuf<B::Buf>>,
        _st: BnState<'_, HBuf<B::Buf>>,
        _y: &HBuf<B::Buf>,
    ) -> Result<()> {
        Err(super::no_batch_norm())
    }

    fn bn_backward(
        &mut self,
        _s: &BnShape,
        _mode: Mode,
        _t: Grad<'_, HBuf<B::Buf>>,
        _gamma: &HBuf<B::Buf>,
        _saved: &HBuf<B::Buf>,
        _g: Pair<'_, HBuf<B::Buf>>,
    ) -> Result<()> {
        Err(super::no_batch_norm())
    }

    fn pool_saved(&mut self, s: &PoolShape) -> Result<Option<HBuf<B::Buf>>> {
        let mut stores = Vec::with_capacity(self.workers.len());
        for k in 0..self.workers.len() {
            let sk = PoolShape {
                n: self.rows_of(k, s.n),
                ..*s
            };
            match self.workers[k].pool_saved(&sk)? {
                Some(b) => stores.push(b),
                None => return Ok(None),
            }
        }
        // Only the worker's own pooling reads it: its parts never change form.
        let b = HBuf::new(0, "maxpool.saved");
        let _ = b.part.set(stores);
        b.split.set(Some(Part::Rows { n: s.n, f: 0 }));
        b.form.set(Form::Part);
        Ok(Some(b))
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &HBuf<B::Buf>,
        y: &HBuf<B::Buf>,
        saved: Option<&HBuf<B::Buf>>,
    ) -> Result<()> {
        let xs = self.read_part(x, rows(x, s.n))?;
        let ys = self.write_part(y, rows(y, s.n))?;
        let ss = saved.and_then(|b| b.part.get());
        for k in 0..self.workers.len() {
            let sk = PoolShape {
                n: self.rows_of(k, s.n),
                ..*s
            };
            self.workers[k].maxpool_forward(&sk, &xs[k], &ys[k], ss.map(|v| &v[k]))?;
        }
        Ok(())
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, HBuf<B::Buf>>,
        saved: Option<&HBuf<B::Buf>>,
    ) -> Result<()> {
        let n = s.n;
        let (xs, ys) = (
            self.read_part(t.x, rows(t.x, n))?,
            self.read_part(t.y, rows(t.y, n))?,
        );
        // fc6's input gradient arrives as partial sums: this is its reduce-scatter to rows.
        let dys = self.read_part(t.dy, rows(t.dy, n))?;
        let dxs = match t.dx {
            Some(d) => Some(self.write_part(d, rows(d, n))?),
            None => None,
        };
        let ss = saved.and_then(|b| b.part.get());
        for k in 0..self.workers.len() {
            let sk = PoolShape {
                n: self.rows_of(k, n),
                ..*s
            };
            let tk = Grad {
                x: &xs[k],
                y: &ys[k],
                dy: &dys[k],
                dx: dxs.map(|d| &d[k]),
            };
            self.workers[k].maxpool_backward(&sk, tk, ss.map(|v| &v[k]))?;
        }
        Ok(())
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &HBuf<B::Buf>) -> Result<()> {
        // The mask is over the whole global tensor, as on one device: in forward after the
        // gather of the neurons (the next layer reads them whole anyway), in backward on
        // each partial sum before the reduce (masking commutes with the sum).
        let stores = match v.form.get() {
            Form::Partial => self.whole_stores(v)?,
            _ => self.read_whole(v)?,
        };
        for (w, s) in self.workers.iter_mut().zip(stores) {
            w.dropout(p, seed, s)?;
        }
        if v.form.get() != Form::Partial {
            v.form.set(Form::Whole);
        }
        Ok(())
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &HBuf<B::Buf>,
        labels: &HBuf<B::Buf>,
        stats: &HBuf<B::Buf>,
    ) -> Result<()> {
        let (ls, ys) = (self.read_whole(logits)?, self.read_whole(labels)?);
        let ss = self.write_whole(stats, Form::Whole)?;
        for k in 0..self.workers.len() {
            self.workers[k].softmax_xent_forward(classes, &ls[k], &ys[k], &ss[k])?;
        }
        Ok(())
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &HBuf<B::Buf>,
        labels: &HBuf<B::Buf>,
        dlogits: &HBuf<B::Buf>,
    ) -> Result<()> {
        let (ls, ys) = (self.read_whole(logits)?, self.read_whole(labels)?);
        let ds = self.write_whole(dlogits, Form::Whole)?;
        for k in 0..self.workers.len() {
            self.workers[k].softmax_xent_backward(classes, &ls[k], &ys[k], &ds[k])?;
        }
        Ok(())
    }

    fn sgd(
        &mut self,
        h: SgdHyper,
        w: &HBuf<B::Buf>,
        v: &HBuf<B::Buf>,
        g: &HBuf<B::Buf>,
    ) -> Result<()> {
        let by_part = matches!((g.form.get(), g.split.get()), (Form::Part, Some(_)));
        let (ws, vs, gs) = match (g.form.get(), g.split.get()) {
            // An fc layer's rows: each worker steps its own.
            (Form::Part, Some(p)) => (
                self.read_part(w, p)?,
                self.read_part(v, p)?,
                self.read_part(g, p)?,
            ),
            // A conv layer's partial sums: the all-reduce, then the same step everywhere.
            _ => (
                self.read_whole(w)?,
                self.read_whole(v)?,
                self.read_whole(g)?,
            ),
        };
        for k in 0..self.workers.len() {
            self.workers[k].sgd(h, &ws[k], &vs[k], &gs[k])?;
        }
        let written = if by_part { Form::Part } else { Form::Whole };
        w.form.set(written);
        v.form.set(written);
        Ok(())
    }
}
