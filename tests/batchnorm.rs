//! Batch normalisation (`model.norm = "batch"`) on every engine against the reference: the op
//! (forward in training and evaluation mode, the running statistics, backward with and without
//! an input gradient) on random inputs of awkward sizes, the whole network with it once per
//! engine, and a checkpoint round trip that keeps the running statistics. The finite-difference
//! checks are beside the reference (`src/reference/batchnorm.rs`, `src/model/reference.rs`);
//! PyTorch's `BatchNorm2d` is compared in `tests/torch_reference.rs`.
use alexnet::backend::{Backend, BnState, Dropout, Grad, Mode, Pair, SgdHyper};
use alexnet::cpu::{CpuBackend, CpuDevice};
use alexnet::gpu::{self, Gpu, Recorder, Tensor};
use alexnet::model::{
    dropout_seed, Checkpoint, CpuNetwork, Init, ModelConfig, Network, Norm, Params, Walk,
};
use alexnet::reference::{self as r, check_close, random_tensor, RefBackend, RefBuf};
use alexnet::shape::BnShape;

/// Awkward shapes: odd channels and planes, one value per plane, a channel longer than a
/// workgroup's 256 invocations, and conv1's 55² plane. (Two values per channel would make
/// dx pure rounding: with M = 2, x̂ = ±1 and the exact dx is ε's doing alone.)
const SHAPES: [BnShape; 5] = [
    BnShape { n: 3, c: 5, hw: 63 },
    BnShape {
        n: 1,
        c: 3,
        hw: 300,
    },
    BnShape { n: 5, c: 17, hw: 1 },
    BnShape {
        n: 4,
        c: 2,
        hw: 55 * 55,
    },
    BnShape { n: 1, c: 1, hw: 7 },
];

/// Tolerance scaled by the reference tensor's largest value: f32 sums against the
/// reference's f64 ones differ by rounding; a wrong index or term is off by far more.
#[track_caller]
fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    if let Err(e) = check_close(name, got, want, rel * scale, rel) {
        panic!("{e} (tensor max |value| {scale:e})");
    }
}

/// One op case: inputs whose channels have different means and spreads, γ near 1, running
/// statistics away from 0 and 1, a random output gradient.
struct Case {
    s: BnShape,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    dy: Vec<f32>,
}

fn case(s: BnShape, seed: u32) -> Case {
    let x = random_tensor(seed, s.len(), 1.0)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let c = ((i / s.hw) % s.c) as f32;
            v * (1.0 + c) + 2.0 * c - 3.0
        })
        .collect();
    let near_one = |seed, k: f32| -> Vec<f32> {
        random_tensor(seed, s.c, k)
            .iter()
            .map(|v| 1.0 + v.abs())
            .collect()
    };
    Case {
        x,
        gamma: near_one(seed + 1, 0.5),
        beta: random_tensor(seed + 2, s.c, 0.5),
        mean: random_tensor(seed + 3, s.c, 1.0),
        var: near_one(seed + 4, 1.0),
        dy: random_tensor(seed + 5, s.len(), 1.0),
        s,
    }
}

