//! A NaN reaches the loss (issue 24, bug 4): every op keeps a NaN where PyTorch does, on the
//! reference, the CPU engine and the WGSL kernels (lavapipe when there is no GPU). ReLU and
//! max-pool used to turn a NaN into 0 (`max(x, 0)`, `x > best`), so one NaN weight scored
//! top-1 1.0.
//!
//! The rule, as PyTorch's: ReLU keeps a NaN and passes its gradient (`threshold_backward`
//! zeroes only where `y <= 0`); max-pool takes a NaN as the window's maximum and routes the
//! gradient to the FIRST NaN (the first-maximum rule, unchanged for numbers); conv, linear,
//! LRN and softmax propagate by arithmetic. Each case checks that the NaNs are exactly where
//! the reference has them (and that there are some, and some numbers too), and that the
//! numbers agree.
use alexnet::cpu::activation::{act_backward_in_place, apply_act};
use alexnet::cpu::conv::{conv_forward, ConvPlan, ConvScratch};
use alexnet::cpu::linear::linear_forward;
use alexnet::cpu::lrn::lrn_forward;
use alexnet::cpu::maxpool::{maxpool_backward, maxpool_forward};
use alexnet::cpu::softmax::softmax_xent_forward;
use alexnet::cpu::views::Weights;
use alexnet::cpu::CpuDevice;
use alexnet::gpu::{self, Gpu, Recorder, Tensor};
use alexnet::reference::{self as r, random_tensor};
use alexnet::shape::{Activation, ConvShape, LinearShape, LrnParams, PoolShape};

fn device() -> Gpu {
    match Gpu::best() {
        Ok(g) => g,
        Err(e) => panic!("{e} (the kernel tests need an adapter; CI installs mesa-vulkan-drivers)"),
    }
}

fn run(g: &Gpu, f: impl FnOnce(&mut Recorder<'_>) -> gpu::Result<()>) {
    let mut enc = g.encoder("test");
    {
        let mut rec = Recorder::new(g, &mut enc);
        f(&mut rec).expect("record");
    }
    g.submit(enc);
}

fn up(g: &Gpu, data: &[f32]) -> Tensor {
    Tensor::from_slice(g, data, "t.in")
}

fn down(g: &Gpu, t: &Tensor) -> Vec<f32> {
    t.download(g).expect("download")
}

/// `v` with NaN at every `every`-th element from `from`.
fn with_nans(mut v: Vec<f32>, from: usize, every: usize) -> Vec<f32> {
    v.iter_mut()
        .skip(from)
        .step_by(every)
        .for_each(|x| *x = f32::NAN);
    v
}

/// NaN exactly where `want` has NaN; the numbers within `tol` (relative to the largest).
#[track_caller]
fn same(name: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let nans = want.iter().filter(|v| v.is_nan()).count();
    assert!(
        nans > 0 && nans < want.len(),
        "{name}: the reference has {nans} NaN of {}; the case tests nothing",
        want.len()
    );
    let scale = want
        .iter()
        .filter(|v| v.is_finite())
        .fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.is_nan(),
            w.is_nan(),
            "{name}: element {i} is {g}, the reference {w}"
        );
        if !w.is_nan() {
            assert!(
                (g - w).abs() <= tol * scale,
                "{name}: element {i} is {g}, the reference {w}"
            );
        }
    }
}

#[test]
fn relu_keeps_a_nan_and_passes_its_gradient() {
    let x = with_nans(random_tensor(1, 1003, 1.0), 3, 7);
    let want = r::activation_forward(Activation::Relu, &x);
    // The reference itself: NaN in, NaN out, negatives to 0.
    for (a, b) in x.iter().zip(&want) {
        assert!(a.is_nan() == b.is_nan() && (a.is_nan() || *b == a.max(0.0)));
    }
    let dy = random_tensor(2, x.len(), 1.0);
    let want_dx = r::activation_backward(Activation::Relu, &dy, &want);
    for ((d, y), dx) in dy.iter().zip(&want).zip(&want_dx) {
        let passes = y.is_nan() || *y > 0.0;
        assert_eq!(*dx, if passes { *d } else { 0.0 });
    }
    let mut cpu = x.clone();
    apply_act(Activation::Relu, &mut cpu);
    same("cpu relu forward", &cpu, &want, 0.0);
    // A gradient with NaN where y is NaN is what the backward must keep; use y's NaNs.
    let mut cpu_dx = dy.clone();
    act_backward_in_place(Activation::Relu, &mut cpu_dx, &want);
    assert_eq!(
        cpu_dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "cpu relu backward"
    );

    let g = device();
    let t = up(&g, &x);
    run(&g, |e| gpu::activation::forward(e, Activation::Relu, &t));
    same("gpu relu forward", &down(&g, &t), &want, 0.0);
    let (td, ty) = (up(&g, &dy), up(&g, &want));
    run(&g, |e| {
        gpu::activation::backward(e, Activation::Relu, &td, &ty)
    });
    assert_eq!(down(&g, &td), want_dx, "gpu relu backward");
}

