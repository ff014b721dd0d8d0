//! The GPU network as training records it (`alexnet::model::Network`: a whole step in one
//! encoder, through the network's bind-group cache) against the CPU reference network: every
//! activation, the loss, every gradient and two SGD steps, on two small variants; and that a
//! step recorded again binds nothing new. The walk over every engine, on every variant, op by
//! op, is the suite's (`tests/ops/network.rs`).
use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::gemm::TilePolicy;
use alexnet::gpu::sgd::SgdHyper;
use alexnet::gpu::Gpu;
use alexnet::model::reference::{network_loss_and_grads, network_sgd_step, TrainMode};
use alexnet::model::{dropout_seed, Dropout, ModelConfig, Network, Params};
use alexnet::reference::{check_close, random_tensor};
use alexnet::shape::Activation;

fn gpu() -> Gpu {
    Gpu::best().expect("no GPU adapter: install mesa-vulkan-drivers (the software Vulkan driver)")
}

/// Tolerance scaled by the tensor's own magnitude: f32 kernels against an f64-accumulating
/// reference differ by rounding only; a wrong index or a missing term is off by far more.
fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    if let Err(e) = check_close(name, got, want, rel * scale, rel) {
        panic!("{e} (tensor max |value| {scale:e})");
    }
}

/// The case on the adapter's own kernels and, on a CPU adapter, also on the GPUs' tiled
/// kernels and tiles (what an H200 runs), so both are checked against the reference.
fn run_case(cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32) {
    let own = gpu();
    let gpu_like = matches!(own.tiles, TilePolicy::Gpu);
    run_case_on(own, cfg, batch, dropout, seed);
    if !gpu_like {
        let mut g = gpu();
        g.conv_kernels = ConvKernels::Tiled;
        g.tiles = TilePolicy::Gpu;
        run_case_on(g, cfg, batch, dropout, seed);
    }
}

fn run_case_on(gpu: Gpu, cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32) {
    let params = Params::init(cfg, seed as u64).unwrap();
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

    let net = Network::new(&gpu, cfg, batch, &params).unwrap();
    net.input().upload(&gpu, &images).unwrap();
    net.upload_labels(&gpu, &labels).unwrap();
    let d = (dropout > 0.0).then_some(Dropout {
        p: dropout,
        seeds: [
            dropout_seed(run_seed, step, 6),
            dropout_seed(run_seed, step, 7),
        ],
    });
    let mut enc = gpu.encoder("test.step");
    {
        let mut rec = net.recorder(&gpu, &mut enc);
        net.record_forward(&mut rec, d).unwrap();
        net.record_loss(&mut rec).unwrap();
        net.record_backward(&mut rec, d).unwrap();
    }
    gpu.submit(enc);

    for ((name, shape, t), (rname, rshape, want)) in net.activations().iter().zip(fwd.named()) {
        assert_eq!((*name, shape.clone()), (rname, rshape), "activation order");
        close(
            &format!("activation {name}"),
            &t.download(&gpu).unwrap(),
            want,
            2e-4,
        );
    }
    let stats = net.stats().download(&gpu).unwrap();
    let gpu_loss = stats.chunks_exact(3).map(|r| r[0]).sum::<f32>() / batch as f32;
    assert!(
        (gpu_loss - loss).abs() <= 1e-4 * loss.abs().max(1.0),
        "loss {gpu_loss} vs {loss}"
    );
    let got = net.download_grads(&gpu).unwrap();
    for (g, w) in got.tensors.iter().zip(&grads.tensors) {
        close(&format!("grad {}", w.spec.name), &g.data, &w.data, 5e-4);
    }

    // One SGD step from zero momentum, then a second so momentum matters.
    let (lr, mu, wd) = (0.01f32, 0.9f32, 5e-4f32);
    let mut want_p = params.clone();
    let mut want_v = Params::zeros(cfg).unwrap();
    for _ in 0..2 {
        let mut enc = gpu.encoder("test.sgd");
        let h = SgdHyper {
            lr,
            momentum: mu,
            weight_decay: wd,
        };
        net.record_sgd(&mut net.recorder(&gpu, &mut enc), h)
            .unwrap();
        gpu.submit(enc);
        network_sgd_step(&mut want_p, &mut want_v, &grads, lr, mu, wd).unwrap();
    }
    let got_p = net.download_params(&gpu).unwrap();
    for (g, w) in got_p.tensors.iter().zip(&want_p.tensors) {
        close(&format!("sgd {}", w.spec.name), &g.data, &w.data, 1e-5);
    }
}

#[test]
fn two_columns_relu_lrn_eval_mode_batch_3() {
    let cfg = ModelConfig::small(71, 16, 7);
    run_case(&cfg, 3, 0.0, 1);
}

#[test]
fn one_column_tanh_with_dropout_batch_2() {
    let mut cfg = ModelConfig::small(67, 16, 5);
    cfg.groups = 1;
    cfg.activation = Activation::Tanh;
    run_case(&cfg, 2, 0.5, 2);
}

#[test]
fn a_step_recorded_again_allocates_no_bind_group() {
    // Steps reuse the bind groups of the steps before: the learning rate and the dropout seeds
    // change every step but live in the step buffer, not in any kernel's uniform.
    let cfg = ModelConfig::small(67, 16, 5);
    let gpu = gpu();
    let params = Params::init(&cfg, 4).unwrap();
    let net = Network::new(&gpu, &cfg, 2, &params).unwrap();
    let mut counts = Vec::new();
    for step in 0..4u64 {
        let d = Some(Dropout {
            p: 0.5,
            seeds: [dropout_seed(1, step, 6), dropout_seed(1, step, 7)],
        });
        let h = SgdHyper {
            lr: 0.01 / (step + 1) as f32,
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let mut enc = gpu.encoder("test.step");
        {
            let mut rec = net.recorder(&gpu, &mut enc);
            net.record_forward(&mut rec, d).unwrap();
            net.record_loss(&mut rec).unwrap();
            net.record_backward(&mut rec, d).unwrap();
            net.record_sgd(&mut rec, h).unwrap();
        }
        gpu.submit(enc);
        counts.push(net.cached_bind_groups());
    }
    // The first step may grow the shared split-K scratch as larger layers need it (and bind
    // the grown buffer from then on); every later step binds exactly what the one before did.
    assert!(counts[0] > 20, "one step binds every kernel: {counts:?}");
    assert!(
        counts[1..].windows(2).all(|w| w[0] == w[1]),
        "bind groups per step: {counts:?}"
    );
}
