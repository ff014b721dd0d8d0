//! Launcher for `shaders/batchnorm.wgsl`: batch normalisation per channel, forward (batch or
//! running statistics) and backward. Each channel's reduction runs over [`slices`] workgroups
//! that a small pass merges, and the element-wise passes cover every value in parallel (the
//! shader's header says why and how). [`plan`] is the list of dispatches, so tests can count
//! workgroups without a device.
use super::gemm;
use super::kernel::{self, Entry, Launch, Shader, Slot, View};
use super::{GpuError, Recorder, Result, Tensor};
use crate::shape::{BnShape, BN_EPS, BN_MOMENTUM};

/// This launcher's shader, for [`kernel::all_shaders`].
pub static SHADERS: &[&Shader] = &[&SHADER];

/// The shader.
pub static SHADER: Shader = Shader {
    name: "batchnorm",
    source: include_str!("../../shaders/batchnorm.wgsl"),
    prelude: &[],
    gemm_entries: &[],
};
use Slot::{ReadWrite as Rw, Uniform as U, Unused as No};

// Slots by binding number (see the shader's header); 8 is the slices' partials.
static STATS: Entry = Entry {
    name: "stats",
    slots: &[U, Slot::Read, No, No, No, No, No, No, Rw],
};
static MERGE: Entry = Entry {
    name: "merge",
    slots: &[U, Slot::Read, No, No, Rw, Rw, No, Rw, Rw],
};
static EVAL_STATS: Entry = Entry {
    name: "eval_stats",
    slots: &[U, No, No, No, Rw, Rw, No, Rw],
};
static NORMALISE: Entry = Entry {
    name: "normalise",
    slots: &[U, Slot::Read, Slot::Read, Slot::Read, No, No, Rw, Rw],
};
static GRAD_STATS: Entry = Entry {
    name: "grad_stats",
    slots: &[U, Slot::Read, Slot::Read, No, Slot::Read, No, No, No, Rw],
};
static GRAD_MERGE: Entry = Entry {
    name: "grad_merge",
    slots: &[U, No, No, No, No, Rw, Rw, No, Rw],
};
static GRAD_INPUT: Entry = Entry {
    name: "grad_input",
    slots: &[
        U,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Slot::Read,
        Rw,
        Rw,
        Rw,
    ],
};

/// Values each invocation of the element-wise passes handles (the shader's `PER_THREAD`).
const PER_THREAD: usize = 8;
/// Values an element-wise workgroup covers.
const FLAT_GROUP: usize = 256 * PER_THREAD;
/// Fewest values a slice gets: four a reduction invocation, so the merge's work stays small
/// against the reading.
const MIN_PER_SLICE: usize = 1024;

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BnParams {
    /// Batch.
    pub n: u32,
    /// Channels.
    pub c: u32,
    /// H·W.
    pub hw: u32,
    /// 1: the batch's statistics (training); 0: the running ones.
    pub train: u32,
    /// ε.
    pub eps: f32,
    /// Running-average momentum.
    pub momentum: f32,
    /// Slices of each channel's values the reductions run over.
    pub slices: u32,
    /// Values per slice (the last may hold fewer).
    pub per: u32,
    /// 256 % H·W: positions a step of 256 values moves on.
    pub step_q: u32,
    /// (256 / H·W)·C·H·W + 256 % H·W: a channel walk's flat step of 256 values.
    pub step_i: u32,
    /// (C − 1)·H·W: what a channel walk adds when it crosses into the next image.
    pub wrap_i: u32,
    /// (256 / H·W) % C: channels a flat step of 256 moves on before the carry.
    pub step_c: u32,
}

/// Slices of a channel's N·H·W values the reductions run over: about four times
/// [`gemm::TARGET_WORKGROUPS`] workgroups over all channels, each slice at least
/// [`MIN_PER_SLICE`] values, at most 256 slices (the merge walks them one by one).
pub fn slices(s: &BnShape) -> usize {
    (4 * gemm::TARGET_WORKGROUPS)
        .div_ceil(s.c.max(1))
        .min(s.per_channel().div_ceil(MIN_PER_SLICE))
        .clamp(1, 256)
}

/// Slices a channel's values are cut into when `asked` are asked for: runs of
/// ⌈N·H·W / asked⌉ values, recounted so that none is empty (7 asked of 1,200 values give
/// runs of 172, 7 of them; 7 asked of 10 give runs of 2, 5 of them).
pub fn sliced(s: &BnShape, asked: usize) -> usize {
    let m = s.per_channel().max(1);
    m.div_ceil(m.div_ceil(asked.clamp(1, m)))
}

