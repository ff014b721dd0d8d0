//! The self-test and the tuner on lavapipe (or the first real GPU): every checked variant
//! against the reference, a deliberately broken variant dropped, a deliberately slowed one
//! never chosen, the table cached, read back without timing, not reused under another key,
//! a corrupt cache ignored with a warning, and the tuned choice computing what the reference
//! computes.
use std::path::PathBuf;

use alexnet::gpu::conv::ConvKernels;
use alexnet::gpu::gemm::{GemmForm, TilePolicy};
use alexnet::gpu::selftest::{self, Check, Family};
use alexnet::gpu::tiles::{TileConfig, Twist};
use alexnet::gpu::tuner::{self, ConvEntry, Product, Settings, TuneMode};
use alexnet::gpu::{conv, gemm, Gpu, Recorder, Tensor};
use alexnet::reference::{self as r, check_close, random_tensor};
use alexnet::shape::ConvShape;

/// The first GPU, else lavapipe, running the tiled kernels with the GPU policy (what the
/// tuner chooses for).
fn device() -> Gpu {
    let mut g = Gpu::best().unwrap_or_else(|e| {
        panic!("{e} (the GPU tests need an adapter; CI installs mesa-vulkan-drivers)")
    });
    g.tiles = TilePolicy::Gpu;
    g.conv_kernels = ConvKernels::Tiled;
    g.tile_override = None;
    g
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("alexnet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The probe-proven 64×64×8 tile of 4×4 outputs a thread.
const PROBE: TileConfig = TileConfig {
    bk: 8,
    ..TileConfig::SMALL
};

#[test]
fn gpu_selftest_passes_every_variant_and_drops_a_broken_one() {
    let g = device();
    let broken = TileConfig {
        twist: Twist::OffByOne,
        ..PROBE
    };
    let report = selftest::run(&g, &[TileConfig::LARGE, PROBE, broken]);
    eprintln!("{}", report.table());
    for t in [TileConfig::LARGE, PROBE] {
        for check in Check::ALL {
            let o = report
                .outcomes
                .iter()
                .find(|o| o.tile == t && o.check == check)
                .unwrap_or_else(|| panic!("{} {} not checked", t.tag(), check.name()));
            assert_eq!(o.error, None, "{} {}", t.tag(), check.name());
        }
        assert!(selftest::usable(&report.outcomes, &t, Family::Conv, true));
    }
    // The off-by-one variant fails every check, each with a line naming it and its error.
    let dropped = report.dropped();
    assert_eq!(dropped.len(), Check::ALL.len(), "{dropped:?}");
    for line in &dropped {
        assert!(line.starts_with("dropped 64x64x8/4x4+offbyone "), "{line}");
        assert!(line.contains("elements differ"), "{line}");
    }
    assert!(!selftest::usable(
        &report.outcomes,
        &broken,
        Family::Gemm,
        false
    ));
    assert!(report.empty_families().is_empty());
    // Only the broken tile: nothing is left for either family.
    let alone = selftest::run(&g, &[broken]);
    assert_eq!(alone.empty_families(), vec![Family::Gemm, Family::Conv]);
}

fn settings(dir: &std::path::Path, candidates: Vec<TileConfig>) -> Settings {
    Settings {
        mode: TuneMode::Cached,
        cache_dir: Some(dir.to_path_buf()),
        candidates: Some(candidates),
        reps: 3,
        verbose: true,
        multiprocessors: None,
    }
}

#[test]
fn gpu_selftest_tuner_refuses_a_product_when_every_candidate_fails() {
    let mut g = device();
    let dir = temp_dir("tune-broken");
    let broken = TileConfig {
        twist: Twist::OffByOne,
        ..PROBE
    };
    g.tuning = settings(&dir, vec![broken]);
    let p = Product::Gemm {
        form: GemmForm::AB,
        m: 8,
        n: 16,
        k: 24,
    };
    let err = tuner::choose(&g, &p).expect_err("no candidate passes");
    let msg = err.to_string();
    assert!(
        msg.contains("no kernel variant passed the self-test"),
        "{msg}"
    );
    assert!(msg.contains("64x64x8/4x4+offbyone gemm.forward"), "{msg}");
    assert_eq!(tuner::timed_count(&g), 0, "nothing broken is timed");
    // A forced choice (the self-test's own runs) bypasses the table.
    let forced = tuner::with_choice(
        tuner::Choice {
            tile: broken,
            splits: None,
        },
        || tuner::choose(&g, &p),
    );
    assert_eq!(forced.unwrap().tile, broken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpu_selftest_tuner_picks_the_faster_caches_and_rereads() {
    let mut g = device();
    let dir = temp_dir("tune");
    let slow = TileConfig {
        twist: Twist::Twice,
        ..PROBE
    };
    g.tuning = settings(&dir, vec![PROBE, slow]);
    let (m, n, k) = (64, 256, 512);
    let p = Product::Gemm {
        form: GemmForm::ABt,
        m,
        n,
        k,
    };
    let c = tuner::choose(&g, &p).expect("tune");
    let e = tuner::entry(&g, &p).expect("entry");
    eprintln!("{e:#?}");
    assert_eq!(c.tile, PROBE, "the slowed variant must not win: {e:?}");
    // Both were timed at every split factor; the slowed one's best is the slower (by
    // construction about 2×; compared best to best, as single pairs are noisy on a loaded
    // machine).
    let best = |tag: String| {
        let times: Vec<f64> = e
            .candidates
            .iter()
            .filter(|t| t.tile == tag)
            .map(|t| t.ms)
            .collect();
        assert!(!times.is_empty(), "{tag} not timed: {e:?}");
        times.into_iter().fold(f64::INFINITY, f64::min)
    };
    assert!(best(PROBE.tag()) < best(slow.tag()), "{e:?}");
    let timed = tuner::timed_count(&g);
    assert!(timed >= 2, "{timed}");
    let path = tuner::cache_path(&g).expect("cache path");
    assert!(path.exists(), "{} not written", path.display());

    // The tuned choice computes the reference's product.
    let x = random_tensor(1, m * k, 1.0);
    let w = random_tensor(2, n * k, 1.0);
    let b = random_tensor(3, n, 1.0);
    let (tx, tw, tb) = (
        Tensor::from_slice(&g, &x, "t.x"),
        Tensor::from_slice(&g, &w, "t.w"),
        Tensor::from_slice(&g, &b, "t.b"),
    );
    let y = Tensor::zeros(&g, m * n, "t.y");
    let s = alexnet::shape::LinearShape {
        n: m,
        fin: k,
        fout: n,
    };
    let mut enc = g.encoder("test");
    gemm::linear_forward(
        &mut Recorder::new(&g, &mut enc),
        &s,
        &tx,
        &tw,
        Some(&tb),
        &y,
        None,
    )
    .expect("record");
    g.submit(enc);
    let got = y.download(&g).unwrap();
    check_close(
        "tuned fc y",
        &got,
        &r::linear_forward(&s, &x, &w, &b),
        1e-4,
        1e-4,
    )
    .unwrap();

    // A new process (forgotten state) reads the table and times nothing.
    tuner::forget(&g);
    assert_eq!(tuner::choose(&g, &p).unwrap(), c);
    assert_eq!(tuner::timed_count(&g), 0, "read from the cache");

    // --tile / ALEXNET_TILE forces a choice over the table.
    g.tile_override = Some(TileConfig::SMALL);
    assert_eq!(tuner::choose(&g, &p).unwrap().tile, TileConfig::SMALL);
    g.tile_override = None;

    // Another driver: the table is not reused, the product is tuned again.
    let driver = g.adapter.driver.clone();
    g.adapter.driver = format!("{driver} (another)");
    tuner::forget(&g);
    tuner::choose(&g, &p).unwrap();
    assert!(
        tuner::timed_count(&g) > 0,
        "another driver's table was reused"
    );
    g.adapter.driver = driver;

    // A corrupt file: a warning, never an error; tuned again and rewritten whole.
    std::fs::write(&path, "{\"key\": {\"adapter\": 3").unwrap();
    tuner::forget(&g);
    assert_eq!(tuner::choose(&g, &p).unwrap().tile, PROBE);
    let warnings = tuner::warnings(&g);
    assert!(
        warnings.iter().any(|w| w.contains("not a tuning table")),
        "{warnings:?}"
    );
    assert!(tuner::timed_count(&g) > 0);
    tuner::forget(&g);
    tuner::choose(&g, &p).unwrap();
    assert_eq!(tuner::timed_count(&g), 0, "the rewritten file is read");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpu_selftest_tuned_convolution_weight_gradient_matches_the_reference() {
    let mut g = device();
    let dir = temp_dir("tune-conv");
    g.tuning = settings(&dir, vec![PROBE]);
    let s = ConvShape {
        n: 2,
        c_in: 6,
        h: 13,
        w: 13,
        c_out: 10,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 2,
    };
    let p = Product::Conv {
        entry: ConvEntry::BackwardWeight,
        shape: s,
    };
    let c = tuner::choose(&g, &p).expect("tune");
    let e = tuner::entry(&g, &p).unwrap();
    eprintln!("{e:#?}");
    assert!(
        c.splits.is_some(),
        "the weight gradient has a split-K factor"
    );
    // 1 and the factors for about 1, 2, 3 workgroups per multiprocessor, each timed.
    assert!(e.candidates.len() >= 2, "{e:?}");
    let x = random_tensor(5, s.input_len(), 1.0);
    let dy = random_tensor(6, s.output_len(), 1.0);
    let (tx, tdy) = (
        Tensor::from_slice(&g, &x, "t.x"),
        Tensor::from_slice(&g, &dy, "t.dy"),
    );
    let dw = Tensor::zeros(&g, s.weight_len(), "t.dw");
    let mut enc = g.encoder("test");
    conv::backward_weight(&mut Recorder::new(&g, &mut enc), &s, &tdy, &tx, &dw, false)
        .expect("record");
    g.submit(enc);
    check_close(
        "tuned conv dw",
        &dw.download(&g).unwrap(),
        &r::conv2d_backward_weight(&s, &dy, &x).0,
        2e-4,
        1e-4,
    )
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpu_selftest_split_k_candidates_follow_the_multiprocessor_count() {
    // conv3's weight gradient at batch 128 (M 384, N 2,304, K 21,632) in 128×128 tiles: 54
    // workgroups without split-K. Offered nothing is timed or run.
    let mut g = device();
    let p = Product::Conv {
        entry: ConvEntry::BackwardWeight,
        shape: ConvShape {
            n: 128,
            c_in: 256,
            h: 13,
            w: 13,
            c_out: 384,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
        },
    };
    let t = TileConfig::LARGE;
    // 132 SMs (H100/H200, given as the setting here: lavapipe is a CPU adapter): 108, 216
    // and 378 workgroups fill 82%, 82% and 95% of their waves, where 162, 270 and 432 (the
    // factors just above) would fill 61%, 68% and 82%.
    g.tuning.multiprocessors = Some(132);
    let (counts, why) = tuner::multiprocessor_counts(&g);
    assert_eq!((counts, why.contains("ALEXNET_SMS")), (vec![132], true));
    assert_eq!(tuner::split_candidates(&g, &p, &t), vec![1, 2, 4, 7]);
    for s in [2, 4, 7] {
        assert!(tuner::wave_fill(54 * s, 132) > tuner::wave_fill(54 * (s + 1), 132));
    }
    // Another count gives other factors: 66 SMs → 54, 108, 162 and 216 workgroups.
    g.tuning.multiprocessors = Some(66);
    assert_eq!(tuner::split_candidates(&g, &p, &t), vec![1, 2, 3, 4]);
    // Without the setting lavapipe counts the host's threads: at most a few, so no split
    // makes a wave.
    g.tuning.multiprocessors = None;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(tuner::multiprocessor_counts(&g).0, vec![threads]);
    if threads < 54 {
        assert_eq!(tuner::split_candidates(&g, &p, &t), vec![1]);
    }
    // Products without split-K are offered 1 only.
    let fwd = Product::Conv {
        entry: ConvEntry::Forward,
        shape: ConvShape {
            n: 2,
            c_in: 3,
            h: 9,
            w: 9,
            c_out: 4,
            k: 3,
            stride: 1,
            pad: 0,
            groups: 1,
        },
    };
    g.tuning.multiprocessors = Some(132);
    assert_eq!(tuner::split_candidates(&g, &fwd, &t), vec![1]);
}
