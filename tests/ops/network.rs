//! The whole network, the one walk (`alexnet::model::walk`) over each engine, against the
//! walk over the reference: every reported activation, the loss, every gradient, then two
//! SGD steps (so momentum matters); and against PyTorch's dump of the repository's module
//! (`tests/fixtures/torch_small.safetensors`, made as `tests/torch_reference.rs` says).
use crate::engines::{close, Engine, Tol};
use alexnet::backend::{Backend, Mode, SgdHyper};
use alexnet::model::reference::{network_loss_and_grads, network_sgd_step, TrainMode};
use alexnet::model::{Checkpoint, Init, ModelConfig, NetworkError, Norm, Params, Walk};
use alexnet::reference::random_tensor;
use alexnet::shape::Activation;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// Activations of the walk on an engine against the reference walk's (f32 on both sides,
/// different summation orders).
const ACTIVATION: Tol = Tol::scaled(2e-4);
/// Gradients: a longer chain of rounding.
const GRAD: Tol = Tol::scaled(5e-4);
/// Parameters after two SGD steps.
const PARAM: Tol = Tol::scaled(1e-5);
/// Momentum after two SGD steps.
const MOMENTUM: Tol = Tol::scaled(1e-4);

/// The mean loss of the per-image `[N,3]` statistics.
fn mean_loss(stats: &[f32]) -> f32 {
    stats.chunks_exact(3).map(|r| r[0]).sum::<f32>() / (stats.len() / 3) as f32
}

/// A walk on `e` holding `params`, `images` and `labels`.
fn walk_on<B>(
    e: &mut Engine<B>,
    cfg: &ModelConfig,
    params: &Params,
    images: &[f32],
    labels: &[i32],
) -> Walk<B::Buf>
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let walk = Walk::new(&mut e.be, cfg, labels.len()).unwrap();
    walk.upload_params(&mut e.be, params).unwrap();
    walk.upload_input(&mut e.be, images).unwrap();
    walk.upload_labels(&mut e.be, labels).unwrap();
    walk
}

/// What the reference walk computes for one variant, and its inputs.
struct Want {
    params: Params,
    images: Vec<f32>,
    labels: Vec<i32>,
    train: Option<TrainMode>,
    loss: f32,
    activations: Vec<(&'static str, Vec<usize>, Vec<f32>)>,
    grads: Params,
    /// Parameters and momentum after two SGD steps.
    stepped: (Params, Params),
}

const H: SgdHyper = SgdHyper {
    lr: 0.01,
    momentum: 0.9,
    weight_decay: 5e-4,
};

/// The reference's results for a variant, computed once per test process: the reference is
/// plain loops, and six engines compare with the same numbers.
fn want(cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32) -> Arc<Want> {
    type Cache = Mutex<HashMap<String, Arc<OnceLock<Arc<Want>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = format!("{cfg:?} {batch} {dropout} {seed}");
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .clone();
    slot.get_or_init(|| Arc::new(compute_want(cfg, batch, dropout, seed)))
        .clone()
}

fn compute_want(cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32) -> Want {
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
    let train = (dropout > 0.0).then_some(TrainMode {
        dropout,
        run_seed: seed as u64 * 31 + 5,
        step: 3,
    });
    let (loss, fwd, grads) =
        network_loss_and_grads(cfg, &params, batch, &images, &labels, train).unwrap();
    let activations = fwd
        .named()
        .into_iter()
        .map(|(n, s, v)| (n, s, v.to_vec()))
        .collect();
    let mut p = params.clone();
    let mut v = Params::zeros(cfg).unwrap();
    for _ in 0..2 {
        network_sgd_step(&mut p, &mut v, &grads, H.lr, H.momentum, H.weight_decay).unwrap();
    }
    Want {
        params,
        images,
        labels,
        train,
        loss,
        activations,
        grads,
        stepped: (p, v),
    }
}

/// One small variant of the network on `e` against the reference.
fn case<B>(e: &mut Engine<B>, cfg: &ModelConfig, batch: usize, dropout: f32, seed: u32)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let want = want(cfg, batch, dropout, seed);
    let Want {
        params,
        images,
        labels,
        train,
        loss,
        ..
    } = &*want;
    let (loss, mode) = (*loss, train.map_or(Mode::Eval, |t| t.mode()));

