//! Launcher for `shaders/gemm.wgsl`: tiled f32 GEMM in the three forms of a fully connected
//! layer (`y = x·Wᵀ + b`, `dX = dY·W`, `dW = dYᵀ·X`) plus the bias gradient. Operands larger
//! than one storage binding (fc6's 151 MB weight on lavapipe's 128 MiB limit) are split along
//! that operand's row dimension into chunks whose windows fit; a split of the reduction
//! dimension K accumulates the chunks.
use super::kernel::{self, Entry, Shader, Slot, View};
use super::{Gpu, GpuError, Result, Tensor};

/// The shader.
pub static SHADER: Shader = Shader {
    name: "gemm",
    source: include_str!("../../shaders/gemm.wgsl"),
    prelude: &[],
};
static FORWARD: Entry = Entry {
    name: "forward",
    slots: &[
        Slot::Uniform,
        Slot::Read,
        Slot::Read,
        Slot::ReadWrite,
        Slot::Read,
    ],
};
static BACKWARD_INPUT: Entry = Entry {
    name: "backward_input",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};
static BACKWARD_WEIGHT: Entry = Entry {
    name: "backward_weight",
    slots: &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
};
static BACKWARD_BIAS: Entry = Entry {
    name: "backward_bias",
    slots: &[Slot::Uniform, Slot::Read, Slot::Unused, Slot::ReadWrite],
};

/// The WGSL `Params` uniform.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GemmParams {
    /// Rows of C.
    pub m: u32,
    /// Columns of C.
    pub n: u32,
    /// Reduction length.
    pub k: u32,
    /// Bit 0: add bias; bit 1: accumulate into C.
    pub flags: u32,
    /// Element offset of A inside its binding.
    pub a_off: u32,
    /// Element offset of B inside its binding.
    pub b_off: u32,
    /// Element offset of C inside its binding.
    pub c_off: u32,
    /// Element offset of the bias inside its binding.
    pub bias_off: u32,
    /// Leading dimension (row stride) of A as stored.
    pub lda: u32,
    /// Leading dimension of B as stored.
    pub ldb: u32,
    /// Leading dimension of C.
    pub ldc: u32,
    /// Scale of the product (bias and the accumulated C are not scaled).
    pub alpha: f32,
}

/// Which product: the layout of A and B as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmForm {
    /// `C = A·Bᵀ`: A `[M,K]`, B `[N,K]` (linear forward).
    ABt,
    /// `C = A·B`: A `[M,K]`, B `[K,N]` (linear backward to the input).
    AB,
    /// `C = Aᵀ·B`: A `[K,M]`, B `[K,N]` (linear backward to the weight).
    AtB,
}

/// Workgroup tiling, passed to the shader as override constants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTiles {
    /// Threads along M (the tile has 4·wg_m rows).
    pub wg_m: u32,
    /// Threads along N (the tile has 4·wg_n columns).
    pub wg_n: u32,
    /// K step of the shared tiles.
    pub tile_k: u32,
}

impl Default for GemmTiles {
    /// 64×64 tiles, K step 16, 4×4 outputs per thread: measured to be the good choice on an H200.
    fn default() -> Self {
        GemmTiles {
            wg_m: 16,
            wg_n: 16,
            tile_k: 16,
        }
    }
}

/// One GEMM: `c[M,N] = alpha · op(a)·op(b) (+ bias[N]) (+ c)`. All tensors row-major and
/// dense (leading dimensions are the stored row lengths).
pub struct GemmArgs<'a> {
    /// The product's form.
    pub form: GemmForm,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Reduction length.
    pub k: usize,
    /// Left operand.
    pub a: &'a Tensor,
    /// Right operand.
    pub b: &'a Tensor,
    /// Output `[M,N]`.
    pub c: &'a Tensor,
    /// Bias `[N]`, added to every row (form [`GemmForm::ABt`] only).
    pub bias: Option<&'a Tensor>,
    /// Add to C instead of overwriting it (gradient accumulation).
    pub accumulate: bool,
    /// Scale of the product.
    pub alpha: f32,
}

