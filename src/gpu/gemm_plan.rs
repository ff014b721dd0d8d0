//! How one GEMM is cut into dispatches whose operand windows each fit one storage binding
//! (fc6's 151 MB weight on lavapipe's 128 MiB limit): [`plan`] splits along the row dimension
//! of the largest operand that does not fit, recursively; a split of the reduction dimension
//! K accumulates the chunks, and only the first adds the bias.
use super::gemm::{GemmArgs, GemmForm};
use super::{GpuError, Result};

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
pub(crate) fn span(rows: usize, cols: usize, ld: usize) -> usize {
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
