"""A `torch.utils.data.Dataset` over `alexnet` shards.

    ds = ShardDataset("shards/val/")                       # (uint8 tensor (S, S, 3), label)
    ds = ShardDataset("shards/val/", transform=EvalView(ds.stats.mean_image, 227))
    loader = torch.utils.data.DataLoader(ds, batch_size=128)

Rows are read one Parquet row group at a time (the last one is cached per worker), so
sequential access, as `DataLoader` without shuffling does, reads every group once.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .shards import ShardReader, eval_view


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
    image's crop, times `scale`, as a (3, crop, crop) float32 tensor."""

    def __init__(self, mean_image: np.ndarray, crop: int, scale: float = 1.0):
        self.mean_image, self.crop, self.scale = mean_image, crop, scale

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(eval_view(image, self.mean_image, self.crop, self.scale))
