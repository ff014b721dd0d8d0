"""`alexnet export onnx` run by the real onnxruntime equals `alexnet forward` (≤ 1e-4 of the
logits' scale) on every variant a checkpoint can hold, at two batch sizes; `alexnet export
weights` drops the momentum and nothing else."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (python/requirements-test.txt)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (python/requirements-test.txt)")

from safetensors.numpy import load_file, save_file  # noqa: E402

from alexnet.checkpoint import read_checkpoint  # noqa: E402


def forward_logits(run, checkpoint, x, tmp_path):
    save_file({"images": np.ascontiguousarray(x, dtype=np.float32)}, str(tmp_path / "in.safetensors"))
    run("forward", "--checkpoint", checkpoint, "--input", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors", "--overwrite")
    return load_file(str(tmp_path / "out.safetensors"))["logits"]


def check_onnx_equals_forward(run, checkpoint, tmp_path):
    out = tmp_path / "model.onnx"
    run("export", "onnx", "--checkpoint", checkpoint, out, "--overwrite")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    ck = read_checkpoint(checkpoint)
    i, s = ck.config.input_size, ck.mean_image.shape[0]
    o = (s - i) // 2
    mean = ck.mean_image[o : o + i, o : o + i].transpose(2, 0, 1).astype(np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [x.name for x in sess.get_inputs()] == ["pixels"] and [x.name for x in sess.get_outputs()] == ["logits"]
    rng = np.random.default_rng(i)
    for n in (1, 4):  # the batch dimension is dynamic
        pixels = rng.integers(0, 256, (n, 3, i, i)).astype(np.float32)
        got = sess.run(["logits"], {"pixels": pixels})[0]
        want = forward_logits(run, checkpoint, (pixels - mean) * np.float32(ck.config.input_scale), tmp_path)
        assert got.shape == want.shape == (n, ck.config.classes)
        scale = np.abs(want).max()
        assert scale > 0
        np.testing.assert_allclose(got, want, atol=1e-4 * scale, rtol=1e-4)


def test_trained_checkpoint(run, trained, tmp_path):
    # LRN, two groups, ReLU, overlapping 3/2 pooling: the paper's shape.
    check_onnx_equals_forward(run, trained, tmp_path)


@pytest.mark.parametrize("variant", [
    dict(norm="none", groups=1, activation="tanh", pool_size=2, pool_stride=2, conv1_pad=2, input_scale=1 / 64),
    dict(norm="lrn", groups=4, activation="relu", pool_size=3, pool_stride=2, conv1_pad=0, input_scale=0.5),
    dict(norm="batch", groups=1, activation="relu", pool_size=3, pool_stride=2, conv1_pad=0, input_scale=0.5),
], ids=["tanh-nolrn-pool2-pad2", "lrn-groups4", "batchnorm"])
def test_every_variant(run, tmp_path, variant):
    torch = pytest.importorskip("torch", reason="torch is not installed (it builds the variant checkpoints)")
    from alexnet.checkpoint import ModelConfig
    from alexnet.model import AlexNet

    torch.manual_seed(1)
    cfg = ModelConfig(input_size=67, widths=(8, 16, 24, 24, 16, 32, 32), classes=5, **variant)
    model = AlexNet(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, 0.0, 0.2)
    with torch.no_grad():
        # Running statistics away from their start (a variance must be positive).
        for name, b in model.named_buffers():
            b.copy_(torch.randn_like(b).abs() + 0.5 if name.endswith("running_var") else 0.3 * torch.randn_like(b))
    rng = np.random.default_rng(2)
    model.mean_image = rng.uniform(0, 255, (72, 72, 3)).astype(np.float32)
    path = tmp_path / "variant.safetensors"
    model.save_checkpoint(path, extra={"stats.pca_eigenvalues": torch.tensor([3.0, 2.0, 1.0]),
                                       "stats.pca_eigenvectors": torch.eye(3)})
    check_onnx_equals_forward(run, path, tmp_path)


def test_no_mean_image_is_refused(run, alexnet_bin, trained, tmp_path):
    import subprocess

    plain = tmp_path / "plain.safetensors"
    tensors = {k: v for k, v in load_file(str(trained)).items() if not k.startswith(("stats.", "momentum."))}
    save_file(tensors, str(plain), metadata={"input_size": "67"})
    p = subprocess.run([str(alexnet_bin), "export", "onnx", "--checkpoint", plain, tmp_path / "x.onnx"], capture_output=True, text=True)
    assert p.returncode != 0 and "mean image" in p.stderr and not (tmp_path / "x.onnx").exists()


def test_weights_only_checkpoint(run, trained, tmp_path):
    out = tmp_path / "weights.safetensors"
    run("export", "weights", "--checkpoint", trained, out)
    full, slim = read_checkpoint(trained), read_checkpoint(out)
    assert full.momentum and not slim.momentum
    assert set(full.params) == set(slim.params)
    for k in full.params:
        np.testing.assert_array_equal(full.params[k], slim.params[k])
    np.testing.assert_array_equal(full.mean_image, slim.mean_image)
    assert slim.config == full.config
    # The momentum is as large as the parameters (the mean image dominates this tiny model).
    assert trained.stat().st_size - out.stat().st_size >= sum(v.nbytes for v in full.params.values())
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 67, 67)).astype(np.float32)
    np.testing.assert_array_equal(forward_logits(run, out, x, tmp_path), forward_logits(run, trained, x, tmp_path))