/// What one forward and backward left.
#[derive(Debug)]
struct Out {
    y: Vec<f32>,
    saved: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    dx: Option<Vec<f32>>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

fn reference(c: &Case, train: bool) -> Out {
    let (mut mean, mut var) = (c.mean.clone(), c.var.clone());
    let (y, st) = if train {
        r::bn_forward_train(&c.s, &c.x, &c.gamma, &c.beta, &mut mean, &mut var)
    } else {
        let y = r::bn_forward_eval(&c.s, &c.x, &c.gamma, &c.beta, &mean, &var);
        (y, r::bn_eval_stats(&mean, &var))
    };
    let (dx, dgamma, dbeta) = r::bn_backward(&c.s, train, &c.x, &c.gamma, &st, &c.dy);
    Out {
        y,
        saved: [st.mean, st.inv_std].concat(),
        mean,
        var,
        dx: Some(dx),
        dgamma,
        dbeta,
    }
}

/// The case through the [`Backend`] trait of an engine that runs each op as it is called.
fn on_backend<B: Backend>(be: &mut B, c: &Case, mode: Mode, with_dx: bool) -> Out {
    let mut up = |v: &[f32], label: &str| {
        let b = be.alloc(v.len(), label).unwrap();
        be.upload(&b, v).unwrap();
        b
    };
    let (x, gamma, beta) = (up(&c.x, "x"), up(&c.gamma, "gamma"), up(&c.beta, "beta"));
    let (mean, var, dy) = (up(&c.mean, "mean"), up(&c.var, "var"), up(&c.dy, "dy"));
    let y = be.alloc(c.s.len(), "y").unwrap();
    let saved = be.alloc(2 * c.s.c, "saved").unwrap();
    let dx = be.alloc(c.s.len(), "dx").unwrap();
    let (dgamma, dbeta) = (
        be.alloc(c.s.c, "dgamma").unwrap(),
        be.alloc(c.s.c, "dbeta").unwrap(),
    );
    let st = BnState {
        mean: &mean,
        var: &var,
        saved: &saved,
    };
    let p = Pair {
        w: &gamma,
        b: &beta,
    };
    be.bn_forward(&c.s, mode, &x, p, st, &y).unwrap();
    let t = Grad {
        x: &x,
        y: &y,
        dy: &dy,
        dx: with_dx.then_some(&dx),
    };
    let g = Pair {
        w: &dgamma,
        b: &dbeta,
    };
    be.bn_backward(&c.s, mode, t, &gamma, &saved, g).unwrap();
    Out {
        y: be.download(&y).unwrap(),
        saved: be.download(&saved).unwrap(),
        mean: be.download(&mean).unwrap(),
        var: be.download(&var).unwrap(),
        dx: with_dx.then(|| be.download(&dx).unwrap()),
        dgamma: be.download(&dgamma).unwrap(),
        dbeta: be.download(&dbeta).unwrap(),
    }
}

/// The case through the WGSL kernels' launchers.
fn on_gpu(g: &Gpu, c: &Case, train: bool, with_dx: bool) -> Out {
    on_gpu_sliced(g, c, train, with_dx, gpu::batchnorm::slices(&c.s))
}

/// [`on_gpu`] with the reductions over `slices` slices a channel.
fn on_gpu_sliced(g: &Gpu, c: &Case, train: bool, with_dx: bool, slices: usize) -> Out {
    let up = |v: &[f32], label: &str| Tensor::from_slice(g, v, label);
    let (x, gamma, beta) = (up(&c.x, "x"), up(&c.gamma, "gamma"), up(&c.beta, "beta"));
    let (mean, var, dy) = (up(&c.mean, "mean"), up(&c.var, "var"), up(&c.dy, "dy"));
    let y = Tensor::zeros(g, c.s.len(), "y");
    let saved = Tensor::zeros(g, 2 * c.s.c, "saved");
    let dx = Tensor::zeros(g, c.s.len(), "dx");
    let (dgamma, dbeta) = (Tensor::zeros(g, c.s.c, "dg"), Tensor::zeros(g, c.s.c, "db"));
    let mut enc = g.encoder("test.bn");
    {
        let mut rec = Recorder::new(g, &mut enc);
        let s = &c.s;
        gpu::batchnorm::forward_sliced(
            &mut rec,
            (s, slices),
            train,
            &x,
            [&gamma, &beta],
            [&mean, &var],
            [&y, &saved],
        )
        .unwrap();
        let dx = with_dx.then_some(&dx);
        let (t, st) = ([&x, &dy], [&gamma, &saved]);
        let g = [&dgamma, &dbeta];
        gpu::batchnorm::backward_sliced(&mut rec, (s, slices), train, t, st, g, dx).unwrap();
    }
    g.submit(enc);
    let down = |t: &Tensor| t.download(g).unwrap();
    Out {
        y: down(&y),
        saved: down(&saved),
        mean: down(&mean),
        var: down(&var),
        dx: with_dx.then(|| down(&dx)),
        dgamma: down(&dgamma),
        dbeta: down(&dbeta),
    }
}

fn compare(tag: &str, got: &Out, want: &Out, rel: f32) {
    close(&format!("{tag} y"), &got.y, &want.y, rel);
    close(&format!("{tag} saved"), &got.saved, &want.saved, rel);
    close(&format!("{tag} running mean"), &got.mean, &want.mean, rel);
    close(&format!("{tag} running var"), &got.var, &want.var, rel);
    close(&format!("{tag} dgamma"), &got.dgamma, &want.dgamma, rel);
    close(&format!("{tag} dbeta"), &got.dbeta, &want.dbeta, rel);
    if let (Some(g), Some(w)) = (&got.dx, &want.dx) {
        close(&format!("{tag} dx"), g, w, rel);
    }
}

fn modes() -> [(Mode, bool); 2] {
    let d = Dropout {
        p: 0.0,
        seeds: [1, 2],
    };
    // Training without dropout still normalises with the batch's statistics.
    [(Mode::Train(d), true), (Mode::Eval, false)]
}

#[test]
fn cpu_engine_and_reference_backend_match_the_reference_loops() {
    let dev = CpuDevice::new(2).unwrap();
    for (k, s) in SHAPES.into_iter().enumerate() {
        let c = case(s, 10 + 10 * k as u32);
        for (mode, train) in modes() {
            let want = reference(&c, train);
            // The statistics moved in training and stayed in evaluation.
            assert_eq!(want.mean != c.mean, train, "{s:?}");
            for with_dx in [true, false] {
                let tag = format!("{s:?} train {train} dx {with_dx}");
                let cpu = on_backend(&mut CpuBackend::new(&dev), &c, mode, with_dx);
                compare(&format!("cpu {tag}"), &cpu, &want, 2e-5);
                let rb = on_backend(&mut RefBackend::new(), &c, mode, with_dx);
                compare(&format!("reference backend {tag}"), &rb, &want, 0.0);
            }
        }
    }
}

#[test]
fn gpu_kernels_match_the_reference() {
    let g = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers");
    for (k, s) in SHAPES.into_iter().enumerate() {
        let c = case(s, 10 + 10 * k as u32);
        for (_, train) in modes() {
            let want = reference(&c, train);
            for with_dx in [true, false] {
                let got = on_gpu(&g, &c, train, with_dx);
                compare(
                    &format!("gpu {s:?} train {train} dx {with_dx}"),
                    &got,
                    &want,
                    1e-4,
                );
                if !with_dx {
                    // The parameter-only entry leaves no input gradient behind.
                    assert!(got.dx.is_none());
                }
            }
        }
    }
}

#[test]
fn gpu_kernels_in_slices() {
    // Each channel's values in 1, 2, 3 and 7 slices: a plane larger than a workgroup's 256
    // invocations (300) so a turn stays in one image, a plane smaller (20) so a turn crosses
    // images, one channel (no plane of another channel between two images), and slices that
    // end mid-plane and hold fewer values than a workgroup has invocations.
    let g = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers");
    let shapes = [
        BnShape {
            n: 4,
            c: 3,
            hw: 300,
        },
        BnShape {
            n: 30,
            c: 5,
            hw: 20,
        },
        BnShape { n: 3, c: 1, hw: 97 },
    ];
    for (k, s) in shapes.into_iter().enumerate() {
        let c = case(s, 60 + 10 * k as u32);
        for slices in [1, 2, 3, 7] {
            assert_eq!(gpu::batchnorm::sliced(&s, slices), slices, "{s:?}");
            for (_, train) in modes() {
                let want = reference(&c, train);
                for with_dx in [true, false] {
                    let got = on_gpu_sliced(&g, &c, train, with_dx, slices);
                    let tag = format!("gpu {s:?} in {slices} slices train {train} dx {with_dx}");
                    compare(&tag, &got, &want, 1e-4);
                }
            }
        }
    }
}

#[test]
fn gpu_statistics_hold_for_a_large_mean_and_a_small_spread() {
    // x = 1000 + 10·c + N(0, 0.1²) per channel c: f32 Σx² − M·μ² would lose the variance
    // (Σx² ≈ 1.2e10 against M·σ² ≈ 121 at M = 12,100: its rounding alone is ~1e3). Held to
    // the f64 reference per value: the mean within two f32 steps at 1000, 1/√(σ² + ε) and the
    // running variance within 1e-4 relative, in 1, 7 and the default slices. What depends on
    // the mean may move by what the mean's own difference from the reference's f32 rounding
    // moves it (bounds below), plus the usual 1e-4 of the tensor's largest value.
    let g = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers");
    let s = BnShape {
        n: 4,
        c: 3,
        hw: 55 * 55,
    };
    let mut c = case(s, 90);
    // Its own seed: the case's dy is random_tensor(95, ..), and x ∝ dy would make dx cancel.
    c.x = random_tensor(197, s.len(), 0.1)
        .iter()
        .enumerate()
        .map(|(i, v)| 1000.0 + 10.0 * ((i / s.hw) % s.c) as f32 + v)
        .collect();
    let want = reference(&c, true);
    let ulp = f32::from_bits(1000f32.to_bits() + 1) - 1000.0;
    let scale = |v: &[f32]| v.iter().fold(0f32, |m, v| m.max(v.abs()));
    let m = s.per_channel() as f32;
    for slices in [1, 7, gpu::batchnorm::slices(&s)] {
        let got = on_gpu_sliced(&g, &c, true, true, slices);
        let tag = format!("large mean in {slices} slices");
        let (mean, inv) = got.saved.split_at(s.c);
        let (want_mean, want_inv) = want.saved.split_at(s.c);
        check_close(&format!("{tag} mean"), mean, want_mean, 2.0 * ulp, 0.0).unwrap();
        check_close(&format!("{tag} 1/std"), inv, want_inv, 0.0, 1e-4).unwrap();
        let var = (&got.var, &want.var);
        check_close(&format!("{tag} running var"), var.0, var.1, 0.0, 1e-4).unwrap();
        let rmean = (&got.mean, &want.mean);
        check_close(&format!("{tag} running mean"), rmean.0, rmean.1, 0.0, 1e-6).unwrap();
        close(&format!("{tag} dbeta"), &got.dbeta, &want.dbeta, 1e-4);
        let dmu: Vec<f32> = mean
            .iter()
            .zip(want_mean)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let within = |name: &str, got: &[f32], want: &[f32], moved: &dyn Fn(usize) -> f32| {
            let tol0 = 1e-4 * scale(want);
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                let tol = moved(i) + tol0;
                assert!(
                    (g - w).abs() <= tol,
                    "{tag} {name}[{i}]: {g} against {w} (bound {tol:e})"
                );
            }
        };
        let ch = |i: usize| (i / s.hw) % s.c;
        let xh = |i: usize| (c.x[i] - want_mean[ch(i)]).abs() * want_inv[ch(i)];
        // y = γ·s·(x − μ) + β moves by γ·s per unit of μ.
        within("y", &got.y, &want.y, &|i| {
            c.gamma[ch(i)] * want_inv[ch(i)] * dmu[ch(i)]
        });
        // dγ = s·Σ dy·(x − μ) moves by s·|Σ dy| per unit of μ.
        within("dgamma", &got.dgamma, &want.dgamma, &|k| {
            want_inv[k] * want.dbeta[k].abs() * dmu[k]
        });
        // dx = γ·s·(dy − Σdy/M − x̂·dγ/M) moves by γ·s²·(|dγ| + |x̂|·|Σ dy|)/M per unit of μ.
        let (got_dx, want_dx) = (got.dx.as_ref().unwrap(), want.dx.as_ref().unwrap());
        within("dx", got_dx, want_dx, &|i| {
            let k = ch(i);
            let moved = want.dgamma[k].abs() + xh(i) * want.dbeta[k].abs();
            c.gamma[k] * want_inv[k] * want_inv[k] * moved * dmu[k] / m
        });
        // With the batch's statistics the output is normalised: γ·x̂ + β has mean β.
        for k in 0..s.c {
            let mean_y = (0..s.n)
                .flat_map(|n| &got.y[(n * s.c + k) * s.hw..][..s.hw])
                .map(|&v| v as f64)
                .sum::<f64>()
                / m as f64;
            assert!(
                (mean_y - c.beta[k] as f64).abs() < 1e-3,
                "channel {k} mean {mean_y}"
            );
        }
    }
}

