"""`torch.utils.data` datasets over `alexnet` shards, and the model's input views as transforms.

    model = AlexNet.from_checkpoint("runs/paper/best.safetensors")
    ds = ShardDataset("shards/val/", transform=model.eval_transform())   # what `alexnet eval` sees
    loader = torch.utils.data.DataLoader(ds, batch_size=128)

    train = ShardStream("shards/train/", transform=model.train_transform(), seed=1)
    loader = torch.utils.data.DataLoader(train, batch_size=128, num_workers=4)
    for epoch in range(90):
        train.set_epoch(epoch)           # a new order each epoch, the same for the same seed
        for x, y in loader: ...

A transform must carry the model's `input_scale` (1/64 for the quickstart's model): the model's
own `eval_transform()` and `train_transform()` do, which is why they are the way to get one.

`ShardDataset` reads rows one Parquet row group at a time (the last one is cached per worker), so
sequential access, as `DataLoader` without shuffling does, reads every group once; shuffled access
decodes a group per item. `ShardStream` (in `alexnet.stream`) shuffles at the speed of
sequential reading: row groups in a shuffled order through a shuffle buffer.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .shards import ShardReader, eval_view, train_view


class ShardDataset(Dataset):
    """Rows of a shard set as `(image, label)`: image a (S, S, 3) uint8 tensor (H, W, C, RGB)
    unless `transform` maps the numpy image to something else; label an int."""

    def __init__(self, paths, transform: Optional[Callable[[np.ndarray], object]] = None):
        self.reader = ShardReader(paths)
        self.transform = transform

    @property
    def classes(self):
        """Class names (wnids) in label order."""
        return self.reader.classes

    @property
    def stats(self):
        """The shards' merged footer statistics ([`alexnet.shards.Stats`])."""
        return self.reader.stats

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, i: int):
        image, label = self.reader[i]
        if self.transform is not None:
            return self.transform(image), label
        return torch.from_numpy(image.copy()), label


class EvalView:
    """The Rust side's evaluation view as a transform: centre crop of `crop`, minus the mean
    image's crop, times `scale` (the model's `input_scale`), as a (3, crop, crop) float32
    tensor. `model.eval_transform()` builds one with the model's own values."""

    def __init__(self, mean_image: np.ndarray, crop: int, scale: float = 1.0):
        self.mean_image, self.crop, self.scale = mean_image, crop, scale

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(eval_view(image, self.mean_image, self.crop, self.scale))


class TrainView:
    """The paper's training augmentation as `alexnet train` applies it, as a transform: a random
    crop of `crop`, a horizontal flip with probability 1/2 (`flip`), the PCA lighting shift
    `Σ αᵢ (λᵢ/255) pᵢ` with αᵢ ~ N(0, lighting_std²) (λ the footer's 0..255 eigenvalues), minus
    the mean image at the same stored pixels, times `scale`; a (3, crop, crop) float32 tensor.

    The draws come from numpy's generator seeded with `seed` (not the Rust side's stream: the
    same distribution, other samples). In DataLoader workers each worker reseeds from torch's
    per-worker seed, so workers do not repeat each other's draws."""

    def __init__(self, mean_image: np.ndarray, crop: int, scale: float = 1.0, eigenvalues=None, eigenvectors=None,
                 lighting_std: float = 0.1, flip: bool = True, seed: Optional[int] = None):
        if lighting_std > 0 and (eigenvalues is None or eigenvectors is None):
            raise ValueError("PCA lighting needs the eigenvalues and eigenvectors (the checkpoint's stats.pca_* or "
                             "ShardReader(...).stats.pca()); pass lighting_std=0 to train without it")
        self.mean_image, self.crop, self.scale = mean_image, crop, scale
        self.eigenvalues = None if eigenvalues is None else np.asarray(eigenvalues, np.float64)
        self.eigenvectors = None if eigenvectors is None else np.asarray(eigenvectors, np.float64)
        self.lighting_std, self.flip = lighting_std, flip
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker = None

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        if info is not None and self._worker != info.id:
            # A forked worker holds a copy of the parent's generator: reseed per worker.
            self._worker = info.id
            self._rng = np.random.default_rng([info.seed % 2**63] if self._seed is None else [self._seed, info.id])
        return self._rng

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        rng = self._generator()
        s = image.shape[0]
        if self.crop > s:
            raise ValueError(f"the model's input is {self.crop}x{self.crop} but the images are {s}x{s}; ingest with --size {self.crop} or more")
        y0, x0 = (int(v) for v in rng.integers(0, s - self.crop + 1, 2))
        flip = bool(self.flip and rng.random() < 0.5)
        shift = np.zeros(3)
        if self.lighting_std > 0:
            alpha = rng.normal(0.0, self.lighting_std, 3)
            shift = (alpha * self.eigenvalues / 255.0) @ self.eigenvectors
        return torch.from_numpy(train_view(image, self.mean_image, self.crop, self.scale, y0, x0, flip, shift))
