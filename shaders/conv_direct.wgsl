// conv_direct.wgsl: the convolution of conv.wgsl (same layouts, entry names, and Params and
// bindings from conv_common.wgsl, prepended) written for CPU adapters such as lavapipe. There, a workgroup runs as SIMD lanes on
// one core, workgroup memory and barriers are plain memory and coroutine switches, and the
// core's caches already do what the shared tiles do on a GPU; integer division is scalar.
// So each invocation reads its operands straight from the storage buffers, walks the
// reduction with nested loops (no division inside them) and keeps TM × TN sums in registers.
// Measured on a 2-core EPYC through lavapipe: the quickstart model's convolutions ran 1.7–9×
// faster than conv.wgsl's and a whole training step 3.2× (benches/engine.rs, step.rs). On a
// GPU conv.wgsl is the one used.
//
//   forward          y[b, g·Cog + m, oy, ox]  = act(bias + Σ_{ci,kh,kw} w · x)
//   backward_input   dX[b, g·Cig + m, iy, ix] = Σ_{co,kh,kw} w · dY (where the output exists)
//   backward_weight  dW[g·Cog + m, (ci,kh,kw)] (+)= Σ_{b,oy,ox} dY · x
//
// Rows (m: an output channel, or an input channel for backward_input) are TM per invocation;
// columns (output positions, input positions, or (ci, kh, kw) weights) are TN per invocation,
// WG apart so that neighbouring lanes read neighbouring addresses.
// Dispatch: (ceil(columns / (WG·TN)), ceil(rows / TM), G) and, for backward_weight,
// z = G·splits: split s sums over its own range of the batch; with splits > 1 the partial
// sums go to `out` = scratch [splits, C_out·Cig·k·k] and conv_sums.wgsl's reduce_splits adds them.

const WG: u32 = 64u;
const TM: u32 = 8u;
const TN: u32 = 4u;

fn column(wid_x: u32, j: u32, lidx: u32) -> u32 {
    return wid_x * WG * TN + j * WG + lidx;
}

