//! What the column wrapper needs from each column's engine beyond [`Backend`]: moving a
//! channel slice inside one engine, and making recorded work visible to a download. Both
//! have defaults through download and upload, so any engine can hold a column; the GPU
//! overrides them with its channel-copy kernel and a submit.
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::gpu::backend::GpuPass;
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::{GpuError, Tensor};
use crate::reference::backend::RefBackend;

/// A channel slice copied between two `[N,C,HW]` tensors of one engine: `k` channels from
/// channel `src_at` of a tensor of `src_c` channels to channel `dst_at` of one of `dst_c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelCopy {
    /// Images (rows).
    pub n: usize,
    /// Channels moved.
    pub k: usize,
    /// Values per channel.
    pub hw: usize,
    /// Channels per image of the source.
    pub src_c: usize,
    /// First channel read.
    pub src_at: usize,
    /// Channels per image of the destination.
    pub dst_c: usize,
    /// First channel written.
    pub dst_at: usize,
}

impl ChannelCopy {
    /// Values a source of this copy holds.
    pub fn src_len(&self) -> usize {
        self.n * self.src_c * self.hw
    }

    /// Values a destination of this copy holds.
    pub fn dst_len(&self) -> usize {
        self.n * self.dst_c * self.hw
    }

    /// Whether both slices lie inside their tensors.
    pub fn fits(&self) -> bool {
        self.src_at + self.k <= self.src_c && self.dst_at + self.k <= self.dst_c
    }

    /// The copy on host slices, added into `dst` when `accumulate` (the default path; the
    /// caller has checked [`Self::fits`] and the lengths).
    pub fn apply(&self, src: &[f32], dst: &mut [f32], accumulate: bool) {
        let run = self.k * self.hw;
        for i in 0..self.n {
            let from = (i * self.src_c + self.src_at) * self.hw;
            let to = (i * self.dst_c + self.dst_at) * self.hw;
            let (s, d) = (&src[from..from + run], &mut dst[to..to + run]);
            if accumulate {
                d.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            } else {
                d.copy_from_slice(s);
            }
        }
    }
}

/// An engine that can hold one column of [`super::Columns`].
pub trait ColumnEngine: Backend {
    /// Makes every op given so far visible to [`Backend::download`] (an engine that records
    /// ops submits them here; one that runs them at once has nothing to do).
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// `dst`'s slice ← `src`'s slice, in order with the ops around it. The default goes
    /// through the host; the wrapper has checked the slices fit and the lengths.
    fn copy_channels(
        &mut self,
        m: &ChannelCopy,
        src: &Self::Buf,
        dst: &Self::Buf,
    ) -> Result<(), Self::Error> {
        self.flush()?;
        let s = self.download(src)?;
        let mut t = self.download(dst)?;
        m.apply(&s, &mut t, false);
        self.upload(dst, &t)
    }

    /// The slice `m` of `src` on the host, packed `[N,k,hw]` (`m` writes a tensor of `k`
    /// channels from 0), after every op given so far: what this column sends in an exchange.
    /// `send` (`[N,k,hw]`) is this tensor's own staging buffer for it; the default reads
    /// `src` whole and slices it on the host.
    fn send_channels(
        &mut self,
        m: &ChannelCopy,
        src: &Self::Buf,
        send: &Self::Buf,
    ) -> Result<Vec<f32>, Self::Error> {
        let _ = send;
        self.flush()?;
        let s = self.download(src)?;
        let mut out = vec![0.0; m.dst_len()];
        m.apply(&s, &mut out, false);
        Ok(out)
    }

    /// Writes `data` (packed `[N,k,hw]`: `m` reads a tensor of `k` channels from 0) into the
    /// slice `m` of `dst`, added when `accumulate`, in order with the ops around it: what
    /// this column receives. `recv` (`[N,k,hw]`) is this tensor's own staging buffer for it.
    fn receive_channels(
        &mut self,
        m: &ChannelCopy,
        data: &[f32],
        recv: &Self::Buf,
        dst: &Self::Buf,
        accumulate: bool,
    ) -> Result<(), Self::Error> {
        let _ = recv;
        self.flush()?;
        let mut t = self.download(dst)?;
        m.apply(data, &mut t, accumulate);
        self.upload(dst, &t)
    }
}

impl ColumnEngine for RefBackend {}

impl ColumnEngine for CpuBackend {}

impl ColumnEngine for GpuPass<'_, '_> {
    fn flush(&mut self) -> Result<(), GpuError> {
        self.submit_so_far();
        Ok(())
    }

    fn copy_channels(
        &mut self,
        m: &ChannelCopy,
        src: &Self::Buf,
        dst: &Self::Buf,
    ) -> Result<(), GpuError> {
        gpu_copy(self, m, src, dst, false)
    }

    fn send_channels(
        &mut self,
        m: &ChannelCopy,
        src: &Self::Buf,
        send: &Self::Buf,
    ) -> Result<Vec<f32>, GpuError> {
        // Only the slice crosses: packed on the device, then read back (the whole tensor
        // when the slice is all of it).
        let from = if m.k == m.src_c {
            src
        } else {
            gpu_copy(self, m, src, send, false)?;
            send
        };
        self.flush()?;
        self.download(from)
    }

    fn receive_channels(
        &mut self,
        m: &ChannelCopy,
        data: &[f32],
        recv: &Self::Buf,
        dst: &Self::Buf,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        // Written before the next submit, so before the unpacking recorded here runs.
        self.upload(recv, data)?;
        gpu_copy(self, m, recv, dst, accumulate)
    }
}

/// [`ChannelCopy`] recorded by the channel-copy launcher.
fn gpu_copy(
    pass: &mut GpuPass<'_, '_>,
    m: &ChannelCopy,
    src: &Tensor,
    dst: &Tensor,
    accumulate: bool,
) -> Result<(), GpuError> {
    let mv = Move {
        n: m.n,
        k: m.k,
        hw: m.hw,
    };
    let (s, d) = (Slice::at(m.src_c, m.src_at), Slice::at(m.dst_c, m.dst_at));
    channels::copy(pass.recorder()?, mv, (src, s), (dst, d), accumulate)
}
