"""`export-features --shard I/N`: the parts a job array writes, one file each, read back as
one dataset (pyarrow's dataset over the folder, DuckDB's glob) equal to one whole export, rows
in the same order (docs/job-arrays.md)."""

import subprocess

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest


def vectors(table):
    return table.column("features").combine_chunks().flatten().to_numpy().reshape(table.num_rows, -1)


def test_export_features_parts_read_as_one_dataset(run, alexnet_bin, trained, raw_shards, tmp_path):
    common = ["export-features", "--quiet", "--checkpoint", trained, "--devices", "cpu", raw_shards]
    whole = tmp_path / "fc7.parquet"
    run(*common, whole)
    parts = tmp_path / "fc7"
    # raw_shards holds three shard files: part 0 of 2 takes the first, part 1 the other two.
    for i in (1, 0):
        run(*common, parts, "--shard", f"{i}/2")
    assert sorted(p.name for p in parts.iterdir()) == ["fc7-00000-of-00002.parquet", "fc7-00001-of-00002.parquet"]
    assert pq.read_metadata(parts / "fc7-00000-of-00002.parquet").num_rows == 3

    want = pq.read_table(whole)
    got = ds.dataset(parts, format="parquet").to_table()
    assert got.num_rows == want.num_rows == 7
    for col in ("source", "label", "wnid"):
        assert got.column(col).to_pylist() == want.column(col).to_pylist(), col
    # The same network on the same images; another batch composition may round differently.
    np.testing.assert_allclose(vectors(got), vectors(want), rtol=1e-5, atol=1e-6)

    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    rows = duckdb.sql(f"SELECT source FROM '{parts}/*.parquet'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(want.column("source").to_pylist())

    # More parts than shard files: part 0 of 4 would get files [0, 3/4) of 3, none; refused
    # with the count to use, writing nothing.
    p = subprocess.run([str(alexnet_bin), *map(str, common), tmp_path / "many", "--shard", "0/4"], capture_output=True, text=True)
    assert p.returncode != 0 and "3 shard files" in p.stderr and "at most 3 parts" in p.stderr, p.stderr
    assert not (tmp_path / "many").exists()