struct Stored {
    rows: usize,
    cols: usize,
}

impl GemmArgs<'_> {
    fn a_stored(&self) -> Stored {
        match self.form {
            GemmForm::AtB => Stored {
                rows: self.k,
                cols: self.m,
            },
            _ => Stored {
                rows: self.m,
                cols: self.k,
            },
        }
    }
    fn b_stored(&self) -> Stored {
        match self.form {
            GemmForm::ABt => Stored {
                rows: self.n,
                cols: self.k,
            },
            _ => Stored {
                rows: self.k,
                cols: self.n,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    M,
    N,
    K,
}

/// One dispatch of a (possibly split) GEMM: the sub-problem and where its operands start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmChunk {
    /// Rows of C in this chunk.
    pub m: usize,
    /// Columns of C in this chunk.
    pub n: usize,
    /// Reduction length in this chunk.
    pub k: usize,
    /// First element of A used.
    pub a_start: usize,
    /// First element of B used.
    pub b_start: usize,
    /// First element of C written.
    pub c_start: usize,
    /// First element of the bias used.
    pub bias_start: usize,
    /// Whether this chunk adds to C (a later K chunk, or the caller asked to accumulate).
    pub accumulate: bool,
    /// Whether this chunk adds the bias (only the first K chunk does).
    pub add_bias: bool,
}

/// Elements spanned by a row-major `rows × cols` matrix with row length `ld`.
fn span(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// Split `args` into dispatches whose operand windows each fit `limit` bytes (plus the
/// `align` slack of an aligned window start). Public so tests can check the plan with small
/// limits.
pub fn plan(args: &GemmArgs<'_>, limit: u64, align: u64) -> Result<Vec<GemmChunk>> {
    let whole = GemmChunk {
        m: args.m,
        n: args.n,
        k: args.k,
        a_start: 0,
        b_start: 0,
        c_start: 0,
        bias_start: 0,
        accumulate: args.accumulate,
        add_bias: args.bias.is_some(),
    };
    let mut out = Vec::new();
    split(
        args.form,
        whole,
        (args.a_stored().cols, args.b_stored().cols, args.n),
        limit,
        align,
        &mut out,
    )?;
    Ok(out)
}

/// Recursive step of [`plan`]: split `p` along the row dimension of its largest operand that
/// does not fit, then split each piece again until every operand fits. `ld` = (lda, ldb, ldc).
fn split(
    form: GemmForm,
    p: GemmChunk,
    ld: (usize, usize, usize),
    limit: u64,
    align: u64,
    out: &mut Vec<GemmChunk>,
) -> Result<()> {
    let (ta, tb) = (form == GemmForm::AtB, form == GemmForm::ABt);
    let (a_rows, a_cols) = if ta { (p.k, p.m) } else { (p.m, p.k) };
    let (b_rows, b_cols) = if tb { (p.n, p.k) } else { (p.k, p.n) };
    let operands = [
        (
            span(a_rows, a_cols, ld.0),
            a_rows,
            ld.0,
            if ta { Dim::K } else { Dim::M },
            "a",
        ),
        (
            span(b_rows, b_cols, ld.1),
            b_rows,
            ld.1,
            if tb { Dim::N } else { Dim::K },
            "b",
        ),
        (span(p.m, p.n, ld.2), p.m, ld.2, Dim::M, "c"),
    ];
    let fits = |elems: usize| elems as u64 * 4 + align <= limit;
    let Some(&(elems, rows, row_len, dim, name)) =
        operands.iter().filter(|o| !fits(o.0)).max_by_key(|o| o.0)
    else {
        out.push(p);
        return Ok(());
    };
    if rows <= 1 {
        return Err(GpuError::BindingTooLarge {
            op: "gemm",
            tensor: name,
            bytes: elems as u64 * 4 + align,
            limit,
        });
    }
    let per_chunk = ((limit.saturating_sub(align) / 4) as usize / row_len).clamp(1, rows - 1);
    let mut d0 = 0;
    while d0 < rows {
        let r = per_chunk.min(rows - d0);
        let mut c = p;
        match dim {
            Dim::M => {
                c.m = r;
                c.a_start += if ta { d0 } else { d0 * ld.0 };
                c.c_start += d0 * ld.2;
            }
            Dim::N => {
                c.n = r;
                c.b_start += if tb { d0 * ld.1 } else { d0 };
                c.c_start += d0;
                c.bias_start += d0;
            }
            Dim::K => {
                c.k = r;
                c.a_start += if ta { d0 * ld.0 } else { d0 };
                c.b_start += if tb { d0 } else { d0 * ld.1 };
                c.accumulate = p.accumulate || d0 > 0;
                c.add_bias = p.add_bias && d0 == 0;
            }
        }
        split(form, c, ld, limit, align, out)?;
        d0 += r;
    }
    Ok(())
}

/// Record `args` into `encoder` with the default tiles.
pub fn record(gpu: &Gpu, encoder: &mut wgpu::CommandEncoder, args: &GemmArgs<'_>) -> Result<()> {
    record_with_tiles(gpu, encoder, args, GemmTiles::default())
}

/// Record `args` into `encoder` with explicit tiles (for tuning).
pub fn record_with_tiles(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    args: &GemmArgs<'_>,
    tiles: GemmTiles,
) -> Result<()> {
    let (sa, sb) = (args.a_stored(), args.b_stored());
    kernel::expect_len("gemm", "a", args.a, sa.rows * sa.cols)?;
    kernel::expect_len("gemm", "b", args.b, sb.rows * sb.cols)?;
    kernel::expect_len("gemm", "c", args.c, args.m * args.n)?;
    if let Some(bias) = args.bias {
        if args.form != GemmForm::ABt {
            return Err(GpuError::Invalid {
                op: "gemm",
                reason: "a fused bias needs the A·Bᵀ form".into(),
            });
        }
        kernel::expect_len("gemm", "bias", bias, args.n)?;
    }
    for t in [args.a, args.b, args.c] {
        kernel::u32_of("gemm", t.len)?;
    }
    let entry = match args.form {
        GemmForm::ABt => &FORWARD,
        GemmForm::AB => &BACKWARD_INPUT,
        GemmForm::AtB => &BACKWARD_WEIGHT,
    };
    let constants = [
        ("WG_M", f64::from(tiles.wg_m)),
        ("WG_N", f64::from(tiles.wg_n)),
        ("TILE_K", f64::from(tiles.tile_k)),
    ];
    let limit = gpu.max_binding();
    for ch in plan(args, limit, gpu.offset_alignment())? {
        let a_rows = if args.form == GemmForm::AtB {
            ch.k
        } else {
            ch.m
        };
        let a_cols = if args.form == GemmForm::AtB {
            ch.m
        } else {
            ch.k
        };
        let b_rows = if args.form == GemmForm::ABt {
            ch.n
        } else {
            ch.k
        };
        let b_cols = if args.form == GemmForm::ABt {
            ch.k
        } else {
            ch.n
        };
        let (va, a_off) = kernel::window(
            gpu,
            "gemm",
            "a",
            args.a,
            ch.a_start,
            span(a_rows, a_cols, sa.cols),
            limit,
        )?;
        let (vb, b_off) = kernel::window(
            gpu,
            "gemm",
            "b",
            args.b,
            ch.b_start,
            span(b_rows, b_cols, sb.cols),
            limit,
        )?;
        let (vc, c_off) = kernel::window(
            gpu,
            "gemm",
            "c",
            args.c,
            ch.c_start,
            span(ch.m, ch.n, args.n),
            limit,
        )?;
        let mut views: Vec<View<'_>> = vec![va, vb, vc];
        let mut bias_off = 0;
        if args.form == GemmForm::ABt {
            // The forward entry always declares the bias binding; bind C's window when unused.
            match args.bias {
                Some(bias) => {
                    let (vbias, off) =
                        kernel::window(gpu, "gemm", "bias", bias, ch.bias_start, ch.n, limit)?;
                    bias_off = off;
                    views.push(vbias);
                }
                None => views.push(va),
            }
        }
        let params = GemmParams {
            m: ch.m as u32,
            n: ch.n as u32,
            k: ch.k as u32,
            flags: u32::from(ch.add_bias) | (u32::from(ch.accumulate) << 1),
            a_off,
            b_off,
            c_off,
            bias_off,
            lda: sa.cols as u32,
            ldb: sb.cols as u32,
            ldc: args.n as u32,
            alpha: args.alpha,
        };
        let bm = 4 * tiles.wg_m as usize;
        let bn = 4 * tiles.wg_n as usize;
        let groups = [ch.n.div_ceil(bn) as u32, ch.m.div_ceil(bm) as u32, 1];
        kernel::record(
            gpu,
            encoder,
            &SHADER,
            entry,
            &constants,
            bytemuck::bytes_of(&params),
            &views,
            groups,
        )?;
    }
    Ok(())
}

/// Record `y[M,N] = x[M,K]·w[N,K]ᵀ + bias[N]` (a fully connected layer, PyTorch's weight layout).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    record(
        gpu,
        encoder,
        &GemmArgs {
            form: GemmForm::ABt,
            m,
            n,
            k,
            a: x,
            b: w,
            c: y,
            bias,
            accumulate: false,
            alpha: 1.0,
        },
    )
}