    let walk = walk_on(e, cfg, params, images, labels);
    walk.forward(&mut e.be, mode).unwrap();
    walk.loss(&mut e.be).unwrap();
    walk.backward(&mut e.be, mode).unwrap();
    let case = format!("{}: {cfg:?} batch {batch} dropout {dropout}", e.name);
    let acts = walk.activations();
    assert_eq!(
        acts.len(),
        want.activations.len(),
        "{case}: activation count"
    );
    for ((name, shape, t), (rname, rshape, w)) in acts.into_iter().zip(&want.activations) {
        assert_eq!((name, &shape), (*rname, rshape), "{case}: activation order");
        let got = e.be.download(t).unwrap();
        close(&format!("{case}: activation {name}"), &got, w, ACTIVATION);
    }
    let got_loss = mean_loss(&e.be.download(walk.stats()).unwrap());
    assert!(
        (got_loss - loss).abs() <= 1e-4 * loss.abs().max(1.0),
        "{case}: loss {got_loss} vs {loss}"
    );
    let got = walk.download_grads(&mut e.be).unwrap();
    // A batch normalisation's running statistics are buffers: no gradient, no momentum.
    let trained = |w: &&alexnet::model::Tensor| !w.spec.is_buffer();
    for (g, w) in got.tensors.iter().zip(&want.grads.tensors) {
        if !trained(&w) {
            continue;
        }
        let name = format!("{case}: grad {}", w.spec.name);
        close(&name, &g.data, &w.data, GRAD);
    }

    for _ in 0..2 {
        walk.sgd(&mut e.be, H).unwrap();
    }
    let (want_p, want_v) = &want.stepped;
    let got_p = walk.download_params(&mut e.be).unwrap();
    // (The running statistics after forward are tests/batchnorm.rs's to check.)
    for (g, w) in got_p.tensors.iter().zip(&want_p.tensors) {
        if !trained(&w) {
            continue;
        }
        close(
            &format!("{case}: sgd {}", w.spec.name),
            &g.data,
            &w.data,
            PARAM,
        );
    }
    let got_v = walk.download_momentum(&mut e.be).unwrap();
    for (g, w) in got_v.tensors.iter().zip(&want_v.tensors) {
        if !trained(&w) {
            continue;
        }
        let name = format!("{case}: momentum {}", w.spec.name);
        close(&name, &g.data, &w.data, MOMENTUM);
    }
}

/// Both groups, LRN, ReLU, evaluation mode, batch 3.
pub fn two_columns_relu_lrn_eval_batch_3<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    case(e, &ModelConfig::small(71, 16, 7), 3, 0.0, 1);
}

/// One group, tanh, dropout, batch 2.
pub fn one_column_tanh_dropout_batch_2<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let mut cfg = ModelConfig::small(67, 16, 5);
    cfg.groups = 1;
    cfg.activation = Activation::Tanh;
    case(e, &cfg, 2, 0.5, 2);
}

/// No LRN, ReLU, dropout, batch 1.
pub fn no_lrn_relu_dropout_batch_1<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let mut cfg = ModelConfig::small(69, 12, 3);
    cfg.norm = Norm::None;
    case(e, &cfg, 1, 0.5, 3);
}

/// Batch normalisation in LRN's place, ReLU, dropout, batch 3 (batch statistics in training).
pub fn batch_norm_relu_dropout_batch_3<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let mut cfg = ModelConfig::small(67, 12, 4);
    cfg.norm = Norm::Batch;
    case(e, &cfg, 3, 0.5, 6);
}

/// Widths divided by 8, an input of 131, batch 3.
pub fn widths_div_8_input_131_batch_3<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    case(e, &ModelConfig::small(131, 8, 11), 3, 0.5, 4);
}

/// 2×2 windows at stride 2 (the paper's 3.4 baseline) leave a 1×1 map from 39 up; 59 is off
/// every tile size.
pub fn non_overlapping_pooling_batch_2<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let mut cfg = ModelConfig::small(59, 16, 4);
    (cfg.pool_size, cfg.pool_stride) = (2, 2);
    case(e, &cfg, 2, 0.5, 4);
}

/// torchvision's variant shrunk: conv1 padded by 2, one group, no LRN.
pub fn torchvision_padded_conv1_batch_2<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let mut cfg = ModelConfig::small(65, 16, 3);
    (cfg.conv1_pad, cfg.groups, cfg.norm) = (2, 1, Norm::None);
    case(e, &cfg, 2, 0.0, 5);
}

/// Bad labels, images and parameters are errors that name what is wrong, on every engine.
pub fn errors_name_what_is_wrong<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let cfg = ModelConfig::small(67, 16, 5);
    let walk = Walk::new(&mut e.be, &cfg, 2).unwrap();
    let be = &mut e.be;
    let err = walk.upload_labels(be, &[0, 5]).unwrap_err().to_string();
    assert!(
        err.contains("label 5") && err.contains("5 classes"),
        "{err}"
    );
    let err = walk.upload_labels(be, &[0]).unwrap_err().to_string();
    assert!(err.contains("1 labels for a batch of 2"), "{err}");
    let err = walk.upload_input(be, &[0.0; 3]).unwrap_err().to_string();
    assert!(err.contains("images"), "{err}");
    let other = Params::init(&ModelConfig::small(67, 8, 5), 1).unwrap();
    let err = walk.upload_params(be, &other).unwrap_err().to_string();
    assert!(err.contains("conv1.weight"), "{err}");
}

