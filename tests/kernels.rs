//! What the GPU launchers do beyond the `Backend` trait, against the CPU reference
//! (`alexnet::reference`) on random inputs with awkward shapes (no tile multiples, batch 1 and
//! 3, groups 1 and 2, stride 4 with k 11, odd channel counts): the three GEMM forms with
//! accumulation, split-K and every tile configuration, the convolution launchers' forms (no
//! activation, accumulation, split-K) on both kernels and both tile policies, tile selection,
//! splits past the binding limit, the standalone activation and channel-slice kernels.
//! Every op as the network calls it (forward and backward with the activation fused, LRN,
//! pooling, dropout, the loss, SGD) is checked on every engine, the GPU included, by the one
//! suite in `tests/ops/`. Runs on the first real GPU, else on lavapipe; with no adapter at all
//! the tests fail and say to install `mesa-vulkan-drivers`.
use alexnet::gpu::dropout::SeedSlot;
use alexnet::gpu::gemm::TilePolicy;
use alexnet::gpu::step::{StepBuffer, StepScalars};
use alexnet::gpu::tiles::TileConfig;
use alexnet::gpu::{self, conv, gemm, selftest, Gpu, Recorder, Tensor};
use alexnet::reference::{self as r, check_close, random_tensor};
use alexnet::shape::{Activation, ConvShape, LinearShape};

fn device() -> Gpu {
    match Gpu::best() {
        Ok(g) => g,
        Err(e) => panic!("{e} (the kernel tests need an adapter; CI installs mesa-vulkan-drivers)"),
    }
}

fn up(g: &Gpu, data: &[f32], label: &str) -> Tensor {
    Tensor::from_slice(g, data, label)
}

