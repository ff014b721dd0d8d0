"""The torch Dataset over shards."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it unless ALEXNET_PY_TORCH=0)")

from alexnet.data import EvalView, ShardDataset  # noqa: E402
from alexnet.shards import ShardReader, eval_view  # noqa: E402


def test_dataset_batches_through_a_dataloader(raw_shards):
    ds = ShardDataset(raw_shards)
    reader = ShardReader(raw_shards)
    assert len(ds) == 7 and ds.classes == ["n01", "n02"]
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert images.shape == (5, 72, 72, 3) and images.dtype == torch.uint8
    for i in range(5):
        img, label = reader[i]
        assert torch.equal(images[i], torch.from_numpy(img)) and int(labels[i]) == label


def test_eval_view_transform(raw_shards):
    probe = ShardDataset(raw_shards)
    ds = ShardDataset(raw_shards, transform=EvalView(probe.stats.mean_image, 33, 0.25))
    x, label = ds[6]
    img, want_label = probe.reader[6]
    assert x.shape == (3, 33, 33) and label == want_label
    np.testing.assert_array_equal(x.numpy(), eval_view(img, probe.stats.mean_image, 33, 0.25))
    assert float(x.abs().max()) > 0


@pytest.fixture(scope="module")
def scaled(run, raw_shards, tmp_path_factory):
    """A checkpoint with the quickstart's input_scale (1/64): a view without it is wrong."""
    out = tmp_path_factory.mktemp("scaled")
    run("train", raw_shards, "--out", out, "--steps", 3, "--batch", 4, "--input-size", 67,
        "--widths", "8,16,24,24,16,32,32", "--init", "he", "--lr", "0.01", "--set", "model.input_scale=0.015625", "--quiet")
    return out / "last.safetensors"


def mean_loss(model, ds):
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in loader:
            total += float(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"))
            n += len(y)
    return total / n


def test_model_eval_transform_scores_as_alexnet_eval(run, scaled, raw_shards):
    import json

    from alexnet.model import AlexNet

    model = AlexNet.from_checkpoint(scaled).eval()
    assert model.config.input_scale == 0.015625
    want = json.loads(run("eval", "--checkpoint", scaled, raw_shards, "--json"))
    got = mean_loss(model, ShardDataset(raw_shards, transform=model.eval_transform()))
    assert got == pytest.approx(want["loss"], rel=1e-4)
    # The README's old example (no input_scale) scores something else: this test would see it.
    unscaled = mean_loss(model, ShardDataset(raw_shards, transform=EvalView(model.mean_image, 67)))
    assert abs(unscaled - want["loss"]) > 1e-2 * abs(want["loss"])


def test_model_train_transform_is_the_training_augmentation(scaled, raw_shards):
    from alexnet.model import AlexNet
    from alexnet.shards import train_view

    model = AlexNet.from_checkpoint(scaled)
    reader = ShardReader(raw_shards)
    img, mean = reader[3][0], model.mean_image
    s, i, scale = 72, 67, 0.015625
    windows = {(y, x): train_view(img, mean, i, scale, y, x, False, np.zeros(3)) for y in range(s - i + 1) for x in range(s - i + 1)}
    # No lighting, no flip: some crop of the stored image, minus the mean at the same pixels, scaled.
    crops = model.train_transform(lighting_std=0, flip=False, seed=1)
    seen = set()
    for _ in range(40):
        x = crops(img).numpy()
        hits = [w for w, v in windows.items() if np.array_equal(v, x)]
        assert len(hits) == 1
        seen.add(hits[0])
    assert len(seen) > 10, "the crops do not move"
    # Flips mirror the window: each view is a window or a window mirrored, both happen.
    flips = model.train_transform(lighting_std=0, flip=True, seed=2)
    mirrored = 0
    for _ in range(40):
        x = flips(img).numpy()
        if not any(np.array_equal(v, x) for v in windows.values()):
            assert any(np.array_equal(v[:, :, ::-1], x) for v in windows.values())
            mirrored += 1
    assert 5 < mirrored < 35
    # Lighting: a per-channel constant shift along the PCA axes, of std σ·λ₁/255 on the first.
    vals, vecs = model.pca_eigenvalues.astype(np.float64), model.pca_eigenvectors.astype(np.float64)
    assert vals[0] > 0
    light = model.train_transform(lighting_std=0.1, flip=False, seed=3)
    proj = []
    for _ in range(400):
        x = light(img).numpy().astype(np.float64)
        diffs = [x - v for v in windows.values()]
        d = min(diffs, key=lambda d: np.abs(d - d.mean(axis=(1, 2), keepdims=True)).max())
        assert np.abs(d - d.mean(axis=(1, 2), keepdims=True)).max() < 1e-3 * scale
        proj.append(d.mean(axis=(1, 2)) / scale @ vecs[0])
    assert np.std(proj) == pytest.approx(0.1 * vals[0] / 255, rel=0.15)