// The output coordinate t / stride when the division is exact, else -1. Stride 1 (every
// layer but conv1) skips the scalar division.
fn exact_div(t: i32) -> i32 {
    if t < 0 {
        return -1;
    }
    if p.stride == 1u {
        return t;
    }
    let s = i32(p.stride);
    if t % s != 0 {
        return -1;
    }
    return t / s;
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let g = wid.z;
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let k2 = p.k * p.k;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let cols = p.n * ohw;
    let m0 = wid.y * TM;
    // Each column's receptive field: x[b, g·Cig, y0.., x0..]. Columns past the end repeat the
    // last one and are not stored.
    var base: array<u32, TN>;
    var y0: array<i32, TN>;
    var x0: array<i32, TN>;
    for (var j = 0u; j < TN; j++) {
        let col = min(column(wid.x, j, lidx), cols - 1u);
        let b = col / ohw;
        let q = col % ohw;
        base[j] = (b * p.c_in + g * cig) * hw;
        y0[j] = i32((q / p.ow) * p.stride) - i32(p.pad);
        x0[j] = i32((q % p.ow) * p.stride) - i32(p.pad);
    }
    var wrow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        wrow[i] = (g * cog + min(m0 + i, cog - 1u)) * cig * k2;
    }
    var acc: array<vec4<f32>, TM>;
    var r = 0u;
    for (var ci = 0u; ci < cig; ci++) {
        for (var kh = 0u; kh < p.k; kh++) {
            for (var kw = 0u; kw < p.k; kw++) {
                var xv = vec4<f32>(0.0);
                for (var j = 0u; j < TN; j++) {
                    let iy = y0[j] + i32(kh);
                    let ix = x0[j] + i32(kw);
                    if iy >= 0 && ix >= 0 && iy < i32(p.h) && ix < i32(p.w) {
                        xv[j] = mat_b[base[j] + ci * hw + u32(iy) * p.w + u32(ix)];
                    }
                }
                for (var i = 0u; i < TM; i++) {
                    acc[i] += mat_a[wrow[i] + r] * xv;
                }
                r++;
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        let m = m0 + i;
        if m >= cog {
            break;
        }
        let co = g * cog + m;
        for (var j = 0u; j < TN; j++) {
            let col = column(wid.x, j, lidx);
            if col < cols {
                let b = col / ohw;
                let q = col % ohw;
                out[(b * p.c_out + co) * ohw + q] = activate(acc[i][j] + bias[co]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let g = wid.z;
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let k2 = p.k * p.k;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let cols = p.n * hw;
    let m0 = wid.y * TM;
    // Each column (b, iy, ix) reads dY[b, g·Cog + co, (iy + pad − kh)/s, (ix + pad − kw)/s].
    var base: array<u32, TN>;
    var ty: array<i32, TN>;
    var tx: array<i32, TN>;
    for (var j = 0u; j < TN; j++) {
        let col = min(column(wid.x, j, lidx), cols - 1u);
        let b = col / hw;
        let q = col % hw;
        base[j] = (b * p.c_out + g * cog) * ohw;
        ty[j] = i32(q / p.w + p.pad);
        tx[j] = i32(q % p.w + p.pad);
    }
    var wrow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        wrow[i] = min(m0 + i, cig - 1u) * k2;
    }
    var acc: array<vec4<f32>, TM>;
    for (var kh = 0u; kh < p.k; kh++) {
        var oy: array<i32, TN>;
        for (var j = 0u; j < TN; j++) {
            oy[j] = exact_div(ty[j] - i32(kh));
            if oy[j] >= i32(p.oh) {
                oy[j] = -1;
            }
        }
        for (var kw = 0u; kw < p.k; kw++) {
            // Where each column reads within a dY channel, or −1 for no output there.
            var at: array<i32, TN>;
            for (var j = 0u; j < TN; j++) {
                let ox = exact_div(tx[j] - i32(kw));
                at[j] = -1;
                if oy[j] >= 0 && ox >= 0 && ox < i32(p.ow) {
                    at[j] = oy[j] * i32(p.ow) + ox;
                }
            }
            let r = kh * p.k + kw;
            for (var co = 0u; co < cog; co++) {
                var dv = vec4<f32>(0.0);
                for (var j = 0u; j < TN; j++) {
                    if at[j] >= 0 {
                        dv[j] = mat_b[base[j] + co * ohw + u32(at[j])];
                    }
                }
                let wco = (g * cog + co) * cig * k2 + r;
                for (var i = 0u; i < TM; i++) {
                    acc[i] += mat_a[wco + wrow[i]] * dv;
                }
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        let m = m0 + i;
        if m >= cig {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = column(wid.x, j, lidx);
            if col < cols {
                let b = col / hw;
                let q = col % hw;
                accumulate_store((b * p.c_in + g * cig + m) * hw + q, acc[i][j]);
            }
        }
    }
}

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lidx: u32) {
    let g = wid.z / p.splits;
    let split = wid.z % p.splits;
    let cig = p.c_in / p.groups;
    let cog = p.c_out / p.groups;
    let k2 = p.k * p.k;
    let hw = p.h * p.w;
    let ohw = p.oh * p.ow;
    let cols = cig * k2;
    let m0 = wid.y * TM;
    // Each column (ci, kh, kw) reads x[b, g·Cig + ci, oy·s + kh − pad, ox·s + kw − pad].
    var base: array<u32, TN>;
    var offy: array<i32, TN>;
    var offx: array<i32, TN>;
    for (var j = 0u; j < TN; j++) {
        let col = min(column(wid.x, j, lidx), cols - 1u);
        let ci = col / k2;
        let r = col % k2;
        base[j] = (g * cig + ci) * hw;
        offy[j] = i32(r / p.k) - i32(p.pad);
        offx[j] = i32(r % p.k) - i32(p.pad);
    }
    var drow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        drow[i] = (g * cog + min(m0 + i, cog - 1u)) * ohw;
    }
    let per = (p.n + p.splits - 1u) / p.splits;
    let b_begin = min(split * per, p.n);
    let b_end = min(b_begin + per, p.n);
    var acc: array<vec4<f32>, TM>;
    for (var b = b_begin; b < b_end; b++) {
        let xb = b * p.c_in * hw;
        let db = b * p.c_out * ohw;
        for (var oy = 0u; oy < p.oh; oy++) {
            var row: array<i32, TN>;
            for (var j = 0u; j < TN; j++) {
                row[j] = i32(oy * p.stride) + offy[j];
            }
            for (var ox = 0u; ox < p.ow; ox++) {
                var xv = vec4<f32>(0.0);
                for (var j = 0u; j < TN; j++) {
                    let ix = i32(ox * p.stride) + offx[j];
                    if row[j] >= 0 && ix >= 0 && row[j] < i32(p.h) && ix < i32(p.w) {
                        xv[j] = mat_b[xb + base[j] + u32(row[j]) * p.w + u32(ix)];
                    }
                }
                let q = db + oy * p.ow + ox;
                for (var i = 0u; i < TM; i++) {
                    acc[i] += mat_a[q + drow[i]] * xv;
                }
            }
        }
    }
    let weight_len = p.c_out * cols;
    for (var i = 0u; i < TM; i++) {
        let m = m0 + i;
        if m >= cog {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let col = column(wid.x, j, lidx);
            if col < cols {
                let idx = (g * cog + m) * cols + col;
                if p.splits == 1u {
                    accumulate_store(idx, acc[i][j]);
                } else {
                    out[split * weight_len + idx] = acc[i][j];
                }
            }
        }
    }
}
