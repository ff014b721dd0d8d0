//! The data movements of the split built on [`super::exchange::Exchanger`]: gathering both
//! columns' halves into a whole tensor, summing partial gradients into each column's half, and
//! the LRN halo.
// `d` indexes the devices, their columns and their encoders together.
#![allow(clippy::needless_range_loop)]
use super::buffers::LrnExt;
use super::exchange::Side;
use super::{ColumnNetwork, Result};
use crate::gpu::channels::{self, Move, Slice};
use crate::gpu::Tensor;

impl ColumnNetwork {
    /// On each device copies `keep[d].0` into `keep[d].1` (shape `km`), then swaps: device d
    /// sends `from[d]` and receives into `to[d]` (shape `m`), copied or added.
    #[allow(clippy::too_many_arguments)]
    fn keep_and_swap(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        km: Move,
        keep: [(Side<'_>, Side<'_>); 2],
        m: Move,
        from: [Side<'_>; 2],
        to: [Side<'_>; 2],
        accumulate: bool,
    ) -> Result<()> {
        for d in 0..2 {
            channels::copy(
                &mut self.rec(d, &mut encs[d]),
                km,
                keep[d].0,
                keep[d].1,
                false,
            )?;
        }
        self.ex.swap(&self.gpus, encs, m, from, to, accumulate)?;
        Ok(())
    }

    /// `own[d]` `[N,k,hw]` of each column into channels `d·k..` of `full[d]` `[N,2k,hw]`.
    pub(super) fn gather(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        own: [&Tensor; 2],
        full: [&Tensor; 2],
    ) -> Result<()> {
        let own_s = |d: usize| (own[d], Slice::at(m.k, 0));
        let full_s = |d: usize, at: usize| (full[d], Slice::at(2 * m.k, at * m.k));
        self.keep_and_swap(
            encs,
            m,
            [0, 1].map(|d| (own_s(d), full_s(d, d))),
            m,
            [0, 1].map(own_s),
            [0, 1].map(|d| full_s(d, 1 - d)),
            false,
        )
    }

    /// Sums the partial gradients `partial[d]` `[N,2k,hw]` of a whole-width input: each column
    /// gets its own half `[N,k,hw]` in `own[d]`. `overlap` records work that needs neither
    /// (the layer's weight gradients); it runs on the devices while the halves travel.
    pub(super) fn reduce(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        m: Move,
        partial: [&Tensor; 2],
        own: [&Tensor; 2],
        overlap: impl FnOnce(&mut [wgpu::CommandEncoder; 2]) -> Result<()>,
    ) -> Result<()> {
        let own_s = |d: usize| (own[d], Slice::at(m.k, 0));
        let part_s = |d: usize, at: usize| (partial[d], Slice::at(2 * m.k, at * m.k));
        let flight = self
            .ex
            .send(&self.gpus, encs, m, [0, 1].map(|d| part_s(d, 1 - d)))?;
        overlap(encs)?;
        for d in 0..2 {
            let mut rec = self.rec(d, &mut encs[d]);
            channels::copy(&mut rec, m, part_s(d, d), own_s(d), false)?;
        }
        self.ex
            .receive(&self.gpus, encs, flight, [0, 1].map(own_s), true)?;
        Ok(())
    }

    /// Fills the extended tensors `ext[d]` `[N,ext_c,hw]` of an LRN: the own channels from
    /// `own[d]` `[N,own_c,hw]`, the halo from the other column's.
    pub(super) fn halo(
        &self,
        encs: &mut [wgpu::CommandEncoder; 2],
        l: [&LrnExt; 2],
        n: usize,
        own: [&Tensor; 2],
        ext: [&Tensor; 2],
    ) -> Result<()> {
        let (own_c, hw) = (l[0].own_c, l[0].hw);
        let halo = l[0].ext_c - own_c;
        let m = Move { n, k: halo, hw };
        let ext_s = |d: usize, at: usize| (ext[d], Slice::at(l[d].ext_c, at));
        // Column 0 sends its last channels, column 1 its first.
        let sent = [own_c - halo, 0];
        self.keep_and_swap(
            encs,
            Move { k: own_c, ..m },
            [0, 1].map(|d| ((own[d], Slice::at(own_c, 0)), ext_s(d, l[d].own_at))),
            m,
            [0, 1].map(|d| (own[d], Slice::at(own_c, sent[d]))),
            [0, 1].map(|d| ext_s(d, l[d].halo_at)),
            false,
        )
    }

    /// The own channels of `ext` (one of `l`'s extended tensors) into `out` `[N,own_c,hw]`.
    pub(super) fn copy_own(
        &self,
        d: usize,
        enc: &mut wgpu::CommandEncoder,
        l: &LrnExt,
        n: usize,
        ext: &Tensor,
        out: &Tensor,
    ) -> Result<()> {
        let m = Move {
            n,
            k: l.own_c,
            hw: l.hw,
        };
        let from = (ext, Slice::at(l.ext_c, l.own_at));
        channels::copy(
            &mut self.rec(d, enc),
            m,
            from,
            (out, Slice::at(l.own_c, 0)),
            false,
        )?;
        Ok(())
    }
}