const FIXTURE: &str = "tests/fixtures/torch_small.safetensors";

/// Tensor `name` of the fixture as f32 (i32 tensors are converted).
fn tensor(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let v = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("{FIXTURE}: `{name}` is missing; re-run make_torch_fixture.py"));
    let words = v.data().chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]);
    match v.dtype() {
        Dtype::F32 => words.map(f32::from_le_bytes).collect(),
        Dtype::I32 => words.map(|w| i32::from_le_bytes(w) as f32).collect(),
        d => panic!("{FIXTURE}: `{name}` is {d:?}, expected F32 or I32"),
    }
}

/// [`close`] without its check that the tensor is not all zeros: PyTorch's gradient of conv1
/// under the paper's N(0, 0.01²) init is below 1e-6 in this fixture, and the bound scales
/// with each tensor as `tests/torch_reference.rs` held the reference to it.
#[track_caller]
fn near(name: &str, got: &[f32], want: &[f32], tol: Tol) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let atol = tol.abs + tol.of_max * scale;
    if let Err(e) = alexnet::reference::check_close(name, got, want, atol, tol.rel) {
        panic!("{e} (tensor max |value| {scale:e})");
    }
}

/// The PyTorch fixture on `e`, held to the bounds the reference network is held to in
/// `tests/torch_reference.rs` (PyTorch ran in f64): the training step's activations (with
/// dropout), the loss, every gradient, then the fixture's steps of SGD, each step's loss and
/// the final parameters.
pub fn pytorch_fixture<B>(e: &mut Engine<B>)
where
    B: Backend,
    NetworkError: From<B::Error>,
{
    let bytes = std::fs::read(FIXTURE).unwrap_or_else(|err| {
        panic!("{FIXTURE}: {err}; re-run make_torch_fixture.py as tests/torch_reference.rs says")
    });
    let st = SafeTensors::deserialize(&bytes).expect("the fixture is safetensors");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("fixture metadata");
    let meta = header.metadata().clone().unwrap_or_default();
    let num = |k: &str| -> f64 {
        meta.get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{FIXTURE}: metadata `{k}`"))
    };
    let ck = Checkpoint::from_bytes(Path::new(FIXTURE), &bytes, None)
        .expect("the fixture is a checkpoint");
    let labels: Vec<i32> = tensor(&st, "fixture.labels")
        .into_iter()
        .map(|v| v as i32)
        .collect();
    let images = tensor(&st, "fixture.images");
    let train = TrainMode {
        dropout: num("fixture.dropout") as f32,
        run_seed: num("fixture.run_seed") as u64,
        step: 0,
    };
    let h = SgdHyper {
        lr: num("fixture.lr") as f32,
        momentum: num("fixture.momentum") as f32,
        weight_decay: num("fixture.weight_decay") as f32,
    };
    let name = e.name.clone();
    let walk = walk_on(e, &ck.config, &ck.params, &images, &labels);
    for step in 0..num("fixture.steps") as u64 {
        let mode = TrainMode { step, ..train }.mode();
        walk.forward(&mut e.be, mode).unwrap();
        walk.loss(&mut e.be).unwrap();
        walk.backward(&mut e.be, mode).unwrap();
        let loss = mean_loss(&e.be.download(walk.stats()).unwrap());
        if step == 0 {
            for (act, _, t) in walk.activations() {
                let got = e.be.download(t).unwrap();
                let want = tensor(&st, &format!("fixture.{act}"));
                near(
                    &format!("{name} vs PyTorch: {act}"),
                    &got,
                    &want,
                    Tol::scaled(1e-4),
                );
            }
            let want = tensor(&st, "fixture.loss");
            near(
                &format!("{name} vs PyTorch: loss"),
                &[loss],
                &want,
                Tol::scaled(1e-5),
            );
            let grads = walk.download_grads(&mut e.be).unwrap();
            for g in &grads.tensors {
                let want = tensor(&st, &format!("fixture.grad.{}", g.spec.name));
                let what = format!("{name} vs PyTorch: grad {}", g.spec.name);
                near(&what, &g.data, &want, Tol::scaled(1e-3));
            }
        }
        let want = tensor(&st, &format!("fixture.step{step}.loss"));
        let what = format!("{name} vs PyTorch: step {step} loss");
        near(&what, &[loss], &want, Tol::scaled(1e-4));
        walk.sgd(&mut e.be, h).unwrap();
    }
    let params = walk.download_params(&mut e.be).unwrap();
    for p in &params.tensors {
        let want = tensor(&st, &format!("fixture.final.{}", p.spec.name));
        let what = format!("{name} vs PyTorch: final {}", p.spec.name);
        near(&what, &p.data, &want, Tol::scaled(1e-3));
    }
}
