//! The ops of [`Columns`]: each asks for its tensors in the form it reads, runs the op with
//! the column's own shapes on both engines, and records the form it wrote.
//!
//! - conv: output channels split; a grouped conv reads each column's half (one half of the
//!   groups each), a conv with `groups = 1` reads the whole input (conv1 the images both
//!   hold, conv3 its input gathered) and leaves a partial input gradient on each column;
//! - linear: neurons split, the whole input read, a partial input gradient;
//! - LRN: over the column's channels plus a halo of `2·⌊size/2⌋` channels of the other
//!   column's (enough for the scale of the halo's inner channels, which backward needs),
//!   the same halo of output gradients exchanged in backward;
//! - pooling and SGD: on each column's half, nothing exchanged;
//! - dropout: the mask is drawn over the whole `[N,F]` (so it equals one device's): on the
//!   whole tensor in forward, on each partial gradient in backward (the mask commutes with
//!   their sum);
//! - loss: both columns compute it on the whole logits.
//!
//! - batch normalisation: per channel, so each column normalises its own half with its halves
//!   of γ, β and the running statistics, nothing exchanged; its saved `[2,C]` statistics split
//!   as two rows.
//!
//! A per-channel op added to [`Backend`] forwards to each column's half as pooling does, with
//! its parameters split in one row.
// `d` indexes the columns, their engines and every store of a pair together.
#![allow(clippy::needless_range_loop)]
use super::buf::{ColBuf, Form};
use super::engine::{ChannelCopy, ColumnEngine};
use super::split::Columns;
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::model::NetworkError;
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

type Result<T> = std::result::Result<T, NetworkError>;
type Buf<B> = ColBuf<<B as Backend>::Buf>;

impl<B: ColumnEngine> Columns<B>
where
    NetworkError: From<B::Error>,
{
    /// The column's conv shape, and whether it reads the whole input.
    fn own_conv(&self, s: &ConvShape) -> Result<(ConvShape, bool)> {
        let c_out = self.halve("the output channels", s.c_out)?;
        if s.groups == 1 {
            return Ok((ConvShape { c_out, ..*s }, true));
        }
        let own = ConvShape {
            c_in: self.halve("the input channels", s.c_in)?,
            c_out,
            groups: self.halve("the groups", s.groups)?,
            ..*s
        };
        Ok((own, false))
    }

    /// The conv or linear input: whole, or each column's half.
    fn input_of<'b>(&mut self, x: &'b Buf<B>, whole: bool, n: usize) -> Result<[&'b B::Buf; 2]> {
        if whole {
            self.whole(x)
        } else {
            self.half(x, n)
        }
    }

    /// The LRN's halo and column channels, with the tensors' lengths checked.
    fn lrn_dims(&self, p: &LrnParams, dims: [usize; 4], len: usize) -> Result<(usize, usize)> {
        let [n, c, h, w] = dims;
        let own_c = self.halve("the channels", c)?;
        let halo = 2 * (p.size / 2);
        if own_c < halo {
            return Err(self.unsupported(format!(
                "{own_c} channels per column, fewer than the LRN halo of {halo}"
            )));
        }
        if len != n * c * h * w {
            return Err(self.unsupported(format!("an LRN of {dims:?} given {len} values")));
        }
        Ok((own_c, halo))
    }

    /// The column's own channels of the extended `ext` into `out` (column 0's come first in
    /// its extended tensors, column 1's after the halo).
    fn own_of_ext(
        &mut self,
        d: usize,
        dims: [usize; 3],
        halo: usize,
        ext: &B::Buf,
        out: &B::Buf,
    ) -> Result<()> {
        let [n, own_c, hw] = dims;
        let m = ChannelCopy {
            n,
            k: own_c,
            hw,
            src_c: own_c + halo,
            src_at: if d == 0 { 0 } else { halo },
            dst_c: own_c,
            dst_at: 0,
        };
        Ok(self.cols[d].copy_channels(&m, ext, out)?)
    }
}

