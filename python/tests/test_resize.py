"""`ingest --resize bilinear` is torchvision's default resize: on real photos it stores what
`torchvision.transforms.Resize(S)` makes of them (bilinear with antialias), then the centre
S×S crop ingest always takes (offsets floor((long − S)/2), docs/shards.md).

Measured here on the six photos below (tests/fixtures/ingest, 240–320 px, so S = 80 is a 2–4×
downscale and the filter's support is widened by that factor), in pixel levels of 0–255:
- the resize alone (the photos decoded by PIL and given to ingest as PNG): mean absolute
  difference 0.07–0.17 from torchvision's Resize on the PIL image (PIL's BILINEAR, which
  torchvision calls), 0.09–0.16 from its tensor path (`antialias=True`, float arithmetic);
  no pixel differs by more than 1 (rounding);
- from the JPEG files (ingest's decoder against PIL's libjpeg as well): 0.14–0.32, at most 2;
- our Lanczos3 differs from torchvision's Resize by 0.9–4.6, so the test tells the filters
  apart."""

import shutil

import numpy as np
import pytest
from PIL import Image

from alexnet.shards import ShardReader
from conftest import PHOTOS

NAMES = ["astronaut.jpg", "chelsea.jpg", "coffee.jpg", "hubble_deep_field.jpg", "motorcycle_left.jpg", "rocket.jpg"]
S = 80


def centre(a, s):
    h, w = a.shape[:2]
    y, x = (h - s) // 2, (w - s) // 2
    return a[y : y + s, x : x + s]


@pytest.fixture(scope="module")
def stored(run, tmp_path_factory):
    """(folder, {(input kind, --resize): {source: stored [S,S,3] pixels}}): the photos as JPEG
    files, and decoded by PIL and written as PNG (so only the resize differs)."""
    tmp = tmp_path_factory.mktemp("resize")
    (tmp / "jpeg" / "n01").mkdir(parents=True)
    (tmp / "png" / "n01").mkdir(parents=True)
    for n in NAMES:
        shutil.copy(PHOTOS / n, tmp / "jpeg" / "n01" / n)
        Image.open(PHOTOS / n).convert("RGB").save(tmp / "png" / "n01" / f"{n}.png")
    out = {}
    for kind in ("jpeg", "png"):
        for mode in ("bilinear", "lanczos3"):
            dst = tmp / f"{kind}-{mode}"
            run("ingest", tmp / kind, dst, "--size", S, "--resize", mode, "--quiet")
            reader = ShardReader(dst)
            out[kind, mode] = {src: img for src, (img, _) in zip(reader.column("source"), reader)}
    return tmp, out


def test_ingest_resize_bilinear_equals_torchvision_resize_on_photos(stored):
    transforms = pytest.importorskip("torchvision.transforms", reason="torchvision is in requirements-torch.txt")
    import torch

    _, stored = stored
    resize = transforms.Resize(S)  # torchvision's default: bilinear, antialias
    for name in NAMES:
        img = Image.open(PHOTOS / name).convert("RGB")
        # The PIL image path: torchvision calls PIL's resize with BILINEAR.
        pil = centre(np.asarray(resize(img)), S).astype(np.float64)
        # The tensor path: its own antialiased bilinear in float, rounded to uint8.
        t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        tensor = centre(resize(t).permute(1, 2, 0).numpy(), S).astype(np.float64)
        for kind, key, mean_bound, max_bound in (("png", f"n01/{name}.png", 0.2, 1), ("jpeg", f"n01/{name}", 0.4, 2)):
            ours = stored[kind, "bilinear"][key].astype(np.float64)
            lanczos = stored[kind, "lanczos3"][key].astype(np.float64)
            d_pil, d_tensor = np.abs(ours - pil).mean(), np.abs(ours - tensor).mean()
            worst = max(np.abs(ours - pil).max(), np.abs(ours - tensor).max())
            d_lanczos = np.abs(lanczos - pil).mean()
            print(f"{name} ({kind}): mean |Δ| vs torchvision PIL {d_pil:.3f}, tensor {d_tensor:.3f}, max {worst:.0f}; lanczos3 vs PIL {d_lanczos:.3f}")
            assert d_pil < mean_bound and d_tensor < mean_bound and worst <= max_bound, (name, kind, d_pil, d_tensor, worst)
            # The comparison tells the filters apart: Lanczos3 is several times further away.
            assert d_lanczos > 3 * d_pil, (name, kind, d_lanczos, d_pil)


def test_resize_is_recorded_in_the_footer(stored):
    import pyarrow.parquet as pq

    from alexnet.shards import shard_files

    tmp, _ = stored
    for mode in ("bilinear", "lanczos3"):
        files = shard_files(tmp / f"jpeg-{mode}")
        assert files
        for f in files:
            assert pq.read_metadata(f).metadata[b"alexnet.resize"] == mode.encode(), f
