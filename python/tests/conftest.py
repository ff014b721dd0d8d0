"""Shared fixtures: the `alexnet` binary and small shard sets it ingests from the repository's
test photos (tests/fixtures/ingest), so every Python test reads files the Rust side wrote."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "fixtures" / "ingest"


def pytest_report_header(config):
    try:
        import torch

        return f"torch {torch.__version__}"
    except ImportError:
        return "torch is not installed: the tests of the PyTorch module and Dataset are skipped"


@pytest.fixture(scope="session")
def alexnet_bin():
    """The binary scripts/test.sh built (ALEXNET_BIN), or target/debug/alexnet."""
    path = Path(os.environ.get("ALEXNET_BIN", REPO / "target" / "debug" / "alexnet"))
    if not path.exists():
        pytest.fail(f"{path}: no alexnet binary; run `cargo build` first or set ALEXNET_BIN")
    return path


@pytest.fixture(scope="session")
def run(alexnet_bin):
    """Runs `alexnet ARGS…`, fails the test with its stderr on a non-zero exit, returns stdout."""

    def go(*args):
        p = subprocess.run([str(alexnet_bin), *map(str, args)], capture_output=True, text=True)
        assert p.returncode == 0, f"alexnet {' '.join(map(str, args))} failed:\n{p.stderr}"
        return p.stdout

    return go


def make_raw_tree(root: Path):
    """Two classes of three photos each, plus a synthetic quadrant image whose corners have
    known colours (it shows the H, W, C layout and the RGB order)."""
    from PIL import Image

    for wnid, names in {"n01": ["astronaut.jpg", "coffee.jpg", "rocket.jpg"], "n02": ["chelsea.jpg", "motorcycle_left.jpg", "hubble_deep_field.jpg"]}.items():
        (root / wnid).mkdir(parents=True)
        for n in names:
            shutil.copy(PHOTOS / n, root / wnid / n)
    q = np.zeros((40, 40, 3), dtype=np.uint8)
    q[:20, :20] = (255, 0, 0)  # top left red
    q[:20, 20:] = (0, 255, 0)  # top right green
    q[20:, :20] = (0, 0, 255)  # bottom left blue
    q[20:, 20:] = (255, 255, 255)
    Image.fromarray(q).save(root / "n02" / "quadrants.png")
    return root


@pytest.fixture(scope="session")
def raw_tree(tmp_path_factory):
    return make_raw_tree(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="session")
def raw_shards(run, raw_tree, tmp_path_factory):
    """Raw shards of side 72 (the small model takes 67) in three files (so statistics merge across files), sorted order."""
    out = tmp_path_factory.mktemp("shards") / "raw"
    run("ingest", raw_tree, out, "--size", 72, "--shard-rows", 3, "--order", "sorted", "--quiet")
    return out


@pytest.fixture(scope="session")
def inspect(run):
    def go(path):
        return json.loads(run("inspect", path, "--json"))

    return go


@pytest.fixture(scope="session")
def trained(run, raw_shards, tmp_path_factory):
    """A checkpoint `alexnet train` wrote: two steps of a small variant on the raw shards."""
    out = tmp_path_factory.mktemp("run")
    run("train", raw_shards, "--out", out, "--steps", 2, "--batch", 4, "--input-size", 67,
        "--widths", "8,16,24,24,16,32,32", "--init", "he", "--lr", "0.001", "--quiet")
    return out / "last.safetensors"
