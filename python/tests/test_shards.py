"""The numpy reader against shards the Rust side wrote: layout, labels, merged statistics."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from alexnet.shards import ShardError, ShardReader, eval_view, read_stats, shard_files


def test_reader_yields_hwc_rgb_images_and_labels(raw_shards):
    reader = ShardReader(raw_shards)
    assert len(shard_files(raw_shards)) == 3
    assert reader.size == 72 and reader.encoding == "raw"
    assert reader.classes == ["n01", "n02"]
    rows = list(reader)
    assert len(rows) == len(reader) == 7
    sources = reader.column("source")
    wnids = reader.column("wnid")
    for (img, label), wnid in zip(rows, wnids):
        assert img.shape == (72, 72, 3) and img.dtype == np.uint8
        assert reader.classes[label] == wnid
    # The quadrant image: H first (rows), then W, then RGB.
    img, _ = rows[sources.index("n02/quadrants.png")]
    corner = lambda y, x: img[y, x].astype(int)
    assert np.abs(corner(2, 2) - (255, 0, 0)).max() < 8, corner(2, 2)
    assert np.abs(corner(2, 69) - (0, 255, 0)).max() < 8, corner(2, 69)
    assert np.abs(corner(69, 2) - (0, 0, 255)).max() < 8, corner(69, 2)
    # Random access agrees with iteration, across row groups and files.
    for i in (0, 3, 6, -1):
        a, la = reader[i]
        b, lb = rows[i]
        assert la == lb and np.array_equal(a, b)
    with pytest.raises(IndexError):
        reader[7]


def test_merged_statistics_equal_inspect_and_the_pixels(raw_shards, inspect):
    reader = ShardReader(raw_shards)
    want = inspect(raw_shards)
    st = reader.stats
    assert st.count == want["count"] == 7
    np.testing.assert_allclose(st.rgb_mean, want["rgb_mean"], rtol=1e-12)
    np.testing.assert_allclose(st.rgb_cov, want["rgb_cov"], rtol=1e-9)
    values, vectors = st.pca()
    np.testing.assert_allclose(values, want["pca_eigenvalues"], rtol=1e-9)
    np.testing.assert_allclose(vectors, want["pca_eigenvectors"], atol=1e-9)
    # The mean image is the mean of the stored pixels, exactly.
    pixels = np.stack([img for img, _ in reader]).astype(np.float64)
    np.testing.assert_allclose(st.mean_image, pixels.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(st.rgb_mean, pixels.reshape(-1, 3).mean(axis=0), rtol=1e-12)
    assert read_stats(shard_files(raw_shards)[:1]).count < st.count


def test_eval_view_crops_the_centre_and_subtracts_the_mean():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
    mean = rng.uniform(0, 255, (10, 10, 3))
    v = eval_view(img, mean, 7, scale=0.5)
    assert v.shape == (3, 7, 7) and v.dtype == np.float32
    # floor((10 - 7) / 2) = 1: the crop starts at row 1, column 1.
    want = (img[1:8, 1:8].astype(np.float32) - mean[1:8, 1:8].astype(np.float32)) * 0.5
    np.testing.assert_array_equal(v, want.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="--size 11"):
        eval_view(img, mean, 11)


def test_bad_paths_and_files_name_themselves(tmp_path):
    with pytest.raises(ShardError, match="no .parquet shards"):
        ShardReader(tmp_path)
    bad = tmp_path / "x.parquet"
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1]}), bad)
    with pytest.raises(ShardError, match="x.parquet.*alexnet ingest"):
        ShardReader(bad)