#[test]
fn maxpool_takes_a_nan_as_the_maximum_and_routes_to_the_first() {
    let s = PoolShape {
        n: 2,
        c: 3,
        h: 9,
        w: 11,
        k: 3,
        stride: 2,
    };
    // Two NaNs in one window (positions 2 and 13 share the first window of the first plane
    // row pair) test the first-NaN rule; one at a window's first element tests the start.
    let mut x = random_tensor(3, s.input_len(), 1.0);
    for i in [2, 13, 99 + 24, 3 * 99 + 50] {
        x[i] = f32::NAN;
    }
    let want_y = r::maxpool_forward(&s, &x);
    let dy = random_tensor(4, s.output_len(), 1.0);
    let want_dx = r::maxpool_backward(&s, &x, &dy);
    // The reference: the window over (0..3, 0..3) of plane 0 holds element 2 (row 0) and 13
    // (row 1, column 2): the output is NaN and the gradient goes to element 2 alone.
    assert!(want_y[0].is_nan());
    assert_eq!(want_dx[13], 0.0, "a second NaN takes no gradient");
    assert_ne!(want_dx[2], 0.0, "the first NaN takes the window's gradient");
    same("reference maxpool forward", &want_y, &want_y, 0.0);

    let (mut y, mut arg) = (vec![0.0; s.output_len()], vec![0u32; s.output_len()]);
    let mut dx = vec![f32::NAN; s.input_len()];
    let cpu = CpuDevice::new(2).unwrap();
    cpu.install(|| {
        maxpool_forward(&s, &x, &mut y, &mut arg);
        maxpool_backward(&s, &arg, &dy, &mut dx);
    });
    same("cpu maxpool forward", &y, &want_y, 0.0);
    assert_eq!(dx, want_dx, "cpu maxpool backward");

    let g = device();
    let (tx, tdy) = (up(&g, &x), up(&g, &dy));
    let ty = Tensor::zeros(&g, s.output_len(), "t.y");
    let tdx = Tensor::zeros(&g, s.input_len(), "t.dx");
    run(&g, |e| {
        gpu::maxpool::forward(e, &s, &tx, &ty)?;
        gpu::maxpool::backward(e, &s, &tx, &tdy, &tdx)
    });
    same("gpu maxpool forward", &down(&g, &ty), &want_y, 0.0);
    let got = down(&g, &tdx);
    for (i, (a, b)) in got.iter().zip(&want_dx).enumerate() {
        assert!(
            (a - b).abs() <= 1e-6,
            "gpu maxpool backward {i}: {a} vs {b}"
        );
    }
}