fn params(s: &BnShape, train: bool, slices: usize) -> Result<BnParams> {
    if s.is_empty() {
        return Err(GpuError::Invalid {
            op: "batchnorm",
            reason: format!("shape {s:?} has no values"),
        });
    }
    // The element-wise passes' last workgroup indexes up to a workgroup's span past the end.
    kernel::u32_of("batchnorm", s.len() + FLAT_GROUP)?;
    let m = s.per_channel();
    let per = m.div_ceil(slices.clamp(1, m));
    let (hw, c) = (s.hw, s.c);
    Ok(BnParams {
        n: s.n as u32,
        c: c as u32,
        hw: hw as u32,
        train: train as u32,
        eps: BN_EPS,
        momentum: BN_MOMENTUM,
        // Recounted so that no slice is empty.
        slices: m.div_ceil(per) as u32,
        per: per as u32,
        step_q: (256 % hw) as u32,
        step_i: ((256 / hw) * c * hw + 256 % hw) as u32,
        wrap_i: ((c - 1) * hw) as u32,
        step_c: ((256 / hw) % c) as u32,
    })
}

/// One dispatch of a batch-norm pass: its entry and workgroups.
#[derive(Clone, Copy, Debug)]
pub struct Dispatch {
    /// The entry point's name.
    pub entry: &'static str,
    /// Workgroups along x, y, z.
    pub groups: [u32; 3],
}

/// Which pass [`plan`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// Forward with the batch's statistics.
    Train,
    /// Forward with the running statistics.
    Eval,
    /// Backward with the input gradient (`dx`), or only dγ and dβ.
    Backward {
        /// Whether `dx` is written.
        dx: bool,
    },
}

static TRAIN: [&Entry; 3] = [&STATS, &MERGE, &NORMALISE];
static EVAL: [&Entry; 2] = [&EVAL_STATS, &NORMALISE];
static BACKWARD: [&Entry; 3] = [&GRAD_STATS, &GRAD_MERGE, &GRAD_INPUT];

fn entries(pass: Pass) -> &'static [&'static Entry] {
    match pass {
        Pass::Train => &TRAIN,
        Pass::Eval => &EVAL,
        Pass::Backward { dx: true } => &BACKWARD,
        Pass::Backward { dx: false } => &BACKWARD[..2],
    }
}

fn plan_with(s: &BnShape, pass: Pass, p: &BnParams, max_dim: u32) -> Result<Vec<(&'static Entry, [u32; 3])>> {
    let too_large = |size: usize| GpuError::TooLarge {
        op: "batchnorm",
        size: size as u64,
    };
    let per_channel = [s.c.div_ceil(256) as u32, 1, 1];
    // The element-wise grid folds x into y past the per-dimension limit (`kernel::grid_1d`).
    let flat = s.len().div_ceil(FLAT_GROUP);
    let fx = flat.clamp(1, max_dim.max(1) as usize);
    let fy = flat.div_ceil(fx);
    if fy > max_dim as usize || s.c > max_dim as usize || p.slices > max_dim {
        return Err(too_large(s.len()));
    }
    let flat = [fx as u32, fy as u32, 1];
    let sliced = [s.c as u32, p.slices, 1];
    Ok(entries(pass)
        .iter()
        .map(|&e| {
            let groups = match e.name {
                "stats" | "grad_stats" => sliced,
                "normalise" | "grad_input" => flat,
                _ => per_channel,
            };
            (e, groups)
        })
        .collect())
}

/// The dispatches of `pass` over `s` with the default [`slices`], on a device allowing
/// `max_dim` workgroups per dimension (recorded in this order by [`forward`] and [`backward`]).
pub fn plan(s: &BnShape, pass: Pass, max_dim: u32) -> Result<Vec<Dispatch>> {
    let p = params(s, pass == Pass::Train, slices(s))?;
    Ok(plan_with(s, pass, &p, max_dim)?
        .into_iter()
        .map(|(e, groups)| Dispatch {
            entry: e.name,
            groups,
        })
        .collect())
}

/// Records the dispatches of `pass`, each entry binding `views_of(entry)`.
fn record<'a>(
    rec: &mut Recorder<'_>,
    s: &BnShape,
    pass: Pass,
    u: &BnParams,
    views_of: impl Fn(&str) -> Vec<View<'a>>,
) -> Result<()> {
    let max_dim = rec.gpu().limits.max_compute_workgroups_per_dimension;
    for (entry, groups) in plan_with(s, pass, u, max_dim)? {
        let views = views_of(entry.name);
        rec.launch(&Launch::new(
            &SHADER,
            entry,
            bytemuck::bytes_of(u),
            &views,
            groups,
        ))?;
    }
    Ok(())
}

