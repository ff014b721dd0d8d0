//! Fine-tuning in one command: `alexnet train DATA --init-from W` on an imported torchvision
//! checkpoint takes W's variant, re-initialises fc8 for DATA's class count (saying so) and
//! keeps W's mean image and input scale, with no model flags at all.
mod common;

use alexnet::model::{Checkpoint, ModelConfig, Params};
use alexnet::reference::random_tensor;
use common::alexnet;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// torchvision's state-dict names of our layers.
const TV: [(&str, &str); 8] = [
    ("conv1", "features.0"),
    ("conv2", "features.3"),
    ("conv3", "features.6"),
    ("conv4", "features.8"),
    ("conv5", "features.10"),
    ("fc6", "classifier.1"),
    ("fc7", "classifier.4"),
    ("fc8", "classifier.6"),
];

/// A torchvision-shaped AlexNet state dict (small widths, 1000 classes) written at `path`.
fn torchvision_state_dict(path: &Path, widths: [usize; 7]) {
    let mut cfg = ModelConfig::torchvision(1000);
    cfg.widths = widths;
    let mut p = Params::zeros(&cfg).unwrap();
    for (i, t) in p.tensors.iter_mut().enumerate() {
        t.data = random_tensor(70 + i as u32, t.data.len(), 0.05);
    }
    let bytes: Vec<Vec<u8>> = p
        .tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = p
        .tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let (layer, part) = t.spec.name.split_once('.').unwrap();
            let theirs = TV.iter().find(|(o, _)| *o == layer).unwrap().1;
            (
                format!("{theirs}.{part}"),
                TensorView::new(Dtype::F32, t.spec.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// An imported torchvision-style checkpoint `w.safetensors` (1000 classes, small widths) and
/// a 6-class shard folder `shards` (232² images) in `dir`.
fn imported_checkpoint_and_six_classes(dir: &Path) -> Checkpoint {
    let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
    torchvision_state_dict(&dir.join("tv.safetensors"), [8, 12, 16, 12, 8, 20, 20]);
    let (ok, _, err) = alexnet(&[
        "import",
        "torchvision",
        &d("tv.safetensors"),
        &d("w.safetensors"),
    ]);
    assert!(ok, "import: {err}");
    let w = Checkpoint::load(&dir.join("w.safetensors"), None).unwrap();
    assert_eq!(
        (w.config.classes, w.config.variant()),
        (1000, "torchvision")
    );
    common::make_tree(&dir.join("raw"), 6, 3, false);
    let (ok, _, err) = alexnet(&[
        "ingest",
        &d("raw"),
        &d("shards"),
        "--size",
        "232",
        "--quiet",
    ]);
    assert!(ok, "ingest: {err}");
    w
}

#[test]
fn fine_tunes_an_imported_torchvision_checkpoint_on_six_classes_in_one_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let w = imported_checkpoint_and_six_classes(dir.path());

    // One command, no model flags.
    let (ok, _, err) = alexnet(&[
        "train",
        &d("shards"),
        "--init-from",
        &d("w.safetensors"),
        "--out",
        &d("run"),
        "--steps",
        "2",
        "--batch",
        "6",
        "--lr",
        "0.001",
        "--devices",
        "cpu",
        "--quiet",
    ]);
    assert!(ok, "fine-tuning failed: {err}");
    assert!(
        err.contains("1000 classes, the data 6: fc8 initialised afresh"),
        "the new classifier is not announced: {err}"
    );
    let run = Checkpoint::load(&dir.path().join("run/last.safetensors"), None).unwrap();
    // The import records torchvision's resize; the run records its data's (ingest's default),
    // which is what predict must repeat for it.
    assert_eq!(
        w.run_state.get("resize").map(String::as_str),
        Some("bilinear")
    );
    assert_eq!(
        run.run_state.get("resize").map(String::as_str),
        Some("lanczos3")
    );
    // The variant is W's, with the data's class count.
    let mut want = w.config.clone();
    want.classes = 6;
    assert_eq!(run.config, want);
    assert_eq!(run.config.input_scale, 1.0 / 255.0);
    // W's mean image (ImageNet's channel means, one colour) at the data's side, not the data's.
    let stats = run.stats.as_ref().unwrap();
    let wstats = w.stats.as_ref().unwrap();
    assert_eq!(stats.size, 232);
    assert!(stats
        .mean_image
        .chunks_exact(3)
        .all(|p| p == &wstats.mean_image[..3]));
    // The data's lighting statistics (the import has none).
    assert!(stats.pca_eigenvalues[0] > 0.0 && wstats.pca_eigenvalues == [0.0; 3]);
    // fc8 is new ([6, 20]) and trained; conv1–fc7 started from W (two small steps move them
    // only a little, and the same way for every run).
    let fc8 = run.params.get("fc8.weight").unwrap();
    assert_eq!(fc8.spec.shape, vec![6, 20]);
    for layer in ["conv1", "conv5", "fc7"] {
        let name = format!("{layer}.weight");
        let (a, b) = (
            &w.params.get(&name).unwrap().data,
            &run.params.get(&name).unwrap().data,
        );
        let moved = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let scale = a.iter().map(|x| x.abs()).fold(0f32, f32::max);
        assert!(
            moved > 0.0 && moved < 0.1 * scale,
            "{name}: moved {moved} of {scale}"
        );
    }
    // A model the configuration sets differently is refused, naming both.
    let (ok, _, err) = alexnet(&[
        "train",
        &d("shards"),
        "--init-from",
        &d("w.safetensors"),
        "--out",
        &d("run2"),
        "--input-size",
        "224",
        "--widths",
        "8,12,16,12,8,20,20",
        "--steps",
        "1",
        "--quiet",
    ]);
    assert!(
        !ok && err.contains("conv1 padding 2") && err.contains("conv1 padding 0"),
        "{err}"
    );
}

#[test]
fn freeze_conv5_leaves_conv1_to_conv5_bit_identical_and_trains_the_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).to_string_lossy().into_owned();
    let w = imported_checkpoint_and_six_classes(dir.path());
    let train_on = |out: &str, freeze: &str, devices: &str| {
        alexnet(&[
            "train",
            &d("shards"),
            "--init-from",
            &d("w.safetensors"),
            "--freeze",
            freeze,
            "--out",
            &d(out),
            "--steps",
            "2",
            "--batch",
            "6",
            "--lr",
            "0.001",
            "--devices",
            devices,
            "--quiet",
        ])
    };
    let train = |out: &str, freeze: &str| train_on(out, freeze, "cpu");
    let (ok, _, err) = train("run", "conv5");
    assert!(ok, "fine-tuning with --freeze conv5 failed: {err}");
    let run = Checkpoint::load(&dir.path().join("run/last.safetensors"), None).unwrap();
    let momentum = run
        .momentum
        .as_ref()
        .expect("last.safetensors keeps momentum");
    for layer in ["conv1", "conv2", "conv3", "conv4", "conv5"] {
        for part in ["weight", "bias"] {
            let name = format!("{layer}.{part}");
            assert_eq!(
                run.params.get(&name).unwrap().data,
                w.params.get(&name).unwrap().data,
                "{name} moved under --freeze conv5"
            );
            // The momentum stays as loaded: a fresh run's zeros, not one step's velocity.
            let m = &momentum.get(&name).unwrap().data;
            assert!(m.iter().all(|&v| v == 0.0), "{name}: momentum moved");
        }
    }
    for layer in ["fc6", "fc7"] {
        let name = format!("{layer}.weight");
        assert_ne!(
            run.params.get(&name).unwrap().data,
            w.params.get(&name).unwrap().data,
            "{name} did not train"
        );
    }
    // The same through the WGSL kernels (lavapipe without a GPU): the walk is every engine's.
    let (ok, _, err) = train_on("run-gpu", "conv5", "lavapipe");
    assert!(ok, "--freeze conv5 on lavapipe failed: {err}");
    let gpu = Checkpoint::load(&dir.path().join("run-gpu/last.safetensors"), None).unwrap();
    for t in &gpu.params.tensors {
        let (name, w0) = (&t.spec.name, &w.params.get(&t.spec.name).unwrap().data);
        if name.starts_with("conv") {
            assert_eq!(&t.data, w0, "{name} moved on lavapipe");
        } else if name.starts_with("fc6") || name.starts_with("fc7") {
            assert_ne!(&t.data, w0, "{name} did not train on lavapipe");
        }
    }
    // And split in the paper's two columns (two logical devices on adapter 0): the column
    // wrapper runs under the same walk, so the same layers stay put.
    let (ok, _, err) = train_on("run-cols", "conv5", "2");
    assert!(ok, "--freeze conv5 on two columns failed: {err}");
    let cols = Checkpoint::load(&dir.path().join("run-cols/last.safetensors"), None).unwrap();
    for t in &cols.params.tensors {
        let (name, w0) = (&t.spec.name, &w.params.get(&t.spec.name).unwrap().data);
        if name.starts_with("conv") {
            assert_eq!(&t.data, w0, "{name} moved on two columns");
        } else if name.starts_with("fc6") || name.starts_with("fc7") {
            assert_ne!(&t.data, w0, "{name} did not train on two columns");
        }
    }
    // The run's config records it, so --resume freezes the same layers.
    let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(config.contains("freeze = \"conv5\""), "{config}");

    // An unknown layer is refused before anything is written, naming the valid ones.
    for bad in ["conv9", "fc8"] {
        let (ok, _, err) = train(bad, bad);
        assert!(
            !ok && err.contains(&format!("`{bad}`"))
                && err.contains("conv1, conv2, conv3, conv4, conv5, fc6, fc7"),
            "{bad}: {err}"
        );
        assert!(
            !dir.path().join(bad).exists(),
            "--freeze {bad} left a run folder"
        );
    }
}
