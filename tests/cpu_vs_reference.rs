//! The CPU engine (`alexnet::cpu`) against the plain reference (`alexnet::reference`), as the
//! WGSL kernels are checked in `tests/kernels.rs`: every op forward and backward on random
//! inputs of awkward sizes (batch 1 and 3, groups 1 and 2, stride 4 with k 11, odd channel
//! counts and maps, 1 to 3 workers so every chunking path runs), then the whole network
//! (activations, loss, every gradient, SGD steps) on small variants.
//!
//! Tolerances are relative to each tensor's largest value: f32 products against an
//! f64-accumulating reference differ by rounding (~1e-6); a wrong index, a missing term or a
//! wrong window is off by the size of the values themselves. Element-wise ops with one
//! rounding (dropout, SGD, augmentation) must agree to the bit.
use alexnet::cpu::conv::{conv_backward, conv_forward, ConvPlan, ConvScratch};
use alexnet::cpu::dropout::dropout_in_place;
use alexnet::cpu::linear::{linear_backward, linear_forward};
use alexnet::cpu::lrn::{lrn_backward, lrn_forward};
use alexnet::cpu::maxpool::{maxpool_backward, maxpool_forward};
use alexnet::cpu::sgd::sgd_step;
use alexnet::cpu::softmax::{softmax_xent_backward, softmax_xent_forward};
use alexnet::cpu::{CpuDevice, HostInput};
use alexnet::gpu::sgd::SgdHyper;
use alexnet::model::reference::{network_loss_and_grads, network_sgd_step, TrainMode};
use alexnet::model::CpuNetwork;
use alexnet::model::{dropout_seed, Dropout, Init, ModelConfig, Params};
use alexnet::reference::{self as r, check_close, random_tensor};
use alexnet::shape::{
    Activation, AugmentDraw, AugmentShape, ConvShape, LinearShape, LrnParams, PoolShape,
};

/// Fails when `got` differs from `want` by more than `rel` of the tensor's largest value (or
/// `rel` relative to the element).
#[track_caller]
fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    if let Err(e) = check_close(name, got, want, rel * scale, rel) {
        panic!("{e} (tensor max |value| {scale:e})");
    }
    assert!(
        scale > 1e-6,
        "{name}: the reference is all zeros; the case tests nothing"
    );
}

fn pool(threads: usize) -> CpuDevice {
    CpuDevice::new(threads).expect("a rayon pool")
}

