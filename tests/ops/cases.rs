//! The op cases, each written once over [`Backend`] and compared with the plain loops of
//! `alexnet::reference`: random inputs of awkward sizes (no tile multiples, batch 1 and 3,
//! groups 1 and 2, stride 4 with k 11, odd channel counts and maps). The shapes are the union
//! of what the WGSL kernel tests and the CPU engine's tests checked before the suite was
//! shared, plus the GPU self-test's cases (`alexnet::gpu::selftest`), which the tuner runs on
//! every tile it may choose.
use crate::engines::{close, same_bits, Engine, Tol};
use alexnet::backend::{Backend, Grad, MaskSeed, Pair, SgdHyper};
use alexnet::gpu::selftest;
use alexnet::reference::{self as r, random_tensor};
use alexnet::shape::{Activation, ConvShape, LinearShape, LrnParams, PoolShape};

/// A buffer on `e` holding `data`.
pub fn up<B: Backend>(e: &mut Engine<B>, data: &[f32], label: &str) -> B::Buf {
    let b = e.be.alloc(data.len(), label).unwrap();
    e.be.upload(&b, data).unwrap();
    b
}

/// A buffer of `len` NaNs on `e`: an op that leaves a value unwritten fails the comparison.
pub fn nans<B: Backend>(e: &mut Engine<B>, len: usize, label: &str) -> B::Buf {
    up(e, &vec![f32::NAN; len], label)
}

/// What `b` holds now.
pub fn down<B: Backend>(e: &mut Engine<B>, b: &B::Buf) -> Vec<f32> {
    e.be.download(b).unwrap()
}

/// Values away from ReLU's kink, so the activation's gradient is the same on both sides.
fn away_from_zero(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| if x.abs() < 1e-3 { x + 1e-2 } else { x })
        .collect()
}

/// A convolution shape from `[n, c_in, h, w, c_out, k, stride, pad, groups]`.
const fn conv_shape(d: [usize; 9]) -> ConvShape {
    let [n, c_in, h, w, c_out, k, stride, pad, groups] = d;
    ConvShape {
        n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride,
        pad,
        groups,
    }
}

/// Every convolution shape: `(n, c_in, h, w, c_out, k, stride, pad, groups)`.
const CONV_SHAPES: [ConvShape; 14] = [
    conv_shape([1, 3, 23, 23, 5, 11, 4, 0, 1]), // conv1's k11 stride 4, batch 1
    conv_shape([1, 3, 31, 31, 5, 11, 4, 0, 1]), // the same, a map of 31
    conv_shape([3, 3, 27, 31, 6, 11, 4, 0, 1]), // stride 4, non-square, batch 3
    conv_shape([3, 6, 9, 7, 10, 5, 1, 2, 2]),   // conv2's k5 pad 2, two groups
    conv_shape([3, 8, 5, 5, 6, 3, 1, 1, 2]),    // conv4/5's k3 pad 1, two groups
    conv_shape([2, 5, 6, 6, 7, 3, 1, 1, 1]),    // conv3's one group, odd channels
    conv_shape([3, 7, 6, 6, 67, 3, 1, 1, 1]),   // 67 output channels: rows past a tile
    conv_shape([3, 4, 7, 8, 6, 3, 2, 1, 2]),    // stride 2 with padding
    conv_shape([1, 4, 8, 9, 6, 3, 2, 1, 2]),    // the same, batch 1, odd width
    conv_shape([3, 2, 20, 20, 3, 3, 1, 1, 1]),  // 400 positions: one image a CPU chunk
    // The direct kernel covers 256 columns a workgroup: 969 output positions, 306 weight
    // columns (34·3·3) and 11 rows (not a multiple of its 8) leave partial workgroups.
    conv_shape([3, 34, 17, 19, 11, 3, 1, 1, 1]),
    // Output channels a group of 13, 27 and 40, input channels a group of 9, 20 and 5:
    // tile heights fitted to each, with rows past the end.
    conv_shape([2, 18, 11, 13, 26, 5, 2, 1, 2]),
    conv_shape([2, 40, 10, 12, 54, 3, 1, 1, 2]),
    conv_shape([2, 5, 9, 11, 40, 5, 2, 2, 1]),
];

