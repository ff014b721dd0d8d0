"""Images/s of the PyTorch loaders over a shard set: the map-style ShardDataset read in order and
shuffled (DataLoader(shuffle=True): a row group decoded per item), and the IterableDataset
ShardStream (windowed shuffle: each row group decoded once an epoch).

    python benches/torch_loader.py SHARDS [--batch 64] [--workers 0] [--batches 20]

Prints a Markdown table; the shuffled map-style loader is timed over --batches batches only
(a full epoch of it takes minutes), the others over a whole epoch.
"""

import argparse
import os
import time

import torch

from alexnet.data import ShardDataset
from alexnet.stream import ShardStream


def timed(loader, limit=None):
    t, n = time.perf_counter(), 0
    for b, (x, _) in enumerate(loader):
        n += len(x)
        if limit is not None and b + 1 >= limit:
            break
    return n, time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shards")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--batches", type=int, default=20)
    a = ap.parse_args()
    kw = dict(batch_size=a.batch, num_workers=a.workers)
    ds = ShardDataset(a.shards)
    rows = [("map-style, in order", *timed(torch.utils.data.DataLoader(ds, **kw))),
            ("map-style, shuffle=True", *timed(torch.utils.data.DataLoader(ShardDataset(a.shards), shuffle=True, **kw), a.batches))]
    for w in (1, 8):
        s = ShardStream(a.shards, seed=1, window_groups=w)
        rows.append((f"ShardStream, window_groups={w}", *timed(torch.utils.data.DataLoader(s, **kw))))
    print(f"{len(ds)} images in {ds.reader.row_groups()} row groups, batch {a.batch}, {a.workers} workers, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| loader | images | seconds | images/s |\n|---|---|---|---|")
    for name, n, sec in rows:
        print(f"| {name} | {n} | {sec:.2f} | {n / sec:,.0f} |")


if __name__ == "__main__":
    main()
