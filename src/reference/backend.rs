//! The reference as a [`Backend`]: each op is this module's plain-loop function, its result
//! stored in a host buffer. Slow and obviously right; the network walk run on it is the truth
//! the GPU and CPU engines are tested against (`crate::model::reference`).
use super::batchnorm::{bn_backward, bn_eval_stats, bn_forward_train, BnStats};
use super::{
    activation_backward, activation_forward, conv2d_backward_input, conv2d_backward_weight,
    conv2d_forward, dropout_forward_at, linear_backward, linear_forward, lrn_backward, lrn_forward,
    maxpool_backward, maxpool_forward, sgd_update, softmax_cross_entropy, topk_correct,
};
use crate::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use crate::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};

/// A buffer handed to a reference op that does not fit its shape (a bug in the caller).
#[derive(Debug, thiserror::Error)]
#[error("reference {op}: `{tensor}` holds {got} values, the op's shape needs {want}")]
pub struct RefError {
    /// The op.
    pub op: &'static str,
    /// Which of its tensors (with the buffer's label).
    pub tensor: String,
    /// Values held.
    pub got: usize,
    /// Values the shape needs.
    pub want: usize,
}

type Result<T> = std::result::Result<T, RefError>;

/// A reference buffer: an index into the backend's arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefBuf {
    id: usize,
    label: String,
}

/// Host buffers for the reference ops.
#[derive(Debug, Default)]
pub struct RefBackend {
    arena: Vec<Vec<f32>>,
}

impl RefBackend {
    /// An empty backend.
    pub fn new() -> RefBackend {
        RefBackend::default()
    }

    /// The values of `b`.
    pub fn slice(&self, b: &RefBuf) -> &[f32] {
        &self.arena[b.id]
    }

    /// Stores `v` as `b`'s values, checking its length.
    fn set(&mut self, op: &'static str, b: &RefBuf, v: Vec<f32>) -> Result<()> {
        let want = self.arena[b.id].len();
        if v.len() != want {
            return Err(RefError {
                op,
                tensor: b.label.clone(),
                got: v.len(),
                want,
            });
        }
        self.arena[b.id] = v;
        Ok(())
    }

    /// Checks that each of `bufs` holds `want` values.
    fn need(&self, op: &'static str, want: usize, bufs: &[&RefBuf]) -> Result<()> {
        for b in bufs {
            let got = self.arena[b.id].len();
            if got != want {
                return Err(RefError {
                    op,
                    tensor: b.label.clone(),
                    got,
                    want,
                });
            }
        }
        Ok(())
    }

    /// `d` turned into the gradient of the pre-activation: act' from `y`.
    fn act_back(&mut self, act: Option<Activation>, t: &Grad<'_, RefBuf>) -> Result<Vec<f32>> {
        let d = self.slice(t.dy).to_vec();
        let d = match act {
            Some(a) => activation_backward(a, &d, self.slice(t.y)),
            None => d,
        };
        self.set("activation", t.dy, d.clone())?;
        Ok(d)
    }
}

fn labels(v: &[f32]) -> &[i32] {
    bytemuck::cast_slice(v)
}

impl Backend for RefBackend {
    type Buf = RefBuf;
    type Error = RefError;

    fn alloc(&mut self, len: usize, label: &str) -> Result<RefBuf> {
        self.arena.push(vec![0.0; len]);
        Ok(RefBuf {
            id: self.arena.len() - 1,
            label: label.to_string(),
        })
    }

    fn upload(&mut self, dst: &RefBuf, data: &[f32]) -> Result<()> {
        self.set("upload", dst, data.to_vec())
    }

    fn upload_labels(&mut self, dst: &RefBuf, l: &[i32]) -> Result<()> {
        // Stored as their bits: the loss reads them back as i32.
        self.set("labels", dst, bytemuck::cast_slice(l).to_vec())
    }

    fn download(&mut self, src: &RefBuf) -> Result<Vec<f32>> {
        Ok(self.slice(src).to_vec())
    }

