"""`alexnet train` writes TensorBoard event files as it goes: the real `tensorboard` package's
EventAccumulator finds every scalar of metrics.jsonl (same steps, values as float32, wall times
equal to the records' `time`), and the run's config.toml as text."""

import json
import time

import numpy as np
import pytest

pytest.importorskip("tensorboard", reason="tensorboard is not installed (python/requirements-test.txt)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

STEP_TAGS = {"loss": "train/loss", "lr": "train/lr", "top1_error": "train/top1_error",
             "images_per_s": "train/images_per_s", "data_wait_s": "train/data_wait_s"}
EPOCH_TAGS = {"train_loss": "epoch/train_loss", "lr": "epoch/lr", "seconds": "epoch/seconds",
              "val_loss": "val/loss", "val_top1_error": "val/top1_error", "val_top5_error": "val/top5_error"}


def test_scalars_equal_metrics_jsonl(run, raw_shards, tmp_path):
    out = tmp_path / "run"
    start = time.time()
    run("train", raw_shards, "--val", raw_shards, "--out", out, "--epochs", 2, "--batch", 2, "--input-size", 67,
        "--widths", "8,16,24,24,16,32,32", "--init", "he", "--lr", "0.001", "--set", "log_every=1", "--set", "model.input_scale=0.015625", "--quiet")
    end = time.time()
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(steps) >= 6 and len(epochs) == 2
    times = [r["time"] for r in records]
    assert all(start - 1 <= t <= end + 1 for t in times) and times == sorted(times)

    acc = EventAccumulator(str(out), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert set(STEP_TAGS.values()) | set(EPOCH_TAGS.values()) <= tags, tags
    for kind, recs, table in (("step", steps, STEP_TAGS), ("epoch", epochs, EPOCH_TAGS)):
        for key, tag in table.items():
            events = acc.Scalars(tag)
            want = [(r["step"], r[key], r["time"]) for r in recs if r.get(key) is not None]
            assert [e.step for e in events] == [w[0] for w in want], tag
            np.testing.assert_allclose([e.value for e in events], [w[1] for w in want], rtol=1e-6, err_msg=tag)
            np.testing.assert_allclose([e.wall_time for e in events], [w[2] for w in want], rtol=0, atol=1e-3, err_msg=tag)
    losses = [e.value for e in acc.Scalars("train/loss")]
    assert len(set(losses)) > 1, "the loss never changed: the comparison would not see a shuffled series"
    config = acc.Tensors("config")
    assert len(config) == 1
    text = config[0].tensor_proto.string_val[0].decode()
    want = "".join(f"    {l}\n" for l in (out / "config.toml").read_text().splitlines())
    assert text == want and "log_every = 1" in text
