//! The self-test: every kernel variant the tuner may choose (a tile configuration × an entry:
//! forward, backward to the input, backward to the weight, split-K, accumulate; for the GEMM
//! of the fully connected layers and the implicit GEMM of the convolutions), run on awkward
//! shapes (sizes that are no multiple of any tile, two groups, stride 4, padding) and checked
//! against [`crate::reference`]. A variant that fails is dropped by the tuner, with a line
//! naming it and its error. A cooperative-matrix tile (`--precision mixed`) is checked at the
//! f16 tolerance [`f16_tolerance`] derives, the others at the f32 one. The cases are
//! public so the tests share them: the suite runs them on every engine (`tests/ops/cases.rs`),
//! the launcher tests on every form (`tests/kernels.rs`).
use std::time::Instant;

use super::conv::{self, ConvKernels};
use super::f16_tolerance;
use super::gemm::{self, GemmArgs, GemmForm};
use super::tiles::{Core, TileConfig};
use super::tuner::{with_choice, Choice};
use super::{Gpu, Recorder, Tensor};
use crate::reference::{self as r, check_close, random_tensor};
use crate::shape::{Activation, ConvShape, LinearShape};

/// The kernels a check exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `shaders/gemm.wgsl` (fully connected layers).
    Gemm,
    /// `shaders/conv.wgsl` (the convolutions' implicit GEMM).
    Conv,
}

/// One entry of a family, as the self-test checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// GEMM `y = ReLU(x·Wᵀ + b)`.
    GemmForward,
    /// GEMM `dx = dy·W`.
    GemmBackwardInput,
    /// GEMM `dW = dyᵀ·x`.
    GemmBackwardWeight,
    /// GEMM forward and weight gradient split along K into 3 slices.
    GemmSplitK,
    /// GEMM `dx += dy·W` onto a non-zero `dx`.
    GemmAccumulate,
    /// Convolution forward with bias and ReLU.
    ConvForward,
    /// Convolution backward to the input.
    ConvBackwardInput,
    /// Convolution backward to the weight, one slice.
    ConvBackwardWeight,
    /// Convolution backward to the weight in 3 K slices, accumulated.
    ConvSplitK,
    /// Convolution backward to the input accumulated onto a non-zero `dx`.
    ConvAccumulate,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 10] = [
        Check::GemmForward,
        Check::GemmBackwardInput,
        Check::GemmBackwardWeight,
        Check::GemmSplitK,
        Check::GemmAccumulate,
        Check::ConvForward,
        Check::ConvBackwardInput,
        Check::ConvBackwardWeight,
        Check::ConvSplitK,
        Check::ConvAccumulate,
    ];

    /// `family.entry`, e.g. `gemm.split_k`.
    pub fn name(&self) -> &'static str {
        match self {
            Check::GemmForward => "gemm.forward",
            Check::GemmBackwardInput => "gemm.backward_input",
            Check::GemmBackwardWeight => "gemm.backward_weight",
            Check::GemmSplitK => "gemm.split_k",
            Check::GemmAccumulate => "gemm.accumulate",
            Check::ConvForward => "conv.forward",
            Check::ConvBackwardInput => "conv.backward_input",
            Check::ConvBackwardWeight => "conv.backward_weight",
            Check::ConvSplitK => "conv.split_k",
            Check::ConvAccumulate => "conv.accumulate",
        }
    }

    /// The check named `name` ([`Check::name`]).
    pub fn from_name(name: &str) -> Option<Check> {
        Check::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Its family.
    pub fn family(&self) -> Family {
        if self.name().starts_with("gemm") {
            Family::Gemm
        } else {
            Family::Conv
        }
    }

    /// Whether it checks split-K (only split-K choices need it).
    pub fn is_split(&self) -> bool {
        matches!(self, Check::GemmSplitK | Check::ConvSplitK)
    }
}

/// The outcome of one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The tile.
    pub tile: TileConfig,
    /// The check.
    pub check: Check,
    /// `None` when it passed; else what differed (tensor, first bad index, largest error) or
    /// the error the launcher or wgpu raised.
    pub error: Option<String>,
}

/// What [`run`] found.
#[derive(Clone, Debug)]
pub struct Report {
    /// Every variant checked.
    pub outcomes: Vec<Outcome>,
    /// Seconds it took (pipeline compilation included).
    pub seconds: f64,
    /// Seconds per tile, in the order checked.
    pub tile_seconds: Vec<(TileConfig, f64)>,
}

