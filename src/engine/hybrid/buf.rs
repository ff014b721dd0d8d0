//! A tensor of the hybrid split: where its values live on the K workers right now.
//!
//! A tensor has up to two stores on each worker, made on first use: the **whole** tensor and
//! the worker's **part** of it. A part is either a range of rows (a batch's images in the
//! data-parallel conv layers, or a fully connected weight's output neurons) or a range of
//! columns of every row (an fc layer's output neurons for every image of the global batch).
//! [`Form`] says which store holds the values; the wrapper's ops ask for the form they read,
//! and the conversion (an exchange between the workers, or a slice inside each) happens then,
//! once, until the tensor is written again.
use std::cell::{Cell, OnceCell};
use std::ops::Range;

use crate::model::columns::ChannelCopy;

/// Which store of an [`HBuf`] holds its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Never written: every store made so far is zero.
    Zero,
    /// Every worker holds the whole tensor.
    Whole,
    /// Each worker holds its part.
    Part,
    /// Both: the parts are the parts of the whole.
    Both,
    /// Each worker's whole store holds a partial sum; the tensor is their sum (a weight
    /// gradient of a data-parallel layer, the input gradient of a model-parallel one).
    Partial,
}

/// How a `[n, f]` tensor is cut into the K workers' parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Worker k holds rows [`share`]`(k, K, n)`, each of `f` values.
    Rows {
        /// Rows of the whole tensor.
        n: usize,
        /// Values per row.
        f: usize,
    },
    /// Worker k holds columns [`share`]`(k, K, f)` of each of the `n` rows.
    Cols {
        /// Rows of the whole tensor.
        n: usize,
        /// Columns per row.
        f: usize,
    },
}

/// Worker `k`'s share of `total` items among `workers`: consecutive ranges whose lengths
/// differ by at most one, so a count that does not divide still splits.
pub fn share(k: usize, workers: usize, total: usize) -> Range<usize> {
    k * total / workers..(k + 1) * total / workers
}

impl Part {
    /// The copy that cuts worker `k`'s part out of the whole tensor (its inverse puts it back).
    pub fn cut(&self, k: usize, workers: usize) -> ChannelCopy {
        match *self {
            Part::Rows { n, f } => {
                let r = share(k, workers, n);
                ChannelCopy {
                    n: 1,
                    k: r.len(),
                    hw: f,
                    src_c: n,
                    src_at: r.start,
                    dst_c: r.len(),
                    dst_at: 0,
                }
            }
            Part::Cols { n, f } => {
                let c = share(k, workers, f);
                ChannelCopy {
                    n,
                    k: c.len(),
                    hw: 1,
                    src_c: f,
                    src_at: c.start,
                    dst_c: c.len(),
                    dst_at: 0,
                }
            }
        }
    }

    /// Values of worker `k`'s part.
    pub fn len(&self, k: usize, workers: usize) -> usize {
        self.cut(k, workers).dst_len()
    }

    /// Whether worker `k`'s part holds no values.
    pub fn is_empty(&self, k: usize, workers: usize) -> bool {
        self.len(k, workers) == 0
    }
}

/// The copy putting back what `m` cut out.
pub fn paste(m: &ChannelCopy) -> ChannelCopy {
    ChannelCopy {
        n: m.n,
        k: m.k,
        hw: m.hw,
        src_c: m.dst_c,
        src_at: m.dst_at,
        dst_c: m.src_c,
        dst_at: m.src_at,
    }
}

/// A tensor of the hybrid split (the wrapper's buffer type).
#[derive(Debug)]
pub struct HBuf<T> {
    pub(super) len: usize,
    pub(super) label: String,
    pub(super) whole: OnceCell<Vec<T>>,
    pub(super) part: OnceCell<Vec<T>>,
    /// How the part stores cut the tensor (set when they are made).
    pub(super) split: Cell<Option<Part>>,
    pub(super) form: Cell<Form>,
}

impl<T> HBuf<T> {
    pub(super) fn new(len: usize, label: &str) -> HBuf<T> {
        HBuf {
            len,
            label: label.to_string(),
            whole: OnceCell::new(),
            part: OnceCell::new(),
            split: Cell::new(None),
            form: Cell::new(Form::Zero),
        }
    }

    /// Values of the whole tensor.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tensor holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Which store holds the values now.
    pub fn form(&self) -> Form {
        self.form.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_total_once_and_parts_paste_back() {
        for (workers, total) in [(2, 10), (3, 10), (3, 7), (4, 4)] {
            let all: Vec<usize> = (0..workers)
                .flat_map(|k| share(k, workers, total))
                .collect();
            assert_eq!(all, (0..total).collect::<Vec<_>>());
        }
        let whole: Vec<f32> = (0..4 * 7).map(|v| v as f32 * 0.5 + 1.0).collect();
        for part in [Part::Rows { n: 4, f: 7 }, Part::Cols { n: 4, f: 7 }] {
            let mut back = vec![0.0; whole.len()];
            for k in 0..3 {
                let m = part.cut(k, 3);
                let mut mine = vec![0.0; part.len(k, 3)];
                m.apply(&whole, &mut mine, false);
                paste(&m).apply(&mine, &mut back, false);
            }
            assert_eq!(back, whole, "{part:?}");
        }
    }
}