/// Forward and backward of a convolution with each activation fused, on every shape; the
/// backward also without an input gradient (conv1), which must give the same weights'.
pub fn conv<B: Backend>(e: &mut Engine<B>) {
    let shapes = CONV_SHAPES.iter().chain(&selftest::CONV_CASES);
    let b = e.bounds;
    for (si, s) in shapes.enumerate() {
        let seed = si as u32 * 10;
        let x = random_tensor(seed + 1, s.input_len(), 1.0);
        let w = random_tensor(seed + 2, s.weight_len(), 0.2);
        let bias = random_tensor(seed + 3, s.c_out, 0.5);
        let g = random_tensor(seed + 4, s.output_len(), 1.0);
        let (tx, tw, tb) = (up(e, &x, "t.x"), up(e, &w, "t.w"), up(e, &bias, "t.b"));
        for act in [Activation::Relu, Activation::Tanh] {
            let pre = r::conv2d_forward(s, &x, &w, &bias);
            let want_y = r::activation_forward(act, &pre);
            let want_dpre = r::activation_backward(act, &g, &want_y);
            let want_dx = r::conv2d_backward_input(s, &want_dpre, &w);
            let (want_dw, want_db) = r::conv2d_backward_weight(s, &want_dpre, &x);
            let name = format!("{}: conv {s:?} {act:?}", e.name);

            let ty = nans(e, s.output_len(), "t.y");
            let p = Pair { w: &tw, b: &tb };
            e.be.conv_forward(s, act, &tx, p, &ty).unwrap();
            close(&format!("{name} y"), &down(e, &ty), &want_y, b.conv);

            let (tdy, tdx) = (up(e, &g, "t.dy"), nans(e, x.len(), "t.dx"));
            let (tdw, tdb) = (nans(e, w.len(), "t.dw"), nans(e, s.c_out, "t.db"));
            let t = Grad {
                x: &tx,
                y: &ty,
                dy: &tdy,
                dx: Some(&tdx),
            };
            e.be.conv_backward(s, act, t, &tw, Pair { w: &tdw, b: &tdb })
                .unwrap();
            let dw = down(e, &tdw);
            close(&format!("{name} dw"), &dw, &want_dw, b.conv_dw);
            close(&format!("{name} db"), &down(e, &tdb), &want_db, b.conv_db);
            close(&format!("{name} dx"), &down(e, &tdx), &want_dx, b.conv);

            // Without an input gradient (conv1): the same weight gradients.
            let (tdy, tdw2) = (up(e, &g, "t.dy"), nans(e, w.len(), "t.dw2"));
            let t = Grad {
                x: &tx,
                y: &ty,
                dy: &tdy,
                dx: None,
            };
            e.be.conv_backward(s, act, t, &tw, Pair { w: &tdw2, b: &tdb })
                .unwrap();
            same_bits(&format!("{name} dw without dx"), &down(e, &tdw2), &dw);
        }
    }
}