/// Whether `tile` passed every check of `family` in `outcomes` (and split-K when `split`).
/// A tile with no outcome for the family is not usable.
pub fn usable(outcomes: &[Outcome], tile: &TileConfig, family: Family, split: bool) -> bool {
    let mine: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.tile == *tile && o.check.family() == family)
        .filter(|o| split || !o.check.is_split())
        .collect();
    !mine.is_empty() && mine.iter().all(|o| o.error.is_none())
}

impl Report {
    /// The failed variants, one line each: `dropped TILE CHECK: error`.
    pub fn dropped(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|o| {
                o.error
                    .as_ref()
                    .map(|e| format!("dropped {} {}: {e}", o.tile.tag(), o.check.name()))
            })
            .collect()
    }

    /// The families for which no tile passed (training cannot run them).
    pub fn empty_families(&self) -> Vec<Family> {
        let mut out = Vec::new();
        for family in [Family::Gemm, Family::Conv] {
            let tried = self.outcomes.iter().any(|o| o.check.family() == family);
            let any = self
                .outcomes
                .iter()
                .any(|o| usable(&self.outcomes, &o.tile, family, false));
            if tried && !any {
                out.push(family);
            }
        }
        out
    }

    /// A grid of tiles × checks (`ok` or `FAIL`), then the dropped variants.
    pub fn table(&self) -> String {
        let mut tiles: Vec<TileConfig> = Vec::new();
        for o in &self.outcomes {
            if !tiles.contains(&o.tile) {
                tiles.push(o.tile);
            }
        }
        let checks: Vec<Check> = Check::ALL
            .into_iter()
            .filter(|c| self.outcomes.iter().any(|o| o.check == *c))
            .collect();
        let mut out = format!("{:<22} {:>7}", "tile", "s");
        for c in &checks {
            out += &format!(" {:>20}", c.name());
        }
        out.push('\n');
        for t in &tiles {
            let secs = self
                .tile_seconds
                .iter()
                .find(|(x, _)| x == t)
                .map_or(0.0, |(_, s)| *s);
            out += &format!("{:<22} {secs:>7.1}", t.tag());
            for c in &checks {
                let cell = match self.outcomes.iter().find(|o| o.tile == *t && o.check == *c) {
                    Some(Outcome { error: None, .. }) => "ok",
                    Some(_) => "FAIL",
                    None => "-",
                };
                out += &format!(" {cell:>20}");
            }
            out.push('\n');
        }
        for line in self.dropped() {
            out += &line;
            out.push('\n');
        }
        out += &format!(
            "{} variants checked in {:.1} s, {} dropped\n",
            self.outcomes.len(),
            self.seconds,
            self.dropped().len()
        );
        out
    }

    /// The report as JSON: `seconds` and one object per variant (`tile`, `check`, `ok`,
    /// `error`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds": self.seconds,
            "tile_seconds": self.tile_seconds.iter().map(|(t, s)| serde_json::json!({"tile": t.tag(), "seconds": s})).collect::<Vec<_>>(),
            "variants": self.outcomes.iter().map(|o| serde_json::json!({
                "tile": o.tile.tag(),
                "check": o.check.name(),
                "ok": o.error.is_none(),
                "error": o.error,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The GEMM cases `(m, n, k)` as a fully connected layer sees them (batch, fout, fin): no
/// multiple of any tile's rows, columns or K step; the second spans several tiles of 64.
pub const GEMM_CASES: [(usize, usize, usize); 2] = [(67, 45, 129), (130, 70, 37)];

/// The convolution cases: conv1's stride 4 and kernel 11 with padding and two groups, and a
/// padded 3×3 of two groups whose columns span several tiles.
pub const CONV_CASES: [ConvShape; 2] = [
    ConvShape {
        n: 2,
        c_in: 6,
        h: 23,
        w: 23,
        c_out: 10,
        k: 11,
        stride: 4,
        pad: 2,
        groups: 2,
    },
    ConvShape {
        n: 3,
        c_in: 4,
        h: 9,
        w: 9,
        c_out: 6,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 2,
    },
];

/// Check every tile of `tiles` with every check (the convolution checks only when the
/// device runs the tiled convolution kernels).
pub fn run(gpu: &Gpu, tiles: &[TileConfig]) -> Report {
    let start = Instant::now();
    let mut outcomes = Vec::new();
    let mut tile_seconds = Vec::new();
    for &tile in tiles {
        let t0 = Instant::now();
        for check in Check::ALL {
            if check.family() == Family::Conv && gpu.conv_kernels != ConvKernels::Tiled {
                continue;
            }
            let error = run_check(gpu, tile, check).err();
            outcomes.push(Outcome { tile, check, error });
        }
        tile_seconds.push((tile, t0.elapsed().as_secs_f64()));
    }
    Report {
        outcomes,
        seconds: start.elapsed().as_secs_f64(),
        tile_seconds,
    }
}

/// One variant on every case of its family: `Err` with the first difference or error.
pub fn run_check(gpu: &Gpu, tile: TileConfig, check: Check) -> Result<(), String> {
    if !gemm::fits(gpu, &tile) {
        return Err(format!(
            "does not fit the device ({} threads, {} bytes of workgroup memory)",
            tile.threads(),
            tile.shared_bytes()
        ));
    }
    // wgpu reports a shader or pipeline the driver refuses through an error scope; without
    // one it would panic.
    let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let result = match check.family() {
        Family::Gemm => GEMM_CASES
            .iter()
            .try_for_each(|&case| gemm_case(gpu, tile, check, case)),
        Family::Conv => CONV_CASES
            .iter()
            .try_for_each(|case| conv_case(gpu, tile, check, case)),
    };
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(format!("wgpu: {e}"));
    }
    result
}

/// Compare at the f32 core's tolerance (`atol`, `rtol`), or for a cooperative tile at the
/// f16 one ([`f16_tolerance::check_f16`]), whose bound `sq` computes: the same product of the
/// squared operands.
fn compare(
    tile: &TileConfig,
    name: &str,
    got: &[f32],
    want: &[f32],
    (atol, rtol): (f32, f32),
    sq: impl FnOnce() -> Vec<f32>,
) -> Result<(), String> {
    match tile.core {
        Core::Fma => check_close(name, got, want, atol, rtol),
        Core::Coop => f16_tolerance::check_f16(name, got, want, &sq()),
    }
}

fn squares(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x * x).collect()
}

fn up(gpu: &Gpu, data: &[f32], label: &str) -> Tensor {
    Tensor::from_slice(gpu, data, label)
}

/// Record with `choice` forced, submit, and read `out` back.
fn run_forced(
    gpu: &Gpu,
    choice: Choice,
    out: &Tensor,
    f: impl FnOnce(&mut Recorder<'_>) -> super::Result<()>,
) -> Result<Vec<f32>, String> {
    with_choice(choice, || {
        let mut enc = gpu.encoder("selftest");
        {
            let mut rec = Recorder::new(gpu, &mut enc);
            f(&mut rec).map_err(|e| e.to_string())?;
        }
        gpu.submit(enc);
        out.download(gpu).map_err(|e| e.to_string())
    })
}

/// The arguments of `form` for a fully connected layer of batch `m`, `n` outputs and `k`
/// inputs: `t` = A, B, C and the bias (used by the forward only, with ReLU).
fn args<'a>(
    (m, n, k): (usize, usize, usize),
    form: GemmForm,
    t: [&'a Tensor; 4],
    accumulate: bool,
) -> GemmArgs<'a> {
    let fwd = form == GemmForm::ABt;
    GemmArgs {
        form,
        m: if form == GemmForm::AtB { n } else { m },
        n: if fwd { n } else { k },
        k: match form {
            GemmForm::ABt => k,
            GemmForm::AB => n,
            GemmForm::AtB => m,
        },
        a: t[0],
        b: t[1],
        c: t[2],
        bias: fwd.then_some(t[3]),
        accumulate,
        alpha: 1.0,
        act: fwd.then_some(Activation::Relu),
    }
}

fn gemm_case(
    gpu: &Gpu,
    tile: TileConfig,
    check: Check,
    (m, n, k): (usize, usize, usize),
) -> Result<(), String> {
    let s = LinearShape {
        n: m,
        fin: k,
        fout: n,
    };
    let seed = (m * 7 + n * 3 + k) as u32;
    let x = random_tensor(seed, m * k, 1.0);
    let w = random_tensor(seed + 1, n * k, 1.0);
    let b = random_tensor(seed + 2, n, 1.0);
    let dy = random_tensor(seed + 3, m * n, 1.0);
    let (tx, tw, tb, tdy) = (
        up(gpu, &x, "selftest.x"),
        up(gpu, &w, "selftest.w"),
        up(gpu, &b, "selftest.b"),
        up(gpu, &dy, "selftest.dy"),
    );
    let tag = format!("{m}x{n}x{k}");
    let one = |splits| Choice {
        tile,
        splits: Some(splits),
    };
    let want_y = r::activation_forward(Activation::Relu, &r::linear_forward(&s, &x, &w, &b));
    let (want_dx, want_dw, _) = r::linear_backward(&s, &dy, &x, &w);
    let (x2, w2, dy2) = (squares(&x), squares(&w), squares(&dy));
    let backward_sq = || r::linear_backward(&s, &dy2, &x2, &w2);
    let forward = |splits| {
        let y = Tensor::zeros(gpu, m * n, "selftest.y");
        let got = run_forced(gpu, one(splits), &y, |rec| {
            gemm::record(
                rec,
                &args((m, n, k), GemmForm::ABt, [&tx, &tw, &y, &tb], false),
            )
        })?;
        compare(
            &tile,
            &format!("{tag} y"),
            &got,
            &want_y,
            (1e-4, 1e-4),
            || r::linear_forward(&s, &x2, &w2, &vec![0.0; n]),
        )
    };
    let weight = |splits| {
        let dw = Tensor::zeros(gpu, n * k, "selftest.dw");
        let got = run_forced(gpu, one(splits), &dw, |rec| {
            gemm::record(
                rec,
                &args((m, n, k), GemmForm::AtB, [&tdy, &tx, &dw, &tb], false),
            )
        })?;
        compare(
            &tile,
            &format!("{tag} dw"),
            &got,
            &want_dw,
            (2e-4, 1e-4),
            || backward_sq().1,
        )
    };
    let input = |acc: bool| {
        let start = if acc { 0.5 } else { 0.0 };
        let dx = up(gpu, &vec![start; m * k], "selftest.dx");
        let got = run_forced(gpu, one(1), &dx, |rec| {
            gemm::record(
                rec,
                &args((m, n, k), GemmForm::AB, [&tdy, &tw, &dx, &tb], acc),
            )
        })?;
        let want: Vec<f32> = want_dx.iter().map(|v| v + start).collect();
        compare(
            &tile,
            &format!("{tag} dx"),
            &got,
            &want,
            (1e-4, 1e-4),
            || backward_sq().0,
        )
    };
    match check {
        Check::GemmForward => forward(1),
        Check::GemmBackwardInput => input(false),
        Check::GemmBackwardWeight => weight(1),
        Check::GemmSplitK => forward(3).and_then(|_| weight(3)),
        Check::GemmAccumulate => input(true),
        _ => Ok(()),
    }
}

fn conv_case(gpu: &Gpu, tile: TileConfig, check: Check, s: &ConvShape) -> Result<(), String> {
    let seed = (s.c_in * 11 + s.k * 5 + s.n) as u32;
    let x = random_tensor(seed, s.input_len(), 1.0);
    let w = random_tensor(seed + 1, s.weight_len(), 1.0);
    let b = random_tensor(seed + 2, s.c_out, 1.0);
    let dy = random_tensor(seed + 3, s.output_len(), 1.0);
    let (tx, tw, tb, tdy) = (
        up(gpu, &x, "selftest.x"),
        up(gpu, &w, "selftest.w"),
        up(gpu, &b, "selftest.b"),
        up(gpu, &dy, "selftest.dy"),
    );
    let tag = format!(
        "n{} {}x{}x{} k{} s{} p{} g{}",
        s.n, s.c_in, s.h, s.w, s.k, s.stride, s.pad, s.groups
    );
    let (x2, w2, dy2) = (squares(&x), squares(&w), squares(&dy));
    let one = |splits| Choice {
        tile,
        splits: Some(splits),
    };
    let input = |acc: bool| {
        let start = if acc { -0.5 } else { 0.0 };
        let dx = up(gpu, &vec![start; s.input_len()], "selftest.dx");
        let got = run_forced(gpu, one(1), &dx, |rec| {
            conv::backward_input(rec, s, &tdy, &tw, &dx, acc)
        })?;
        let want: Vec<f32> = r::conv2d_backward_input(s, &dy, &w)
            .iter()
            .map(|v| v + start)
            .collect();
        compare(
            &tile,
            &format!("{tag} dx"),
            &got,
            &want,
            (1e-4, 1e-4),
            || r::conv2d_backward_input(s, &dy2, &w2),
        )
    };
    // The weight and bias gradients together, as the engine runs them: with the tile's
    // width leaving a spare column, the bias gradient is a column of the weight's product.
    let weight = |splits: usize, acc: bool| {
        let start = if acc { 0.25 } else { 0.0 };
        let dw = up(gpu, &vec![start; s.weight_len()], "selftest.dw");
        let db = up(gpu, &vec![-start; s.c_out], "selftest.db");
        let got = run_forced(gpu, one(splits), &dw, |rec| {
            conv::backward_params(rec, s, [&tdy, &tx], [&dw, &db], acc)
        })?;
        let (want_dw, want_db) = r::conv2d_backward_weight(s, &dy, &x);
        let want: Vec<f32> = want_dw.iter().map(|v| v + start).collect();
        compare(
            &tile,
            &format!("{tag} dw"),
            &got,
            &want,
            (2e-4, 1e-4),
            || r::conv2d_backward_weight(s, &dy2, &x2).0,
        )?;
        let got = db.download(gpu).map_err(|e| e.to_string())?;
        let want: Vec<f32> = want_db.iter().map(|v| v - start).collect();
        compare(
            &tile,
            &format!("{tag} db"),
            &got,
            &want,
            (2e-4, 1e-4),
            || r::conv2d_backward_weight(s, &dy2, &x2).1,
        )
    };
    match check {
        Check::ConvForward => {
            let y = Tensor::zeros(gpu, s.output_len(), "selftest.y");
            let got = run_forced(gpu, one(1), &y, |rec| {
                conv::forward(rec, s, &tx, &tw, &tb, &y, Some(Activation::Relu))
            })?;
            let want = r::activation_forward(Activation::Relu, &r::conv2d_forward(s, &x, &w, &b));
            compare(
                &tile,
                &format!("{tag} y"),
                &got,
                &want,
                (1e-4, 1e-4),
                || r::conv2d_forward(s, &x2, &w2, &vec![0.0; s.c_out]),
            )
        }
        Check::ConvBackwardInput => input(false),
        Check::ConvAccumulate => input(true),
        Check::ConvBackwardWeight => weight(1, false),
        Check::ConvSplitK => weight(3, true),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooperative_tiles_are_held_to_the_f16_tolerance_and_f32_tiles_to_the_f32_one() {
        // A fully connected forward long enough in K that f16 inputs exceed the f32 bound.
        let s = LinearShape {
            n: 7,
            fin: 1500,
            fout: 5,
        };
        let x = random_tensor(3, s.n * s.fin, 1.0);
        let w = random_tensor(4, s.fout * s.fin, 1.0);
        let zero = vec![0.0; s.fout];
        let want = r::linear_forward(&s, &x, &w, &zero);
        let f16 = |v: &[f32]| -> Vec<f32> {
            v.iter().map(|&a| half::f16::from_f32(a).to_f32()).collect()
        };
        // What a correct cooperative kernel computes: f16 operands, f32 sums.
        let got = r::linear_forward(&s, &f16(&x), &f16(&w), &zero);
        let sq = || r::linear_forward(&s, &squares(&x), &squares(&w), &zero);
        let coop_tile = super::super::coop::candidate_tiles()[0];
        let tol = (1e-4, 1e-4);
        compare(&coop_tile, "y", &got, &want, tol, sq).unwrap();
        assert!(compare(&TileConfig::SMALL, "y", &got, &want, tol, sq).is_err());
        // One K term dropped in every row: the cooperative tile fails too.
        let mut dropped = f16(&x);
        for row in 0..s.n {
            dropped[row * s.fin] = 0.0;
        }
        let bad = r::linear_forward(&s, &dropped, &f16(&w), &zero);
        let e = compare(&coop_tile, "y", &bad, &want, tol, sq).unwrap_err();
        assert!(e.contains("beyond the f16 tolerance"), "{e}");
    }
}
