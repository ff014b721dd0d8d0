"""The README's queries on a features file `alexnet export-features` wrote: DuckDB's
`array_distance` over `features::FLOAT[D]` and the numpy one-liner give the neighbours
`alexnet neighbors` gives."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def features(run, trained, raw_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "fc7.parquet"
    run("export-features", "--quiet", "--checkpoint", trained, raw_shards, out)
    return out


def test_numpy_one_liner_matches_neighbors(run, features):
    t = pq.read_table(features)
    # README: the vectors as one (rows, D) float32 array.
    X = t.column("features").combine_chunks().flatten().to_numpy().reshape(t.num_rows, -1)
    assert X.shape == (7, 32) and X.dtype == np.float32
    d = np.linalg.norm(X - X[2], axis=1)
    want = json.loads(run("neighbors", features, "--query", 2, "-k", 4, "--json"))
    assert want["query"]["row"] == 2
    rows = [n["row"] for n in want["neighbors"]]
    assert rows == [int(i) for i in np.argsort(d, kind="stable")[1:5]]
    np.testing.assert_allclose([n["distance"] for n in want["neighbors"]], np.sort(d)[1:5], rtol=1e-5)


def test_duckdb_query_matches_neighbors(run, features):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
    source = pq.read_table(features).column("source").to_pylist()[2]
    # README: nearest neighbours of one image in SQL.
    rows = duckdb.sql(f"""
        WITH f AS (SELECT source, wnid, features::FLOAT[32] AS v FROM '{features}'),
             q AS (SELECT v FROM f WHERE source = '{source}')
        SELECT f.source, array_distance(f.v, q.v) AS distance
        FROM f, q ORDER BY distance LIMIT 5
    """).fetchall()
    want = json.loads(run("neighbors", features, "--query", source, "-k", 4, "--json"))
    assert rows[0] == (source, 0.0)
    assert [r[0] for r in rows[1:]] == [n["source"] for n in want["neighbors"]]
    np.testing.assert_allclose([r[1] for r in rows[1:]], [n["distance"] for n in want["neighbors"]], rtol=1e-5)