/// Forward and backward of a fully connected layer, with each activation and none (fc8).
pub fn linear<B: Backend>(e: &mut Engine<B>) {
    let b = e.bounds;
    let shapes = [
        (1, 7, 5),
        (1, 5, 7),
        (3, 33, 70),
        (3, 130, 67),
        (5, 300, 257),
        (64, 64, 256),
    ]
    .into_iter()
    .chain([(130, 37, 131)])
    // The self-test's `(m, n, k)` are (batch, fout, fin).
    .chain(selftest::GEMM_CASES.map(|(m, n, k)| (m, k, n)));
    for (i, (n, fin, fout)) in shapes.enumerate() {
        let s = LinearShape { n, fin, fout };
        let seed = i as u32 * 10;
        let x = away_from_zero(random_tensor(seed + 1, n * fin, 1.0));
        let w = random_tensor(seed + 2, fout * fin, 0.1);
        let bias = random_tensor(seed + 3, fout, 0.5);
        let g = random_tensor(seed + 4, n * fout, 1.0);
        let (tx, tw, tb) = (up(e, &x, "t.x"), up(e, &w, "t.w"), up(e, &bias, "t.b"));
        for act in [None, Some(Activation::Relu), Some(Activation::Tanh)] {
            let pre = r::linear_forward(&s, &x, &w, &bias);
            let want_y = match act {
                Some(a) => r::activation_forward(a, &pre),
                None => pre,
            };
            let dpre = match act {
                Some(a) => r::activation_backward(a, &g, &want_y),
                None => g.clone(),
            };
            let (want_dx, want_dw, want_db) = r::linear_backward(&s, &dpre, &x, &w);
            let name = format!("{}: linear {s:?} {act:?}", e.name);

            let ty = nans(e, n * fout, "t.y");
            e.be.linear_forward(&s, act, &tx, Pair { w: &tw, b: &tb }, &ty)
                .unwrap();
            close(&format!("{name} y"), &down(e, &ty), &want_y, b.linear);

            let (tdy, tdx) = (up(e, &g, "t.dy"), nans(e, x.len(), "t.dx"));
            let (tdw, tdb) = (nans(e, w.len(), "t.dw"), nans(e, fout, "t.db"));
            let t = Grad {
                x: &tx,
                y: &ty,
                dy: &tdy,
                dx: Some(&tdx),
            };
            e.be.linear_backward(&s, act, t, &tw, Pair { w: &tdw, b: &tdb })
                .unwrap();
            close(&format!("{name} dw"), &down(e, &tdw), &want_dw, b.linear);
            close(&format!("{name} db"), &down(e, &tdb), &want_db, b.linear);
            close(&format!("{name} dx"), &down(e, &tdx), &want_dx, b.linear);
        }
    }
}

/// Cross-channel LRN with the paper's constants and others, on maps where the
/// normalisation bites (std 20 and 30 put α·Σa² near k) and with fewer channels than the
/// window.
pub fn lrn<B: Backend>(e: &mut Engine<B>) {
    let b = e.bounds;
    let strong = LrnParams {
        size: 5,
        k: 2.0,
        alpha: 0.5,
        beta: 0.75,
    };
    let odd = LrnParams {
        size: 3,
        k: 1.0,
        alpha: 0.2,
        beta: 0.6,
    };
    let paper = LrnParams::default();
    for (i, (p, dims, std)) in [
        (paper, [1, 7, 3, 5], 20.0),
        (paper, [1, 7, 3, 5], 1.0),
        (paper, [3, 2, 4, 3], 1.0),
        (paper, [2, 9, 5, 5], 30.0),
        (strong, [3, 13, 4, 4], 1.5),
        (odd, [3, 4, 5, 3], 1.0),
        (strong, [2, 2, 3, 3], 1.0), // fewer channels than the window
    ]
    .into_iter()
    .enumerate()
    {
        let [n, c, h, w] = dims;
        let x = random_tensor(i as u32 + 1, n * c * h * w, std);
        let g = random_tensor(i as u32 + 50, x.len(), 1.0);
        let want_y = r::lrn_forward(&p, n, c, h, w, &x);
        let want_dx = r::lrn_backward(&p, n, c, h, w, &x, &g);
        let name = format!("{}: lrn {dims:?} std {std} {p:?}", e.name);
        let tx = up(e, &x, "t.x");
        let (ty, ts) = (nans(e, x.len(), "t.y"), nans(e, x.len(), "t.scale"));
        e.be.lrn_forward(&p, dims, &tx, &ty, &ts).unwrap();
        close(&format!("{name} y"), &down(e, &ty), &want_y, b.lrn_y);
        let (tdy, tdx) = (up(e, &g, "t.dy"), nans(e, x.len(), "t.dx"));
        let t = Grad {
            x: &tx,
            y: &ty,
            dy: &tdy,
            dx: Some(&tdx),
        };
        e.be.lrn_backward(&p, dims, t, &ts).unwrap();
        close(&format!("{name} dx"), &down(e, &tdx), &want_dx, b.lrn_dx);
    }
}

