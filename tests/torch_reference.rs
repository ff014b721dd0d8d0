//! `alexnet forward` on the GPU and on the CPU engine against PyTorch, an implementation that
//! shares no code with ours: every reported activation in evaluation mode, against a dump of
//! the repository's PyTorch module (`python/alexnet/model.py`). The training step (activations
//! with dropout, the loss, every gradient and a few SGD steps) is checked against the same
//! fixture on every engine, the reference included, by the suite (`tests/ops/network.rs`,
//! `pytorch_fixture`).
//!
//! The committed fixture (about 380 KB) was made in the virtual environment `scripts/test.sh`
//! creates (`.venv`, torch 2.15 from PyPI), from the repository root:
//!
//! ```text
//! .venv/bin/python tests/fixtures/make_torch_fixture.py --out tests/fixtures/torch_small.safetensors \
//!     --input-size 67 --widths 6,16,24,24,16,64,64 --classes 5 --groups 2 --batch 3 \
//!     --dropout 0.5 --run-seed 7 --steps 3
//! ```
//!
//! The exact command is also in the fixture's metadata (`fixture.command`).
use alexnet::reference::check_close;
use safetensors::tensor::{Dtype, SafeTensors};

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

/// Compares with a tolerance scaled to the reference tensor's largest value: PyTorch ran in
/// f64, we store f32 between layers.
fn close(name: &str, got: &[f32], want: &[f32], rel: f32) {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if let Err(e) = check_close(name, got, want, rel * scale, rel) {
        panic!("against PyTorch: {e}");
    }
}

fn read_fixture() -> Vec<u8> {
    std::fs::read(FIXTURE).unwrap_or_else(|e| {
        panic!("{FIXTURE}: {e}; re-run make_torch_fixture.py as this file's header says")
    })
}

#[test]
fn gpu_forward_matches_pytorch() {
    // Adapter 0: a real GPU, or lavapipe on a machine without one (the WGSL kernels).
    forward_matches_pytorch(alexnet::device::Device::Adapter(0), "GPU");
}

#[test]
fn cpu_engine_forward_matches_pytorch() {
    forward_matches_pytorch(alexnet::device::Device::Cpu, "CPU engine");
}

fn forward_matches_pytorch(device: alexnet::device::Device, engine: &str) {
    use alexnet::model::forward::{forward, ForwardJob};
    use safetensors::tensor::TensorView;
    let bytes = read_fixture();
    let st = SafeTensors::deserialize(&bytes).expect("the fixture is safetensors");
    let images = st.tensor("fixture.images").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    let view = TensorView::new(Dtype::F32, images.shape().to_vec(), images.data()).unwrap();
    safetensors::serialize_to_file([("images", view)], None, &input).unwrap();
    forward(&ForwardJob {
        checkpoint: FIXTURE.into(),
        input,
        out: out.clone(),
        device,
        overwrite: false,
    })
    .expect("alexnet forward on the fixture (needs mesa-vulkan-drivers without a GPU)");
    let got_bytes = std::fs::read(&out).unwrap();
    let got = SafeTensors::deserialize(&got_bytes).unwrap();
    let names = got.names();
    assert_eq!(names.len(), 8, "forward wrote {names:?}");
    for name in names {
        close(
            &format!("{engine} {name}"),
            &tensor(&got, name),
            &tensor(&st, &format!("fixture.eval.{name}")),
            1e-4,
        );
    }
}
