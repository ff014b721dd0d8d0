"""Reading the Parquet shards `alexnet ingest` writes, with numpy and pyarrow only.

The layout (docs/formats.md in the repository): one row per image; `image` is, for the default
`raw` encoding, exactly S*S*3 bytes of RGB in row-major H, W, C order, where S is the footer's
`size`; `label` indexes the footer's `classes`. Every file's footer holds the `alexnet` JSON
(exact pixel sums, so statistics merge across files) and `alexnet.mean_image`, the per-pixel
sums of the file's images (base64 of little-endian uint64, H, W, C).

    reader = ShardReader(["shards/train/"])
    for image, label in reader:          # image: (S, S, 3) uint8, label: int
        ...
    stats = reader.stats                 # merged: mean_image (S, S, 3) float64, rgb_mean, ...
"""

from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, Tuple, Union

import numpy as np
import pyarrow.parquet as pq

#: Footer key of the JSON metadata.
META_KEY = b"alexnet"
#: Footer key of the mean-image sums.
MEAN_IMAGE_KEY = b"alexnet.mean_image"
#: The footer format this reader understands.
FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


class ShardError(ValueError):
    """A shard that cannot be read; the message names the file and what to do."""


def shard_files(paths: Union[PathLike, Sequence[PathLike]]) -> list:
    """The shard files of `paths`, as `alexnet` reads them: a file as given, a directory as
    its `*.parquet` files (hidden ones skipped: those are shards still being written), sorted."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.name.endswith(".parquet") and not f.name.startswith(".") and f.is_file())
            if not found:
                raise ShardError(f"{p}: no .parquet shards in this directory; run `alexnet ingest` first")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise ShardError(f"{p}: no such file or directory")
    if not out:
        raise ShardError("no shard paths given")
    return out


def read_footer(path: PathLike) -> Tuple[dict, np.ndarray]:
    """The `alexnet` footer JSON of one shard and its mean-image sums as (S, S, 3) uint64."""
    path = Path(path)
    meta = pq.read_metadata(path).metadata or {}
    if META_KEY not in meta:
        raise ShardError(f"{path}: no `alexnet` footer key; not a shard written by `alexnet ingest`")
    footer = json.loads(meta[META_KEY])
    version = footer.get("format_version")
    if version != FORMAT_VERSION:
        raise ShardError(f"{path}: footer format_version {version}, this reader knows {FORMAT_VERSION}; update the alexnet package")
    s = int(footer["size"])
    sums = np.frombuffer(base64.b64decode(meta[MEAN_IMAGE_KEY]), dtype="<u8")
    if sums.size != s * s * 3:
        raise ShardError(f"{path}: `alexnet.mean_image` holds {sums.size} values, expected S*S*3 = {s * s * 3}")
    return footer, sums.reshape(s, s, 3)


@dataclass
class Stats:
    """Statistics of a set of shards, merged from the exact sums of every footer (the same
    numbers as `alexnet inspect --json`). Pixel values are 0..255."""

    size: int
    count: int
    pixel_count: int
    pixel_sum: np.ndarray  # (3,) integer sums
    pixel_outer_sum: np.ndarray  # (3, 3) integer sums of x x^T
    mean_image_sum: np.ndarray  # (S, S, 3) uint64

    @property
    def mean_image(self) -> np.ndarray:
        """The mean image, (S, S, 3) float64, H, W, C, RGB."""
        return self.mean_image_sum.astype(np.float64) / max(self.count, 1)

    @property
    def rgb_mean(self) -> np.ndarray:
        """The mean pixel, (3,)."""
        return self.pixel_sum.astype(np.float64) / max(self.pixel_count, 1)

    @property
    def rgb_cov(self) -> np.ndarray:
        """Population covariance of the pixels, (3, 3)."""
        n = self.pixel_count
        if n == 0:
            return np.zeros((3, 3))
        # Centred in Python integers first (exact), as the Rust side does in i128.
        s, o = [int(v) for v in self.pixel_sum], [[int(v) for v in r] for r in self.pixel_outer_sum]
        return np.array([[(n * o[i][j] - s[i] * s[j]) / (n * n) for j in range(3)] for i in range(3)])

    def pca(self) -> Tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (3,) descending and eigenvectors (3, 3), row i = unit eigenvector i as
        [r, g, b] with its largest component positive (the footer's convention)."""
        values, vectors = np.linalg.eigh(self.rgb_cov)
        order = np.argsort(values)[::-1]
        rows = vectors[:, order].T.copy()
        for r in rows:
            if r[np.argmax(np.abs(r))] < 0:
                r *= -1
        return values[order], rows

    @classmethod
    def merge(cls, footers: Sequence[Tuple[dict, np.ndarray]]) -> "Stats":
        """Sums the footers of several shards (same size)."""
        first = footers[0][0]
        st = cls(
            size=int(first["size"]),
            count=0,
            pixel_count=0,
            pixel_sum=np.zeros(3, dtype=object),
            pixel_outer_sum=np.zeros((3, 3), dtype=object),
            mean_image_sum=np.zeros_like(footers[0][1]),
        )
        for f, sums in footers:
            st.count += int(f["count"])
            st.pixel_count += int(f["pixel_count"])
            # Python integers: the sums of a large set overflow uint64 products later on.
            st.pixel_sum = st.pixel_sum + np.array([int(v) for v in f["pixel_sum"]], dtype=object)
            st.pixel_outer_sum = st.pixel_outer_sum + np.array([[int(v) for v in r] for r in f["pixel_outer_sum"]], dtype=object)
            st.mean_image_sum = st.mean_image_sum + sums
        return st