/// A small network with batch normalisation, He's init (the paper's N(0, 0.01²) passes
/// almost nothing back to conv1 in narrow variants) and γ, β and running statistics that are
/// not their start values, so a mix-up of the four shows.
fn bn_network(seed: u64) -> (ModelConfig, Params) {
    let mut cfg = ModelConfig::small(67, 16, 5);
    cfg.norm = Norm::Batch;
    let mut p = Params::init_with(&cfg, seed, Init::He).unwrap();
    for (i, t) in p.tensors.iter_mut().enumerate() {
        let name = t.spec.name.clone();
        let v = random_tensor(500 + i as u32, t.data.len(), 0.3);
        match name.rsplit('.').next() {
            _ if !name.starts_with("bn") => {}
            Some("weight") | Some("running_var") => {
                t.data = v.iter().map(|v| 1.0 + v.abs()).collect()
            }
            _ => t.data = v,
        }
    }
    (cfg, p)
}

/// The inputs of one training step: images, labels, dropout.
fn step_inputs(cfg: &ModelConfig, batch: usize) -> (Vec<f32>, Vec<i32>, Dropout) {
    let images = random_tensor(77, batch * 3 * cfg.input_size * cfg.input_size, 40.0);
    let labels = (0..batch).map(|i| (i * 3 % cfg.classes) as i32).collect();
    let d = Dropout {
        p: 0.5,
        seeds: [dropout_seed(9, 2, 6), dropout_seed(9, 2, 7)],
    };
    (images, labels, d)
}

