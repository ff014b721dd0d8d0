//! The hybrid split's conversions between forms: the exchanges between workers (all-gather,
//! reduce-scatter, all-reduce) and the slices inside each. The values meet on the host: the
//! process's own workers' first, then the other ranks' through the [`crate::collective::World`]
//! (a variable-count all-gather of the parts, an all-reduce of the partial sums; [`Solo`]
//! in one process). The reduce-scatter is that all-reduce, each worker keeping its part:
//! MPI's block reduce-scatter wants equal parts, and the shares differ by one and a
//! neuron-cut part is not one run of the flat tensor. [`Traffic`] counts what worker 0 hands
//! to each collective, so the bytes per step compare with data parallelism's all-reduce.
//!
//! [`Solo`]: crate::collective::Solo
use super::buf::{paste, Form, HBuf, Part};
use super::Hybrid;
use crate::backend::Backend;
use crate::model::NetworkError;

type Result<T> = std::result::Result<T, NetworkError>;

/// Values worker 0 handed to the split's collectives (what a rank sends into MPI's), by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Collective calls (each over every worker).
    pub exchanges: u64,
    /// All-gather: the worker's part of an activation (conv5's rows before fc6, an fc layer's
    /// neurons before the next fc layer or the loss).
    pub gathered: u64,
    /// Reduce-scatter: a whole partial sum (an fc layer's input gradient, summed over the
    /// workers' neurons and handed back as each worker's part).
    pub scattered: u64,
    /// All-reduce: a whole partial sum (a conv layer's weight gradient over the workers' rows).
    pub reduced: u64,
}

impl Traffic {
    /// Every value handed over.
    pub fn values(&self) -> u64 {
        self.gathered + self.scattered + self.reduced
    }
}

fn bug(b: &str, why: String) -> NetworkError {
    NetworkError::Input {
        what: "hybrid split",
        reason: format!("tensor {b}: {why}"),
    }
}

fn lost(b: &str, e: crate::collective::CollectiveError) -> NetworkError {
    NetworkError::Input {
        what: "hybrid split",
        reason: format!("tensor {b}: exchange between ranks: {e}"),
    }
}