def read_stats(paths: Union[PathLike, Sequence[PathLike]]) -> Stats:
    """The merged statistics of shard files and/or directories."""
    return Stats.merge([read_footer(f) for f in shard_files(paths)])


def _labels(path: Path, column) -> np.ndarray:
    """The label column as int64: shards store int64 (what Hugging Face `datasets` needs for a
    ClassLabel), raw shards from earlier versions int32; both are accepted."""
    if column.null_count:
        raise ShardError(f"{path}: the label column has nulls; re-run `alexnet ingest`")
    arr = column.to_numpy(zero_copy_only=False)
    if arr.dtype.kind != "i":
        raise ShardError(f"{path}: label is {arr.dtype}, expected int32 or int64")
    return arr.astype(np.int64)


class ShardReader:
    """Images and labels of a shard set in file order, plus its footer statistics.

    Iterating yields `(image, label)`: image (S, S, 3) uint8 RGB, label an int. Indexing
    (`reader[i]`) reads the row group holding row i (one group is cached). jpeg/png shards
    are decoded with Pillow (`pip install pillow`)."""

    def __init__(self, paths: Union[PathLike, Sequence[PathLike]]):
        self.files = shard_files(paths)
        footers = [read_footer(f) for f in self.files]
        head = footers[0][0]
        for f, (meta, _) in zip(self.files, footers):
            for key in ("size", "encoding", "classes"):
                if meta[key] != head[key]:
                    raise ShardError(f"{f}: `{key}` differs from {self.files[0]}; a shard set must share size, encoding and classes")
        #: Side S of the stored images.
        self.size = int(head["size"])
        #: `raw`, `jpeg` or `png`.
        self.encoding = head["encoding"]
        #: Class names (wnids) in label order.
        self.classes = list(head["classes"])
        #: Merged statistics ([`Stats`]).
        self.stats = Stats.merge(footers)
        self._groups = []  # (file index, row group, first row, rows)
        first = 0
        for i, f in enumerate(self.files):
            md = pq.read_metadata(f)
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                self._groups.append((i, g, first, n))
                first += n
        self._len = first
        self._cache = (None, None)

    def __len__(self) -> int:
        return self._len

    def row_groups(self) -> int:
        """Number of row groups in the set."""
        return len(self._groups)

    def read_row_group(self, g: int) -> Tuple[np.ndarray, np.ndarray]:
        """Row group g: images (n, S, S, 3) uint8 and labels (n,) int64."""
        if self._cache[0] == g:
            return self._cache[1]
        i, rg, _, n = self._groups[g]
        path = self.files[i]
        table = pq.ParquetFile(path).read_row_group(rg, columns=["image", "label"])
        labels = _labels(path, table.column("label"))
        s = self.size
        images = np.empty((n, s, s, 3), dtype=np.uint8)
        col = table.column("image").combine_chunks()
        if self.encoding == "raw":
            px = s * s * 3
            offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
            sizes = np.diff(offsets)
            if col.null_count or (sizes != px).any():
                r = int(np.argmax(sizes != px)) if (sizes != px).any() else 0
                raise ShardError(f"{path}: row group {rg} row {r} is not S*S*3 = {px} bytes; re-run `alexnet ingest`")
            # Every row is exactly px bytes, back to back: one view of the data buffer.
            data = np.frombuffer(col.buffers()[2], dtype=np.uint8)
            images[:] = data[offsets[0] : offsets[0] + n * px].reshape(n, s, s, 3)
        else:
            from PIL import Image  # only the jpeg/png encodings need Pillow

            for r, v in enumerate(col.field("bytes").to_pylist()):
                img = np.asarray(Image.open(io.BytesIO(v)).convert("RGB"))
                if img.shape != (s, s, 3):
                    raise ShardError(f"{path}: row group {rg} row {r} decodes to {img.shape}, expected ({s}, {s}, 3)")
                images[r] = img
        self._cache = (g, (images, labels))
        return images, labels

    def group_of(self, row: int) -> Tuple[int, int]:
        """(row group, row within it) of global row `row`."""
        if not 0 <= row < self._len:
            raise IndexError(f"row {row} out of range: the set has {self._len} rows")
        lo, hi = 0, len(self._groups) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._groups[mid][2] <= row:
                lo = mid
            else:
                hi = mid - 1
        return lo, row - self._groups[lo][2]

    def __getitem__(self, row: int) -> Tuple[np.ndarray, int]:
        if row < 0:
            row += self._len
        g, r = self.group_of(row)
        images, labels = self.read_row_group(g)
        return images[r], int(labels[r])

    def __iter__(self) -> Iterator[Tuple[np.ndarray, int]]:
        for g in range(len(self._groups)):
            images, labels = self.read_row_group(g)
            for img, lab in zip(images, labels):
                yield img, int(lab)

    def column(self, name: str) -> list:
        """A whole column (e.g. `source`, `wnid`) as a Python list, in row order."""
        out = []
        for f in self.files:
            out.extend(pq.read_table(f, columns=[name]).column(name).to_pylist())
        return out


