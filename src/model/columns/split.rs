//! [`Columns`]: two engines as one, each holding one column, and the moves between them.
//! The ops ([`super::ops`]) ask here for each tensor in the form they read; this file makes
//! the stores and runs the conversions: a copy inside each column (whole → half), or an
//! exchange through the host (halves → whole, partial sums → halves, the LRN halo).
use super::buf::{ColBuf, Form, LrnExt};
use super::engine::{ChannelCopy, ColumnEngine};
use crate::model::NetworkError;
use std::time::Instant;

type Result<T> = std::result::Result<T, NetworkError>;

/// What the split refuses, naming the layer (the block of the op, or the tensor).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ColumnsError {
    /// A width the split halves is odd.
    #[error("{layer}: {what} is {n}; the two-column split needs it even (choose even widths, classes and groups)")]
    Odd {
        /// The layer or tensor.
        layer: String,
        /// What is halved.
        what: &'static str,
        /// Its value.
        n: usize,
    },
    /// A layer the split cannot run as configured.
    #[error("{layer}: {reason}")]
    Unsupported {
        /// The layer or tensor.
        layer: String,
        /// Why, with the sizes.
        reason: String,
    },
}

/// Exchange counters since the last [`Columns::take_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExchangeStats {
    /// Exchanges (each both directions).
    pub exchanges: u64,
    /// Bytes that crossed between the columns, both directions together.
    pub bytes: u64,
    /// Seconds from the exchange's start until both columns' values were on the host (the
    /// work before it still running is included: the split's synchronisation cost).
    pub wait_s: f64,
    /// Seconds arranging the values on the host and writing them back to the columns.
    pub host_s: f64,
}

impl ExchangeStats {
    /// Adds `o`'s counts to these.
    pub fn add(&mut self, o: ExchangeStats) {
        self.exchanges += o.exchanges;
        self.bytes += o.bytes;
        self.wait_s += o.wait_s;
        self.host_s += o.host_s;
    }
}

/// Two engines, one per column, driven as one [`crate::backend::Backend`] by the network walk:
/// every conv and linear layer's output channels (neurons) and parameters are split in
/// halves, per-channel ops run on each column's half, and a layer that reads both columns
/// gets its input exchanged.
#[derive(Debug)]
pub struct Columns<B> {
    pub(super) cols: [B; 2],
    /// The block of the ops being run, for errors.
    pub(super) block: &'static str,
    stats: ExchangeStats,
}

/// The two stores of a pair, borrowed from the buffer (not from the wrapper).
pub(super) type Two<'b, T> = [&'b T; 2];

fn two<T>(p: &[T; 2]) -> Two<'_, T> {
    [&p[0], &p[1]]
}

