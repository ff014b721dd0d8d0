//! A tensor of the two-column split: where its values live on the two columns right now.
//!
//! A tensor has up to two stores on each column, made on first use: the **whole** tensor, and
//! the column's **half** (column d holds the d-th half of every row: the d-th half of the
//! channels of each image `[N,C,…]`, of the neurons `[N,F]`, or, with one row, of a
//! parameter's first axis). [`Form`] says which store holds the values; the wrapper's ops
//! ask for the form they read, and the conversion (an exchange between the columns, or a
//! copy inside each) happens then, once, until the tensor is written again.
use std::cell::{Cell, OnceCell};

/// Which store of a [`ColBuf`] holds its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Never written: every store is zero, so each is valid as made.
    Zero,
    /// Both columns hold the whole tensor.
    Whole,
    /// Each column holds its half.
    Half,
    /// Both: the halves are the halves of the whole.
    Both,
    /// Each column's whole store holds a partial sum; the tensor is their sum (the input
    /// gradient of a layer that read both columns).
    Partial,
}

/// An LRN's tensors over a column's own channels plus the halo from the other column,
/// `[N, own + halo, H·W]`, kept from forward for backward.
#[derive(Debug)]
pub struct LrnExt<T> {
    /// The input.
    pub x: T,
    /// The output.
    pub y: T,
    /// What the engine's LRN keeps for backward.
    pub scale: T,
    /// The output's gradient.
    pub dy: T,
    /// The input's gradient.
    pub dx: T,
}

/// A tensor of the split (the wrapper's buffer type).
#[derive(Debug)]
pub struct ColBuf<T> {
    pub(super) len: usize,
    pub(super) label: String,
    pub(super) whole: OnceCell<[T; 2]>,
    pub(super) half: OnceCell<[T; 2]>,
    /// Rows of the half split (0 until first split).
    pub(super) rows: Cell<usize>,
    pub(super) form: Cell<Form>,
    /// An LRN's extended tensors (only on the buffer the walk keeps for LRN's backward).
    pub(super) lrn: OnceCell<[LrnExt<T>; 2]>,
    /// The staging buffers of the one exchange this tensor takes part in: its length, each
    /// column's send and receive buffers.
    pub(super) link: OnceCell<(usize, [T; 2], [T; 2])>,
}

impl<T> ColBuf<T> {
    pub(super) fn new(len: usize, label: &str) -> ColBuf<T> {
        ColBuf {
            len,
            label: label.to_string(),
            whole: OnceCell::new(),
            half: OnceCell::new(),
            rows: Cell::new(0),
            form: Cell::new(Form::Zero),
            lrn: OnceCell::new(),
            link: OnceCell::new(),
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

    /// Column `d`'s whole store, if it has been made (inputs that a stage outside the walk
    /// writes, the loss statistics and logits the trainer reads).
    pub fn whole_on(&self, d: usize) -> Option<&T> {
        self.whole.get().map(|w| &w[d])
    }

    /// Values per column and row of the half split with `rows` rows.
    pub(super) fn half_row(&self, rows: usize) -> usize {
        self.len / rows.max(1) / 2
    }
}