/// Record `dx[M,K] (+)= dy[M,N]·w[N,K]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_input(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    record(
        gpu,
        encoder,
        &GemmArgs {
            form: GemmForm::AB,
            m,
            n: k,
            k: n,
            a: dy,
            b: w,
            c: dx,
            bias: None,
            accumulate,
            alpha: 1.0,
        },
    )
}

/// Record `dw[N,K] (+)= dy[M,N]ᵀ·x[M,K]`.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_weight(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    dy: &Tensor,
    x: &Tensor,
    dw: &Tensor,
    m: usize,
    n: usize,
    k: usize,
    accumulate: bool,
) -> Result<()> {
    record(
        gpu,
        encoder,
        &GemmArgs {
            form: GemmForm::AtB,
            m: n,
            n: k,
            k: m,
            a: dy,
            b: x,
            c: dw,
            bias: None,
            accumulate,
            alpha: 1.0,
        },
    )
}

/// Record `db[N] (+)= Σ_m dy[m, n]` for `dy` `[M,N]`.
pub fn linear_backward_bias(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    dy: &Tensor,
    db: &Tensor,
    m: usize,
    n: usize,
    accumulate: bool,
) -> Result<()> {
    kernel::expect_len("gemm", "dy", dy, m * n)?;
    kernel::expect_len("gemm", "db", db, n)?;
    let params = GemmParams {
        m: kernel::u32_of("gemm", m)?,
        n: kernel::u32_of("gemm", n)?,
        flags: u32::from(accumulate) << 1,
        lda: n as u32,
        ldc: n as u32,
        alpha: 1.0,
        ..GemmParams::default()
    };
    let views = [
        kernel::whole(gpu, "gemm", "dy", dy)?,
        kernel::whole(gpu, "gemm", "db", db)?,
    ];
    let groups = [n.div_ceil(256) as u32, 1, 1];
    kernel::record(
        gpu,
        encoder,
        &SHADER,
        &BACKWARD_BIAS,
        &[],
        bytemuck::bytes_of(&params),
        &views,
        groups,
    )
}