impl<B: ColumnEngine> Columns<B>
where
    NetworkError: From<B::Error>,
{
    /// The wrapper over `cols` (column 0, column 1).
    pub fn new(cols: [B; 2]) -> Columns<B> {
        Columns {
            cols,
            block: "",
            stats: ExchangeStats::default(),
        }
    }

    /// Column `d`'s engine.
    pub fn column(&mut self, d: usize) -> &mut B {
        &mut self.cols[d]
    }

    /// Exchange counters since the last call, then zeroed.
    pub fn take_stats(&mut self) -> ExchangeStats {
        std::mem::take(&mut self.stats)
    }

    /// Half of `n`, or [`ColumnsError::Odd`] naming the current block.
    pub(super) fn halve(&self, what: &'static str, n: usize) -> Result<usize> {
        if n % 2 != 0 {
            return Err(ColumnsError::Odd {
                layer: self.block.to_string(),
                what,
                n,
            }
            .into());
        }
        Ok(n / 2)
    }

    pub(super) fn unsupported(&self, reason: String) -> NetworkError {
        ColumnsError::Unsupported {
            layer: self.block.to_string(),
            reason,
        }
        .into()
    }

    fn pair(&mut self, len: usize, label: &str) -> Result<[B::Buf; 2]> {
        let a = self.cols[0].alloc(len, &format!("col0.{label}"))?;
        let b = self.cols[1].alloc(len, &format!("col1.{label}"))?;
        Ok([a, b])
    }

    /// The whole stores of `b`, made if missing (their values are whatever [`Form`] says).
    pub(super) fn whole_store<'b>(&mut self, b: &'b ColBuf<B::Buf>) -> Result<Two<'b, B::Buf>> {
        if b.whole.get().is_none() {
            let p = self.pair(b.len, &format!("{}.whole", b.label))?;
            let _ = b.whole.set(p);
        }
        b.whole
            .get()
            .map(two)
            .ok_or_else(|| self.unsupported(format!("{} has no whole store", b.label)))
    }

    /// The half stores of `b` split in `rows` rows, made if missing.
    pub(super) fn half_store<'b>(
        &mut self,
        b: &'b ColBuf<B::Buf>,
        rows: usize,
    ) -> Result<Two<'b, B::Buf>> {
        let known = b.rows.get();
        if rows == 0 || b.len % (2 * rows) != 0 || (known != 0 && known != rows) {
            return Err(self.unsupported(format!(
                "tensor {} of {} values cannot be split in halves of {rows} rows (split before in {known})",
                b.label, b.len
            )));
        }
        b.rows.set(rows);
        if b.half.get().is_none() {
            let p = self.pair(b.len / 2, &format!("{}.half", b.label))?;
            let _ = b.half.set(p);
        }
        b.half
            .get()
            .map(two)
            .ok_or_else(|| self.unsupported(format!("{} has no half store", b.label)))
    }

    /// `b` as the whole tensor on both columns (gathering or summing if needed).
    pub(super) fn whole<'b>(&mut self, b: &'b ColBuf<B::Buf>) -> Result<Two<'b, B::Buf>> {
        let w = self.whole_store(b)?;
        match b.form.get() {
            Form::Zero | Form::Whole | Form::Both => {}
            Form::Half => {
                let h = b
                    .half
                    .get()
                    .map(two)
                    .ok_or_else(|| self.unsupported(format!("{} lost its halves", b.label)))?;
                let rows = b.rows.get();
                let hr = b.half_row(rows);
                let parts = self.fetch(h)?;
                let t = Instant::now();
                let mut all = vec![0.0; b.len];
                for r in 0..rows {
                    for (d, p) in parts.iter().enumerate() {
                        let at = r * 2 * hr + d * hr;
                        all[at..at + hr].copy_from_slice(&p[r * hr..(r + 1) * hr]);
                    }
                }
                self.send(w, [&all, &all], b.len, t)?;
                b.form.set(Form::Both);
            }
            Form::Partial => {
                let parts = self.fetch(w)?;
                let t = Instant::now();
                let sum: Vec<f32> = parts[0].iter().zip(&parts[1]).map(|(a, c)| a + c).collect();
                self.send(w, [&sum, &sum], 2 * b.len, t)?;
                b.form.set(Form::Whole);
            }
        }
        Ok(w)
    }

    /// `b` as each column's half of `rows` rows (split inside each column, or the partial
    /// sums summed across them).
    pub(super) fn half<'b>(
        &mut self,
        b: &'b ColBuf<B::Buf>,
        rows: usize,
    ) -> Result<Two<'b, B::Buf>> {
        let h = self.half_store(b, rows)?;
        match b.form.get() {
            Form::Zero | Form::Half | Form::Both => {}
            Form::Whole => {
                let w = self.whole_store(b)?;
                let hr = b.half_row(rows);
                for d in 0..2 {
                    let m = ChannelCopy {
                        n: rows,
                        k: 1,
                        hw: hr,
                        src_c: 2,
                        src_at: d,
                        dst_c: 1,
                        dst_at: 0,
                    };
                    self.cols[d].copy_channels(&m, w[d], h[d])?;
                }
                b.form.set(Form::Both);
            }
            Form::Partial => {
                let w = self.whole_store(b)?;
                let hr = b.half_row(rows);
                let parts = self.fetch(w)?;
                let t = Instant::now();
                let mut own = [vec![0.0; b.len / 2], vec![0.0; b.len / 2]];
                for (d, o) in own.iter_mut().enumerate() {
                    for r in 0..rows {
                        let at = r * 2 * hr + d * hr;
                        for (j, v) in o[r * hr..(r + 1) * hr].iter_mut().enumerate() {
                            *v = parts[0][at + j] + parts[1][at + j];
                        }
                    }
                }
                self.send(h, [&own[0], &own[1]], b.len, t)?;
                b.form.set(Form::Half);
            }
        }
        Ok(h)
    }

    /// Both columns' values of `bufs` on the host, after everything given so far; starts an
    /// exchange's clock.
    fn fetch(&mut self, bufs: Two<'_, B::Buf>) -> Result<[Vec<f32>; 2]> {
        let t = Instant::now();
        for c in &mut self.cols {
            c.flush()?;
        }
        let a = self.cols[0].download(bufs[0])?;
        let b = self.cols[1].download(bufs[1])?;
        self.stats.wait_s += t.elapsed().as_secs_f64();
        Ok([a, b])
    }

    /// Writes `data[d]` to column d's `dst[d]` and counts one exchange of `crossed` values
    /// (both directions together); `t` is when the host work started.
    fn send(
        &mut self,
        dst: Two<'_, B::Buf>,
        data: [&[f32]; 2],
        crossed: usize,
        t: Instant,
    ) -> Result<()> {
        for d in 0..2 {
            self.cols[d].upload(dst[d], data[d])?;
        }
        self.stats.exchanges += 1;
        self.stats.bytes += (crossed * 4) as u64;
        self.stats.host_s += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// The LRN tensors kept on `saved` for `n` images of `ext_c` channels of `hw` values.
    pub(super) fn lrn_store<'b>(
        &mut self,
        saved: &'b ColBuf<B::Buf>,
        len: usize,
    ) -> Result<&'b [LrnExt<B::Buf>; 2]> {
        if saved.lrn.get().is_none() {
            let mut mk = |d: usize, what: &str| {
                self.cols[d].alloc(len, &format!("col{d}.{}.{what}", saved.label))
            };
            let mut ext = |d: usize| -> Result<LrnExt<B::Buf>> {
                Ok(LrnExt {
                    x: mk(d, "ext_x")?,
                    y: mk(d, "ext_y")?,
                    scale: mk(d, "ext_scale")?,
                    dy: mk(d, "ext_dy")?,
                    dx: mk(d, "ext_dx")?,
                })
            };
            let p = [ext(0)?, ext(1)?];
            let _ = saved.lrn.set(p);
        }
        saved
            .lrn
            .get()
            .ok_or_else(|| self.unsupported("LRN buffers missing".into()))
    }

    /// Fills `ext[d]` `[N, own_c + halo, hw]` from the halves `own[d]` `[N, own_c, hw]`:
    /// column 0 gets its channels then the first `halo` of column 1's; column 1 the last
    /// `halo` of column 0's then its own.
    pub(super) fn halo(
        &mut self,
        own: Two<'_, B::Buf>,
        ext: Two<'_, B::Buf>,
        dims: [usize; 3],
        halo: usize,
    ) -> Result<()> {
        let [n, own_c, hw] = dims;
        let parts = self.fetch(own)?;
        let t = Instant::now();
        let ext_c = own_c + halo;
        let mut out = [vec![0.0; n * ext_c * hw], vec![0.0; n * ext_c * hw]];
        // (column written, its first channel, column read, its first channel, channels)
        let pieces = [
            (0, 0, 0, 0, own_c),
            (0, own_c, 1, 0, halo),
            (1, 0, 0, own_c - halo, halo),
            (1, halo, 1, 0, own_c),
        ];
        for (to, to_at, from, from_at, k) in pieces {
            let m = ChannelCopy {
                n,
                k,
                hw,
                src_c: own_c,
                src_at: from_at,
                dst_c: ext_c,
                dst_at: to_at,
            };
            m.apply(&parts[from], &mut out[to]);
        }
        self.send(ext, [&out[0], &out[1]], 2 * n * halo * hw, t)
    }
}