def eval_view(image: np.ndarray, mean_image: np.ndarray, crop: int, scale: float = 1.0) -> np.ndarray:
    """The evaluation view the Rust side feeds the network: the centre crop x crop of the
    stored image minus the same crop of the mean image, times the model's `input_scale`,
    as (3, crop, crop) float32 (C, H, W). The crop starts at floor((S - crop) / 2)."""
    s = image.shape[0]
    if crop > s:
        raise ValueError(f"the model's input is {crop}x{crop} but the images are {s}x{s}; ingest with --size {crop} or more")
    o = (s - crop) // 2
    x = image[o : o + crop, o : o + crop].astype(np.float32) - mean_image[o : o + crop, o : o + crop].astype(np.float32)
    return np.ascontiguousarray((x * np.float32(scale)).transpose(2, 0, 1))


def train_view(image: np.ndarray, mean_image: np.ndarray, crop: int, scale: float, y0: int, x0: int, flip: bool, shift) -> np.ndarray:
    """One training view, as `alexnet train`'s augmentation computes it (src/reference/augment.rs):
    the crop x crop window at (y0, x0) of the stored image plus the lighting `shift` (3,), minus
    the mean image at the same stored pixels, times `scale`, mirrored left-right when `flip`, as
    (3, crop, crop) float32 (C, H, W)."""
    win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
    x = image[win].astype(np.float32) + np.asarray(shift, np.float32) - mean_image[win].astype(np.float32)
    if flip:
        x = x[:, ::-1]
    return np.ascontiguousarray((x * np.float32(scale)).transpose(2, 0, 1))