/// The reference walk after a training step: (activations, logits of an evaluation pass
/// after it, gradients, parameters after the forward pass, parameters after SGD).
struct RefStep {
    acts: Vec<(&'static str, Vec<f32>)>,
    eval_logits: Vec<f32>,
    grads: Params,
    after_forward: Params,
    after_sgd: Params,
}

const SGD: SgdHyper = SgdHyper {
    lr: 0.01,
    momentum: 0.9,
    weight_decay: 5e-4,
};

fn reference_step(cfg: &ModelConfig, params: &Params, batch: usize) -> RefStep {
    let (images, labels, d) = step_inputs(cfg, batch);
    let mut be = RefBackend::new();
    let walk: Walk<RefBuf> = Walk::new(&mut be, cfg, batch).unwrap();
    walk.upload_params(&mut be, params).unwrap();
    walk.upload_input(&mut be, &images).unwrap();
    walk.upload_labels(&mut be, &labels).unwrap();
    walk.forward(&mut be, Mode::Train(d)).unwrap();
    walk.loss(&mut be).unwrap();
    walk.backward(&mut be, Mode::Train(d)).unwrap();
    let acts = walk
        .activations()
        .into_iter()
        .map(|(n, _, t)| (n, be.slice(t).to_vec()))
        .collect();
    let grads = walk.download_grads(&mut be).unwrap();
    let after_forward = walk.download_params(&mut be).unwrap();
    walk.sgd(&mut be, SGD).unwrap();
    let after_sgd = walk.download_params(&mut be).unwrap();
    walk.forward(&mut be, Mode::Eval).unwrap();
    RefStep {
        acts,
        eval_logits: be.slice(walk.logits()).to_vec(),
        grads,
        after_forward,
        after_sgd,
    }
}

fn compare_params(tag: &str, got: &Params, want: &Params, rel: f32) {
    assert_eq!(got.tensors.len(), want.tensors.len());
    for (g, w) in got.tensors.iter().zip(&want.tensors) {
        assert_eq!(g.spec, w.spec);
        close(&format!("{tag} {}", w.spec.name), &g.data, &w.data, rel);
    }
}

#[test]
fn the_reference_walk_moves_running_statistics_only_in_training() {
    let (cfg, params) = bn_network(3);
    let want = reference_step(&cfg, &params, 3);
    for name in ["bn1.running_mean", "bn1.running_var", "bn2.running_var"] {
        let before = &params.get(name).unwrap().data;
        let after = &want.after_forward.get(name).unwrap().data;
        assert_ne!(before, after, "{name}: training moves it");
        // SGD leaves buffers alone: no gradient, no weight decay.
        assert_eq!(after, &want.after_sgd.get(name).unwrap().data, "{name}");
        assert!(want.grads.get(name).unwrap().data.iter().all(|v| *v == 0.0));
    }
    for name in ["bn1.weight", "bn2.bias"] {
        assert!(want.grads.get(name).unwrap().data.iter().any(|v| *v != 0.0));
        assert_ne!(
            want.after_forward.get(name).unwrap().data,
            want.after_sgd.get(name).unwrap().data,
            "{name}: SGD trains it"
        );
    }
}

#[test]
fn cpu_engine_network_with_batch_norm_matches_the_reference() {
    let (cfg, params) = bn_network(3);
    let batch = 3;
    let want = reference_step(&cfg, &params, batch);
    let (images, labels, d) = step_inputs(&cfg, batch);
    let dev = CpuDevice::new(2).unwrap();
    let mut net = CpuNetwork::new(&dev, &cfg, batch, &params).unwrap();
    net.upload_input(&images).unwrap();
    net.upload_labels(&labels).unwrap();
    net.forward(Some(d)).unwrap();
    net.loss().unwrap();
    net.backward(Some(d)).unwrap();
    for ((name, _, got), (wname, want)) in net.activations().iter().zip(&want.acts) {
        assert_eq!(name, wname);
        close(&format!("cpu activation {name}"), got, want, 2e-4);
    }
    compare_params(
        "cpu grad",
        &net.download_grads().unwrap(),
        &want.grads,
        5e-4,
    );
    let after = net.download_params().unwrap();
    compare_params("cpu after forward", &after, &want.after_forward, 1e-5);
    net.sgd(SGD).unwrap();
    compare_params(
        "cpu after sgd",
        &net.download_params().unwrap(),
        &want.after_sgd,
        1e-5,
    );
    net.forward(None).unwrap();
    close(
        "cpu evaluation logits",
        net.logits(),
        &want.eval_logits,
        2e-4,
    );
}

#[test]
fn gpu_network_with_batch_norm_matches_the_reference() {
    let gpu = Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers");
    let (cfg, params) = bn_network(4);
    let batch = 2;
    let want = reference_step(&cfg, &params, batch);
    let (images, labels, d) = step_inputs(&cfg, batch);
    let net = Network::new(&gpu, &cfg, batch, &params).unwrap();
    net.input().upload(&gpu, &images).unwrap();
    net.upload_labels(&gpu, &labels).unwrap();
    let mut enc = gpu.encoder("test.step");
    {
        let mut rec = net.recorder(&gpu, &mut enc);
        net.record_forward(&mut rec, Some(d)).unwrap();
        net.record_loss(&mut rec).unwrap();
        net.record_backward(&mut rec, Some(d)).unwrap();
    }
    gpu.submit(enc);
    for ((name, _, t), (wname, want)) in net.activations().iter().zip(&want.acts) {
        assert_eq!(name, wname);
        close(
            &format!("gpu activation {name}"),
            &t.download(&gpu).unwrap(),
            want,
            2e-4,
        );
    }
    compare_params(
        "gpu grad",
        &net.download_grads(&gpu).unwrap(),
        &want.grads,
        5e-4,
    );
    let after = net.download_params(&gpu).unwrap();
    compare_params("gpu after forward", &after, &want.after_forward, 1e-5);
    let mut enc = gpu.encoder("test.sgd");
    net.record_sgd(&mut net.recorder(&gpu, &mut enc), SGD)
        .unwrap();
    gpu.submit(enc);
    let after = net.download_params(&gpu).unwrap();
    compare_params("gpu after sgd", &after, &want.after_sgd, 1e-5);
    let mut enc = gpu.encoder("test.eval");
    net.record_forward(&mut net.recorder(&gpu, &mut enc), None)
        .unwrap();
    gpu.submit(enc);
    let logits = net.logits().download(&gpu).unwrap();
    close("gpu evaluation logits", &logits, &want.eval_logits, 2e-4);
}

#[test]
fn checkpoint_round_trip_keeps_running_statistics_and_gives_them_no_momentum() {
    let (cfg, params) = bn_network(5);
    let mut momentum = Params::zeros(&cfg).unwrap();
    for (i, t) in momentum.tensors.iter_mut().enumerate() {
        if !t.spec.is_buffer() {
            t.data = random_tensor(900 + i as u32, t.data.len(), 0.1);
        }
    }
    let mut ck = Checkpoint::new(cfg.clone(), params.clone());
    ck.momentum = Some(momentum);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bn.safetensors");
    ck.save(&path).unwrap();
    let back = Checkpoint::load(&path, None).unwrap();
    assert_eq!(back, ck);
    assert_eq!(back.config.norm, Norm::Batch);
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    for n in [
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn2.running_var",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(names.contains(&"momentum.bn1.weight"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("momentum.") && n.contains("running")));
    assert_eq!(
        st.tensor("bn2.running_mean").unwrap().shape(),
        &[cfg.widths[1]]
    );

    // Evaluation reads the running statistics: other ones give other logits.
    let (images, _, _) = step_inputs(&cfg, 2);
    let dev = CpuDevice::new(1).unwrap();
    let eval = |p: &Params| {
        let mut net = CpuNetwork::new(&dev, &cfg, 2, p).unwrap();
        net.upload_input(&images).unwrap();
        net.forward(None).unwrap();
        net.logits().to_vec()
    };
    let base = eval(&back.params);
    assert_eq!(base, eval(&params));
    let mut shifted = back.params.clone();
    shifted.get_mut("bn2.running_mean").unwrap().data[0] += 1.0;
    assert_ne!(base, eval(&shifted), "evaluation ignores the running mean");
}

/// PyTorch's `BatchNorm2d` in LRN's place (`tests/fixtures/make_torch_fixture.py --norm
/// batch`, the command in its header and in the fixture's `fixture.command` metadata), made in
/// /work/main/.venv with torch 2.x in float64.
const TORCH_FIXTURE: &str = "tests/fixtures/torch_small_bn.safetensors";

/// Tensor `name` of the fixture as f32 (i32 tensors are converted).
fn fixture_tensor(st: &safetensors::SafeTensors<'_>, name: &str) -> Vec<f32> {
    use safetensors::tensor::Dtype;
    let v = st.tensor(name).unwrap_or_else(|_| {
        panic!("{TORCH_FIXTURE}: `{name}` is missing; re-run make_torch_fixture.py")
    });
    let words = v.data().chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]);
    match v.dtype() {
        Dtype::F32 => words.map(f32::from_le_bytes).collect(),
        Dtype::I32 => words.map(|w| i32::from_le_bytes(w) as f32).collect(),
        d => panic!("{TORCH_FIXTURE}: `{name}` is {d:?}, expected F32 or I32"),
    }
}