/// Whole views of `ops` (name, tensor, expected length), checked.
fn views<'a>(
    gpu: &super::Gpu,
    ops: &[(&'static str, &'a Tensor, usize)],
) -> Result<Vec<View<'a>>> {
    let mut out = Vec::with_capacity(ops.len());
    for &(name, t, want) in ops {
        kernel::expect_len("batchnorm", name, t, want)?;
        out.push(kernel::whole(gpu, "batchnorm", name, t)?);
    }
    Ok(out)
}

/// The slices' partials `[2, slices, C]`, a scratch buffer the passes of one op share.
fn partials(gpu: &super::Gpu, u: &BnParams) -> Result<wgpu::Buffer> {
    let bytes = 2 * u64::from(u.slices) * u64::from(u.c) * 4;
    if bytes > gpu.max_binding() {
        return Err(GpuError::BindingTooLarge {
            op: "batchnorm",
            tensor: "partials",
            bytes,
            limit: gpu.max_binding(),
        });
    }
    Ok(gpu.scratch_buffer("batchnorm.partials", bytes))
}

/// Record `y` from `x` `[N,C,H,W]` with `p` = (γ, β) and `running` = (mean, var), moving
/// the running statistics when `train`; `saved` `[2,C]` gets the mean and `1/√(var + ε)`.
pub fn forward(
    rec: &mut Recorder<'_>,
    s: &BnShape,
    train: bool,
    x: &Tensor,
    p: [&Tensor; 2],
    running: [&Tensor; 2],
    out: [&Tensor; 2],
) -> Result<()> {
    forward_sliced(rec, (s, slices(s)), train, x, p, running, out)
}

/// [`forward`] of shape `at.0` with the batch statistics reduced over `at.1` slices a channel
/// (tests).
pub fn forward_sliced(
    rec: &mut Recorder<'_>,
    at: (&BnShape, usize),
    train: bool,
    x: &Tensor,
    p: [&Tensor; 2],
    running: [&Tensor; 2],
    out: [&Tensor; 2],
) -> Result<()> {
    let (s, slices) = at;
    let gpu = rec.gpu();
    let u = params(s, train, slices)?;
    let (len, c) = (s.len(), s.c);
    let v = views(
        gpu,
        &[
            ("x", x, len),
            ("gamma", p[0], c),
            ("beta", p[1], c),
            ("running_mean", running[0], c),
            ("running_var", running[1], c),
            ("y", out[0], len),
            ("saved", out[1], 2 * c),
        ],
    )?;
    let pass = if train { Pass::Train } else { Pass::Eval };
    let scratch = if train { Some(partials(gpu, &u)?) } else { None };
    let part = scratch.as_ref().map(|b| View {
        buffer: b,
        offset: 0,
        size: 2 * u64::from(u.slices) * u64::from(u.c) * 4,
    });
    let [x, gamma, beta, mean, var, y, saved] = [v[0], v[1], v[2], v[3], v[4], v[5], v[6]];
    record(rec, s, pass, &u, |entry| match entry {
        "stats" => vec![x, part.expect("partials in training")],
        "merge" => vec![x, mean, var, saved, part.expect("partials in training")],
        "eval_stats" => vec![mean, var, saved],
        _ => vec![x, gamma, beta, y, saved],
    })
}

/// Record the gradients of [`forward`] run with `train`, from `t` = (x, dy) and
/// `st` = (γ, saved): `g` = (dγ, dβ), and `dx` when given.
pub fn backward(
    rec: &mut Recorder<'_>,
    s: &BnShape,
    train: bool,
    t: [&Tensor; 2],
    st: [&Tensor; 2],
    g: [&Tensor; 2],
    dx: Option<&Tensor>,
) -> Result<()> {
    backward_sliced(rec, (s, slices(s)), train, t, st, g, dx)
}

