//! The engines the suite runs on, each with the bounds its op cases are held to, and the
//! GPU engine as a [`Backend`] that runs each op at once (so a case can read back between
//! ops, as it does on the CPU engine and the reference).
use alexnet::backend::{Backend, BnState, Grad, MaskSeed, Mode, Pair, SgdHyper};
use alexnet::cpu::{CpuBackend, CpuDevice};
use alexnet::gpu::backend::GpuPass;
use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::gemm::TilePolicy;
use alexnet::gpu::step::{StepBuffer, StepScalars};
use alexnet::gpu::{self, Gpu, GpuError, Recorder, Tensor};
use alexnet::reference::backend::RefBackend;
use alexnet::reference::check_close;
use alexnet::shape::{Activation, BnShape, ConvShape, LinearShape, LrnParams, PoolShape};
use std::cell::Cell;

/// An error bound: `|got − want| ≤ abs + of_max·max|want| + rel·|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Absolute part.
    pub abs: f32,
    /// Part relative to the tensor's largest value.
    pub of_max: f32,
    /// Part relative to the element.
    pub rel: f32,
}

impl Tol {
    /// Equal values only.
    pub const EXACT: Tol = Tol {
        abs: 0.0,
        of_max: 0.0,
        rel: 0.0,
    };

    /// `rel` of the tensor's largest value or of the element (the CPU engine's bounds: its
    /// values are the reference's but for the f64 accumulation).
    pub const fn scaled(rel: f32) -> Tol {
        Tol {
            abs: 0.0,
            of_max: rel,
            rel,
        }
    }

    /// An absolute and a relative part (the WGSL kernels' bounds).
    pub const fn abs_rel(abs: f32, rel: f32) -> Tol {
        Tol {
            abs,
            of_max: 0.0,
            rel,
        }
    }
}

/// Fails when `got` is outside `tol` of `want`, or when `want` is all zeros (a case that
/// would pass a kernel writing nothing).
#[track_caller]
pub fn close(name: &str, got: &[f32], want: &[f32], tol: Tol) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 1e-6,
        "{name}: the reference is all zeros; the case tests nothing"
    );
    if let Err(e) = check_close(name, got, want, tol.abs + tol.of_max * scale, tol.rel) {
        panic!("{e} (tensor max |value| {scale:e})");
    }
}

/// Fails unless `got` and `want` are the same bits.
#[track_caller]
pub fn same_bits(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{name}: differs first at {i}: {} vs {}", got[i], want[i]);
    }
}

/// How close each op must come to the reference on one engine. Every bound is the one the
/// engine's own kernel tests held before the suite was shared (`tests/kernels.rs` for the
/// WGSL kernels, `tests/cpu_vs_reference.rs` for the CPU engine).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Convolution: output and input gradient.
    pub conv: Tol,
    /// Convolution: weight gradient (a longer reduction).
    pub conv_dw: Tol,
    /// Convolution: bias gradient.
    pub conv_db: Tol,
    /// Fully connected: every tensor.
    pub linear: Tol,
    /// LRN output.
    pub lrn_y: Tol,
    /// LRN input gradient.
    pub lrn_dx: Tol,
    /// Max-pool input gradient (the output is always exact).
    pub pool_dx: Tol,
    /// Mean cross-entropy: `|got − want| ≤ abs + rel·|want|`.
    pub loss: Tol,
    /// Gradient of the cross-entropy to the logits.
    pub dlogits: Tol,
    /// SGD weights and momentum.
    pub sgd: Tol,
}

/// The CPU engine's bounds (`tests/cpu_vs_reference.rs` before the suite).
pub const CPU: Bounds = Bounds {
    conv: Tol::scaled(2e-5),
    conv_dw: Tol::scaled(2e-5),
    conv_db: Tol::scaled(2e-5),
    linear: Tol::scaled(2e-5),
    lrn_y: Tol::scaled(2e-6),
    lrn_dx: Tol::scaled(2e-5),
    pool_dx: Tol::scaled(1e-6),
    loss: Tol::abs_rel(0.0, 1e-5),
    dlogits: Tol::scaled(1e-6),
    sgd: Tol::EXACT,
};