#[test]
fn reference_network_with_batch_norm_matches_pytorch() {
    use alexnet::model::reference::{network_loss_and_grads, network_sgd_step, TrainMode};
    let bytes = std::fs::read(TORCH_FIXTURE).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let num = |k: &str| -> f64 { meta[k].parse().unwrap() };
    let ck = Checkpoint::from_bytes(std::path::Path::new(TORCH_FIXTURE), &bytes, None).unwrap();
    let cfg = ck.config.clone();
    assert_eq!(cfg.norm, Norm::Batch);
    let labels: Vec<i32> = fixture_tensor(&st, "fixture.labels")
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let images = fixture_tensor(&st, "fixture.images");
    let n = labels.len();
    let train = TrainMode {
        dropout: num("fixture.dropout") as f32,
        run_seed: num("fixture.run_seed") as u64,
        step: 0,
    };
    // The same bound as tests/torch_reference.rs: PyTorch ran in f64, we store f32.
    let (loss, fwd, grads) =
        network_loss_and_grads(&cfg, &ck.params, n, &images, &labels, Some(train)).unwrap();
    for (name, _, got) in fwd.named() {
        let want = fixture_tensor(&st, &format!("fixture.{name}"));
        close(&format!("torch {name}"), got, &want, 1e-4);
    }
    close(
        "torch loss",
        &[loss],
        &fixture_tensor(&st, "fixture.loss"),
        1e-5,
    );
    for g in grads.tensors.iter().filter(|g| !g.spec.is_buffer()) {
        let want = fixture_tensor(&st, &format!("fixture.grad.{}", g.spec.name));
        close(&format!("torch grad {}", g.spec.name), &g.data, &want, 1e-3);
    }

    // The running statistics after that training pass.
    let mut be = RefBackend::new();
    let walk: Walk<RefBuf> = Walk::new(&mut be, &cfg, n).unwrap();
    walk.upload_params(&mut be, &ck.params).unwrap();
    walk.upload_input(&mut be, &images).unwrap();
    walk.forward(&mut be, train.mode()).unwrap();
    let after = walk.download_params(&mut be).unwrap();
    let buffers: Vec<_> = after
        .tensors
        .iter()
        .filter(|t| t.spec.is_buffer())
        .collect();
    assert_eq!(buffers.len(), 4);
    for t in buffers {
        let want = fixture_tensor(&st, &format!("fixture.running.{}", t.spec.name));
        assert_ne!(t.data, ck.params.get(&t.spec.name).unwrap().data);
        close(
            &format!("torch running {}", t.spec.name),
            &t.data,
            &want,
            1e-4,
        );
    }

    let (lr, mom, wd) = (
        num("fixture.lr") as f32,
        num("fixture.momentum") as f32,
        num("fixture.weight_decay") as f32,
    );
    let mut params = ck.params.clone();
    let mut velocity = Params::zeros(&cfg).unwrap();
    for step in 0..num("fixture.steps") as u64 {
        let t = TrainMode { step, ..train };
        let (l, _, g) =
            network_loss_and_grads(&cfg, &params, n, &images, &labels, Some(t)).unwrap();
        let want = fixture_tensor(&st, &format!("fixture.step{step}.loss"));
        close(&format!("torch step {step} loss"), &[l], &want, 1e-4);
        network_sgd_step(&mut params, &mut velocity, &g, lr, mom, wd).unwrap();
    }
    // γ and β take weight decay like every parameter, as PyTorch's SGD gives it them.
    for p in params.tensors.iter().filter(|p| !p.spec.is_buffer()) {
        let want = fixture_tensor(&st, &format!("fixture.final.{}", p.spec.name));
        close(
            &format!("torch final {}", p.spec.name),
            &p.data,
            &want,
            1e-3,
        );
    }
}

