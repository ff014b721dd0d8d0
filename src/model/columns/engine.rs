//! What the column wrapper needs from each column's engine beyond [`Backend`]: moving a
//! channel slice inside one engine, and making recorded work visible to a download. Both
//! have defaults through download and upload, so any engine can hold a column; the GPU
//! overrides them with its channel-copy kernel and a submit.
use crate::backend::Backend;
use crate::cpu::CpuBackend;
use crate::gpu::backend::GpuPass;
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::GpuError;
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

    /// The copy on host slices (the default path; the caller has checked [`Self::fits`] and
    /// the lengths).
    pub fn apply(&self, src: &[f32], dst: &mut [f32]) {
        let run = self.k * self.hw;
        for i in 0..self.n {
            let from = (i * self.src_c + self.src_at) * self.hw;
            let to = (i * self.dst_c + self.dst_at) * self.hw;
            dst[to..to + run].copy_from_slice(&src[from..from + run]);
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
        m.apply(&s, &mut t);
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
        let mv = Move {
            n: m.n,
            k: m.k,
            hw: m.hw,
        };
        let (s, d) = (Slice::at(m.src_c, m.src_at), Slice::at(m.dst_c, m.dst_at));
        channels::copy(self.recorder()?, mv, (src, s), (dst, d), false)
    }
}