/// The WGSL kernels' bounds (`tests/kernels.rs` before the suite).
pub const GPU: Bounds = Bounds {
    conv: Tol::abs_rel(1e-4, 1e-4),
    conv_dw: Tol::abs_rel(2e-4, 1e-4),
    conv_db: Tol::abs_rel(1e-4, 1e-4),
    linear: Tol::abs_rel(1e-4, 1e-4),
    lrn_y: Tol::abs_rel(1e-5, 1e-4),
    lrn_dx: Tol::abs_rel(1e-5, 1e-4),
    pool_dx: Tol::abs_rel(1e-6, 1e-6),
    loss: Tol::abs_rel(1e-5, 1e-5),
    dlogits: Tol::abs_rel(1e-6, 1e-4),
    sgd: Tol::abs_rel(1e-7, 1e-6),
};

/// The reference's own [`Backend`] calls the very functions the cases compare with: equal
/// values but for the mean loss.
pub const REFERENCE: Bounds = Bounds {
    conv: Tol::EXACT,
    conv_dw: Tol::EXACT,
    conv_db: Tol::EXACT,
    linear: Tol::EXACT,
    lrn_y: Tol::EXACT,
    lrn_dx: Tol::EXACT,
    pool_dx: Tol::EXACT,
    // The per-image rows summed in f32 against the loops' mean: one rounding apart.
    loss: Tol::abs_rel(0.0, 1e-6),
    dlogits: Tol::EXACT,
    sgd: Tol::EXACT,
};

/// One engine under test: the backend, a name for messages and its bounds.
pub struct Engine<B> {
    /// The ops.
    pub be: B,
    /// `"cpu x2"`, `"gpu tiled"`, … (in every failure message).
    pub name: String,
    /// How close each op must come.
    pub bounds: Bounds,
}

/// The reference's `Backend` (its op cases check the wiring of the trait onto the loops).
pub fn reference() -> Engine<RefBackend> {
    Engine {
        be: RefBackend::new(),
        name: "reference".into(),
        bounds: REFERENCE,
    }
}

/// The CPU engine on `workers` threads (1 to 3 runs every chunking path).
pub fn cpu(workers: usize) -> Engine<CpuBackend> {
    let device = CpuDevice::new(workers).expect("a rayon pool");
    Engine {
        be: CpuBackend::new(&device),
        name: format!("cpu x{workers}"),
        bounds: CPU,
    }
}

/// The first real GPU, else lavapipe, running `kernels` with `tiles`: every pair is checked
/// on every adapter, so lavapipe checks the kernels and tiles an H200 runs.
pub fn gpu(kernels: ConvKernels, tiles: TilePolicy) -> Engine<GpuEager> {
    let mut g = Gpu::best().unwrap_or_else(|e| {
        panic!("{e} (the suite needs an adapter; CI installs mesa-vulkan-drivers)")
    });
    g.conv_kernels = kernels;
    g.tiles = tiles;
    let step = StepBuffer::new(&g, &StepScalars::default());
    Engine {
        be: GpuEager {
            gpu: g,
            step,
            values: Cell::new(StepScalars::default()),
        },
        name: format!("gpu {kernels:?} convolutions, {tiles:?} tiles"),
        bounds: GPU,
    }
}

/// The GPU engine's [`GpuPass`], each op recorded into an encoder of its own and submitted
/// at once.
pub struct GpuEager {
    gpu: Gpu,
    step: StepBuffer,
    values: Cell<StepScalars>,
}

impl GpuEager {
    /// Runs `f` on a pass recording into a fresh encoder, then submits it.
    fn now<T>(&mut self, f: impl FnOnce(&mut GpuPass<'_, '_>) -> gpu::Result<T>) -> gpu::Result<T> {
        let mut enc = self.gpu.encoder("suite");
        let out = {
            let mut rec = Recorder::new(&self.gpu, &mut enc);
            f(&mut GpuPass::new(&mut rec, &self.step, &self.values))
        };
        self.gpu.submit(enc);
        out
    }

    fn idle(&self) -> GpuPass<'_, '_> {
        GpuPass::idle(&self.gpu, &self.step, &self.values)
    }
}

