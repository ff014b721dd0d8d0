"""Python side of the `alexnet` tool.

- `alexnet.shards`: read the Parquet shards `alexnet ingest` writes (images as H×W×3 uint8,
  labels, and the footer statistics as numpy arrays). Needs numpy and pyarrow only.
- `alexnet.checkpoint`: read an `alexnet` checkpoint (safetensors) as numpy arrays and its
  model config, without torch.
- `alexnet.model` (torch): the paper's network as a `torch.nn.Module` that loads any
  `alexnet` checkpoint with `load_state_dict(strict=True)`.
- `alexnet.data` (torch): a `torch.utils.data.Dataset` over shards, with the evaluation view
  the Rust side uses.
"""

from .shards import ShardReader, Stats, read_footer, read_stats
from .checkpoint import ModelConfig, read_checkpoint

__all__ = ["ShardReader", "Stats", "read_footer", "read_stats", "ModelConfig", "read_checkpoint"]