/// Overlapping and non-overlapping max pooling on ReLU-like values with many ties: the
/// output is exact, the gradient goes to each window's first maximum.
pub fn maxpool<B: Backend>(e: &mut Engine<B>) {
    let pool = |n, c, h, w, k, stride| PoolShape {
        n,
        c,
        h,
        w,
        k,
        stride,
    };
    for (i, s) in [
        pool(1, 3, 7, 9, 3, 2),
        pool(3, 17, 8, 8, 3, 2),
        pool(3, 2, 13, 13, 3, 2),
        pool(3, 5, 6, 5, 2, 2),
        pool(2, 1, 6, 7, 2, 2),
        pool(2, 4, 15, 15, 3, 2),
        pool(1, 2, 8, 8, 3, 1),
    ]
    .iter()
    .enumerate()
    {
        // ReLU'd and coarsely rounded: many equal values, as the network's pools see.
        let x: Vec<f32> = random_tensor(i as u32 + 1, s.input_len(), 2.0)
            .into_iter()
            .map(|v| (v.max(0.0) * 2.0).round() / 2.0)
            .collect();
        let g = random_tensor(i as u32 + 9, s.output_len(), 1.0);
        let name = format!("{}: maxpool {s:?}", e.name);
        let tx = up(e, &x, "t.x");
        let ty = nans(e, s.output_len(), "t.y");
        let saved = e.be.pool_saved(s).unwrap();
        e.be.maxpool_forward(s, &tx, &ty, saved.as_ref()).unwrap();
        let y = down(e, &ty);
        close(
            &format!("{name} y"),
            &y,
            &r::maxpool_forward(s, &x),
            Tol::EXACT,
        );
        let (tdy, tdx) = (up(e, &g, "t.dy"), nans(e, s.input_len(), "t.dx"));
        let t = Grad {
            x: &tx,
            y: &ty,
            dy: &tdy,
            dx: Some(&tdx),
        };
        e.be.maxpool_backward(s, t, saved.as_ref()).unwrap();
        let want_dx = r::maxpool_backward(s, &x, &g);
        close(
            &format!("{name} dx"),
            &down(e, &tdx),
            &want_dx,
            e.bounds.pool_dx,
        );
    }
}

/// Inverted dropout's mask, the reference's to the bit, in both seed slots; the same call
/// masks a gradient.
pub fn dropout<B: Backend>(e: &mut Engine<B>) {
    for len in [5003, 40_000] {
        let x = random_tensor(len as u32, len, 1.0);
        for (i, (p, seed)) in [
            (0.5, 7u32),
            (0.3, 123),
            (0.1, 12345),
            (1.0, 5),
            (0.0, 9),
            (0.0, 3),
        ]
        .into_iter()
        .enumerate()
        {
            let name = format!("{}: dropout len {len} p {p} seed {seed}", e.name);
            let mask = MaskSeed {
                slot: i as u32 % 2,
                seed,
                offset: 0,
            };
            let t = up(e, &x, "t.x");
            if let Err(err) = e.be.dropout(p, mask, &t) {
                // Scaling by 1/(1 − p) is undefined at p = 1: an engine may refuse it (the
                // GPU's does, as the config does), saying why; the others drop every unit.
                let err = err.to_string();
                assert!(p == 1.0 && err.contains("probability 1"), "{name}: {err}");
                continue;
            }
            let want = r::dropout_forward(p, seed, &x);
            same_bits(&format!("{name} forward"), &down(e, &t), &want);
            e.be.dropout(p, mask, &t).unwrap();
            let want2 = r::dropout_backward(p, seed, &want);
            same_bits(&format!("{name} as a gradient"), &down(e, &t), &want2);
        }
    }
    // A data-parallel replica's rows 3..8 of an [8, 37] batch: masked as those elements of
    // the whole batch's mask, on every engine.
    let (whole, first) = (random_tensor(77, 8 * 37, 1.0), 3 * 37);
    let mask = MaskSeed {
        slot: 0,
        seed: 99,
        offset: first as u32,
    };
    let t = up(e, &whole[first..], "t.part");
    e.be.dropout(0.5, mask, &t).unwrap();
    let want = r::dropout_forward(0.5, 99, &whole)[first..].to_vec();
    let name = format!("{}: dropout at offset {first}", e.name);
    same_bits(&name, &down(e, &t), &want);
    let kept = r::dropout_forward(0.5, 7, &vec![1.0; 5003])
        .iter()
        .filter(|v| **v != 0.0)
        .count();
    assert!((2300..2700).contains(&kept), "p=0.5 kept {kept} of 5003");
}