fn run(g: &Gpu, f: impl FnOnce(&mut Recorder<'_>) -> gpu::Result<()>) {
    let mut enc = g.encoder("test");
    {
        let mut rec = Recorder::new(g, &mut enc);
        f(&mut rec).expect("record");
    }
    g.submit(enc);
}

/// A step buffer whose seed slot 0 is `seed`.
fn seeded(g: &Gpu, seed: u32) -> StepBuffer {
    StepBuffer::new(
        g,
        &StepScalars {
            seeds: [seed, 0, 0, 0],
            ..StepScalars::default()
        },
    )
}

fn down(g: &Gpu, t: &Tensor) -> Vec<f32> {
    t.download(g).expect("download")
}

#[track_caller]
fn close(name: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    if let Err(msg) = check_close(name, got, want, atol, rtol) {
        panic!("{msg}");
    }
}

/// Every tile configuration the launchers pick (the GPU's 128×128 of 8×8 a thread, heights
/// fitted to narrow products, the CPU adapter's 64×64 of 4×4), with and without split-K.
fn gemm_configs() -> Vec<(TileConfig, Option<usize>)> {
    let narrow = TileConfig {
        bm: 8,
        ..TileConfig::LARGE
    };
    let ninety_six = TileConfig {
        bm: 96,
        ..TileConfig::LARGE
    };
    vec![
        (TileConfig::LARGE, Some(1)),
        (TileConfig::LARGE, Some(3)),
        (ninety_six, Some(2)),
        (narrow, Some(1)),
        (TileConfig::SMALL, Some(1)),
        (TileConfig::SMALL, Some(4)),
    ]
}

#[test]
fn gemm_three_forms_bias_activation_accumulate_and_bias_grad() {
    let g = device();
    // The self-test's cases (what the tuner checks every tile on) among them.
    let cases = [(1, 7, 5), (3, 70, 33), (130, 131, 37)];
    for (m, n, k) in cases.into_iter().chain(selftest::GEMM_CASES) {
        let x = random_tensor(1, m * k, 1.0);
        let w = random_tensor(2, n * k, 1.0);
        let b = random_tensor(3, n, 1.0);
        let dy = random_tensor(4, m * n, 1.0);
        let (tx, tw, tb, tdy) = (
            up(&g, &x, "t.x"),
            up(&g, &w, "t.w"),
            up(&g, &b, "t.b"),
            up(&g, &dy, "t.dy"),
        );
        let want_y = r::linear_forward(
            &LinearShape {
                n: m,
                fin: k,
                fout: n,
            },
            &x,
            &w,
            &b,
        );
        let (want_dx, want_dw, want_db) = r::linear_backward(
            &LinearShape {
                n: m,
                fin: k,
                fout: n,
            },
            &dy,
            &x,
            &w,
        );
        let want_dw: Vec<f32> = want_dw.iter().map(|v| v + 0.5).collect();
        for (tile, splits) in gemm_configs() {
            let y = Tensor::zeros(&g, m * n, "t.y");
            let y_relu = Tensor::zeros(&g, m * n, "t.y_relu");
            let y_tanh = Tensor::zeros(&g, m * n, "t.y_tanh");
            let dx = Tensor::zeros(&g, m * k, "t.dx");
            let dw = up(&g, &vec![0.5; n * k], "t.dw");
            let args = |form, a, bb, c, act, acc| gemm::GemmArgs {
                form,
                m: if form == gemm::GemmForm::AtB { n } else { m },
                n: match form {
                    gemm::GemmForm::ABt => n,
                    _ => k,
                },
                k: match form {
                    gemm::GemmForm::ABt => k,
                    gemm::GemmForm::AB => n,
                    gemm::GemmForm::AtB => m,
                },
                a,
                b: bb,
                c,
                bias: (form == gemm::GemmForm::ABt).then_some(&tb),
                accumulate: acc,
                alpha: 1.0,
                act,
            };
            run(&g, |e| {
                use gemm::GemmForm::*;
                gemm::record_with(e, &args(ABt, &tx, &tw, &y, None, false), tile, splits)?;
                let relu = args(ABt, &tx, &tw, &y_relu, Some(Activation::Relu), false);
                gemm::record_with(e, &relu, tile, splits)?;
                let tanh = args(ABt, &tx, &tw, &y_tanh, Some(Activation::Tanh), false);
                gemm::record_with(e, &tanh, tile, splits)?;
                gemm::record_with(e, &args(AB, &tdy, &tw, &dx, None, false), tile, splits)?;
                // Accumulate onto 0.5 to test β = 1.
                gemm::record_with(e, &args(AtB, &tdy, &tx, &dw, None, true), tile, splits)
            });
            let tag = format!("gemm m{m} n{n} k{k} tile {} splits {splits:?}", tile.tag());
            close(
                &format!("{tag} forward y"),
                &down(&g, &y),
                &want_y,
                1e-4,
                1e-4,
            );
            for (act, t) in [(Activation::Relu, &y_relu), (Activation::Tanh, &y_tanh)] {
                close(
                    &format!("{tag} forward {act:?}(y)"),
                    &down(&g, t),
                    &r::activation_forward(act, &want_y),
                    1e-4,
                    1e-4,
                );
            }
            close(
                &format!("{tag} backward_input dx"),
                &down(&g, &dx),
                &want_dx,
                1e-4,
                1e-4,
            );
            close(
                &format!("{tag} backward_weight dw (accumulated)"),
                &down(&g, &dw),
                &want_dw,
                1e-4,
                1e-4,
            );
        }
        let ls = LinearShape {
            n: m,
            fin: k,
            fout: n,
        };
        let db = Tensor::zeros(&g, n, "t.db");
        run(&g, |e| gemm::linear_backward_bias(e, &ls, &tdy, &db, false));
        close(
            &format!("gemm m{m} n{n} backward_bias db"),
            &down(&g, &db),
            &want_db,
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn gemm_policies_pick_valid_tiles_and_split_short_wide_products() {
    let mut g = device();
    g.tiles = TilePolicy::Gpu;
    // fc6 of the paper at batch 128: 32 tiles of 128×128, split along K to fill a GPU.
    let t = gemm::tile_for(&g, 128);
    assert_eq!((t.bm, t.bn, t.tm, t.tn), (128, 128, 8, 8));
    let splits = gemm::splits_for(&g, &t, 128, 4096, 9216, 256 << 20);
    assert!(splits >= 4, "fc6 forward splits {splits}");
    // A big square product needs no split; a narrow one gets a fitted tile height.
    assert_eq!(gemm::splits_for(&g, &t, 4096, 4096, 4096, 256 << 20), 1);
    assert_eq!(gemm::tile_for(&g, 96).bm, 96);
    assert_eq!(gemm::tile_for(&g, 48).bm, 48);
    assert_eq!(gemm::tile_for(&g, 192).bm, 96);
    assert_eq!(gemm::tile_for(&g, 384).bm, 128);
    g.tiles = TilePolicy::Cpu;
    assert_eq!(gemm::tile_for(&g, 128), TileConfig::SMALL);
    assert_eq!(gemm::splits_for(&g, &t, 128, 4096, 9216, 256 << 20), 1);
}

#[test]
fn gemm_splits_operands_larger_than_a_binding() {
    let mut g = device();
    let (m, n, k) = (5, 300, 77);
    // A limit that forces every operand of this size to be split into several windows with
    // unaligned element offsets.
    g.binding_limit = 4096;
    let x = random_tensor(11, m * k, 1.0);
    let w = random_tensor(12, n * k, 1.0);
    let b = random_tensor(13, n, 1.0);
    let dy = random_tensor(14, m * n, 1.0);
    let (tx, tw, tb, tdy) = (
        up(&g, &x, "t.x"),
        up(&g, &w, "t.w"),
        up(&g, &b, "t.b"),
        up(&g, &dy, "t.dy"),
    );
    let args = gemm::GemmArgs {
        form: gemm::GemmForm::ABt,
        m,
        n,
        k,
        a: &tx,
        b: &tw,
        c: &tx,
        bias: Some(&tb),
        accumulate: false,
        alpha: 1.0,
        act: None,
    };
    let plan = gemm::plan(&args, g.binding_limit, g.offset_alignment()).expect("plan");
    assert!(plan.len() > 1, "the weight should be split, got {plan:?}");
    let y = Tensor::zeros(&g, m * n, "t.y");
    let dx = Tensor::zeros(&g, m * k, "t.dx");
    let dw = Tensor::zeros(&g, n * k, "t.dw");
    let ls = LinearShape {
        n: m,
        fin: k,
        fout: n,
    };
    run(&g, |e| {
        gemm::linear_forward(e, &ls, &tx, &tw, Some(&tb), &y, None)?;
        // dX = dY·W reduces over N: a K-dimension split that must accumulate its chunks.
        gemm::linear_backward_input(e, &ls, &tdy, &tw, &dx, false)?;
        gemm::linear_backward_weight(e, &ls, &tdy, &tx, &dw, false)
    });
    let want_y = r::linear_forward(
        &LinearShape {
            n: m,
            fin: k,
            fout: n,
        },
        &x,
        &w,
        &b,
    );
    let (want_dx, want_dw, _) = r::linear_backward(
        &LinearShape {
            n: m,
            fin: k,
            fout: n,
        },
        &dy,
        &x,
        &w,
    );
    close("gemm split forward y", &down(&g, &y), &want_y, 1e-4, 1e-4);
    close(
        "gemm split backward_input dx",
        &down(&g, &dx),
        &want_dx,
        1e-4,
        1e-4,
    );
    close(
        "gemm split backward_weight dw",
        &down(&g, &dw),
        &want_dw,
        1e-4,
        1e-4,
    );
    // A row longer than the limit cannot be split and must say so.
    g.binding_limit = 128;
    let err = gemm::plan(&args, g.binding_limit, g.offset_alignment()).unwrap_err();
    assert!(err.to_string().contains("binding"), "{err}");
}

/// Both convolution kernels (tiled for GPUs, direct for CPU adapters) on one shape, the
/// tiled one with the GPU's tiles and with a CPU adapter's.
fn conv_case(g: &mut Gpu, s: ConvShape, seed: u32) {
    let chosen = (g.conv_kernels, g.tiles);
    for (kernels, tiles) in [
        (conv::ConvKernels::Tiled, TilePolicy::Gpu),
        (conv::ConvKernels::Tiled, TilePolicy::Cpu),
        (conv::ConvKernels::Direct, TilePolicy::Cpu),
    ] {
        g.conv_kernels = kernels;
        g.tiles = tiles;
        conv_case_with(g, s, seed);
    }
    (g.conv_kernels, g.tiles) = chosen;
}

fn conv_case_with(g: &Gpu, s: ConvShape, seed: u32) {
    let x = random_tensor(seed, s.input_len(), 1.0);
    let w = random_tensor(seed + 1, s.weight_len(), 1.0);
    let b = random_tensor(seed + 2, s.c_out, 1.0);
    let dy = random_tensor(seed + 3, s.output_len(), 1.0);
    let (tx, tw, tb, tdy) = (
        up(g, &x, "t.x"),
        up(g, &w, "t.w"),
        up(g, &b, "t.b"),
        up(g, &dy, "t.dy"),
    );
    let y = Tensor::zeros(g, s.output_len(), "t.y");
    let y_relu = Tensor::zeros(g, s.output_len(), "t.y_relu");
    let y_tanh = Tensor::zeros(g, s.output_len(), "t.y_tanh");
    let dx = up(g, &vec![-0.5; s.input_len()], "t.dx");
    let dw = Tensor::zeros(g, s.weight_len(), "t.dw");
    let db = up(g, &vec![1.0; s.c_out], "t.db");
    let dw_split = up(g, &vec![0.25; s.weight_len()], "t.dw_split");
    // Weight and bias gradients together (the bias folded into the weight's product where the
    // tile leaves a spare column), in one and in 3 splits accumulated onto random values.
    let start_w = random_tensor(seed + 4, s.weight_len(), 1.0);
    let start_b = random_tensor(seed + 5, s.c_out, 1.0);
    let params = [1, 3].map(|splits| {
        let acc = splits > 1;
        let dw = if acc {
            up(g, &start_w, "t.dw_params")
        } else {
            Tensor::zeros(g, s.weight_len(), "t.dw_params")
        };
        let db = if acc {
            up(g, &start_b, "t.db_params")
        } else {
            Tensor::zeros(g, s.c_out, "t.db_params")
        };
        run(g, |e| {
            conv::backward_params_split(e, &s, [&tdy, &tx], [&dw, &db], acc, splits)
        });
        (splits, acc, down(g, &dw), down(g, &db))
    });
    run(g, |e| {
        conv::forward(e, &s, &tx, &tw, &tb, &y, None)?;
        conv::forward(e, &s, &tx, &tw, &tb, &y_relu, Some(Activation::Relu))?;
        conv::forward(e, &s, &tx, &tw, &tb, &y_tanh, Some(Activation::Tanh))?;
        // Accumulated onto −0.5.
        conv::backward_input(e, &s, &tdy, &tw, &dx, true)?;
        conv::backward_weight_split(e, &s, &tdy, &tx, &dw, false, 1)?;
        // Split-K with partials, accumulated onto 0.25.
        conv::backward_weight_split(e, &s, &tdy, &tx, &dw_split, true, 3)?;
        conv::backward_bias(e, &s, &tdy, &db, true)
    });
    let want_y = r::conv2d_forward(&s, &x, &w, &b);
    let want_dx: Vec<f32> = r::conv2d_backward_input(&s, &dy, &w)
        .iter()
        .map(|v| v - 0.5)
        .collect();
    let (want_dw, want_db) = r::conv2d_backward_weight(&s, &dy, &x);
    let want_db: Vec<f32> = want_db.iter().map(|v| v + 1.0).collect();
    let tag = format!("conv {:?} {:?} {s:?}", g.conv_kernels, g.tiles);
    close(
        &format!("{tag} forward y"),
        &down(g, &y),
        &want_y,
        1e-4,
        1e-4,
    );
    for (act, t) in [(Activation::Relu, &y_relu), (Activation::Tanh, &y_tanh)] {
        close(
            &format!("{tag} forward {act:?}(y)"),
            &down(g, t),
            &r::activation_forward(act, &want_y),
            1e-4,
            1e-4,
        );
    }
    close(
        &format!("{tag} backward_input dx (accumulated)"),
        &down(g, &dx),
        &want_dx,
        1e-4,
        1e-4,
    );
    close(
        &format!("{tag} backward_weight dw"),
        &down(g, &dw),
        &want_dw,
        2e-4,
        1e-4,
    );
    let want_dw_split: Vec<f32> = want_dw.iter().map(|v| v + 0.25).collect();
    close(
        &format!("{tag} backward_weight dw (3 splits, accumulated)"),
        &down(g, &dw_split),
        &want_dw_split,
        2e-4,
        1e-4,
    );
    close(
        &format!("{tag} backward_bias db (accumulated)"),
        &down(g, &db),
        &want_db,
        1e-4,
        1e-4,
    );
    let want_db = r::conv2d_backward_weight(&s, &dy, &x).1;
    for (splits, acc, got_dw, got_db) in params {
        let add = |want: &[f32], start: &[f32]| -> Vec<f32> {
            want.iter()
                .zip(start)
                .map(|(w, s)| if acc { w + s } else { *w })
                .collect()
        };
        let tag = format!("{tag} backward_params in {splits} splits");
        close(
            &format!("{tag} dw"),
            &got_dw,
            &add(&want_dw, &start_w),
            2e-4,
            1e-4,
        );
        close(
            &format!("{tag} db"),
            &got_db,
            &add(&want_db, &start_b),
            1e-4,
            1e-4,
        );
    }
}

#[test]
fn conv_bias_folds_only_into_a_spare_column() {
    // Cig·k·k = 3·121 = 363 leaves a spare column in 128- and 64-wide tiles; 16·2·2 = 64 and
    // 32·2·2 = 128 fill them, and folding would add a column of tiles: the separate pass runs.
    // The tiled cases run both paths through conv_case (`conv_past_a_full_column_tile`).
    let s = |c_in, k| ConvShape {
        n: 1,
        c_in,
        h: 9,
        w: 9,
        c_out: 4,
        k,
        stride: 1,
        pad: 0,
        groups: 1,
    };
    assert!(conv::folds_bias(&s(3, 11), &TileConfig::LARGE));
    assert!(conv::folds_bias(&s(3, 11), &TileConfig::SMALL));
    assert!(!conv::folds_bias(&s(16, 2), &TileConfig::SMALL));
    assert!(conv::folds_bias(&s(16, 2), &TileConfig::LARGE));
    assert!(!conv::folds_bias(&s(32, 2), &TileConfig::LARGE));
}

#[test]
fn conv_past_a_full_column_tile() {
    // 16·2·2 = 64 weight columns: the 64-wide tile (the CPU policy) runs the separate bias
    // pass, the 128-wide one (the GPU policy) the folded column; two groups, stride 2.
    let mut g = device();
    conv_case(
        &mut g,
        ConvShape {
            n: 3,
            c_in: 32,
            h: 9,
            w: 8,
            c_out: 6,
            k: 2,
            stride: 2,
            pad: 1,
            groups: 2,
        },
        120,
    );
}

#[test]
fn conv_like_conv1_stride4_k11() {
    let mut g = device();
    conv_case(
        &mut g,
        ConvShape {
            n: 1,
            c_in: 3,
            h: 31,
            w: 31,
            c_out: 5,
            k: 11,
            stride: 4,
            pad: 0,
            groups: 1,
        },
        20,
    );
}

#[test]
fn conv_grouped_padded_batch3() {
    let mut g = device();
    conv_case(
        &mut g,
        ConvShape {
            n: 3,
            c_in: 6,
            h: 9,
            w: 7,
            c_out: 10,
            k: 5,
            stride: 1,
            pad: 2,
            groups: 2,
        },
        30,
    );
    conv_case(
        &mut g,
        ConvShape {
            n: 3,
            c_in: 7,
            h: 6,
            w: 6,
            c_out: 67,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
        },
        40,
    );
    conv_case(
        &mut g,
        ConvShape {
            n: 1,
            c_in: 4,
            h: 8,
            w: 9,
            c_out: 6,
            k: 3,
            stride: 2,
            pad: 1,
            groups: 2,
        },
        50,
    );
}

#[test]
fn conv_selftest_cases() {
    // What the tuner checks every tile on: conv1's stride 4 and k 11 padded in two groups.
    let mut g = device();
    for (i, s) in selftest::CONV_CASES.into_iter().enumerate() {
        conv_case(&mut g, s, 100 + 10 * i as u32);
    }
}

#[test]
fn conv_past_one_workgroup_of_columns() {
    // The direct kernel covers 256 columns a workgroup: 969 output positions, 306 weight
    // columns (34·3·3) and 11 rows (not a multiple of its 8) leave partial workgroups.
    let mut g = device();
    conv_case(
        &mut g,
        ConvShape {
            n: 3,
            c_in: 34,
            h: 17,
            w: 19,
            c_out: 11,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
        },
        90,
    );
}

#[test]
fn conv_bias_gradient_in_batch_slices() {
    // Slices of several images and one, positions a plane more (323) and fewer (20) than a
    // workgroup's 256 invocations (so a turn crosses images), accumulated onto random values;
    // asking 9 slices of 5 images gives 5.
    let g = device();
    for (i, (h, w)) in [(17, 19), (4, 5)].into_iter().enumerate() {
        let s = ConvShape {
            n: 5,
            c_in: 2,
            h,
            w,
            c_out: 7,
            k: 3,
            stride: 1,
            pad: 1,
            groups: 1,
        };
        let seed = 300 + 10 * i as u32;
        let x = random_tensor(seed, s.input_len(), 1.0);
        let dy = random_tensor(seed + 1, s.output_len(), 1.0);
        let start = random_tensor(seed + 2, s.c_out, 1.0);
        let (_, want_db) = r::conv2d_backward_weight(&s, &dy, &x);
        let tdy = up(&g, &dy, "t.dy");
        for splits in [1, 2, 3, 5, 9] {
            let db = up(&g, &start, "t.db");
            run(&g, |e| {
                conv::backward_bias_split(e, &s, &tdy, &db, true, splits)
            });
            let want: Vec<f32> = want_db.iter().zip(&start).map(|(a, b)| a + b).collect();
            close(
                &format!("conv backward_bias {h}x{w} in {splits} slices"),
                &down(&g, &db),
                &want,
                1e-4,
                1e-4,
            );
        }
    }
    let paper = ConvShape {
        n: 128,
        c_in: 3,
        h: 227,
        w: 227,
        c_out: 96,
        k: 11,
        stride: 4,
        pad: 0,
        groups: 1,
    };
    assert!(conv::bias_splits(&paper) * paper.c_out >= 4 * gemm::TARGET_WORKGROUPS);
}

#[test]
fn conv_narrow_layers_use_every_tile_height() {
    // Output channels a group of 13, 27 and 40 (and input channels a group of 9, 20 and 5 for
    // backward_input): tile heights fitted to each (rounded up to 8), each with rows past the
    // end.
    let mut g = device();
    let shapes = [
        (18, 26, 2, 5, 2, 1, 11),
        (40, 54, 2, 3, 1, 1, 10),
        (5, 40, 1, 5, 2, 2, 9),
    ];
    let mut heights = std::collections::BTreeSet::new();
    for (i, &(c_in, c_out, groups, k, stride, pad, hw)) in shapes.iter().enumerate() {
        let s = ConvShape {
            n: 2,
            c_in,
            h: hw,
            w: hw + 2,
            c_out,
            k,
            stride,
            pad,
            groups,
        };
        g.tiles = TilePolicy::Gpu;
        for m in [c_out / groups, c_in / groups] {
            heights.insert(conv::tile_for(&g, m).bm);
        }
        g.tiles = TilePolicy::for_device(g.adapter.device_type);
        conv_case(&mut g, s, 60 + 10 * i as u32);
    }
    assert_eq!(heights.len(), 5, "tile heights covered: {heights:?}");
}

#[test]
fn activation_relu_and_tanh() {
    let g = device();
    for act in [Activation::Relu, Activation::Tanh] {
        let n = 1000;
        let x = random_tensor(60, n, 1.0);
        let dy = random_tensor(61, n, 1.0);
        let t = up(&g, &x, "t.x");
        run(&g, |e| gpu::activation::forward(e, act, &t));
        let y = down(&g, &t);
        close(
            &format!("activation {act:?} forward"),
            &y,
            &r::activation_forward(act, &x),
            1e-6,
            1e-5,
        );
        let td = up(&g, &dy, "t.dy");
        run(&g, |e| gpu::activation::backward(e, act, &td, &t));
        close(
            &format!("activation {act:?} backward"),
            &down(&g, &td),
            &r::activation_backward(act, &dy, &y),
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn channel_slices_copy_and_accumulate() {
    use gpu::channels::{Move, Slice};
    let g = device();
    // Awkward sizes: 3 images, 5 of 7 channels into 9 at offset 3, 13 values per channel.
    let (n, hw, k) = (3, 13, 5);
    let (src_c, src_off, dst_c, dst_off) = (7, 2, 9, 3);
    let src = random_tensor(70, n * src_c * hw, 1.0);
    let dst0 = random_tensor(71, n * dst_c * hw, 1.0);
    for accumulate in [false, true] {
        let ts = up(&g, &src, "t.src");
        let td = up(&g, &dst0, "t.dst");
        run(&g, |e| {
            gpu::channels::copy(
                e,
                Move { n, k, hw },
                (&ts, Slice::at(src_c, src_off)),
                (&td, Slice::at(dst_c, dst_off)),
                accumulate,
            )
        });
        let mut want = dst0.clone();
        r::copy_channels(
            [n, k, hw],
            (&src, (src_c, src_off)),
            (&mut want, (dst_c, dst_off)),
            accumulate,
        );
        // A copy is exact and an add is one f32 rounding, the same on both sides.
        assert_eq!(down(&g, &td), want, "accumulate {accumulate}");
        assert_ne!(want, dst0);
    }
    let ts = up(&g, &src, "t.src");
    let td = up(&g, &dst0, "t.dst");
    let mut enc = g.encoder("t");
    let err = gpu::channels::copy(
        &mut Recorder::new(&g, &mut enc),
        Move { n, k: 6, hw },
        (&ts, Slice::at(src_c, src_off)),
        (&td, Slice::at(dst_c, dst_off)),
        false,
    )
    .expect_err("a slice past the last channel is refused");
    assert!(err.to_string().contains("does not fit"), "{err}");
}

#[test]
fn elementwise_ops_split_beyond_the_binding_limit() {
    let mut g = device();
    g.binding_limit = 1024; // 256 elements per window
    let n = 1000;
    let x = random_tensor(62, n, 1.0);
    let t = up(&g, &x, "t.x");
    run(&g, |e| gpu::activation::forward(e, Activation::Relu, &t));
    close(
        "activation split forward",
        &down(&g, &t),
        &r::activation_forward(Activation::Relu, &x),
        0.0,
        0.0,
    );
    let t = up(&g, &x, "t.x");
    let sb = seeded(&g, 99);
    let seed = SeedSlot { step: &sb, slot: 0 };
    run(&g, |e| gpu::dropout::forward(e, &t, seed, 0.5));
    close(
        "dropout split forward",
        &down(&g, &t),
        &r::dropout_forward(0.5, 99, &x),
        0.0,
        0.0,
    );
    // SGD over several windows of the binding (the suite runs it whole).
    let w = random_tensor(110, 777, 1.0);
    let v = random_tensor(111, 777, 0.1);
    let gr = random_tensor(112, 777, 1.0);
    let (tw, tv, tg) = (up(&g, &w, "t.w"), up(&g, &v, "t.v"), up(&g, &gr, "t.g"));
    let hyper = StepBuffer::new(
        &g,
        &StepScalars {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 0.0005,
            ..StepScalars::default()
        },
    );
    run(&g, |e| gpu::sgd::step(e, &tw, &tv, &tg, &hyper));
    let (mut ww, mut vv) = (w.clone(), v.clone());
    r::sgd_update(&mut ww, &mut vv, &gr, 0.01, 0.9, 0.0005);
    close("sgd split w", &down(&g, &tw), &ww, 1e-7, 1e-6);
    close("sgd split v", &down(&g, &tv), &vv, 1e-7, 1e-6);
}

#[test]
fn two_devices_on_one_adapter_both_compute() {
    let a = device();
    let b = Gpu::new(a.adapter.index).expect("second device");
    for g in [&a, &b] {
        let t = up(g, &[-1.0, 2.0], "t.x");
        run(g, |e| gpu::activation::forward(e, Activation::Relu, &t));
        assert_eq!(down(g, &t), vec![0.0, 2.0]);
    }
}

#[test]
fn shape_errors_name_the_op_and_tensor() {
    let g = device();
    let s = ConvShape {
        n: 1,
        c_in: 3,
        h: 8,
        w: 8,
        c_out: 4,
        k: 3,
        stride: 1,
        pad: 0,
        groups: 1,
    };
    let x = Tensor::zeros(&g, 10, "t.x");
    let w = Tensor::zeros(&g, s.weight_len(), "t.w");
    let b = Tensor::zeros(&g, 4, "t.b");
    let y = Tensor::zeros(&g, s.output_len(), "t.y");
    let mut e = g.encoder("t");
    let err = conv::forward(&mut Recorder::new(&g, &mut e), &s, &x, &w, &b, &y, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv") && err.contains("`x`"), "{err}");
}

#[test]
fn gemm_with_a_weight_larger_than_the_device_binding_limit() {
    let g = device();
    // Just over lavapipe's 128 MiB binding (fc6's weight is 151 MB); on a GPU with a larger
    // limit the same call simply runs unsplit.
    let (m, n, k) = (2, 4099, 8209);
    assert!((n * k * 4) as u64 > 128 << 20);
    let x = random_tensor(120, m * k, 1.0);
    let w = random_tensor(121, n * k, 1.0);
    let b = random_tensor(122, n, 1.0);
    let (tx, tw, tb) = (up(&g, &x, "t.x"), up(&g, &w, "t.w"), up(&g, &b, "t.b"));
    let y = Tensor::zeros(&g, m * n, "t.y");
    let ls = LinearShape {
        n: m,
        fin: k,
        fout: n,
    };
    run(&g, |e| {
        gemm::linear_forward(e, &ls, &tx, &tw, Some(&tb), &y, None)
    });
    close(
        "gemm > binding limit forward y",
        &down(&g, &y),
        &r::linear_forward(
            &LinearShape {
                n: m,
                fin: k,
                fout: n,
            },
            &x,
            &w,
            &b,
        ),
        2e-4,
        1e-4,
    );
}

#[test]
fn devices_table_lists_the_adapter() {
    let g = device();
    let table = gpu::context::devices_table(&gpu::list_adapters());
    assert!(
        table.contains(&g.adapter.name) && table.contains("storage binding"),
        "{table}"
    );
}

#[test]
fn dropout_at_an_offset_draws_those_elements_of_the_whole_mask() {
    // A data-parallel replica holding rows 3..8 of an [8, 37] batch masks its buffer as
    // those rows of the whole batch's mask.
    let g = device();
    let (first, rows, f) = (3usize, 5usize, 37usize);
    let whole = random_tensor(91, (first + rows) * f, 1.0);
    let part = whole[first * f..].to_vec();
    let (seed, p) = (99u32, 0.5f32);
    let want = r::dropout_forward(p, seed, &whole)[first * f..].to_vec();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&r::dropout_forward_at(p, seed, first * f, &part)),
        bits(&want)
    );
    assert_ne!(
        bits(&r::dropout_forward(p, seed, &part)),
        bits(&want),
        "offset ignored"
    );
    let t = up(&g, &part, "t.x");
    let sb = seeded(&g, seed);
    let slot = SeedSlot { step: &sb, slot: 0 };
    run(&g, |e| {
        gpu::dropout::forward_at(e, &t, slot, p, (first * f) as u32)
    });
    assert_eq!(bits(&down(&g, &t)), bits(&want), "GPU dropout at an offset");
}

#[test]
fn conv_bias_folding_saves_two_dispatches_a_layer() {
    // The paper's five convolutions (batch 2: the dispatches do not depend on it beyond the
    // bias slices, 2 here as at 128) on the tiled kernels with the GPU policy's 128-wide
    // tiles, counted as recorded (a timer counts every dispatch; nothing is submitted).
    // Cig·k·k = 363, 1,200, 2,304, 1,728, 1,728: all but conv3's (18 whole tiles) fold.
    let mut g = device();
    g.conv_kernels = conv::ConvKernels::Tiled;
    g.tiles = TilePolicy::Gpu;
    let layer = |c_in, hw, c_out, k, stride, pad, groups| ConvShape {
        n: 2,
        c_in,
        h: hw,
        w: hw,
        c_out,
        k,
        stride,
        pad,
        groups,
    };
    let paper = [
        layer(3, 227, 96, 11, 4, 0, 1),
        layer(96, 27, 256, 5, 1, 2, 2),
        layer(256, 13, 384, 3, 1, 1, 1),
        layer(384, 13, 384, 3, 1, 1, 2),
        layer(384, 13, 256, 3, 1, 1, 2),
    ];
    let count = |s: &ConvShape, folded: bool| -> usize {
        let dy = Tensor::zeros(&g, s.output_len(), "t.dy");
        let x = Tensor::zeros(&g, s.input_len(), "t.x");
        let dw = Tensor::zeros(&g, s.weight_len(), "t.dw");
        let db = Tensor::zeros(&g, s.c_out, "t.db");
        let timer = gpu::KernelTimer::new(&g, 64).expect("lavapipe has timestamp queries");
        let mut enc = g.encoder("t.count");
        let mut rec = Recorder::new(&g, &mut enc).with_timer(Some(&timer));
        if folded {
            conv::backward_params(&mut rec, s, [&dy, &x], [&dw, &db], false).unwrap();
        } else {
            conv::backward_weight(&mut rec, s, &dy, &x, &dw, false).unwrap();
            conv::backward_bias(&mut rec, s, &dy, &db, false).unwrap();
        }
        drop(rec);
        timer.len()
    };
    let (mut before, mut after) = (0, 0);
    for (i, s) in paper.iter().enumerate() {
        let tile = conv::tile_for(&g, s.c_out / s.groups);
        let (b, a) = (count(s, false), count(s, true));
        let saved = if conv::folds_bias(s, &tile) { 2 } else { 0 };
        assert_eq!(i == 2, saved == 0, "conv{} {tile:?}", i + 1);
        assert_eq!(
            a + saved,
            b,
            "conv{}: {b} dispatches before, {a} after",
            i + 1
        );
        before += b;
        after += a;
    }
    println!("weight and bias gradients of the five convolutions: {before} dispatches before, {after} after");
}
