//! A whole training step (augment, forward, loss, backward, SGD) in images/s, on synthetic
//! data, per adapter: the number to put beside PyTorch's on the same card.
//!
//! `cargo bench --bench step` (the paper's model, batch 128: a GPU) or
//! `cargo bench --bench step -- --quick` (the quickstart's small model, which lavapipe can run).
//! Timing: two warm-up steps, then `steps` steps submitted back to back and one wait at the end,
//! so the number includes submit overhead but no host readback.
use alexnet::gpu::{list_adapters, Gpu};
use alexnet::model::{dropout_seed, Dropout, Init, ModelConfig, Network, Params};
use alexnet::shape::{stream_seed, uniform01};
use alexnet::train::augment::{random_draws, AugmentSettings, Pca};
use alexnet::train::input::InputStage;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --all-targets` runs this without --bench: only check that it starts.
    if !args.iter().any(|a| a == "--bench") {
        println!("step bench: run with `cargo bench --bench step [-- --quick]`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (cfg, stored, batch, steps) = if quick {
        let mut c = ModelConfig::small(67, 1, 10);
        c.widths = [16, 32, 48, 48, 32, 256, 256];
        (c, 76, 128, 5)
    } else {
        (ModelConfig::paper(1000), 256, 128, 20)
    };
    println!(
        "model input {} widths {:?} classes {}, batch {batch}, {steps} timed steps",
        cfg.input_size, cfg.widths, cfg.classes
    );
    for a in list_adapters() {
        let gpu = match Gpu::new(a.index) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("adapter {}: {e}", a.index);
                continue;
            }
        };
        let params = Params::init_with(&cfg, 1, Init::Paper).expect("valid config");
        let net = match Network::new(&gpu, &cfg, batch, &params) {
            Ok(n) => n,
            Err(e) => {
                println!("[{}] {}: {e}", a.index, a.name);
                continue;
            }
        };
        let mean = vec![120.0f32; stored * stored * 3];
        let input = InputStage::new(&gpu, batch, stored, cfg.input_size, &mean, 1.0);
        let images: Vec<u8> = (0..batch * stored * stored * 3)
            .map(|i| (uniform01(3, i as u32) * 256.0) as u8)
            .collect();
        let labels: Vec<i32> = (0..batch).map(|i| (i % cfg.classes) as i32).collect();
        let pca = Pca {
            eigenvalues: [5000.0, 400.0, 60.0],
            eigenvectors: [[0.58, 0.58, 0.57], [-0.7, 0.0, 0.71], [0.41, -0.82, 0.41]],
        };
        let settings = AugmentSettings {
            random_crop: true,
            flip: true,
            lighting_std: 0.1,
        };
        let step = |s: u64| -> Result<(), Box<dyn std::error::Error>> {
            let draws = random_draws(
                stream_seed(1, s, 1),
                batch,
                stored,
                cfg.input_size,
                &settings,
                &pca,
            );
            let d = Dropout {
                p: 0.5,
                seeds: [dropout_seed(1, s, 6), dropout_seed(1, s, 7)],
            };
            input.upload_images(&gpu, &images)?;
            net.upload_labels(&gpu, &labels)?;
            let mut enc = gpu.encoder("bench.step");
            input.record(&gpu, &mut enc, &draws, net.input())?;
            net.record_forward(&gpu, &mut enc, Some(d))?;
            net.record_loss(&gpu, &mut enc)?;
            net.record_backward(&gpu, &mut enc, Some(d))?;
            net.record_sgd(&gpu, &mut enc, 0.01, 0.9, 5e-4)?;
            gpu.submit(enc);
            Ok(())
        };
        let run = || -> Result<f64, Box<dyn std::error::Error>> {
            for s in 0..2 {
                step(s)?;
            }
            gpu.wait()?;
            let t = Instant::now();
            for s in 0..steps {
                step(2 + s)?;
            }
            gpu.wait()?;
            Ok(t.elapsed().as_secs_f64())
        };
        match run() {
            Ok(secs) => println!(
                "[{}] {} ({:?}): {:.1} ms/step, {:.0} images/s",
                a.index,
                a.name,
                a.backend,
                secs * 1e3 / steps as f64,
                (steps * batch as u64) as f64 / secs
            ),
            Err(e) => println!("[{}] {}: {e}", a.index, a.name),
        }
    }
}