/// Values away from ReLU's kink, so the activation's gradient is the same on both sides.
fn away_from_zero(v: Vec<f32>) -> Vec<f32> {
    v.into_iter()
        .map(|x| if x.abs() < 1e-3 { x + 1e-2 } else { x })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> ConvShape {
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

#[test]
fn conv_forward_and_backward_awkward_shapes() {
    let shapes = [
        conv(1, 3, 23, 23, 5, 11, 4, 0, 1), // conv1's k11 stride 4, batch 1
        conv(3, 3, 27, 31, 6, 11, 4, 0, 1), // stride 4, non-square, batch 3
        conv(3, 6, 9, 7, 10, 5, 1, 2, 2),   // conv2's k5 pad 2, two groups
        conv(3, 8, 5, 5, 6, 3, 1, 1, 2),    // conv4/5's k3 pad 1, two groups
        conv(2, 5, 6, 6, 7, 3, 1, 1, 1),    // conv3's one group, odd channels
        conv(3, 4, 7, 8, 6, 3, 2, 1, 2),    // stride 2 with padding
        conv(3, 2, 20, 20, 3, 3, 1, 1, 1),  // 400 positions: one image a chunk, direct writes
    ];
    for (si, s) in shapes.iter().enumerate() {
        let seed = si as u32 * 10;
        let x = random_tensor(seed + 1, s.input_len(), 1.0);
        let w = random_tensor(seed + 2, s.weight_len(), 0.2);
        let b = random_tensor(seed + 3, s.c_out, 0.5);
        for act in [Activation::Relu, Activation::Tanh] {
            let pre = r::conv2d_forward(s, &x, &w, &b);
            let want_y = r::activation_forward(act, &pre);
            let g = random_tensor(seed + 4, s.output_len(), 1.0);
            let want_dpre = r::activation_backward(act, &g, &want_y);
            let want_dx = r::conv2d_backward_input(s, &want_dpre, &w);
            let (want_dw, want_db) = r::conv2d_backward_weight(s, &want_dpre, &x);
            for workers in [1, 2, 3] {
                let dev = pool(workers);
                let plan = ConvPlan::new(s, workers);
                let mut scratch = vec![ConvScratch::default(); workers];
                scratch.iter_mut().for_each(|sc| sc.fit(s, &plan));
                let name = format!("conv {s:?} {act:?} x{workers}");
                let mut y = vec![f32::NAN; s.output_len()];
                dev.install(|| conv_forward(s, &plan, act, &x, &w, &b, &mut y, &mut scratch));
                close(&format!("{name} y"), &y, &want_y, 2e-5);
                let mut dy = g.clone();
                let (mut dw, mut db) = (vec![f32::NAN; w.len()], vec![f32::NAN; s.c_out]);
                let mut dx = vec![f32::NAN; x.len()];
                dev.install(|| {
                    conv_backward(
                        s,
                        &plan,
                        act,
                        &y,
                        &mut dy,
                        &x,
                        &w,
                        &mut dw,
                        &mut db,
                        Some(&mut dx),
                        &mut scratch,
                    )
                });
                close(&format!("{name} dw"), &dw, &want_dw, 2e-5);
                close(&format!("{name} db"), &db, &want_db, 2e-5);
                close(&format!("{name} dx"), &dx, &want_dx, 2e-5);
                // Without an input gradient (conv1): the same weight gradients.
                let mut dy = g.clone();
                let mut dw2 = vec![f32::NAN; w.len()];
                dev.install(|| {
                    conv_backward(
                        s,
                        &plan,
                        act,
                        &y,
                        &mut dy,
                        &x,
                        &w,
                        &mut dw2,
                        &mut db,
                        None,
                        &mut scratch,
                    )
                });
                assert_eq!(dw2, dw, "{name}: dw without dx");
            }
        }
    }
}

#[test]
fn linear_forward_and_backward_awkward_shapes() {
    for (i, &(n, fin, fout)) in [(1, 7, 5), (3, 130, 67), (5, 300, 257), (64, 64, 256)]
        .iter()
        .enumerate()
    {
        let s = LinearShape { n, fin, fout };
        let seed = i as u32 * 10;
        let x = away_from_zero(random_tensor(seed + 1, n * fin, 1.0));
        let w = random_tensor(seed + 2, fout * fin, 0.1);
        let b = random_tensor(seed + 3, fout, 0.5);
        let g = random_tensor(seed + 4, n * fout, 1.0);
        for act in [None, Some(Activation::Relu), Some(Activation::Tanh)] {
            let pre = r::linear_forward(&s, &x, &w, &b);
            let want_y = match act {
                Some(a) => r::activation_forward(a, &pre),
                None => pre,
            };
            let dpre = match act {
                Some(a) => r::activation_backward(a, &g, &want_y),
                None => g.clone(),
            };
            let (want_dx, want_dw, want_db) = r::linear_backward(&s, &dpre, &x, &w);
            for threads in [1, 2] {
                let dev = pool(threads);
                let name = format!("linear {s:?} {act:?} x{threads}");
                let mut y = vec![f32::NAN; n * fout];
                dev.install(|| linear_forward(&s, act, &x, &w, &b, &mut y, threads));
                close(&format!("{name} y"), &y, &want_y, 2e-5);
                let mut dy = g.clone();
                let (mut dw, mut db, mut dx) =
                    (vec![0.0; w.len()], vec![0.0; fout], vec![0.0; x.len()]);
                dev.install(|| {
                    linear_backward(
                        &s,
                        act,
                        &y,
                        &mut dy,
                        &x,
                        &w,
                        &mut dw,
                        &mut db,
                        Some(&mut dx),
                        threads,
                    )
                });
                close(&format!("{name} dw"), &dw, &want_dw, 2e-5);
                close(&format!("{name} db"), &db, &want_db, 2e-5);
                close(&format!("{name} dx"), &dx, &want_dx, 2e-5);
            }
        }
    }
}

#[test]
fn lrn_forward_and_backward_both_constants() {
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
    for (i, (p, dims, std)) in [
        (LrnParams::default(), [1, 7, 3, 5], 20.0),
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
        let dev = pool(2);
        let (mut y, mut scale) = (vec![f32::NAN; x.len()], vec![f32::NAN; x.len()]);
        dev.install(|| lrn_forward(&p, dims, &x, &mut y, &mut scale));
        close(&format!("lrn {dims:?} {p:?} y"), &y, &want_y, 2e-6);
        let (mut dy, mut dx) = (g.clone(), vec![f32::NAN; x.len()]);
        dev.install(|| lrn_backward(&p, dims, &x, &y, &scale, &mut dy, &mut dx));
        close(&format!("lrn {dims:?} {p:?} dx"), &dx, &want_dx, 2e-5);
    }
}

#[test]
fn maxpool_first_maximum_with_ties_and_overlaps() {
    for (i, s) in [
        PoolShape {
            n: 1,
            c: 3,
            h: 7,
            w: 9,
            k: 3,
            stride: 2,
        },
        PoolShape {
            n: 3,
            c: 17,
            h: 8,
            w: 8,
            k: 3,
            stride: 2,
        },
        PoolShape {
            n: 3,
            c: 5,
            h: 6,
            w: 5,
            k: 2,
            stride: 2,
        },
        PoolShape {
            n: 2,
            c: 4,
            h: 15,
            w: 15,
            k: 3,
            stride: 2,
        },
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
        let want_y = r::maxpool_forward(s, &x);
        let want_dx = r::maxpool_backward(s, &x, &g);
        let dev = pool(2);
        let (mut y, mut arg) = (vec![f32::NAN; s.output_len()], vec![0u32; s.output_len()]);
        dev.install(|| maxpool_forward(s, &x, &mut y, &mut arg));
        assert_eq!(y, want_y, "maxpool {s:?} y");
        let mut dx = vec![f32::NAN; s.input_len()];
        dev.install(|| maxpool_backward(s, &arg, &g, &mut dx));
        close(&format!("maxpool {s:?} dx"), &dx, &want_dx, 1e-6);
    }
}

#[test]
fn dropout_masks_are_the_references_to_the_bit() {
    let x = random_tensor(1, 40_000, 1.0);
    for (p, seed) in [(0.5, 7u32), (0.3, 123), (1.0, 5), (0.0, 9)] {
        let want = r::dropout_forward(p, seed, &x);
        let mut got = x.clone();
        pool(2).install(|| dropout_in_place(p, seed, &mut got));
        assert!(got == want, "dropout p {p} seed {seed}: masks differ");
        assert_eq!(r::dropout_backward(p, seed, &x), want);
    }
}

#[test]
fn softmax_loss_stats_and_gradient() {
    let (n, k) = (7, 13);
    let mut logits = random_tensor(3, n * k, 3.0);
    // A tie with the label's logit counts for the label, as reference::topk_correct.
    logits[k + 2] = logits[k + 5];
    let labels: Vec<i32> = vec![0, 5, 12, 3, 3, 1, 7];
    let (want_loss, want_d) = r::softmax_cross_entropy(n, k, &logits, &labels);
    let mut stats = vec![f32::NAN; n * 3];
    softmax_xent_forward(k, &logits, &labels, &mut stats);
    let loss = stats.chunks_exact(3).map(|s| s[0]).sum::<f32>() / n as f32;
    assert!(
        (loss - want_loss).abs() < 1e-5 * want_loss.abs(),
        "loss {loss} vs {want_loss}"
    );
    let top1: f32 = stats.chunks_exact(3).map(|s| s[1]).sum();
    let top5: f32 = stats.chunks_exact(3).map(|s| s[2]).sum();
    assert_eq!(top1 as usize, r::topk_correct(n, k, &logits, &labels, 1));
    assert_eq!(top5 as usize, r::topk_correct(n, k, &logits, &labels, 5));
    assert!(
        top1 < top5 && top5 < n as f32,
        "the case must tell top-1 from top-5: {top1} {top5}"
    );
    let mut d = vec![f32::NAN; n * k];
    softmax_xent_backward(k, &logits, &labels, &mut d);
    close("softmax dlogits", &d, &want_d, 1e-6);
}

#[test]
fn sgd_is_the_references_to_the_bit() {
    let w0 = random_tensor(1, 50_001, 0.1);
    let v0 = random_tensor(2, w0.len(), 0.01);
    let g = random_tensor(3, w0.len(), 1.0);
    let (mut w, mut v) = (w0.clone(), v0.clone());
    let (mut rw, mut rv) = (w0, v0);
    for _ in 0..2 {
        pool(2).install(|| sgd_step(&mut w, &mut v, &g, 0.01, 0.9, 5e-4));
        r::sgd_update(&mut rw, &mut rv, &g, 0.01, 0.9, 5e-4);
    }
    assert!(w == rw && v == rv, "sgd differs from the reference");
}

#[test]
fn augmentation_is_the_references_to_the_bit() {
    let s = AugmentShape {
        n: 3,
        stored: 13,
        crop: 9,
    };
    let images: Vec<u8> = (0..s.n * 13 * 13 * 3)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let mean: Vec<f32> = (0..13 * 13 * 3)
        .map(|i| (i % 97) as f32 * 1.7 + 30.0)
        .collect();
    let draws = [
        AugmentDraw {
            x0: 0,
            y0: 4,
            flip: 0,
            _pad: 0,
            shift: [1.5, -2.0, 0.25, 0.0],
        },
        AugmentDraw {
            x0: 4,
            y0: 0,
            flip: 1,
            _pad: 0,
            shift: [-3.0, 0.5, 2.0, 0.0],
        },
        AugmentDraw {
            x0: 2,
            y0: 3,
            flip: 1,
            _pad: 0,
            shift: [0.0; 4],
        },
    ];
    let want = r::augment_forward(&s, &images, &mean, &draws, 1.0 / 64.0);
    let mut input = HostInput::new(3, 13, 9, &mean, 1.0 / 64.0);
    input.set_images(&images).unwrap();
    let mut got = vec![f32::NAN; want.len()];
    pool(2).install(|| input.augment(&draws, &mut got)).unwrap();
    assert!(got == want, "augmentation differs from the reference");
    // Bad sizes are errors, not panics.
    assert!(input.set_images(&images[1..]).is_err());
    let off = AugmentDraw { x0: 5, ..draws[0] };
    assert!(input.augment(&[off, draws[1], draws[2]], &mut got).is_err());
}

/// The whole network against `reference::network`: every reported activation, the loss,
/// every gradient, then two SGD steps (so momentum matters).
fn run_case(cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32, threads: usize) {
    // He's init: under the paper's N(0, 0.01²) these narrow variants pass almost nothing back
    // to conv1, and a gradient near zero would pass any check.
    let params = Params::init_with(cfg, seed as u64, Init::He).unwrap();
    let images = random_tensor(
        seed + 100,
        batch * 3 * cfg.input_size * cfg.input_size,
        40.0,
    );
    let labels: Vec<i32> = (0..batch)
        .map(|i| ((i * 7 + seed as usize) % cfg.classes) as i32)
        .collect();
    let (run_seed, step) = (seed as u64 * 31 + 5, 3u64);
    let train = (dropout > 0.0).then_some(TrainMode {
        dropout,
        run_seed,
        step,
    });
    let (loss, fwd, grads) =
        network_loss_and_grads(cfg, &params, batch, &images, &labels, train).unwrap();

    let dev = pool(threads);
    let mut net = CpuNetwork::new(&dev, cfg, batch, &params).unwrap();
    net.upload_input(&images).unwrap();
    net.upload_labels(&labels).unwrap();
    let d = (dropout > 0.0).then_some(Dropout {
        p: dropout,
        seeds: [
            dropout_seed(run_seed, step, 6),
            dropout_seed(run_seed, step, 7),
        ],
    });
    net.forward(d).unwrap();
    net.loss().unwrap();
    net.backward(d).unwrap();
    let case = format!("{cfg:?} batch {batch} dropout {dropout} x{threads}");
    let named = fwd.named();
    let acts = net.activations();
    assert_eq!(acts.len(), named.len(), "{case}: activation count");
    for ((name, shape, got), (rname, rshape, want)) in acts.iter().zip(named) {
        assert_eq!(
            (*name, shape.clone()),
            (rname, rshape),
            "{case}: activation order"
        );
        close(&format!("{case}: activation {name}"), got, want, 2e-4);
    }
    let cpu_loss = net.stats().chunks_exact(3).map(|r| r[0]).sum::<f32>() / batch as f32;
    assert!(
        (cpu_loss - loss).abs() <= 1e-4 * loss.abs().max(1.0),
        "{case}: loss {cpu_loss} vs {loss}"
    );
    let got = net.download_grads().unwrap();
    for (g, w) in got.tensors.iter().zip(&grads.tensors) {
        close(
            &format!("{case}: grad {}", w.spec.name),
            &g.data,
            &w.data,
            5e-4,
        );
    }
    let (lr, mu, wd) = (0.01f32, 0.9f32, 5e-4f32);
    let mut want_p = params.clone();
    let mut want_v = Params::zeros(cfg).unwrap();
    for _ in 0..2 {
        net.sgd(SgdHyper {
            lr,
            momentum: mu,
            weight_decay: wd,
        })
        .unwrap();
        network_sgd_step(&mut want_p, &mut want_v, &grads, lr, mu, wd).unwrap();
    }
    let got_p = net.download_params().unwrap();
    for (g, w) in got_p.tensors.iter().zip(&want_p.tensors) {
        close(
            &format!("{case}: sgd {}", w.spec.name),
            &g.data,
            &w.data,
            1e-5,
        );
    }
    let got_v = net.download_momentum().unwrap();
    for (g, w) in got_v.tensors.iter().zip(&want_v.tensors) {
        close(
            &format!("{case}: momentum {}", w.spec.name),
            &g.data,
            &w.data,
            1e-4,
        );
    }
}

#[test]
fn network_two_columns_relu_lrn_eval_mode_batch_3() {
    let cfg = ModelConfig::small(71, 16, 7);
    run_case(&cfg, 3, 0.0, 1, 2);
}

#[test]
fn network_one_column_tanh_with_dropout_batch_2() {
    let mut cfg = ModelConfig::small(67, 16, 5);
    cfg.groups = 1;
    cfg.activation = Activation::Tanh;
    run_case(&cfg, 2, 0.5, 2, 2);
}

#[test]
fn network_no_lrn_relu_dropout_batch_1_one_thread() {
    let mut cfg = ModelConfig::small(69, 12, 3);
    cfg.norm = alexnet::model::Norm::None;
    run_case(&cfg, 1, 0.5, 3, 1);
}

#[test]
fn network_widths_div_8_input_131_batch_3_three_threads() {
    let cfg = ModelConfig::small(131, 8, 11);
    run_case(&cfg, 3, 0.5, 4, 3);
}

#[test]
fn network_errors_name_what_is_wrong() {
    let cfg = ModelConfig::small(67, 16, 5);
    let params = Params::init(&cfg, 1).unwrap();
    let dev = pool(1);
    let mut net = CpuNetwork::new(&dev, &cfg, 2, &params).unwrap();
    let e = net.upload_labels(&[0, 5]).unwrap_err().to_string();
    assert!(e.contains("label 5") && e.contains("5 classes"), "{e}");
    let e = net.upload_labels(&[0]).unwrap_err().to_string();
    assert!(e.contains("1 labels for a batch of 2"), "{e}");
    let e = net.upload_input(&[0.0; 3]).unwrap_err().to_string();
    assert!(e.contains("images"), "{e}");
    let other = Params::init(&ModelConfig::small(67, 8, 5), 1).unwrap();
    let e = net.upload_params(&other).unwrap_err().to_string();
    assert!(e.contains("conv1.weight"), "{e}");
}