impl Backend for GpuEager {
    type Buf = Tensor;
    type Error = GpuError;

    fn alloc(&mut self, len: usize, label: &str) -> gpu::Result<Tensor> {
        self.idle().alloc(len, label)
    }

    fn upload(&mut self, dst: &Tensor, data: &[f32]) -> gpu::Result<()> {
        self.idle().upload(dst, data)
    }

    fn upload_labels(&mut self, dst: &Tensor, labels: &[i32]) -> gpu::Result<()> {
        self.idle().upload_labels(dst, labels)
    }

    fn download(&mut self, src: &Tensor) -> gpu::Result<Vec<f32>> {
        self.idle().download(src)
    }

    fn copy(&mut self, src: &Tensor, dst: &Tensor) -> gpu::Result<()> {
        self.now(|p| p.copy(src, dst))
    }

    fn conv_forward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        y: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.conv_forward(s, act, x, p, y))
    }

    fn conv_backward(
        &mut self,
        s: &ConvShape,
        act: Activation,
        t: Grad<'_, Tensor>,
        w: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> gpu::Result<()> {
        self.now(|b| b.conv_backward(s, act, t, w, g))
    }

    fn linear_forward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        y: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.linear_forward(s, act, x, p, y))
    }

    fn linear_backward(
        &mut self,
        s: &LinearShape,
        act: Option<Activation>,
        t: Grad<'_, Tensor>,
        w: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> gpu::Result<()> {
        self.now(|b| b.linear_backward(s, act, t, w, g))
    }

    fn lrn_forward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        x: &Tensor,
        y: &Tensor,
        saved: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.lrn_forward(p, dims, x, y, saved))
    }

    fn lrn_backward(
        &mut self,
        p: &LrnParams,
        dims: [usize; 4],
        t: Grad<'_, Tensor>,
        saved: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.lrn_backward(p, dims, t, saved))
    }

    fn bn_forward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        x: &Tensor,
        p: Pair<'_, Tensor>,
        st: BnState<'_, Tensor>,
        y: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.bn_forward(s, mode, x, p, st, y))
    }

    fn bn_backward(
        &mut self,
        s: &BnShape,
        mode: Mode,
        t: Grad<'_, Tensor>,
        gamma: &Tensor,
        saved: &Tensor,
        g: Pair<'_, Tensor>,
    ) -> gpu::Result<()> {
        self.now(|b| b.bn_backward(s, mode, t, gamma, saved, g))
    }

    fn pool_saved(&mut self, s: &PoolShape) -> gpu::Result<Option<Tensor>> {
        self.idle().pool_saved(s)
    }

    fn maxpool_forward(
        &mut self,
        s: &PoolShape,
        x: &Tensor,
        y: &Tensor,
        saved: Option<&Tensor>,
    ) -> gpu::Result<()> {
        self.now(|b| b.maxpool_forward(s, x, y, saved))
    }

    fn maxpool_backward(
        &mut self,
        s: &PoolShape,
        t: Grad<'_, Tensor>,
        saved: Option<&Tensor>,
    ) -> gpu::Result<()> {
        self.now(|b| b.maxpool_backward(s, t, saved))
    }

    fn dropout(&mut self, p: f32, seed: MaskSeed, v: &Tensor) -> gpu::Result<()> {
        self.now(|b| b.dropout(p, seed, v))
    }

    fn softmax_xent_forward(
        &mut self,
        classes: usize,
        logits: &Tensor,
        labels: &Tensor,
        stats: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.softmax_xent_forward(classes, logits, labels, stats))
    }

    fn softmax_xent_backward(
        &mut self,
        classes: usize,
        logits: &Tensor,
        labels: &Tensor,
        dlogits: &Tensor,
    ) -> gpu::Result<()> {
        self.now(|b| b.softmax_xent_backward(classes, logits, labels, dlogits))
    }

    fn sgd(&mut self, h: SgdHyper, w: &Tensor, v: &Tensor, g: &Tensor) -> gpu::Result<()> {
        self.now(|b| b.sgd(h, w, v, g))
    }
}
