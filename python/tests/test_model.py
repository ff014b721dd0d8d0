"""The PyTorch module against the Rust side: the LRN convention, checkpoints the binary wrote
(own and foreign), and `alexnet forward`'s logits on the same input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it unless ALEXNET_PY_TORCH=0)")

from safetensors.numpy import load_file, save_file  # noqa: E402

from alexnet.checkpoint import CheckpointError, ModelConfig, read_checkpoint  # noqa: E402
from alexnet.model import ACTIVATIONS, AlexNet, paper_lrn  # noqa: E402
from alexnet.shards import ShardReader  # noqa: E402


def test_lrn_is_the_papers_formula():
    x = torch.randn(2, 7, 3, 4, dtype=torch.float64) * 30
    got = paper_lrn()(x)
    a = x.numpy()
    want = np.empty_like(a)
    for c in range(7):
        lo, hi = max(0, c - 2), min(7, c + 3)
        s = (a[:, lo:hi] ** 2).sum(axis=1)
        want[:, c] = a[:, c] / (2.0 + 1e-4 * s) ** 0.75
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)
    # alpha divided by n (PyTorch's own convention) would be visibly different here.
    assert not np.allclose(torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x).numpy(), want, rtol=1e-3)


def rust_forward(run, checkpoint, images, tmp_path):
    save_file({"images": images}, str(tmp_path / "in.safetensors"))
    run("forward", "--checkpoint", checkpoint, "--input", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors")
    return load_file(str(tmp_path / "out.safetensors"))


def test_loads_a_trained_checkpoint_and_matches_alexnet_forward(run, trained, tmp_path):
    model = AlexNet.from_checkpoint(trained).eval()
    cfg = model.config
    assert cfg.input_size == 67 and cfg.widths == (8, 16, 24, 24, 16, 32, 32) and cfg.classes == 2
    assert model.conv2.weight.shape == (16, 4, 5, 5), "grouped layout [out, in/groups, kh, kw]"
    assert model.mean_image.shape == (72, 72, 3)
    images = np.random.default_rng(5).normal(0, 40, (3, 3, 67, 67)).astype(np.float32)
    want = rust_forward(run, trained, images, tmp_path)
    with torch.no_grad():
        got = model.activations(torch.from_numpy(images))
    assert set(want) == set(ACTIVATIONS)
    for name in ACTIVATIONS:
        w, g = want[name], got[name].numpy()
        assert w.shape == g.shape, name
        scale = np.abs(w).max()
        assert scale > 0, f"{name} is all zeros: the test would not see a wrong layer"
        np.testing.assert_allclose(g, w, atol=1e-4 * scale, rtol=1e-4, err_msg=name)


def test_preprocess_is_the_evaluation_view(run, trained, raw_shards, tmp_path):
    model = AlexNet.from_checkpoint(trained).eval()
    reader = ShardReader(raw_shards)
    x = torch.stack([model.preprocess(img) for img, _ in reader])
    assert x.shape == (7, 3, 67, 67)
    # Training stored the training set's own mean image: the views average to about zero.
    assert abs(float(x.mean())) < 1e-3 * float(x.abs().mean())
    want = rust_forward(run, trained, x.numpy(), tmp_path)["logits"]
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), want, atol=1e-4 * np.abs(want).max())


def test_foreign_state_dict_loads_with_input_size(trained, tmp_path):
    model = AlexNet.from_checkpoint(trained)
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(plain))
    with pytest.raises(CheckpointError, match="input_size"):
        read_checkpoint(plain)
    other = AlexNet.from_checkpoint(plain, input_size=67)
    assert other.config.groups == 2 and other.config.classes == 2 and other.mean_image is None
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    with pytest.raises(ValueError, match="mean image"):
        other.preprocess(np.zeros((72, 72, 3), np.uint8))


@pytest.mark.parametrize("pool", [(3, 2), (2, 2)])
def test_save_checkpoint_round_trips_through_the_binary(run, tmp_path, pool):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=67, widths=(6, 16, 24, 24, 16, 32, 32), classes=3, groups=2, activation="tanh",
                      pool_size=pool[0], pool_stride=pool[1])
    model = AlexNet(cfg).eval()
    path = tmp_path / "torch.safetensors"
    model.save_checkpoint(path)
    images = np.random.default_rng(1).normal(0, 1, (2, 3, 67, 67)).astype(np.float32)
    want = rust_forward(run, path, images, tmp_path)["logits"]
    with torch.no_grad():
        got = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_other_variants_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="torchvision"):
        ModelConfig.from_json('{"variant": "torchvision", "input_size": 224}', "x.safetensors")


def torchvision_alexnet(widths, classes):
    """torchvision.models.AlexNet's layers under its state-dict names, as in
    torchvision/models/alexnet.py, built here so the test needs no torchvision wheel (which
    pins its own torch). Returns the module and its forward."""
    nn = torch.nn
    w = widths
    m = nn.Module()
    m.features = nn.Sequential(
        nn.Conv2d(3, w[0], 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(w[0], w[1], 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(w[1], w[2], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(w[2], w[3], 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(w[3], w[4], 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )
    m.avgpool = nn.AdaptiveAvgPool2d((6, 6))
    m.classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(w[4] * 36, w[5]), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(w[5], w[6]), nn.ReLU(inplace=True), nn.Linear(w[6], classes),
    )

    def forward(x):
        return m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))

    return m, forward


def test_torchvision_weights_import_and_give_torchvision_s_logits(run, alexnet_bin, tmp_path):
    import subprocess

    from safetensors.torch import save_file as save_torch
    torch.manual_seed(3)
    m, forward = torchvision_alexnet((16, 24, 32, 24, 16, 48, 48), 7)
    m.eval()
    state = tmp_path / "tv.safetensors"
    save_torch({k: v.contiguous() for k, v in m.state_dict().items()}, str(state))
    ck = tmp_path / "imported.safetensors"
    run("import", "torchvision", state, ck)
    pixels = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3)).astype(np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    theirs_in = ((pixels / 255 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    # What our input stage feeds conv1: (pixel − mean image) · input_scale.
    # (contiguous: safetensors.numpy writes a transposed view's memory, not its values)
    ours_in = np.ascontiguousarray(((pixels - 255 * mean) / 255).transpose(0, 3, 1, 2), dtype=np.float32)
    with torch.no_grad():
        want = forward(torch.from_numpy(theirs_in)).numpy()
    got = rust_forward(run, ck, ours_in, tmp_path)["logits"]
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())
    # The Python module loads the import too.
    model = AlexNet.from_checkpoint(ck).eval()
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(ours_in)).numpy(), want, atol=1e-4 * np.abs(want).max())
    # The state dict itself is refused as a checkpoint, naming the command.
    args = ["forward", "--checkpoint", state, "--input", tmp_path / "in.safetensors", "--out", tmp_path / "tv-out.safetensors"]
    p = subprocess.run([str(alexnet_bin), *map(str, args)], capture_output=True, text=True)
    assert p.returncode != 0 and "alexnet import torchvision" in p.stderr


def test_forward_normalize_imagenet_takes_torchvision_tensors(run, tmp_path):
    """A torchvision user's tensor, (pixel/255 − mean)/std of real photos, given to `forward
    --normalize imagenet` with an imported checkpoint gives torchvision's logits; without the
    flag the same tensor gives other logits (the mistake the flag is for)."""
    from PIL import Image
    from safetensors.torch import save_file as save_torch

    from conftest import PHOTOS

    torch.manual_seed(5)
    m, forward = torchvision_alexnet((16, 24, 32, 24, 16, 48, 48), 7)
    m.eval()
    state = tmp_path / "tv.safetensors"
    save_torch({k: v.contiguous() for k, v in m.state_dict().items()}, str(state))
    ck = tmp_path / "imported.safetensors"
    run("import", "torchvision", state, ck)
    photos = []
    for name in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg"):
        img = Image.open(PHOTOS / name).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        photos.append(np.asarray(img.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)))
    pixels = np.stack(photos).astype(np.float32)
    # torchvision's ToTensor() then Normalize(mean, std), in float32 as torchvision computes it.
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    tv = np.ascontiguousarray(((pixels / np.float32(255) - mean) / std).transpose(0, 3, 1, 2))
    with torch.no_grad():
        want = forward(torch.from_numpy(tv)).numpy()
    save_file({"images": tv}, str(tmp_path / "in.safetensors"))
    run("forward", "--checkpoint", ck, "--input", tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors", "--normalize", "imagenet")
    got = load_file(str(tmp_path / "out.safetensors"))["logits"]
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, atol=1e-4 * scale)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "the converted input was left behind"
    run("forward", "--checkpoint", ck, "--input", tmp_path / "in.safetensors", "--out", tmp_path / "raw.safetensors")
    wrong = load_file(str(tmp_path / "raw.safetensors"))["logits"]
    assert np.abs(wrong - want).max() > 0.1 * scale


def test_batch_norm_checkpoints_own_and_foreign_and_the_old_lrn_key(tmp_path):
    cfg = ModelConfig(input_size=67, widths=(4, 8, 8, 8, 8, 16, 16), classes=3, groups=1, norm="batch")
    torch.manual_seed(3)
    model = AlexNet(cfg)
    with torch.no_grad():
        model.bn2.running_var.fill_(2.5)
    names = set(model.state_dict())
    assert {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn2.running_var"} <= names
    assert not any("num_batches_tracked" in n for n in names), "the checkpoint has none"
    own = tmp_path / "own.safetensors"
    model.save_checkpoint(own)
    back = AlexNet.from_checkpoint(own)
    assert back.config.norm == "batch" and float(back.bn2.running_var[0]) == 2.5
    # Saved by PyTorch alone: the bn tensors say batch normalisation.
    foreign = tmp_path / "foreign.safetensors"
    save_file({k: v.numpy() for k, v in model.state_dict().items()}, str(foreign), metadata={"input_size": "67"})
    assert read_checkpoint(foreign).config.norm == "batch"
    x = torch.randn(2, 3, 67, 67)
    model.eval()
    np.testing.assert_allclose(AlexNet.from_checkpoint(foreign).eval()(x).detach(), model(x).detach(), rtol=1e-6)
    # Configs from before `norm`: lrn true/false maps onto it; a contradiction is refused.
    assert ModelConfig.from_json('{"lrn": false}').norm == "none"
    assert ModelConfig.from_json('{"lrn": true}').norm == "lrn"
    with pytest.raises(CheckpointError, match="contradicts"):
        ModelConfig.from_json('{"lrn": true, "norm": "batch"}')
