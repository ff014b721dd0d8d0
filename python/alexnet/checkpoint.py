"""Reading `alexnet` checkpoints (safetensors) without torch.

Parameters are stored under PyTorch's state-dict names and layouts (`conv2.weight`
[out, in/groups, kh, kw], `fc6.weight` [out, in]); momentum under `momentum.<name>`; the
training data's statistics under `stats.mean_image` (S, S, 3), `stats.pca_eigenvalues` (3,),
`stats.pca_eigenvectors` (3, 3). `__metadata__` holds `alexnet.config` (the model config as
JSON) and `input_size`. A checkpoint saved by another framework (parameters only) is read by
inferring widths, classes and groups from the tensor shapes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np
from safetensors import safe_open

#: Parameter names in the order of the network.
LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
PARAM_NAMES = tuple(f"{l}.{k}" for l in LAYERS for k in ("weight", "bias"))
#: The normalisations `ModelConfig.norm` names.
NORMS = ("lrn", "batch", "none")
#: A batch normalisation's tensors: γ, β and the running statistics (buffers).
BN_ROLES = ("weight", "bias", "running_mean", "running_var")


def param_names(config: "ModelConfig") -> Tuple[str, ...]:
    """The tensor names of `config`'s network in state-dict order: with `norm = "batch"`,
    `bn1.*` after conv1's and `bn2.*` after conv2's (src/model/params.rs)."""
    names = []
    for l in LAYERS:
        names += [f"{l}.weight", f"{l}.bias"]
        if config.norm == "batch" and l in ("conv1", "conv2"):
            names += [f"bn{l[-1]}.{r}" for r in BN_ROLES]
    return tuple(names)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what to do."""


@dataclass
class ModelConfig:
    """The network's shape, as `alexnet.config` stores it (src/model/config.rs)."""

    input_size: int = 227
    widths: Tuple[int, ...] = (96, 256, 384, 384, 256, 4096, 4096)
    classes: int = 1000
    groups: int = 2
    #: The normalisation after conv1 and conv2: "lrn" (the paper's), "batch" (BatchNorm2d,
    #: tensors `bn1.*`, `bn2.*`) or "none". Older checkpoints say `lrn: true/false` instead.
    norm: str = "lrn"
    activation: str = "relu"
    input_scale: float = 1.0
    pool_size: int = 3
    pool_stride: int = 2
    conv1_pad: int = 0
    extra: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str, path: str = "checkpoint") -> "ModelConfig":
        """Parses `alexnet.config`. A variant this module does not implement is refused, so
        no checkpoint ever runs with wrong numbers."""
        d = dict(json.loads(text))
        variant = d.pop("variant", None)
        if variant not in (None, "paper", "alexnet2012"):
            raise CheckpointError(f"{path}: model variant `{variant}` is not the paper's network; this module implements only the paper's")
        lrn = d.pop("lrn", None)
        if lrn is not None:
            implied = "lrn" if lrn else "none"
            norm = d.setdefault("norm", implied)
            if (norm == "lrn") != bool(lrn):
                raise CheckpointError(f"{path}: `lrn: {str(lrn).lower()}` contradicts `norm: {norm}`; `lrn` is the old spelling of `norm`: keep only `norm`")
        if d.get("norm", "lrn") not in NORMS:
            raise CheckpointError(f"{path}: norm `{d['norm']}`: expected one of {', '.join(NORMS)}")
        known = {k: d.pop(k) for k in list(d) if k in cls.__dataclass_fields__ and k != "extra"}
        if "widths" in known:
            known["widths"] = tuple(int(w) for w in known["widths"])
        return cls(**known, extra=d)

    def to_json(self) -> str:
        """The config as `alexnet.config` JSON."""
        d = asdict(self)
        extra = d.pop("extra")
        d["widths"] = list(d["widths"])
        d.update(extra)
        return json.dumps(d)

    def final_side(self) -> int:
        """Side of conv5's pooled output: conv1 k11 s4, then three max pools (the paper: 3/2)."""
        side = (self.input_size + 2 * self.conv1_pad - 11) // 4 + 1
        for _ in range(3):
            if side < self.pool_size:
                return 0
            side = (side - self.pool_size) // self.pool_stride + 1
        return side


def infer_config(tensors: Dict[str, np.ndarray], input_size: Optional[int], path: str) -> ModelConfig:
    """The config of a checkpoint without `alexnet.config`: widths and classes from the shapes,
    groups from conv2's input channels per group, batch normalisation when `bn1.weight` is
    there (else LRN, the paper's), ReLU assumed."""
    missing = [n for n in PARAM_NAMES if n not in tensors]
    if missing:
        raise CheckpointError(f"{path}: tensors {', '.join(missing)} are missing; expected the checkpoint names of docs/checkpoints.md (conv1.weight … fc8.bias)")
    if input_size is None:
        raise CheckpointError(f"{path}: no `alexnet.config` and no `input_size` metadata; pass input_size=")
    w = [tensors[f"{l}.weight"].shape[0] for l in LAYERS[:7]]
    groups = w[0] // tensors["conv2.weight"].shape[1]
    norm = "batch" if "bn1.weight" in tensors else "lrn"
    return ModelConfig(input_size=input_size, widths=tuple(w), classes=tensors["fc8.weight"].shape[0], groups=groups, norm=norm)


@dataclass
class Checkpoint:
    """A checkpoint's parts as numpy arrays."""

    config: ModelConfig
    params: Dict[str, np.ndarray]
    momentum: Dict[str, np.ndarray]
    mean_image: Optional[np.ndarray]
    pca_eigenvalues: Optional[np.ndarray]
    pca_eigenvectors: Optional[np.ndarray]
    metadata: Dict[str, str]


def read_checkpoint(path: Union[str, os.PathLike], input_size: Optional[int] = None) -> Checkpoint:
    """Reads every tensor of `path` as numpy. `input_size` is only used for a checkpoint made
    elsewhere that records neither `alexnet.config` nor `input_size`."""
    path = os.fspath(path)
    try:
        with safe_open(path, "np") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a safetensors checkpoint: {e}") from None
    if "alexnet.config" in meta:
        cfg = ModelConfig.from_json(meta["alexnet.config"], path)
    else:
        size = int(meta["input_size"]) if "input_size" in meta else input_size
        cfg = infer_config(tensors, size, path)
    names = param_names(cfg)
    params = {k: v for k, v in tensors.items() if k in names}
    missing = [n for n in names if n not in params]
    if missing:
        raise CheckpointError(f"{path}: tensors {', '.join(missing)} are missing")
    momentum = {k[len("momentum."):]: v for k, v in tensors.items() if k.startswith("momentum.")}
    return Checkpoint(
        config=cfg,
        params=params,
        momentum=momentum,
        mean_image=tensors.get("stats.mean_image"),
        pca_eigenvalues=tensors.get("stats.pca_eigenvalues"),
        pca_eigenvectors=tensors.get("stats.pca_eigenvectors"),
        metadata=meta,
    )
