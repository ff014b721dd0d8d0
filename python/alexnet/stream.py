"""A shuffling `torch.utils.data.IterableDataset` over shards that reads each row group once.

    train = ShardStream("shards/train/", transform=model.train_transform(), seed=1)
    loader = torch.utils.data.DataLoader(train, batch_size=128, num_workers=4)
    for epoch in range(90):
        train.set_epoch(epoch)
        for x, y in loader: ...

A map-style `ShardDataset` with `shuffle=True` decodes a whole row group for every item it
returns. `ShardStream` shuffles as `alexnet train`'s loader does (src/dataset/order.rs): the row
groups are permuted, taken a window of `window_groups` groups at a time, and the rows of a
window are permuted among themselves, so each group is decoded once per epoch and at most one
window is held in memory per worker. A larger window mixes more (rows of a window come from
`window_groups` groups); the row order within a group is already a seeded shuffle when the shards
were ingested with the default `--order shuffled`.

Sharding: the permuted groups are dealt round-robin to every (distributed rank, DataLoader
worker) pair, so ranks and workers read disjoint groups. The order is a function of (seed,
epoch, rank, world size, worker count) only. With several ranks, each (rank, worker) slot
yields as many rows as the smallest of that slot across the ranks (the rest of its last window
is dropped for this epoch), so every rank runs the same number of batches, which
`DistributedDataParallel` needs; which rows are dropped changes with the epoch.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .shards import ShardReader


def _distributed() -> tuple:
    """(rank, world size) of the default process group, or (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardStream(IterableDataset):
    """Rows of a shard set as `(image, label)` in a windowed shuffled order (see the module doc).

    `transform` maps the (S, S, 3) uint8 numpy image (e.g. `model.train_transform()`); without
    one the image is a uint8 tensor. `shuffle=False` streams in file order (still sharded).
    `rank` and `world_size` default to torch.distributed's when it is initialised."""

    def __init__(self, paths, transform: Optional[Callable[[np.ndarray], object]] = None, shuffle: bool = True,
                 seed: int = 0, window_groups: int = 8, rank: Optional[int] = None, world_size: Optional[int] = None):
        if window_groups < 1:
            raise ValueError(f"window_groups {window_groups}: at least 1 row group per window")
        self.reader = ShardReader(paths)
        self.transform, self.shuffle, self.seed, self.window_groups = transform, shuffle, seed, window_groups
        r, w = _distributed()
        self.rank = r if rank is None else rank
        self.world_size = w if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not below world_size {self.world_size}")
        self.epoch = 0
        self._rows = np.array([g[3] for g in self.reader._groups], dtype=np.int64)

    @property
    def classes(self) -> List[str]:
        """Class names (wnids) in label order."""
        return self.reader.classes

    @property
    def stats(self):
        """The shards' merged footer statistics ([`alexnet.shards.Stats`])."""
        return self.reader.stats

    def set_epoch(self, epoch: int):
        """Selects the epoch whose order the next iteration yields (call it before each epoch,
        as with `DistributedSampler`; DataLoader workers see the value at iteration start)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.world_size != 1:
            raise TypeError("len() of a ShardStream over several ranks depends on the DataLoader's workers; count the batches instead")
        return len(self.reader)

    def _rng(self, *stream) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *stream])

    def group_order(self) -> np.ndarray:
        """This epoch's row groups in the order they are dealt out (all ranks compute the same)."""
        n = self.reader.row_groups()
        return self._rng(0).permutation(n) if self.shuffle else np.arange(n)

    def slot_groups(self, slot: int, slots: int) -> np.ndarray:
        """The groups of one (rank, worker) slot, `slot = worker · world_size + rank`."""
        return self.group_order()[slot::slots]

    def _quota(self, worker: int, workers: int) -> Optional[int]:
        """Rows this worker's slot yields when ranks must agree: the least over the ranks."""
        if self.world_size == 1:
            return None
        slots = workers * self.world_size
        order = self.group_order()
        return int(min(self._rows[order[worker * self.world_size + r :: slots]].sum() for r in range(self.world_size)))

    def __iter__(self) -> Iterator:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        slot, slots = worker * self.world_size + self.rank, workers * self.world_size
        groups = self.slot_groups(slot, slots)
        left = self._quota(worker, workers)
        rng = self._rng(1, slot)
        for start in range(0, len(groups), self.window_groups):
            images, labels = [], []
            for g in groups[start : start + self.window_groups]:
                im, lab = self.reader.read_row_group(int(g))
                images.append(im)
                labels.append(lab)
            images, labels = np.concatenate(images), np.concatenate(labels)
            order = rng.permutation(len(labels)) if self.shuffle else np.arange(len(labels))
            for i in order:
                if left is not None:
                    if left == 0:
                        return
                    left -= 1
                image = images[i]
                yield (self.transform(image) if self.transform is not None else torch.from_numpy(image.copy())), int(labels[i])
