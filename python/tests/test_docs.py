"""Every code block of README.md and docs/*.md runs, so the examples cannot drift from the code.

The blocks run in a work dir laid out as the docs assume (`shards/train/`, `shards/val/`,
`shards/photos/`, `photos.parquet`, `runs/paper/best.safetensors` with its `metrics.jsonl`,
`fc7.parquet`), made here by the binary from the repository's test photos. The model has the
quickstart's `input_scale` (1/64), so a view that leaves the scale out gives other numbers.

- ```python blocks are executed, each in a fresh namespace. A comment line `# alexnet ARGS`
  inside one is a command the example asks the reader to run at that point; it is run too.
- ```sql blocks are run by DuckDB and must return rows.
- ```toml blocks must parse; ```json blocks are JSON lines that must parse.
- Untagged blocks are command listings and diagrams with placeholders; they are not run.

Markers, an HTML comment on the line before the fence (blank lines allowed between):
- `<!-- doctest: skip: REASON -->`: the block cannot run here, for REASON (which must be given).
- `<!-- doctest: setup: CODE -->`: CODE runs first, defining what the prose around the block
  defines (`S`, `value`, `x`, ...).
- `<!-- doctest: keys-of: FILE -->` on a json block: each example line's keys are exactly those
  of the records of the same `kind` in FILE (relative to the work dir).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PHOTOS, REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*doctest:\s*(skip|setup|keys-of):\s*(.*?)\s*-->\s*$")
RUN_COMMAND = re.compile(r"^\s*#\s*alexnet\s+(.*)$")


def blocks():
    """(file, line, language, text, markers) of every fenced block of the docs."""
    out = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = FENCE.match(lines[i])
            if not m:
                i += 1
                continue
            start, lang = i, m.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            markers = {}
            k = start - 1
            while k >= 0 and (not lines[k].strip() or MARKER.match(lines[k])):
                mm = MARKER.match(lines[k])
                if mm:
                    markers[mm.group(1)] = mm.group(2)
                k -= 1
            out.append((path.relative_to(REPO), start + 1, lang, "\n".join(lines[start + 1 : j]), markers))
            i = j + 1
    return out


BLOCKS = blocks()
RUNNABLE = [b for b in BLOCKS if b[2] in ("python", "sql", "toml", "json")]


def make_photos(root: Path, wnid: str, n: int, seed: int, first_name: str = None):
    """n distinct photos of one class: random crops of the test photos, some mirrored."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sources = sorted(PHOTOS.glob("*.jpg"))
    (root / wnid).mkdir(parents=True)
    for i in range(n):
        img = Image.open(sources[i % len(sources)]).convert("RGB")
        w, h = img.size
        side = int(min(w, h) * rng.uniform(0.5, 0.9))
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        img = img.crop((x, y, x + side, y + side)).resize((96, 96))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        name = first_name if (i == 0 and first_name) else f"{wnid}_{1000 + i}.JPEG"
        img.save(root / wnid / name, format="JPEG", quality=92)


@pytest.fixture(scope="module")
def workdir(run, tmp_path_factory):
    """The files the docs name, made by the binary."""
    w = tmp_path_factory.mktemp("docs")
    raw = w / "raw"
    # The README's DuckDB query looks this source up by name.
    make_photos(raw, "n01440764", 10, 1, first_name="n01440764_10026.JPEG")
    make_photos(raw, "n02102040", 10, 2)
    run("ingest", raw, w / "shards/train", "--size", 72, "--shard-rows", 8, "--quiet")
    run("ingest", raw, w / "shards/val", "--size", 72, "--classes", w / "shards/train", "--quiet")
    run("ingest", raw, w / "shards/photos", "--size", 72, "--encoding", "jpeg", "--quiet")
    run("ingest", raw, w / "photos.parquet", "--size", 72, "--encoding", "jpeg", "--quiet")
    # fc7 4096 wide, as the README's query casts it.
    run("train", w / "shards/train", "--val", w / "shards/val", "--out", w / "runs/paper", "--epochs", 1, "--batch", 4,
        "--input-size", 67, "--widths", "8,16,24,24,16,32,4096", "--init", "he", "--lr", "0.001",
        "--set", "model.input_scale=0.015625", "--quiet")
    run("export-features", "--quiet", "--checkpoint", w / "runs/paper/best.safetensors", w / "shards/val", w / "fc7.parquet")
    return w


def test_every_block_is_run_or_says_why_not():
    assert len(RUNNABLE) >= 15, f"only {len(RUNNABLE)} runnable blocks found: is the fence parser broken?"
    for path, line, lang, _, markers in RUNNABLE:
        if "skip" in markers:
            assert len(markers["skip"]) > 10, f"{path}:{line}: a skip marker must say why the block cannot run"


def run_python(text, where, workdir, alexnet_bin, setup=""):
    """Runs a python block in a child process (its own imports and globals, as a reader's
    session), splitting it at `# alexnet ARGS` lines, which run as commands."""
    parts, commands, current = [], [], []
    for line in text.splitlines():
        m = RUN_COMMAND.match(line)
        if m:
            parts.append("\n".join(current))
            commands.append(m.group(1))
            current = []
        else:
            current.append(line)
    parts.append("\n".join(current))
    script = [setup]
    for k, part in enumerate(parts):
        script.append(f"exec(compile({part!r}, {where!r}, 'exec'))")
        if k < len(commands):
            script.append(f"__import__('subprocess').run([{str(alexnet_bin)!r}, *__import__('shlex').split({commands[k]!r})], check=True)")
    p = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=workdir, capture_output=True, text=True)
    assert p.returncode == 0, f"{where} failed:\n{p.stderr[-4000:]}"


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b[0]}:{b[1]}" for b in RUNNABLE])
def test_block_runs(block, workdir, alexnet_bin, monkeypatch):
    path, line, lang, text, markers = block
    where = f"{path}:{line}"
    if "skip" in markers:
        pytest.skip(f"{where}: {markers['skip']}")
    if lang == "python":
        needs_torch = re.search(r"^\s*(import torch|from alexnet\.(model|data|stream)|from safetensors\.torch)", text, re.M)
        if needs_torch:
            pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it unless ALEXNET_PY_TORCH=0)")
        run_python(text, where, workdir, alexnet_bin, markers.get("setup", ""))
    elif lang == "sql":
        duckdb = pytest.importorskip("duckdb", reason="duckdb is not installed")
        monkeypatch.chdir(workdir)
        rows = duckdb.connect().sql(text).fetchall()
        assert rows, f"{where}: the query returned no rows"
    elif lang == "toml":
        tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
        tomllib.loads(text)
    elif lang == "json":
        records = [json.loads(l) for l in text.splitlines() if l.strip()]
        if "keys-of" in markers:
            real = [json.loads(l) for l in (workdir / markers["keys-of"]).read_text().splitlines()]
            for rec in records:
                same = [r for r in real if r.get("kind") == rec.get("kind")]
                assert same, f"{where}: no `{rec.get('kind')}` record in {markers['keys-of']}"
                assert set(rec) == set(same[0]), f"{where}: example keys {sorted(rec)} differ from the real {sorted(same[0])}"
