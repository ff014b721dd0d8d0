"""The paper's network as a PyTorch module that loads any `alexnet` checkpoint.

    model = AlexNet.from_checkpoint("runs/paper/best.safetensors").eval()
    x = model.preprocess(image)          # (S, S, 3) uint8 -> (3, I, I) float32, as `eval` does
    logits = model(x[None])
    ds = ShardDataset("shards/val/", transform=model.eval_transform())    # the same view

The layers and their names are the checkpoint's (`conv1` … `fc8`), so
`load_state_dict(strict=True)` takes a checkpoint's parameters as they are:
conv1 k11 s4 → act → LRN → max pool 3/2 · conv2 k5 p2 (groups) → act → LRN → pool ·
conv3 k3 p1 → act · conv4 k3 p1 (groups) → act · conv5 k3 p1 (groups) → act → pool ·
flatten (C, H, W) · fc6 → act → dropout · fc7 → act → dropout · fc8.

LRN is the paper's b = a / (k + α Σ a²)^β over n = 5 neighbouring channels with α = 1e-4
*not divided by n*. PyTorch's `LocalResponseNorm` divides its alpha by n, so it is built with
alpha = n · 1e-4. With `norm = "batch"` a `BatchNorm2d` (`bn1`, `bn2`) takes LRN's place;
with `norm = "none"` nothing does.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import LAYERS, ModelConfig, read_checkpoint
from .masks import dropout_keep
from .shards import eval_view

#: The paper's LRN constants (α not divided by the window).
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0
#: Activations `alexnet forward` reports, in order.
ACTIVATIONS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "logits")


def paper_lrn() -> nn.LocalResponseNorm:
    """The paper's LRN as PyTorch's module (whose alpha is divided by the window size)."""
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA, k=LRN_K)


class AlexNet(nn.Module):
    """The paper's network for a [`ModelConfig`] (widths, classes, groups, LRN, activation,
    pooling, conv1's padding: 2 for checkpoints made by `alexnet import torchvision`).

    In training mode fc6 and fc7 use dropout with probability `dropout` (torch's random
    masks, or alexnet's own with `activations(..., run_seed=, step=)`)."""

    def __init__(self, config: Optional[ModelConfig] = None, dropout: float = 0.5):
        super().__init__()
        self.config = config = config or ModelConfig()
        if config.activation not in ("relu", "tanh"):
            raise ValueError(f"activation `{config.activation}`: expected relu or tanh")
        w, g = config.widths, config.groups
        self.conv1 = nn.Conv2d(3, w[0], 11, stride=4, padding=config.conv1_pad)
        self.conv2 = nn.Conv2d(w[0], w[1], 5, padding=2, groups=g)
        self.conv3 = nn.Conv2d(w[1], w[2], 3, padding=1)
        self.conv4 = nn.Conv2d(w[2], w[3], 3, padding=1, groups=g)
        self.conv5 = nn.Conv2d(w[3], w[4], 3, padding=1, groups=g)
        side = config.final_side()
        if side < 1:
            raise ValueError(f"input size {config.input_size} leaves no pixels after the last pooling (pool {config.pool_size}/{config.pool_stride}; the paper's 3/2 needs 67)")
        self.fc6 = nn.Linear(w[4] * side * side, w[5])
        self.fc7 = nn.Linear(w[5], w[6])
        self.fc8 = nn.Linear(w[6], config.classes)
        if config.norm == "batch":
            # PyTorch's defaults (eps 1e-5, momentum 0.1), as src/shape.rs. No
            # num_batches_tracked: the checkpoint has none, and momentum 0.1 never reads it.
            self.bn1, self.bn2 = nn.BatchNorm2d(w[0]), nn.BatchNorm2d(w[1])
            for bn in (self.bn1, self.bn2):
                bn.num_batches_tracked = None
        else:
            self.lrn = paper_lrn() if config.norm == "lrn" else nn.Identity()
        self.dropout = dropout
        #: The mean image (S, S, 3) the model was trained with, if the checkpoint had it.
        self.mean_image: Optional[np.ndarray] = None
        #: The training data's PCA eigenvalues (3,) and eigenvectors (3, 3), if the checkpoint
        #: had them (what `train_transform`'s lighting noise needs).
        self.pca_eigenvalues: Optional[np.ndarray] = None
        self.pca_eigenvectors: Optional[np.ndarray] = None

    def _norm(self, i, x):
        """The normalisation after conv `i` (1 or 2): `bn<i>` (batch statistics in training
        mode, running ones in eval mode), LRN or the identity."""
        return getattr(self, f"bn{i}")(x) if self.config.norm == "batch" else self.lrn(x)

    def _act(self, x):
        return torch.relu(x) if self.config.activation == "relu" else torch.tanh(x)

    def _drop(self, x, name, p, run_seed, step):
        if p == 0.0:
            return x
        if run_seed is None:
            return F.dropout(x, p, training=True)
        keep = torch.from_numpy(dropout_keep(p, run_seed, step, name, tuple(x.shape))).to(x.device)
        return x * keep.to(x.dtype) / (1.0 - p)

    def activations(self, x: torch.Tensor, p: Optional[float] = None, run_seed: Optional[int] = None, step: int = 0) -> Dict[str, torch.Tensor]:
        """Every activation `alexnet forward` reports, by name: conv1 and conv2 after act, LRN,
        pool; conv3, conv4 after act; conv5 after act and pool; fc6, fc7 after act (before
        dropout); logits. `p` defaults to `dropout` in training mode and 0 in eval mode;
        with `run_seed` the masks are alexnet's own for that run and step."""
        if p is None:
            p = self.dropout if self.training else 0.0
        out = {}
        pool = lambda t: F.max_pool2d(t, self.config.pool_size, self.config.pool_stride)
        x = pool(self._norm(1, self._act(self.conv1(x))))
        out["conv1"] = x
        x = pool(self._norm(2, self._act(self.conv2(x))))
        out["conv2"] = x
        x = self._act(self.conv3(x))
        out["conv3"] = x
        x = self._act(self.conv4(x))
        out["conv4"] = x
        x = pool(self._act(self.conv5(x)))
        out["conv5"] = x
        x = self._act(self.fc6(torch.flatten(x, 1)))
        out["fc6"] = x
        x = self._act(self.fc7(self._drop(x, "fc6", p, run_seed, step)))
        out["fc7"] = x
        out["logits"] = self.fc8(self._drop(x, "fc7", p, run_seed, step))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of a preprocessed batch (N, 3, I, I)."""
        return self.activations(x)["logits"]

    def preprocess(self, image: np.ndarray, mean_image: Optional[np.ndarray] = None) -> torch.Tensor:
        """The evaluation view of one stored image (S, S, 3) uint8: centre crop minus the mean
        image's crop, times `input_scale`, as (3, I, I) float32."""
        return torch.from_numpy(eval_view(image, self._mean(mean_image), self.config.input_size, self.config.input_scale))

    def _mean(self, mean_image: Optional[np.ndarray]) -> np.ndarray:
        mean = self.mean_image if mean_image is None else mean_image
        if mean is None:
            raise ValueError("no mean image: the checkpoint has none; pass the data's (ShardReader(...).stats.mean_image)")
        return mean

    def eval_transform(self, mean_image: Optional[np.ndarray] = None):
        """The evaluation view as a transform for [`alexnet.data.ShardDataset`]: (S, S, 3) uint8
        → (3, I, I) float32, with this model's input size, `input_scale` and mean image (or
        `mean_image`), exactly what `alexnet eval` feeds the network."""
        from .data import EvalView

        return EvalView(self._mean(mean_image), self.config.input_size, self.config.input_scale)

    def train_transform(self, lighting_std: float = 0.1, flip: bool = True, seed: Optional[int] = None,
                        mean_image: Optional[np.ndarray] = None, pca=None):
        """The paper's training augmentation as a transform (random crop, flip, PCA lighting with
        `lighting_std`, as `alexnet train` with `augment.lighting_std`), with this model's input
        size, `input_scale`, mean image and PCA statistics (or `mean_image` and
        `pca=(eigenvalues, eigenvectors)`, e.g. `ShardReader(...).stats.pca()`)."""
        from .data import TrainView

        values, vectors = pca if pca is not None else (self.pca_eigenvalues, self.pca_eigenvectors)
        if lighting_std > 0 and values is not None and not np.any(values):
            # An imported checkpoint stores zero eigenvalues: it has no lighting statistics.
            raise ValueError("the checkpoint's PCA eigenvalues are 0 (no lighting statistics): pass the data's, "
                             "pca=ShardReader(...).stats.pca(), or lighting_std=0")
        return TrainView(self._mean(mean_image), self.config.input_size, self.config.input_scale, values, vectors,
                         lighting_std=lighting_std, flip=flip, seed=seed)

    @classmethod
    def from_checkpoint(cls, path: Union[str, os.PathLike], input_size: Optional[int] = None, dropout: float = 0.5) -> "AlexNet":
        """A model with the parameters of an `alexnet` checkpoint (or a state dict saved as
        safetensors by PyTorch; then `input_size` is needed unless its metadata has it),
        loaded with `strict=True`. `mean_image` is set from `stats.mean_image` when present."""
        ck = read_checkpoint(path, input_size)
        model = cls(ck.config, dropout=dropout)
        state = OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in ck.params.items())
        # BatchNorm2d's loader adds a num_batches_tracked to a state dict of unknown version;
        # the checkpoint has none, and neither has the module (see __init__).
        state._metadata = {"bn1": {"version": 2}, "bn2": {"version": 2}}
        model.load_state_dict(state, strict=True)
        model.mean_image = ck.mean_image
        model.pca_eigenvalues, model.pca_eigenvectors = ck.pca_eigenvalues, ck.pca_eigenvectors
        return model

    def save_checkpoint(self, path: Union[str, os.PathLike], extra: Optional[Dict[str, torch.Tensor]] = None, metadata: Optional[Dict[str, str]] = None):
        """Writes the parameters as an `alexnet` checkpoint (float32, with `alexnet.config`),
        plus `stats.mean_image` when set and any `extra` tensors."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.mean_image is not None:
            tensors["stats.mean_image"] = torch.from_numpy(np.asarray(self.mean_image, dtype=np.float32))
        tensors.update(extra or {})
        meta = {
            "alexnet.config": self.config.to_json(),
            "alexnet.format_version": "1",
            "input_size": str(self.config.input_size),
            "format": "pt",
        }
        meta.update(metadata or {})
        save_file(tensors, os.fspath(path), metadata=meta)


def paper_init_(model: AlexNet, generator: Optional[torch.Generator] = None) -> AlexNet:
    """The paper's init in place: weights N(0, 0.01²); biases 1 in conv2, conv4, conv5, fc6,
    fc7 and 0 elsewhere."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            layer, kind = name.split(".")
            if layer.startswith("bn"):
                # Batch normalisation starts as the identity, as in PyTorch: γ 1, β 0.
                p.fill_(1.0 if kind == "weight" else 0.0)
            elif kind == "weight":
                p.normal_(0.0, 0.01, generator=generator)
            else:
                p.fill_(1.0 if layer in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)
    return model


def sgd_step_(model: AlexNet, velocity: Dict[str, torch.Tensor], lr: float, momentum: float = 0.9, weight_decay: float = 0.0005):
    """The paper's update, in place: v ← m·v − wd·lr·w − lr·g; w ← w + v (weight decay on every
    parameter). `velocity` maps parameter names to tensors and is updated too."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            v = velocity.setdefault(name, torch.zeros_like(p))
            v.mul_(momentum).sub_(weight_decay * lr * p).sub_(lr * p.grad)
            p.add_(v)


__all__ = ["AlexNet", "ACTIVATIONS", "LAYERS", "paper_lrn", "paper_init_", "sgd_step_"]
