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

/// A tensor's staging buffers on both columns: (send, receive).
type Link<'b, T> = (Two<'b, T>, Two<'b, T>);

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
                let (rows, hr) = (b.rows.get(), b.half_row(b.rows.get()));
                // Column d's half is channel d of `[rows, 2, hr]`: its own goes in by a copy,
                // the other's crosses.
                let at = |d: usize| ChannelCopy {
                    n: rows,
                    k: 1,
                    hw: hr,
                    src_c: 1,
                    src_at: 0,
                    dst_c: 2,
                    dst_at: d,
                };
                for d in 0..2 {
                    self.cols[d].copy_channels(&at(d), h[d], w[d])?;
                }
                let whole_half = ChannelCopy { dst_c: 1, ..at(0) };
                let link = self.link(b, b.len / 2)?;
                let swap = Swap {
                    src: h,
                    send: [whole_half; 2],
                    dst: w,
                    recv: [at(1), at(0)],
                    accumulate: false,
                };
                self.exchange(link, swap, b.len)?;
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
                // Each partial is `[rows, 2, hr]`: column d keeps channel d of its own and
                // adds channel d of the other's.
                let slice = |d: usize| ChannelCopy {
                    n: rows,
                    k: 1,
                    hw: hr,
                    src_c: 2,
                    src_at: d,
                    dst_c: 1,
                    dst_at: 0,
                };
                for d in 0..2 {
                    self.cols[d].copy_channels(&slice(d), w[d], h[d])?;
                }
                let packed = ChannelCopy {
                    src_c: 1,
                    src_at: 0,
                    ..slice(0)
                };
                let link = self.link(b, b.len / 2)?;
                let swap = Swap {
                    src: w,
                    send: [slice(1), slice(0)],
                    dst: h,
                    recv: [packed; 2],
                    accumulate: true,
                };
                self.exchange(link, swap, b.len)?;
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

    /// Fills `ext[d]` `[N, own_c + halo, hw]` from the halves `own[d]` `[N, own_c, hw]` of
    /// `b`: column 0 gets its channels then the first `halo` of column 1's; column 1 the last
    /// `halo` of column 0's then its own.
    pub(super) fn halo(
        &mut self,
        b: &ColBuf<B::Buf>,
        own: Two<'_, B::Buf>,
        ext: Two<'_, B::Buf>,
        dims: [usize; 3],
        halo: usize,
    ) -> Result<()> {
        let [n, own_c, hw] = dims;
        let ext_c = own_c + halo;
        let own_at = [0, halo];
        for d in 0..2 {
            let m = ChannelCopy {
                n,
                k: own_c,
                hw,
                src_c: own_c,
                src_at: 0,
                dst_c: ext_c,
                dst_at: own_at[d],
            };
            self.cols[d].copy_channels(&m, own[d], ext[d])?;
        }
        let m = ChannelCopy {
            n,
            k: halo,
            hw,
            src_c: halo,
            src_at: 0,
            dst_c: halo,
            dst_at: 0,
        };
        let link = self.link(b, n * halo * hw)?;
        let swap = Swap {
            src: own,
            // Column 0 sends its last channels, column 1 its first.
            send: [
                ChannelCopy {
                    src_c: own_c,
                    src_at: own_c - halo,
                    ..m
                },
                ChannelCopy { src_c: own_c, ..m },
            ],
            dst: ext,
            recv: [
                ChannelCopy {
                    dst_c: ext_c,
                    dst_at: own_c,
                    ..m
                },
                ChannelCopy { dst_c: ext_c, ..m },
            ],
            accumulate: false,
        };
        self.exchange(link, swap, 2 * n * halo * hw)
    }

    /// The staging buffers of `b`'s exchange, `len` values each, made on first use.
    fn link<'b>(&mut self, b: &'b ColBuf<B::Buf>, len: usize) -> Result<Link<'b, B::Buf>> {
        if b.link.get().is_none() {
            let send = self.pair(len, &format!("{}.send", b.label))?;
            let recv = self.pair(len, &format!("{}.recv", b.label))?;
            let _ = b.link.set((len, send, recv));
        }
        match b.link.get() {
            Some((l, send, recv)) if *l == len => Ok((two(send), two(recv))),
            _ => Err(self.unsupported(format!(
                "tensor {} exchanged with {len} values after another size",
                b.label
            ))),
        }
    }

    /// One exchange: each column sends its slice `send[d]` of `src[d]`, and receives the
    /// other's into its slice `recv[d]` of `dst[d]`; counts `crossed` values.
    fn exchange(
        &mut self,
        (send, recv): Link<'_, B::Buf>,
        s: Swap<'_, B::Buf>,
        crossed: usize,
    ) -> Result<()> {
        for d in 0..2 {
            if !(s.send[d].fits() && s.recv[d].fits()) {
                return Err(
                    self.unsupported(format!("an exchange of {:?} does not fit", s.send[d]))
                );
            }
        }
        let t = Instant::now();
        let data = [
            self.cols[0].send_channels(&s.send[0], s.src[0], send[0])?,
            self.cols[1].send_channels(&s.send[1], s.src[1], send[1])?,
        ];
        self.stats.wait_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for d in 0..2 {
            self.cols[d].receive_channels(
                &s.recv[d],
                &data[1 - d],
                recv[d],
                s.dst[d],
                s.accumulate,
            )?;
        }
        self.stats.exchanges += 1;
        self.stats.bytes += (crossed * 4) as u64;
        self.stats.host_s += t.elapsed().as_secs_f64();
        Ok(())
    }
}

/// The two directions of one exchange.
struct Swap<'b, T> {
    src: Two<'b, T>,
    send: [ChannelCopy; 2],
    dst: Two<'b, T>,
    recv: [ChannelCopy; 2],
    accumulate: bool,
}
