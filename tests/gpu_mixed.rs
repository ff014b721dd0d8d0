//! `--precision mixed` on the adapter the tests have (lavapipe here, which lacks cooperative
//! matrices): the device falls back to the f32 kernels and says why, the cooperative tiles
//! stay out of the tuner's candidates, and one forced anyway is refused with a message
//! rather than handed to wgpu. On an adapter that has the features (a lent GPU) the same
//! test checks the cooperative candidates through the self-test instead.
mod common;

use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::coop::{self, Precision};
use alexnet::gpu::gemm::{self, GemmArgs, GemmForm, TilePolicy};
use alexnet::gpu::selftest::{self, Check};
use alexnet::gpu::tiles::Core;
use alexnet::gpu::tuner::{self, Choice};
use alexnet::gpu::{Gpu, Recorder, Tensor};
use alexnet::reference::random_tensor;

fn index() -> usize {
    Gpu::best()
        .unwrap_or_else(|e| {
            panic!("{e} (the GPU tests need an adapter; CI installs mesa-vulkan-drivers)")
        })
        .adapter
        .index
}

#[test]
fn mixed_precision_uses_cooperative_tiles_only_where_the_device_has_them() {
    let mut g = Gpu::with_precision(index(), Precision::Mixed).unwrap();
    g.tiles = TilePolicy::Gpu;
    g.conv_kernels = ConvKernels::Tiled;
    g.tile_override = None;
    assert_eq!(g.precision, Precision::Mixed);
    let offered = coop::availability(g.adapter.features, g.adapter.subgroup_sizes);
    assert_eq!(g.coop, offered.is_ok());
    let coop_tiles = coop::candidate_tiles();
    let list = tuner::candidates_for(&g);
    if g.coop {
        // A GPU with the features: every cooperative candidate is self-tested (at the f16
        // tolerance), and the report says which pass.
        assert!(coop_tiles.iter().all(|t| list.contains(t)));
        let report = selftest::run(&g, &coop_tiles);
        eprintln!("{}", report.table());
        return;
    }
    let why = g.fallback.clone().expect("a fallback reason");
    assert_eq!(Err(why.clone()), offered);
    assert!(!list.iter().any(|t| t.core == Core::Coop), "{list:?}");
    assert_eq!(list, tuner::candidate_tiles());
    for t in &coop_tiles {
        assert!(!gemm::fits(&g, t), "{}", t.tag());
        let e = selftest::run_check(&g, *t, Check::GemmForward).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
    }
    // Forced past the tuner, a cooperative tile is refused before wgpu sees its module.
    let (m, n, k) = (5, 7, 9);
    let t = |len, seed| Tensor::from_slice(&g, &random_tensor(seed, len, 1.0), "mixed.test");
    let (a, b, c) = (t(m * k, 1), t(n * k, 2), t(m * n, 3));
    let forced = Choice {
        tile: coop_tiles[0],
        splits: Some(1),
    };
    let err = tuner::with_choice(forced, || {
        let mut enc = g.encoder("mixed.test");
        let mut rec = Recorder::new(&g, &mut enc);
        gemm::record(
            &mut rec,
            &GemmArgs {
                form: GemmForm::ABt,
                m,
                n,
                k,
                a: &a,
                b: &b,
                c: &c,
                bias: None,
                accumulate: false,
                alpha: 1.0,
                act: None,
            },
        )
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cooperative matrices") && err.contains(&coop_tiles[0].tag()),
        "{err}"
    );
}

#[test]
fn fp32_devices_never_request_the_cooperative_features() {
    let g = Gpu::with_precision(index(), Precision::Fp32).unwrap();
    assert!(!g.coop);
    assert_eq!(g.fallback, None);
    assert!(!tuner::candidates_for(&g)
        .iter()
        .any(|t| t.core == Core::Coop));
    assert!(!g
        .device
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX));
}

/// `train` and `eval` on adapter 0 with `--precision mixed`: where the adapter lacks the
/// features (lavapipe) the run says why, records `precision = "mixed"` in config.toml, and
/// computes exactly what the fp32 run computes (the same kernels run).
#[test]
fn train_and_eval_with_precision_mixed_fall_back_to_the_fp32_kernels_and_say_so() {
    let adapter = &alexnet::gpu::list_adapters()[0];
    let offered = coop::availability(adapter.features, adapter.subgroup_sizes);
    let dir = tempfile::tempdir().unwrap();
    let data = common::fashion_shards(dir.path(), 24);
    let d = data.to_str().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "train",
            d,
            "--input-size",
            "67",
            "--widths",
            "8,16,24,24,16,64,64",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "2",
            "--batch",
            "4",
            "--seed",
            "3",
            "--devices",
            "0",
        ];
        args.extend_from_slice(extra);
        let (ok, _, err) = common::alexnet(&args);
        assert!(ok, "train {extra:?}: {err}");
        (err, out)
    };
    let (err32, fp32) = run("fp32", &[]);
    let (err_mixed, mixed) = run("mixed", &["--precision", "mixed"]);
    assert!(!err32.contains("--precision"), "{err32}");
    let config = |run: &std::path::Path| std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config(&mixed).contains("precision = \"mixed\""));
    assert!(!config(&fp32).contains("precision"));
    let eval = |run: &std::path::Path, extra: &[&str]| {
        let ck = run.join("last.safetensors");
        let mut args = vec![
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            d,
            "--json",
            "--devices",
            "0",
        ];
        args.extend_from_slice(extra);
        let (ok, out, err) = common::alexnet(&args);
        assert!(ok, "eval {extra:?}: {err}");
        (out, err)
    };
    let (score32, _) = eval(&fp32, &[]);
    let (score_mixed, eval_err) = eval(&fp32, &["--precision", "mixed"]);
    match offered {
        Err(why) => {
            for err in [&err_mixed, &eval_err] {
                assert!(
                    err.contains("--precision mixed on") && err.contains(&why),
                    "{err}"
                );
                assert!(err.contains("running the fp32 kernels"), "{err}");
            }
            let w = |run: &std::path::Path| {
                alexnet::model::Checkpoint::load(&run.join("last.safetensors"), None)
                    .unwrap()
                    .params
            };
            assert!(
                w(&fp32) == w(&mixed),
                "the fallback must run the fp32 kernels"
            );
            assert_eq!(score32, score_mixed);
        }
        // A GPU with cooperative matrices: no fallback line, and the run trains.
        Ok(()) => assert!(
            !err_mixed.contains("running the fp32 kernels"),
            "{err_mixed}"
        ),
    }
}