/// `alexnet forward` (evaluation mode: the checkpoint's running statistics) on `device`.
fn forward_matches_pytorch(device: alexnet::device::Device, engine: &str) {
    use alexnet::model::forward::{forward, ForwardJob};
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(TORCH_FIXTURE).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let images = st.tensor("fixture.images").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let view = TensorView::new(Dtype::F32, images.shape().to_vec(), images.data()).unwrap();
    safetensors::serialize_to_file([("images", view)], None, &input).unwrap();
    forward(&ForwardJob {
        checkpoint: TORCH_FIXTURE.into(),
        input,
        out: out.clone(),
        device,
        overwrite: false,
    })
    .expect("alexnet forward on the batch-norm fixture");
    let got_bytes = std::fs::read(&out).unwrap();
    let got = safetensors::SafeTensors::deserialize(&got_bytes).unwrap();
    assert_eq!(got.names().len(), 8);
    for name in got.names() {
        let want = fixture_tensor(&st, &format!("fixture.eval.{name}"));
        close(
            &format!("{engine} eval {name}"),
            &fixture_tensor(&got, name),
            &want,
            1e-4,
        );
    }
}

#[test]
fn gpu_forward_with_batch_norm_matches_pytorch() {
    forward_matches_pytorch(alexnet::device::Device::Adapter(0), "GPU");
}

#[test]
fn cpu_engine_forward_with_batch_norm_matches_pytorch() {
    forward_matches_pytorch(alexnet::device::Device::Cpu, "CPU engine");
}
