"""The shuffling IterableDataset: every row once per epoch, the windowed order, determinism per
(seed, epoch), disjoint shards across DataLoader workers and distributed ranks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (scripts/test.sh installs it unless ALEXNET_PY_TORCH=0)")

from alexnet.shards import ShardReader  # noqa: E402
from alexnet.stream import ShardStream  # noqa: E402


@pytest.fixture(scope="module")
def grouped(run, raw_tree, tmp_path_factory):
    """The 7 test images, one row group each (a row of 24·24·3 bytes over a 1 kB budget)."""
    out = tmp_path_factory.mktemp("grouped") / "shards"
    run("ingest", raw_tree, out, "--size", 24, "--row-group-bytes", 1000, "--quiet")
    reader = ShardReader(out)
    assert reader.row_groups() == 7
    return out


def row_ids(reader):
    """Global row of each image, by its bytes (the test images are all different)."""
    ids = {reader[i][0].tobytes(): i for i in range(len(reader))}
    assert len(ids) == len(reader)
    return ids


def rows_of(stream, ids, **loader):
    if loader:
        items = list(torch.utils.data.DataLoader(stream, batch_size=None, **loader))
    else:
        items = list(stream)
    return [ids[x.numpy().tobytes()] for x, _ in items], [int(y) for _, y in items]


def test_each_epoch_visits_every_row_once_in_a_seeded_order(grouped):
    reader = ShardReader(grouped)
    ids = row_ids(reader)
    s = ShardStream(grouped, seed=5, window_groups=2)
    first, labels = rows_of(s, ids)
    assert sorted(first) == list(range(7)) and len(s) == 7
    assert labels == [reader[r][1] for r in first]
    again, _ = rows_of(ShardStream(grouped, seed=5, window_groups=2), ids)
    assert again == first, "same seed and epoch, same order"
    orders = {tuple(first)}
    for epoch in range(1, 6):
        s.set_epoch(epoch)
        rows, _ = rows_of(s, ids)
        assert sorted(rows) == list(range(7))
        orders.add(tuple(rows))
    assert len(orders) >= 4, "the order does not change with the epoch"
    assert rows_of(ShardStream(grouped, seed=6, window_groups=2), ids)[0] != first
    assert rows_of(ShardStream(grouped, shuffle=False), ids)[0] == list(range(7))


def test_windows_hold_window_groups_groups(grouped):
    # One row per group here, so a window of 3 groups is 3 consecutive rows, and those rows are
    # exactly the groups the permutation put in that window.
    s = ShardStream(grouped, seed=1, window_groups=3)
    ids = row_ids(s.reader)
    rows, _ = rows_of(s, ids)
    order = s.group_order()
    for w in range(0, 7, 3):
        assert sorted(rows[w : w + 3]) == sorted(int(g) for g in order[w : w + 3])


def test_workers_and_ranks_read_disjoint_groups_and_ranks_agree_on_length(grouped):
    ids = row_ids(ShardReader(grouped))
    # Two DataLoader workers on one rank: every row once.
    one, _ = rows_of(ShardStream(grouped, seed=2), ids, num_workers=2)
    assert sorted(one) == list(range(7))
    # Two ranks of two workers: 4 slots get 2, 2, 2 and 1 of the 7 one-row groups; worker 1's
    # slots on the two ranks hold 2 and 1 rows, so both yield 1 there: 3 rows a rank, disjoint,
    # one row dropped this epoch.
    ranks = [rows_of(ShardStream(grouped, seed=2, rank=r, world_size=2), ids, num_workers=2)[0] for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3
    assert not set(ranks[0]) & set(ranks[1])
    # Deterministic across runs, and each rank's rows are those of its slots' groups.
    assert rows_of(ShardStream(grouped, seed=2, rank=1, world_size=2), ids, num_workers=2)[0] == ranks[1]
    s = ShardStream(grouped, seed=2, rank=0, world_size=2)
    slots = {int(g) for w in range(2) for g in s.slot_groups(w * 2 + 0, 4)}
    assert set(ranks[0]) <= slots
    with pytest.raises(TypeError, match="ranks"):
        len(s)
    with pytest.raises(ValueError, match="world_size"):
        ShardStream(grouped, rank=2, world_size=2)


def test_transform_and_batches(grouped):
    from alexnet.data import EvalView

    reader = ShardReader(grouped)
    s = ShardStream(grouped, transform=EvalView(reader.stats.mean_image, 20, 0.5), seed=3)
    x, y = next(iter(torch.utils.data.DataLoader(s, batch_size=4)))
    assert x.shape == (4, 3, 20, 20) and x.dtype == torch.float32 and y.shape == (4,)