    fn copy(&mut self, src: &RefBuf, dst: &RefBuf) -> Result<()> {
        let v = self.slice(src).to_vec();
        self.set("copy", dst, v)
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &RefBuf,
        p: Pair<'_, RefBuf>,
        y: &RefBuf,
    ) -> Result<()> {
        let pre = conv2d_forward(s, self.slice(x), self.slice(p.w), self.slice(p.b));
        self.set("conv", y, activation_forward(act, &pre))
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, RefBuf>,
        w: &RefBuf,
        g: Pair<'_, RefBuf>,
    ) -> Result<()> {
        let d = self.act_back(Some(act), &t)?;
        let (dw, db) = conv2d_backward_weight(s, &d, self.slice(t.x));
        self.set("conv", g.w, dw)?;
        self.set("conv", g.b, db)?;
        if let Some(dx) = t.dx {
            let v = conv2d_backward_input(s, &d, self.slice(w));
            self.set("conv", dx, v)?;
        }
        Ok(())
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &RefBuf,
        p: Pair<'_, RefBuf>,
        y: &RefBuf,
    ) -> Result<()> {
        let pre = linear_forward(s, self.slice(x), self.slice(p.w), self.slice(p.b));
        let v = match act {
            Some(a) => activation_forward(a, &pre),
            None => pre,
        };
        self.set("linear", y, v)
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, RefBuf>,
        w: &RefBuf,
        g: Pair<'_, RefBuf>,
    ) -> Result<()> {
        let d = self.act_back(act, &t)?;
        let (dx, dw, db) = linear_backward(s, &d, self.slice(t.x), self.slice(w));
        self.set("linear", g.w, dw)?;
        self.set("linear", g.b, db)?;
        if let Some(b) = t.dx {
            self.set("linear", b, dx)?;
        }
        Ok(())
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &RefBuf,
        y: &RefBuf,
        _saved: &RefBuf,
    ) -> Result<()> {
        let [n, c, h, w] = dims;
        let v = lrn_forward(p, n, c, h, w, self.slice(x));
        self.set("lrn", y, v)
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, RefBuf>,
        _saved: &RefBuf,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        let [n, c, h, w] = dims;
        let v = lrn_backward(p, n, c, h, w, self.slice(t.x), self.slice(t.dy));
        self.set("lrn", dx, v)
    }

    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &RefBuf,
        p: Pair<'_, RefBuf>,
        st: BnState<'_, RefBuf>,
        y: &RefBuf,
    ) -> Result<()> {
        self.need("batchnorm", s.len(), &[x, y])?;
        self.need("batchnorm", s.c, &[p.w, p.b, st.mean, st.var])?;
        self.need("batchnorm", 2 * s.c, &[st.saved])?;
        let (g, b) = (self.slice(p.w).to_vec(), self.slice(p.b).to_vec());
        let (mut rm, mut rv) = (self.slice(st.mean).to_vec(), self.slice(st.var).to_vec());
        let (out, stats) = if mode.batch_stats() {
            let (out, stats) = bn_forward_train(s, self.slice(x), &g, &b, &mut rm, &mut rv);
            self.set("batchnorm", st.mean, rm)?;
            self.set("batchnorm", st.var, rv)?;
            (out, stats)
        } else {
            let stats = bn_eval_stats(&rm, &rv);
            let out = super::batchnorm::bn_forward_eval(s, self.slice(x), &g, &b, &rm, &rv);
            (out, stats)
        };
        self.set("batchnorm", y, out)?;
        self.set("batchnorm", st.saved, [stats.mean, stats.inv_std].concat())
    }

    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, RefBuf>,
        gamma: &RefBuf,
        saved: &RefBuf,
        g: Pair<'_, RefBuf>,
    ) -> Result<()> {
        self.need("batchnorm", s.len(), &[t.x, t.dy])?;
        self.need("batchnorm", s.c, &[gamma, g.w, g.b])?;
        self.need("batchnorm", 2 * s.c, &[saved])?;
        let sv = self.slice(saved);
        let stats = BnStats {
            mean: sv[..s.c].to_vec(),
            inv_std: sv[s.c..].to_vec(),
        };
        let (dx, dg, db) = bn_backward(
            s,
            mode.batch_stats(),
            self.slice(t.x),
            self.slice(gamma),
            &stats,
            self.slice(t.dy),
        );
        self.set("batchnorm", g.w, dg)?;
        self.set("batchnorm", g.b, db)?;
        match t.dx {
            Some(d) => self.set("batchnorm", d, dx),
            None => Ok(()),
        }
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &RefBuf,
        y: &RefBuf,
        _saved: Option<&RefBuf>,
    ) -> Result<()> {
        let v = maxpool_forward(s, self.slice(x));
        self.set("maxpool", y, v)
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, RefBuf>,
        _saved: Option<&RefBuf>,
    ) -> Result<()> {
        let Some(dx) = t.dx else { return Ok(()) };
        let v = maxpool_backward(s, self.slice(t.x), self.slice(t.dy));
        self.set("maxpool", dx, v)
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &RefBuf) -> Result<()> {
        // Backward is the same mask (dropout_backward is dropout_forward on dy).
        let out = dropout_forward_at(p, seed.seed, seed.offset as usize, self.slice(v));
        self.set("dropout", v, out)
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &RefBuf,
        labels_buf: &RefBuf,
        stats: &RefBuf,
    ) -> Result<()> {
        let (z, l) = (self.slice(logits), labels(self.slice(labels_buf)));
        let mut out = Vec::with_capacity(l.len() * 3);
        for (row, label) in z.chunks_exact(classes).zip(l.chunks_exact(1)) {
            out.push(softmax_cross_entropy(1, classes, row, label).0);
            out.push(topk_correct(1, classes, row, label, 1) as f32);
            out.push(topk_correct(1, classes, row, label, 5) as f32);
        }
        self.set("softmax_xent", stats, out)
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &RefBuf,
        labels_buf: &RefBuf,
        dlogits: &RefBuf,
    ) -> Result<()> {
        let (z, l) = (self.slice(logits), labels(self.slice(labels_buf)));
        let (_, d) = softmax_cross_entropy(l.len(), classes, z, l);
        self.set("softmax_xent", dlogits, d)
    }

    fn sgd(&mut self, h: SgdHyper, w: &RefBuf, v: &RefBuf, g: &RefBuf) -> Result<()> {
        let (mut wv, mut vv) = (self.slice(w).to_vec(), self.slice(v).to_vec());
        sgd_update(
            &mut wv,
            &mut vv,
            self.slice(g),
            h.lr,
            h.momentum,
            h.weight_decay,
        );
        self.set("sgd", w, wv)?;
        self.set("sgd", v, vv)
    }
}