impl<B: ColumnEngine> Backend for Columns<B>
where
    NetworkError: From<B::Error>,
{
    type Buf = ColBuf<B::Buf>;
    type Error = NetworkError;

    fn alloc(&mut self, len: usize, label: &str) -> Result<Self::Buf> {
        // The stores are made when an op first says which form it needs.
        Ok(ColBuf::new(len, label))
    }

    fn upload(&mut self, dst: &Self::Buf, data: &[f32]) -> Result<()> {
        if data.len() != dst.len {
            return Err(self.unsupported(format!(
                "{} values uploaded into {} of {}",
                data.len(),
                dst.label,
                dst.len
            )));
        }
        let rows = dst.rows.get();
        if rows != 0 {
            // Split before (a parameter): each column takes its half, nothing whole is kept.
            let h = self.half_store(dst, rows)?;
            let hr = dst.half_row(rows);
            for d in 0..2 {
                let own: Vec<f32> = (0..rows)
                    .flat_map(|r| &data[r * 2 * hr + d * hr..r * 2 * hr + (d + 1) * hr])
                    .copied()
                    .collect();
                self.cols[d].upload(h[d], &own)?;
            }
            dst.form.set(Form::Half);
        } else {
            let w = self.whole_store(dst)?;
            for d in 0..2 {
                self.cols[d].upload(w[d], data)?;
            }
            dst.form.set(Form::Whole);
        }
        Ok(())
    }

    fn upload_labels(&mut self, dst: &Self::Buf, labels: &[i32]) -> Result<()> {
        let w = self.whole_store(dst)?;
        for d in 0..2 {
            self.cols[d].upload_labels(w[d], labels)?;
        }
        dst.form.set(Form::Whole);
        Ok(())
    }

    fn download(&mut self, src: &Self::Buf) -> Result<Vec<f32>> {
        match src.form.get() {
            Form::Zero => Ok(vec![0.0; src.len]),
            Form::Whole | Form::Both => {
                let w = self.whole_store(src)?;
                Ok(self.cols[0].download(w[0])?)
            }
            Form::Half => {
                let (rows, h) = (src.rows.get(), self.half_store(src, src.rows.get())?);
                let hr = src.half_row(rows);
                let parts = [self.cols[0].download(h[0])?, self.cols[1].download(h[1])?];
                Ok((0..rows)
                    .flat_map(|r| parts.iter().flat_map(move |p| &p[r * hr..(r + 1) * hr]))
                    .copied()
                    .collect())
            }
            Form::Partial => {
                let w = self.whole_store(src)?;
                let (a, b) = (self.cols[0].download(w[0])?, self.cols[1].download(w[1])?);
                Ok(a.iter().zip(&b).map(|(x, y)| x + y).collect())
            }
        }
    }

    fn scope(&mut self, block: &'static str) {
        self.block = block;
        for c in &mut self.cols {
            c.scope(block);
        }
    }

    fn copy(&mut self, src: &Self::Buf, dst: &Self::Buf) -> Result<()> {
        let form = src.form.get();
        let (s, t) = match form {
            Form::Half | Form::Both => {
                let rows = src.rows.get();
                (self.half(src, rows)?, self.half_store(dst, rows)?)
            }
            Form::Zero | Form::Whole | Form::Partial => {
                (self.whole_store(src)?, self.whole_store(dst)?)
            }
        };
        for d in 0..2 {
            self.cols[d].copy(s[d], t[d])?;
        }
        dst.form.set(match form {
            Form::Both => Form::Half,
            Form::Zero => Form::Whole,
            f => f,
        });
        Ok(())
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<()> {
        let (own, whole) = self.own_conv(s)?;
        let xs = self.input_of(x, whole, s.n)?;
        let (w, b) = (self.half(p.w, 1)?, self.half(p.b, 1)?);
        let ys = self.half_store(y, s.n)?;
        for d in 0..2 {
            let p = Pair { w: w[d], b: b[d] };
            self.cols[d].conv_forward(&own, act, xs[d], p, ys[d])?;
        }
        y.form.set(Form::Half);
        Ok(())
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, Self::Buf>,
        w: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<()> {
        let (own, whole) = self.own_conv(s)?;
        let xs = self.input_of(t.x, whole, s.n)?;
        let (ys, dys) = (self.half(t.y, s.n)?, self.half(t.dy, s.n)?);
        let ws = self.half(w, 1)?;
        let (gw, gb) = (self.half_store(g.w, 1)?, self.half_store(g.b, 1)?);
        let dxs = match t.dx {
            Some(dx) if whole => Some(self.whole_store(dx)?),
            Some(dx) => Some(self.half_store(dx, s.n)?),
            None => None,
        };
        for d in 0..2 {
            let tg = Grad {
                x: xs[d],
                y: ys[d],
                dy: dys[d],
                dx: dxs.map(|a| a[d]),
            };
            self.cols[d].conv_backward(&own, act, tg, ws[d], Pair { w: gw[d], b: gb[d] })?;
        }
        // The activation's derivative went into each half of dy in place.
        t.dy.form.set(Form::Half);
        g.w.form.set(Form::Half);
        g.b.form.set(Form::Half);
        if let Some(dx) = t.dx {
            dx.form.set(if whole { Form::Partial } else { Form::Half });
        }
        Ok(())
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<()> {
        let own = LinearShape {
            fout: self.halve("the neurons", s.fout)?,
            ..*s
        };
        let xs = self.whole(x)?;
        let (w, b) = (self.half(p.w, 1)?, self.half(p.b, 1)?);
        let ys = self.half_store(y, s.n)?;
        for d in 0..2 {
            let p = Pair { w: w[d], b: b[d] };
            self.cols[d].linear_forward(&own, act, xs[d], p, ys[d])?;
        }
        y.form.set(Form::Half);
        Ok(())
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, Self::Buf>,
        w: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<()> {
        let own = LinearShape {
            fout: self.halve("the neurons", s.fout)?,
            ..*s
        };
        let xs = self.whole(t.x)?;
        let (ys, dys) = (self.half(t.y, s.n)?, self.half(t.dy, s.n)?);
        let ws = self.half(w, 1)?;
        let (gw, gb) = (self.half_store(g.w, 1)?, self.half_store(g.b, 1)?);
        let dxs = match t.dx {
            Some(dx) => Some(self.whole_store(dx)?),
            None => None,
        };
        for d in 0..2 {
            let tg = Grad {
                x: xs[d],
                y: ys[d],
                dy: dys[d],
                dx: dxs.map(|a| a[d]),
            };
            self.cols[d].linear_backward(&own, act, tg, ws[d], Pair { w: gw[d], b: gb[d] })?;
        }
        t.dy.form.set(Form::Half);
        g.w.form.set(Form::Half);
        g.b.form.set(Form::Half);
        if let Some(dx) = t.dx {
            dx.form.set(Form::Partial);
        }
        Ok(())
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &Self::Buf,
        y: &Self::Buf,
        saved: &Self::Buf,
    ) -> Result<()> {
        let [n, _, h, w] = dims;
        let (own_c, halo) = self.lrn_dims(p, dims, x.len)?;
        let ext_dims = [n, own_c + halo, h, w];
        let xs = self.half(x, n)?;
        let ys = self.half_store(y, n)?;
        let e = self.lrn_store(saved, n * (own_c + halo) * h * w)?;
        self.halo(x, xs, [&e[0].x, &e[1].x], [n, own_c, h * w], halo)?;
        for d in 0..2 {
            self.cols[d].lrn_forward(p, ext_dims, &e[d].x, &e[d].y, &e[d].scale)?;
            self.own_of_ext(d, [n, own_c, h * w], halo, &e[d].y, ys[d])?;
        }
        y.form.set(Form::Half);
        Ok(())
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, Self::Buf>,
        saved: &Self::Buf,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        let [n, _, h, w] = dims;
        let (own_c, halo) = self.lrn_dims(p, dims, t.dy.len)?;
        let ext_dims = [n, own_c + halo, h, w];
        let dys = self.half(t.dy, n)?;
        let dxs = self.half_store(dx, n)?;
        let e = self.lrn_store(saved, n * (own_c + halo) * h * w)?;
        self.halo(t.dy, dys, [&e[0].dy, &e[1].dy], [n, own_c, h * w], halo)?;
        for d in 0..2 {
            let tg = Grad {
                x: &e[d].x,
                y: &e[d].y,
                dy: &e[d].dy,
                dx: Some(&e[d].dx),
            };
            self.cols[d].lrn_backward(p, ext_dims, tg, &e[d].scale)?;
            self.own_of_ext(d, [n, own_c, h * w], halo, &e[d].dx, dxs[d])?;
        }
        dx.form.set(Form::Half);
        Ok(())
    }

    fn pool_saved(&mut self, s: &PoolShape) -> Result<Option<Self::Buf>> {
        let own = PoolShape {
            c: self.halve("the pooled channels", s.c)?,
            ..*s
        };
        let (Some(a), Some(b)) = (
            self.cols[0].pool_saved(&own)?,
            self.cols[1].pool_saved(&own)?,
        ) else {
            return Ok(None);
        };
        let buf = ColBuf::new(2 * own.output_len(), "pool.saved");
        buf.rows.set(s.n);
        let _ = buf.half.set([a, b]);
        buf.form.set(Form::Half);
        Ok(Some(buf))
    }

    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &Self::Buf,
        p: Pair<'_, Self::Buf>,
        st: BnState<'_, Self::Buf>,
        y: &Self::Buf,
    ) -> Result<()> {
        // Per channel: each column normalises its own channels with its halves of γ, β and
        // the running statistics, and keeps its `[2, C/2]` of the saved statistics.
        let own = BnShape {
            c: self.halve("the normalised channels", s.c)?,
            ..*s
        };
        let xs = self.half(x, s.n)?;
        let ys = self.half_store(y, s.n)?;
        let (gs, bs) = (self.half(p.w, 1)?, self.half(p.b, 1)?);
        let (ms, vs) = (self.half(st.mean, 1)?, self.half(st.var, 1)?);
        let ss = self.half_store(st.saved, 2)?;
        for d in 0..2 {
            let pd = Pair { w: gs[d], b: bs[d] };
            let sd = BnState {
                mean: ms[d],
                var: vs[d],
                saved: ss[d],
            };
            self.cols[d].bn_forward(&own, mode, xs[d], pd, sd, ys[d])?;
        }
        for b in [y, st.mean, st.var, st.saved] {
            b.form.set(Form::Half);
        }
        Ok(())
    }

    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, Self::Buf>,
        gamma: &Self::Buf,
        saved: &Self::Buf,
        g: Pair<'_, Self::Buf>,
    ) -> Result<()> {
        let own = BnShape {
            c: self.halve("the normalised channels", s.c)?,
            ..*s
        };
        let (xs, ys, dys) = (
            self.half(t.x, s.n)?,
            self.half(t.y, s.n)?,
            self.half(t.dy, s.n)?,
        );
        let dxs = match t.dx {
            Some(dx) => Some(self.half_store(dx, s.n)?),
            None => None,
        };
        let (gam, sv) = (self.half(gamma, 1)?, self.half(saved, 2)?);
        let (gw, gb) = (self.half_store(g.w, 1)?, self.half_store(g.b, 1)?);
        for d in 0..2 {
            let tg = Grad {
                x: xs[d],
                y: ys[d],
                dy: dys[d],
                dx: dxs.as_ref().map(|h| h[d]),
            };
            let gd = Pair { w: gw[d], b: gb[d] };
            self.cols[d].bn_backward(&own, mode, tg, gam[d], sv[d], gd)?;
        }
        for b in [g.w, g.b].into_iter().chain(t.dx) {
            b.form.set(Form::Half);
        }
        Ok(())
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &Self::Buf,
        y: &Self::Buf,
        saved: Option<&Self::Buf>,
    ) -> Result<()> {
        let own = PoolShape {
            c: self.halve("the pooled channels", s.c)?,
            ..*s
        };
        let xs = self.half(x, s.n)?;
        let ys = self.half_store(y, s.n)?;
        let sv = saved.and_then(|b| b.half.get());
        for d in 0..2 {
            self.cols[d].maxpool_forward(&own, xs[d], ys[d], sv.map(|p| &p[d]))?;
        }
        y.form.set(Form::Half);
        Ok(())
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, Self::Buf>,
        saved: Option<&Self::Buf>,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        let own = PoolShape {
            c: self.halve("the pooled channels", s.c)?,
            ..*s
        };
        let (xs, ys, dys) = (
            self.half(t.x, s.n)?,
            self.half(t.y, s.n)?,
            self.half(t.dy, s.n)?,
        );
        let dxs = self.half_store(dx, s.n)?;
        let sv = saved.and_then(|b| b.half.get());
        for d in 0..2 {
            let tg = Grad {
                x: xs[d],
                y: ys[d],
                dy: dys[d],
                dx: Some(dxs[d]),
            };
            self.cols[d].maxpool_backward(&own, tg, sv.map(|p| &p[d]))?;
        }
        dx.form.set(Form::Half);
        Ok(())
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &Self::Buf) -> Result<()> {
        // Partial gradients are masked each (the mask commutes with their sum); anything
        // else is masked whole, so element i's mask is the one-device mask of element i.
        let partial = v.form.get() == Form::Partial;
        let vs = if partial {
            self.whole_store(v)?
        } else {
            self.whole(v)?
        };
        for d in 0..2 {
            self.cols[d].dropout(p, seed, vs[d])?;
        }
        v.form
            .set(if partial { Form::Partial } else { Form::Whole });
        Ok(())
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Buf,
        stats: &Self::Buf,
    ) -> Result<()> {
        let (l, y) = (self.whole(logits)?, self.whole(labels)?);
        let st = self.whole_store(stats)?;
        for d in 0..2 {
            self.cols[d].softmax_xent_forward(classes, l[d], y[d], st[d])?;
        }
        stats.form.set(Form::Whole);
        Ok(())
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &Self::Buf,
        labels: &Self::Buf,
        dlogits: &Self::Buf,
    ) -> Result<()> {
        let (l, y) = (self.whole(logits)?, self.whole(labels)?);
        let dl = self.whole_store(dlogits)?;
        for d in 0..2 {
            self.cols[d].softmax_xent_backward(classes, l[d], y[d], dl[d])?;
        }
        dlogits.form.set(Form::Whole);
        Ok(())
    }

    fn sgd(&mut self, h: SgdHyper, w: &Self::Buf, v: &Self::Buf, g: &Self::Buf) -> Result<()> {
        let (ws, vs, gs) = (self.half(w, 1)?, self.half(v, 1)?, self.half(g, 1)?);
        for d in 0..2 {
            self.cols[d].sgd(h, ws[d], vs[d], gs[d])?;
        }
        w.form.set(Form::Half);
        v.form.set(Form::Half);
        Ok(())
    }
}
