"""Python side of the `alexnet` tool.

- `alexnet.shards`: read the Parquet shards `alexnet ingest` writes (images as H×W×3 uint8,
  labels, and the footer statistics as numpy arrays). Needs numpy and pyarrow only.
- `alexnet.checkpoint`: read an `alexnet` checkpoint (safetensors) as numpy arrays and its
  model config, without torch.
- `alexnet.model` (torch): the paper's network as a `torch.nn.Module` that loads any
  `alexnet` checkpoint with `load_state_dict(strict=True)`.
- `alexnet.data` (torch): a `torch.utils.data.Dataset` over shards, and the model's views as
  transforms (`model.eval_transform()`, `model.train_transform()` build them).
- `alexnet.stream` (torch): `ShardStream`, a shuffling `IterableDataset` that reads each row
  group once an epoch, sharded across DataLoader workers and distributed ranks.
"""

from .shards import ShardReader, Stats, read_footer, read_stats
from .checkpoint import ModelConfig, read_checkpoint

__all__ = ["ShardReader", "Stats", "read_footer", "read_stats", "ModelConfig", "read_checkpoint"]
