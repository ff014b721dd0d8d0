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