/// Per-image loss and top-1/top-5 hits, and the gradient to the logits: a tie with the
/// label's logit counts for the label; logits of 1000 do not overflow.
pub fn softmax_xent<B: Backend>(e: &mut Engine<B>) {
    let b = e.bounds;
    for (i, &(n, k)) in [(7, 13), (1, 10), (3, 1000), (5, 7)].iter().enumerate() {
        let mut logits = random_tensor(3 + i as u32, n * k, 3.0);
        let labels: Vec<i32> = if (n, k) == (7, 13) {
            // A tie with the label's logit counts for the label, as reference::topk_correct.
            logits[k + 2] = logits[k + 5];
            vec![0, 5, 12, 3, 3, 1, 7]
        } else {
            (0..n).map(|j| ((j * 7919 + 3) % k) as i32).collect()
        };
        let name = format!("{}: softmax_xent n {n} classes {k}", e.name);
        let (want_loss, want_d) = r::softmax_cross_entropy(n, k, &logits, &labels);
        let tz = up(e, &logits, "t.logits");
        let tl = e.be.alloc(n, "t.labels").unwrap();
        e.be.upload_labels(&tl, &labels).unwrap();
        let ts = nans(e, n * 3, "t.stats");
        e.be.softmax_xent_forward(k, &tz, &tl, &ts).unwrap();
        let stats = down(e, &ts);
        let sum = |c: usize| stats.chunks_exact(3).map(|s| s[c]).sum::<f32>();
        let loss = sum(0) / n as f32;
        let tol = b.loss;
        assert!(
            (loss - want_loss).abs() <= tol.abs + tol.rel * want_loss.abs(),
            "{name}: loss {loss} vs {want_loss}"
        );
        let (top1, top5) = (sum(1) as usize, sum(2) as usize);
        assert_eq!(top1, r::topk_correct(n, k, &logits, &labels, 1), "{name}");
        assert_eq!(top5, r::topk_correct(n, k, &logits, &labels, 5), "{name}");
        if i == 0 {
            assert!(top1 < top5 && top5 < n, "{name}: top-1 {top1} top-5 {top5}");
        }
        let td = nans(e, n * k, "t.dlogits");
        e.be.softmax_xent_backward(k, &tz, &tl, &td).unwrap();
        close(
            &format!("{name} dlogits"),
            &down(e, &td),
            &want_d,
            b.dlogits,
        );
    }
    let tz = up(e, &[1000.0, 0.0], "t.logits");
    let tl = e.be.alloc(1, "t.labels").unwrap();
    e.be.upload_labels(&tl, &[1]).unwrap();
    let ts = nans(e, 3, "t.stats");
    e.be.softmax_xent_forward(2, &tz, &tl, &ts).unwrap();
    let got = down(e, &ts);
    let want = [1000.0, 0.0, 1.0];
    let name = format!("{}: softmax_xent large logits", e.name);
    close(&name, &got, &want, Tol::abs_rel(1e-3, 1e-6));
}

/// Two steps of the paper's update (so momentum matters), on a tensor of odd length.
pub fn sgd<B: Backend>(e: &mut Engine<B>) {
    let h = SgdHyper {
        lr: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    for len in [777, 50_001] {
        let w0 = random_tensor(len as u32 + 1, len, 0.1);
        let v0 = random_tensor(len as u32 + 2, len, 0.01);
        let g = random_tensor(len as u32 + 3, len, 1.0);
        let (tw, tv, tg) = (up(e, &w0, "t.w"), up(e, &v0, "t.v"), up(e, &g, "t.g"));
        let (mut w, mut v) = (w0, v0);
        for _ in 0..2 {
            e.be.sgd(h, &tw, &tv, &tg).unwrap();
            r::sgd_update(&mut w, &mut v, &g, h.lr, h.momentum, h.weight_decay);
        }
        let name = format!("{}: sgd len {len}", e.name);
        close(&format!("{name} w"), &down(e, &tw), &w, e.bounds.sgd);
        close(&format!("{name} v"), &down(e, &tv), &v, e.bounds.sgd);
    }
}

/// `copy` moves every value.
pub fn copy<B: Backend>(e: &mut Engine<B>) {
    let x = random_tensor(5, 1001, 1.0);
    let (src, dst) = (up(e, &x, "t.src"), nans(e, x.len(), "t.dst"));
    e.be.copy(&src, &dst).unwrap();
    same_bits(&format!("{}: copy", e.name), &down(e, &dst), &x);
}