/// [`backward`] of shape `at.0` with the sums reduced over `at.1` slices a channel (tests).
pub fn backward_sliced(
    rec: &mut Recorder<'_>,
    at: (&BnShape, usize),
    train: bool,
    t: [&Tensor; 2],
    st: [&Tensor; 2],
    g: [&Tensor; 2],
    dx: Option<&Tensor>,
) -> Result<()> {
    let (s, slices) = at;
    let gpu = rec.gpu();
    let u = params(s, train, slices)?;
    let (len, c) = (s.len(), s.c);
    let mut ops = vec![
        ("x", t[0], len),
        ("dy", t[1], len),
        ("gamma", st[0], c),
        ("saved", st[1], 2 * c),
        ("dgamma", g[0], c),
        ("dbeta", g[1], c),
    ];
    if let Some(d) = dx {
        ops.push(("dx", d, len));
    }
    let v = views(gpu, &ops)?;
    let scratch = partials(gpu, &u)?;
    let part = View {
        buffer: &scratch,
        offset: 0,
        size: 2 * u64::from(u.slices) * u64::from(u.c) * 4,
    };
    let [x, dy, gamma, saved, dgamma, dbeta] = [v[0], v[1], v[2], v[3], v[4], v[5]];
    let pass = Pass::Backward { dx: dx.is_some() };
    record(rec, s, pass, &u, |entry| match entry {
        "grad_stats" => vec![x, dy, saved, part],
        "grad_merge" => vec![dgamma, dbeta, part],
        _ => vec![x, dy, gamma, saved, dgamma, dbeta, v[6]],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of WGSL function `name`, without comments.
    fn body(name: &str) -> String {
        let src = SHADER.source;
        let start = src
            .find(&format!("fn {name}("))
            .unwrap_or_else(|| panic!("no fn {name}"));
        let len = src[start..].find("\n}\n").expect("function end");
        src[start..start + len]
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_paper_layers_fill_a_large_gpu() {
        // bn1 after conv1 (96 × 55²) and bn2 after conv2 (256 × 27²) at batch 128: every pass
        // that reads the activations gets at least 1,024 workgroups (the old kernel had 96 and
        // 256, one a channel), on a device with the WebGPU default of 65,535 a dimension.
        for (c, hw) in [(96, 55 * 55), (256, 27 * 27)] {
            let s = BnShape { n: 128, c, hw };
            let passes = [
                Pass::Train,
                Pass::Eval,
                Pass::Backward { dx: true },
                Pass::Backward { dx: false },
            ];
            for pass in passes {
                let dispatches = plan(&s, pass, 65_535).unwrap();
                for d in &dispatches {
                    let n: u32 = d.groups.iter().product();
                    let reads = !matches!(d.entry, "merge" | "eval_stats" | "grad_merge");
                    if reads {
                        assert!(n >= 1024, "{s:?} {pass:?} {}: {n} workgroups", d.entry);
                    } else {
                        assert_eq!(n as usize, c.div_ceil(256), "{}", d.entry);
                    }
                }
                let names: Vec<_> = dispatches.iter().map(|d| d.entry).collect();
                let want: &[&str] = match pass {
                    Pass::Train => &["stats", "merge", "normalise"],
                    Pass::Eval => &["eval_stats", "normalise"],
                    Pass::Backward { dx: true } => &["grad_stats", "grad_merge", "grad_input"],
                    Pass::Backward { dx: false } => &["grad_stats", "grad_merge"],
                };
                assert_eq!(names, want);
            }
        }
    }

    #[test]
    fn large_element_wise_grids_fold_into_y() {
        // 2,048 values a workgroup; a limit of 100 along x puts the rest along y.
        let s = BnShape {
            n: 3,
            c: 7,
            hw: 10_000,
        };
        let g = plan(&s, Pass::Eval, 100).unwrap()[1].groups;
        assert_eq!(g[0], 100);
        assert!(g[0] as usize * g[1] as usize * FLAT_GROUP >= s.len());
        assert!(plan(&s, Pass::Eval, 2).is_err());
    }

    #[test]
    fn slices_are_recounted_so_none_is_empty() {
        let s = |n, hw| BnShape { n, c: 3, hw };
        assert_eq!(sliced(&s(4, 300), 7), 7);
        assert_eq!(sliced(&s(2, 5), 7), 5);
        assert_eq!(sliced(&s(2, 5), 1000), 10);
        assert_eq!(sliced(&s(1, 1), 3), 1);
        // The default gives each slice at least MIN_PER_SLICE values.
        assert_eq!(slices(&s(1, 300)), 1);
        assert_eq!(slices(&s(128, 55 * 55)), 256);
    }

    #[test]
    fn the_per_value_steps_do_not_divide() {
        // What the reductions' and the element-wise passes' loops call per value.
        for f in ["walk_next", "flat_next"] {
            let b = body(f);
            assert!(b.contains("+= p.step_q"), "{f}: not found whole:\n{b}");
            assert!(!b.contains('/') && !b.contains('%'), "{f} divides:\n{b}");
        }
    }
}