#[test]
fn conv_and_linear_with_fused_relu_keep_a_nan_input() {
    let s = ConvShape {
        n: 2,
        c_in: 3,
        h: 13,
        w: 11,
        c_out: 5,
        k: 3,
        stride: 2,
        pad: 1,
        groups: 1,
    };
    let mut x = random_tensor(5, s.input_len(), 1.0);
    x[40] = f32::NAN;
    let w = random_tensor(6, s.weight_len(), 1.0);
    let b = random_tensor(7, s.c_out, 1.0);
    let want = r::activation_forward(Activation::Relu, &r::conv2d_forward(&s, &x, &w, &b));
    let cpu = CpuDevice::new(2).unwrap();
    let plan = ConvPlan::new(&s, 2);
    let mut scratch = vec![ConvScratch::default(); 2];
    scratch.iter_mut().for_each(|sc| sc.fit(&s, &plan));
    let mut y = vec![0.0; s.output_len()];
    cpu.install(|| {
        let p = Weights { w: &w, b: &b };
        conv_forward(&s, &plan, Activation::Relu, &x, p, &mut y, &mut scratch)
    });
    same("cpu conv+relu", &y, &want, 1e-4);
    let mut g = device();
    for kernels in [
        gpu::conv::ConvKernels::Tiled,
        gpu::conv::ConvKernels::Direct,
    ] {
        g.conv_kernels = kernels;
        let (tx, tw, tb) = (up(&g, &x), up(&g, &w), up(&g, &b));
        let ty = Tensor::zeros(&g, s.output_len(), "t.y");
        run(&g, |e| {
            gpu::conv::forward(e, &s, &tx, &tw, &tb, &ty, Some(Activation::Relu))
        });
        same(
            &format!("gpu conv+relu {kernels:?}"),
            &down(&g, &ty),
            &want,
            1e-4,
        );
    }

    let ls = LinearShape {
        n: 3,
        fin: 37,
        fout: 29,
    };
    let mut x = random_tensor(8, ls.n * ls.fin, 1.0);
    x[ls.fin + 5] = f32::NAN; // row 1
    let w = random_tensor(9, ls.fout * ls.fin, 1.0);
    let b = random_tensor(10, ls.fout, 1.0);
    let want = r::activation_forward(Activation::Relu, &r::linear_forward(&ls, &x, &w, &b));
    assert!(want[ls.fout..2 * ls.fout].iter().all(|v| v.is_nan()));
    let mut y = vec![0.0; ls.n * ls.fout];
    let p = Weights { w: &w, b: &b };
    cpu.install(|| linear_forward(&ls, Some(Activation::Relu), &x, p, &mut y, 2));
    same("cpu linear+relu", &y, &want, 1e-4);
    let (tx, tw, tb) = (up(&g, &x), up(&g, &w), up(&g, &b));
    let ty = Tensor::zeros(&g, ls.n * ls.fout, "t.y");
    run(&g, |e| {
        gpu::gemm::linear_forward(e, &ls, &tx, &tw, Some(&tb), &ty, Some(Activation::Relu))
    });
    same("gpu linear+relu", &down(&g, &ty), &want, 1e-4);
}

#[test]
fn lrn_and_softmax_keep_a_nan() {
    let p = LrnParams::default();
    let (n, c, h, w) = (2, 9, 3, 4);
    let mut x = random_tensor(11, n * c * h * w, 3.0);
    x[4 * h * w + 5] = f32::NAN; // image 0, channel 4
    let want = r::lrn_forward(&p, n, c, h, w, &x);
    let (mut y, mut scale) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let cpu = CpuDevice::new(2).unwrap();
    cpu.install(|| lrn_forward(&p, [n, c, h, w], &x, &mut y, &mut scale));
    same("cpu lrn", &y, &want, 1e-5);
    let g = device();
    let tx = up(&g, &x);
    let (ty, ts) = (
        Tensor::zeros(&g, x.len(), "t.y"),
        Tensor::zeros(&g, x.len(), "t.scale"),
    );
    run(&g, |e| {
        gpu::lrn::forward(e, &p, [n, c, h, w], &tx, &ty, &ts)
    });
    same("gpu lrn", &down(&g, &ty), &want, 1e-5);

    let (rows, classes) = (3, 7);
    let mut logits = random_tensor(12, rows * classes, 2.0);
    logits[classes + 3] = f32::NAN; // row 1
    let labels = [2i32, 5, 0];
    let (loss, _) = r::softmax_cross_entropy(rows, classes, &logits, &labels);
    assert!(loss.is_nan(), "the reference's mean loss over a NaN row");
    let mut stats = vec![0.0; rows * 3];
    softmax_xent_forward(classes, &logits, &labels, &mut stats);
    let cpu_losses: Vec<f32> = stats.chunks(3).map(|s| s[0]).collect();
    let tl = up(&g, &logits);
    let tlab = Tensor::from_u32(&g, &labels.map(|l| l as u32), "t.labels");
    let ts = Tensor::zeros(&g, rows * 3, "t.stats");
    run(&g, |e| {
        gpu::softmax_xent::forward(e, rows, classes, &tl, &tlab, &ts)
    });
    let gpu_losses: Vec<f32> = down(&g, &ts).chunks(3).map(|s| s[0]).collect();
    for (name, l) in [("cpu", &cpu_losses), ("gpu", &gpu_losses)] {
        assert!(
            l[1].is_nan(),
            "{name} softmax: the NaN row's loss is {}",
            l[1]
        );
        assert!(
            l[0].is_finite() && l[2].is_finite(),
            "{name} softmax: {l:?}"
        );
    }
}