impl<B> Hybrid<B>
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    /// `b`'s whole stores, made (zero) if missing.
    pub(super) fn whole_stores<'a>(&mut self, b: &'a HBuf<B::Buf>) -> Result<&'a [B::Buf]> {
        if b.whole.get().is_none() {
            let stores = self
                .workers
                .iter_mut()
                .map(|w| w.alloc(b.len, &b.label))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let _ = b.whole.set(stores);
        }
        Ok(b.whole.get().map(Vec::as_slice).unwrap_or(&[]))
    }

    /// `b`'s part stores cut as `p`, made (zero) if missing; a tensor is cut one way only.
    pub(super) fn part_stores<'a>(&mut self, b: &'a HBuf<B::Buf>, p: Part) -> Result<&'a [B::Buf]> {
        match b.split.get() {
            Some(q) if q != p => {
                return Err(bug(&b.label, format!("cut as {q:?}, asked for {p:?}")));
            }
            _ => {}
        }
        if b.part.get().is_none() {
            let (first, k) = (self.global(0), self.workers());
            let stores = self
                .workers
                .iter_mut()
                .enumerate()
                .map(|(i, w)| w.alloc(p.len(first + i, k), &b.label))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let _ = b.part.set(stores);
            b.split.set(Some(p));
        }
        Ok(b.part.get().map(Vec::as_slice).unwrap_or(&[]))
    }

    /// The sum over every rank's workers of `b`'s whole stores, on the host.
    fn sum_wholes(&mut self, b: &HBuf<B::Buf>) -> Result<Vec<f32>> {
        let stores = self.whole_stores(b)?;
        let mut sum = vec![0.0f32; b.len];
        for (w, s) in self.workers.iter_mut().zip(stores) {
            let v = w.download(s)?;
            sum.iter_mut().zip(&v).for_each(|(a, x)| *a += x);
        }
        if self.world.size() > 1 {
            self.world
                .all_reduce_sum(&mut sum)
                .map_err(|e| lost(&b.label, e))?;
        }
        Ok(sum)
    }

    /// The whole tensor assembled from the parts, on the host.
    fn paste_parts(&mut self, b: &HBuf<B::Buf>) -> Result<Vec<f32>> {
        let p = b
            .split
            .get()
            .ok_or_else(|| bug(&b.label, "held in parts never cut".into()))?;
        let stores = self.part_stores(b, p)?;
        let (local, k) = (self.workers.len(), self.workers());
        let mut mine = Vec::new();
        for (w, s) in self.workers.iter_mut().zip(stores) {
            mine.extend(w.download(s)?);
        }
        // Rank r hands its workers' parts, r·L .. (r+1)·L in order: the gathered parts are
        // every worker's in order.
        let counts: Vec<usize> = (0..self.world.size())
            .map(|r| (0..local).map(|j| p.len(r * local + j, k)).sum())
            .collect();
        let all = self
            .world
            .all_gather_varcount_f32(&mine, &counts)
            .map_err(|e| lost(&b.label, e))?;
        let mut whole = vec![0.0f32; b.len];
        let mut at = 0;
        for i in 0..k {
            let n = p.len(i, k);
            paste(&p.cut(i, k)).apply(&all[at..at + n], &mut whole, false);
            at += n;
        }
        Ok(whole)
    }

    /// The tensor's values on the host, whatever its form (checkpoints, tests, the loss rows).
    pub(super) fn host(&mut self, b: &HBuf<B::Buf>) -> Result<Vec<f32>> {
        match b.form.get() {
            Form::Zero => Ok(vec![0.0; b.len]),
            Form::Whole | Form::Both => {
                let s = self.whole_stores(b)?;
                Ok(self.workers[0].download(&s[0])?)
            }
            Form::Part => self.paste_parts(b),
            Form::Partial => self.sum_wholes(b),
        }
    }

    /// Every worker's whole store holding the tensor: an all-gather of the parts or an
    /// all-reduce of the partial sums where it is not already there.
    pub(super) fn read_whole<'a>(&mut self, b: &'a HBuf<B::Buf>) -> Result<&'a [B::Buf]> {
        let stores = self.whole_stores(b)?;
        let whole = match b.form.get() {
            Form::Zero | Form::Whole | Form::Both => return Ok(stores),
            Form::Part => {
                let p = b.split.get().unwrap_or(Part::Rows { n: 1, f: b.len });
                self.traffic.gathered += p.len(0, self.workers()) as u64;
                self.paste_parts(b)?
            }
            Form::Partial => {
                self.traffic.reduced += b.len as u64;
                self.sum_wholes(b)?
            }
        };
        self.traffic.exchanges += 1;
        for (w, s) in self.workers.iter_mut().zip(stores) {
            w.upload(s, &whole)?;
        }
        b.form.set(if b.form.get() == Form::Part {
            Form::Both
        } else {
            Form::Whole
        });
        Ok(stores)
    }

    /// Every worker's part store holding its part `p`: a slice of the whole inside each
    /// worker, or a reduce-scatter of the partial sums.
    pub(super) fn read_part<'a>(&mut self, b: &'a HBuf<B::Buf>, p: Part) -> Result<&'a [B::Buf]> {
        let stores = self.part_stores(b, p)?;
        let (first, k) = (self.global(0), self.workers());
        match b.form.get() {
            Form::Zero | Form::Part | Form::Both => {}
            Form::Whole => {
                let wholes = self.whole_stores(b)?;
                for (i, w) in self.workers.iter_mut().enumerate() {
                    let all = w.download(&wholes[i])?;
                    let m = p.cut(first + i, k);
                    let mut mine = vec![0.0; m.dst_len()];
                    m.apply(&all, &mut mine, false);
                    w.upload(&stores[i], &mine)?;
                }
                b.form.set(Form::Both);
            }
            Form::Partial => {
                let sum = self.sum_wholes(b)?;
                self.traffic.exchanges += 1;
                self.traffic.scattered += b.len as u64;
                for (i, w) in self.workers.iter_mut().enumerate() {
                    let m = p.cut(first + i, k);
                    let mut mine = vec![0.0; m.dst_len()];
                    m.apply(&sum, &mut mine, false);
                    w.upload(&stores[i], &mine)?;
                }
                b.form.set(Form::Part);
            }
        }
        Ok(stores)
    }

    /// The whole stores, to be overwritten in `form` (whole, or partial sums).
    pub(super) fn write_whole<'a>(
        &mut self,
        b: &'a HBuf<B::Buf>,
        form: Form,
    ) -> Result<&'a [B::Buf]> {
        let s = self.whole_stores(b)?;
        b.form.set(form);
        Ok(s)
    }

    /// The part stores cut as `p`, to be overwritten.
    pub(super) fn write_part<'a>(&mut self, b: &'a HBuf<B::Buf>, p: Part) -> Result<&'a [B::Buf]> {
        let s = self.part_stores(b, p)?;
        b.form.set(Form::Part);
        Ok(s)
    }
}

/// What worker 0 hands to the collectives in one training step of `config` split over
/// `workers` at `global_batch` images, by the rules of `super::ops` (no frozen layers). With
/// N the global batch, B = N/K worker 0's rows, F₅ conv5's flattened output, f₆, f₇ and c
/// the fc widths and P_conv the conv layers' parameters:
/// gathered = B·F₅ + N·(f₆ + f₇ + c)/K, scattered = N·(F₅ + f₆ + f₇), reduced = P_conv,
/// in 4 all-gathers, 3 reduce-scatters and one all-reduce per conv tensor.
pub fn predicted(
    config: &crate::model::ModelConfig,
    workers: usize,
    global_batch: usize,
) -> std::result::Result<Traffic, crate::model::GeometryError> {
    let g = crate::model::Geometry::new(config, 1)?;
    let share = |n: usize| super::buf::share(0, workers, n).len() as u64;
    let n = global_batch as u64;
    let (f5, f6, f7, c) = (
        g.flatten as u64,
        g.fcs[0].linear.fout as u64,
        g.fcs[1].linear.fout as u64,
        g.fcs[2].linear.fout as u64,
    );
    let conv: Vec<_> = crate::model::param_specs(config)?
        .into_iter()
        .filter(|s| s.name.starts_with("conv"))
        .collect();
    Ok(Traffic {
        exchanges: 4 + 3 + conv.len() as u64,
        gathered: share(global_batch) * f5
            + n * (share(f6 as usize) + share(f7 as usize) + share(c as usize)),
        scattered: n * (f5 + f6 + f7),
        reduced: conv.iter().map(|s| s.len() as u64).sum(),
    })
}
