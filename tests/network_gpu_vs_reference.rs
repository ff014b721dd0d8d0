//! The whole network on the GPU (lavapipe in CI) against the CPU reference network: every
//! activation `alexnet forward` reports, the loss, every parameter's gradient and one SGD step,
//! on small variants (both group counts, both activations, with and without dropout).
use alexnet::gpu::Gpu;
use alexnet::model::{dropout_seed, Dropout, ModelConfig, Network, Params};
use alexnet::reference::network::{network_loss_and_grads, network_sgd_step, TrainMode};
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

fn run_case(cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32) {
    let gpu = gpu();
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
    net.record_forward(&gpu, &mut enc, d).unwrap();
    net.record_loss(&gpu, &mut enc).unwrap();
    net.record_backward(&gpu, &mut enc, d).unwrap();
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
        net.record_sgd(&gpu, &mut enc, lr, mu, wd).unwrap();
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
fn no_lrn_relu_dropout_batch_1() {
    let mut cfg = ModelConfig::small(69, 12, 3);
    cfg.lrn = false;
    run_case(&cfg, 1, 0.5, 3);
}
