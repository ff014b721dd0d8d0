"""Hugging Face `datasets` reads `--encoding jpeg|png` shards as Image and ClassLabel."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

datasets = pytest.importorskip("datasets", reason="Hugging Face datasets is not installed")

from alexnet.shards import ShardReader  # noqa: E402


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_datasets_reads_image_and_class_label(run, raw_tree, tmp_path, encoding):
    from PIL import Image

    out = tmp_path / f"{encoding}.parquet"
    run("ingest", raw_tree, out, "--size", 32, "--encoding", encoding, "--quiet")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image), ds.features
    assert isinstance(ds.features["label"], datasets.ClassLabel), ds.features
    assert ds.features["label"].names == ["n01", "n02"]
    table = pq.read_table(out)
    stored = table.column("image").to_pylist()
    wnids = table.column("wnid").to_pylist()
    assert len(ds) == len(stored) == 7
    raw = ds.cast_column("image", datasets.Image(decode=False))
    for i in range(len(ds)):
        row = ds[i]
        assert isinstance(row["image"], Image.Image)
        assert raw[i]["image"]["bytes"] == stored[i]["bytes"]
        want = np.asarray(Image.open(io.BytesIO(stored[i]["bytes"])).convert("RGB"))
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), want)
        assert ds.features["label"].int2str(row["label"]) == wnids[i]
    # Our own readers still take these shards (int64 labels): Python and Rust.
    reader = ShardReader(out)
    assert [label for _, label in reader] == ds["label"]
    assert run("inspect", out, "--json")


def test_datasets_reads_raw_shard_labels_as_class_label(run, raw_tree, tmp_path):
    """Raw shards keep their class names in `datasets` too: `label` is a ClassLabel, `image` the
    raw bytes, and alexnet's own readers read the same labels back."""
    out = tmp_path / "raw.parquet"
    run("ingest", raw_tree, out, "--size", 16, "--quiet")
    ds = datasets.load_dataset("parquet", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.features["label"] == datasets.ClassLabel(names=["n01", "n02"]), ds.features
    assert ds.features["image"] == datasets.Value("binary"), ds.features
    assert ds.features["orig_width"] == datasets.Value("int32"), ds.features
    table = pq.read_table(out)
    wnids = table.column("wnid").to_pylist()
    assert len(ds) == 7 and sorted(set(ds["label"])) == [0, 1]
    assert [ds.features["label"].int2str(v) for v in ds["label"]] == wnids
    assert [len(b) for b in ds["image"]] == [16 * 16 * 3] * 7
    reader = ShardReader(out)
    images, labels = zip(*reader)
    assert list(labels) == ds["label"]
    assert all(np.array_equal(img.reshape(-1), np.frombuffer(b, np.uint8)) for img, b in zip(images, ds["image"]))
    assert run("inspect", out, "--json")
