"""Caffe-style SGD pieces shared by every training stage: per-blob learning rates, the step
schedule, stage seeds, model files, and what identifies a model or dataset in a cache key.

Conventions shared with Caffe's CaffeNet / R-CNN solver files: biases learn at twice the
layer's learning rate and have no weight decay; a new output layer learns at `head_mult` x
(R-CNN's fine-tuning: 10x, its bias 20x). Batch-norm scales and shifts (embedded net only)
learn at the layer's rate without weight decay. The step schedule divides the learning rate
by 10 (Caffe's `step` policy).

Determinism: every random draw (initialisation, shuffling, augmentation, window sampling,
dropout) comes from generators seeded by `stage_seed(runtime.seed, stage)` inside `fork_rng`,
so the same parameters give the same weights on the same machine and thread count, and the
caller's global RNG state is left alone. (On CUDA, cuDNN's convolution backward may still be
non-deterministic.)
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from lsda_core.store.files import atomic_write_bytes
from lsda_core.models.nets import CaffeNet, LAYERS, resolve_precision
from lsda_core.core.params import Params


def stage_seed(seed: int, stage: str) -> int:
    """A stage's own seed, derived from the master seed (so stages draw independent streams)."""
    return int(np.random.SeedSequence([seed, int(hashlib.sha256(stage.encode()).hexdigest()[:8], 16)])
               .generate_state(1)[0])


def fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def param_groups(model: CaffeNet, lr: float, weight_decay: float, head_mult: float = 1.0,
                  frozen: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Caffe's per-blob settings: weights lr x1 with decay, biases lr x2 without; the head
    `head_mult` times that. Frozen layers get `requires_grad = False` and no group."""
    groups = []
    frozen = set(frozen)
    for name in LAYERS:
        mult = head_mult if name == "head" else 1.0
        for mod in model.layer_modules(name):
            bn = isinstance(mod, torch.nn.BatchNorm2d)
            for part, lr_mult, decay in (("weight", 1.0, 0.0 if bn else weight_decay), ("bias", 1.0 if bn else 2.0, 0.0)):
                t = getattr(mod, part)
                t.requires_grad_(name not in frozen)
                if name not in frozen:
                    groups.append({"params": [t], "lr": lr * mult * lr_mult, "base_lr": lr * mult * lr_mult,
                                   "weight_decay": decay, "name": f"{name}.{'bn.' if bn else ''}{part}"})
    return groups


def freeze_statistics(model: CaffeNet, frozen: Iterable[str]) -> None:
    """Batch-norm layers of frozen convs keep their running statistics (eval mode)."""
    for name in frozen:
        for mod in model.layer_modules(name):
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eval()


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def save_model(model: CaffeNet, out: Path) -> None:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(out / "model.pt", buf.getvalue())


def load_model(p: Params, folder: Path, num_classes: int, device: torch.device) -> CaffeNet:
    model = CaffeNet(p.net, num_classes)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.cache_key = f"{folder.parent.name}/{folder.name}"
    return model.to(device).eval()


def net_config(p: Params, *, with_context: bool) -> dict[str, Any]:
    """The net's settings in a cache key, its precision as it runs here ("auto" resolved: the
    arithmetic changes the numbers, so a cache never mixes bfloat16 and float32 entries)."""
    d = asdict(p.net)
    d["precision"] = resolve_precision(d["precision"])
    if not with_context:
        d.pop("context")  # only warping uses it
    return d


class FixedRows:
    """The rows of an output layer that must not learn (LSDA: set A's classifiers, and set
    B's in the rows that adapt only the background): put back after every SGD step."""

    def __init__(self, layer: torch.nn.Linear, learning: Iterable[int]) -> None:
        self.layer = layer
        self.mask = torch.ones(layer.out_features, dtype=torch.bool, device=layer.weight.device)
        self.mask[list(learning)] = False
        self.weight = layer.weight.detach()[self.mask].clone()
        self.bias = layer.bias.detach()[self.mask].clone()

    @torch.no_grad()
    def restore(self) -> None:
        self.layer.weight[self.mask] = self.weight
        self.layer.bias[self.mask] = self.bias


def step(opt: torch.optim.Optimizer, loss: torch.Tensor, fixed: FixedRows | None = None) -> None:
    """One SGD step on `loss`, then the fixed output rows put back."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if fixed is not None:
        fixed.restore()
