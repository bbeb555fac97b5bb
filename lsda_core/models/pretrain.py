"""Supervised pre-training on image-level labels (the stand-in for ImageNet training), and
the re-training of a classifier on another label set (LSDA's classification network); both
cached in the artifact folder on exactly their inputs. SGD conventions: `lsda_core.models.solver`."""
from __future__ import annotations

import copy
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lsda_core.models import nets
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_write_text
from lsda_core.data.images import load_image
from lsda_core.core.errors import DataError
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import Params, ParamsError, Pretrain
from lsda_core.store.runtime import machine, pick_device, progress as progress_bar
from lsda_core.models.solver import (fork_rng, load_model, net_config, param_groups, save_model, set_lr, stage_seed,
                                     step)
from lsda_core.core.structures import ClassificationDataset
from lsda_core.store.identity import dataset_identity, file_digest, model_key

# batch instead of held in memory (real ImageNet at 227 px would be about 190 GB).
IN_MEMORY_BYTES = 4 << 30
# Detection images are held in memory as uint8 when all of them fit in this many bytes


# ------------------------------------------------------------ classification images

def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size, size) uint8, bilinear (anisotropic, like Caffe's 256 x 256)."""
    if img.shape[0] != size or img.shape[1] != size:
        import cv2
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def load_classification_tensor(ds: ClassificationDataset, size: int, cache: Cache,
                               progress: bool = True) -> torch.Tensor:
    """All images of `ds` resized (bilinear) to `size` x `size`: a (N, 3, size, size) uint8
    tensor, cached as one `images.npy`. For the embedded world (8,000 images of 64 px: 98 MB).
    Real ImageNet does not fit in memory this way: `pretrain` streams such sets per batch
    (`ClassificationStream`) instead of calling this."""
    config = {"dataset": dataset_identity(ds), "size": size}

    def build(out: Path) -> None:
        arr = np.empty((len(ds), 3, size, size), dtype=np.uint8)
        for i, path in enumerate(progress_bar(ds.paths, f"images {ds.split}", progress)):
            arr[i] = _resize(load_image(path), size)
        np.save(out / "images.npy", arr, allow_pickle=False)

    folder = cache.entry("cls-images", config, build)
    return torch.from_numpy(np.load(folder / "images.npy"))


class ClassificationStream:
    """Per-batch loader for classification sets too large for memory: reads and resizes the
    batch's files in `workers` threads (no augmentation here; `pretrain` augments on tensors)."""

    def __init__(self, ds: ClassificationDataset, size: int, workers: int = 2) -> None:
        self.ds, self.size, self.workers = ds, size, max(1, workers)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        paths = [self.ds.paths[int(i)] for i in idx]
        with ThreadPoolExecutor(self.workers) as ex:
            arrs = list(ex.map(lambda pth: _resize(load_image(pth), self.size), paths))
        return torch.from_numpy(np.stack(arrs))


def _images_source(ds: ClassificationDataset, size: int, cache: Cache, p: Params):
    if len(ds) * 3 * size * size <= IN_MEMORY_BYTES:
        return load_classification_tensor(ds, size, cache, p.runtime.progress)
    return ClassificationStream(ds, size, p.runtime.workers)


def _channel_stats(images: torch.Tensor | ClassificationStream, gen: torch.Generator,
                   sample: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (0..255 scale) of the images (of a seeded sample when streamed)."""
    n = len(images)
    idx = torch.arange(n) if isinstance(images, torch.Tensor) else torch.randperm(n, generator=gen)[:sample]
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    count = 0
    for c0 in range(0, len(idx), 1024):
        x = images[idx[c0:c0 + 1024]].to(torch.float64)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    std = (s2 / count - mean * mean).clamp(min=1e-6).sqrt()
    return mean.tolist(), std.tolist()


def augment(x: torch.Tensor, gen: torch.Generator, pad: int = 4, mirror: bool = True) -> torch.Tensor:
    """Random translation (zero-pad `pad` px of normalised input, i.e. the mean, then a random
    crop of the original size) and horizontal mirror with p = 0.5, per image, on (N, C, S, S).

    One gather from the padded batch, its column index mirrored where the image is: the same
    draws (row offsets, column offsets, then mirror flags) and values as cropping and then
    flipping each image, at a fifth of the time of an indexed crop plus a flip."""
    n, c, h, w = x.shape
    oy = ox = torch.zeros(n, dtype=torch.long)
    if pad > 0:
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    cols = torch.arange(w).expand(n, w)
    if mirror:
        flip = torch.rand(n, generator=gen) < 0.5
        cols = torch.where(flip[:, None], w - 1 - cols, cols)
    rows = oy[:, None] + torch.arange(h)  # (n, h)
    index = (rows[:, :, None] * (w + 2 * pad) + (ox[:, None] + cols)[:, None, :]).reshape(n, 1, h * w)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    return torch.gather(padded.reshape(n, c, -1), 2, index.expand(n, c, h * w).to(x.device)).reshape(n, c, h, w)


def sgd_step(model: CaffeNet, opt: torch.optim.Optimizer, batch: torch.Tensor, y: torch.Tensor,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of (re-)training on image-level labels: normalise the uint8 batch, augment it,
    forward, cross-entropy, SGD. Returns (loss, logits). `lsda bench` times this very step."""
    logits = model(augment(model.normalize(batch), gen))
    loss = F.cross_entropy(logits, y)
    step(opt, loss)
    return loss, logits


@torch.inference_mode()
def evaluate_classification(model: CaffeNet, images: torch.Tensor | ClassificationStream, labels: Any,
                            batch: int = 256, progress: bool = False) -> dict[str, float]:
    """Top-1 and top-5 accuracy (eval mode, no augmentation)."""
    was = model.training
    model.eval()
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    n = len(labels)
    top1 = top5 = 0
    k = min(5, model.num_classes)
    device = model.mean.device
    for s in progress_bar(range(0, n, batch), "evaluate", progress):
        idx = torch.arange(s, min(n, s + batch))
        logits = model(model.normalize(images[idx].to(device)))
        y = labels[idx].to(device)
        pred = logits.topk(k, dim=1).indices
        top1 += (pred[:, 0] == y).sum().item()
        top5 += (pred == y[:, None]).any(dim=1).sum().item()
    model.train(was)
    return {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1)}


# ------------------------------------------------------------------------ pre-training



def pretrain(p: Params, train: ClassificationDataset | None, val: ClassificationDataset | None,
             cache: Cache) -> tuple[CaffeNet, dict[str, Any]]:
    """Supervised pre-training on image-level labels (or torchvision's AlexNet weights when
    `data.imagenet_weights` is set), cached as `pretrain/<key>/model.pt` + `history.json`.

    Training: SGD with momentum and weight decay, `pretrain.epochs` passes of
    `pretrain.batch_size` images, lr / 10 after each epoch in `pretrain.lr_steps`;
    augmentation: random translation (4 px zero padding of the normalised image + random crop)
    and horizontal mirror. The model's normalisation buffers are set to the per-channel mean
    and std of the training images. History: per epoch train loss and accuracy (on the
    augmented batches, dropout on), val top-1 / top-5, lr and seconds.

    Weights: the net must have torchvision AlexNet's shape (`nets.matches_torchvision_alexnet`),
    else `ParamsError`; the model gets 1000 outputs (ILSVRC2012 classes in torchvision's
    order); `train` may be None; if `val` is given (with 1000 classes) its top-1/5 are measured.
    Returns the model in eval mode on `runtime.device` with `model.cache_key` set.
    """
    device = pick_device(p.runtime.device)
    weights = p.data.imagenet_weights
    if weights:
        if not nets.matches_torchvision_alexnet(p.net):
            raise ParamsError("data.imagenet_weights is set, but the net does not have torchvision AlexNet's shape "
                              "(net: conv_channels [64, 192, 384, 256, 256], conv1_kernel 11, conv1_stride 4, "
                              "conv1_pad 2, pool1 true, conv2_kernel 5, groups false, lrn false, fc_width 4096)")
        wpath = Path(weights)
        for ds in (train, val):
            if ds is not None and len(ds.classes) != 1000:
                raise DataError(f"{ds.root}: torchvision AlexNet has 1000 ILSVRC2012 outputs, but this {ds.split} "
                                f"split has {len(ds.classes)} classes")
        classes = list(train.classes) if train is not None else (list(val.classes) if val is not None else None)
        config = {"weights": file_digest(wpath), "net": net_config(p, with_context=False),
                  "val": dataset_identity(val)}
        n_classes = 1000
    else:
        if train is None:
            raise DataError("pretrain: no classification training set given and data.imagenet_weights is not set")
        classes = list(train.classes)
        n_classes = len(classes)
        config = {"net": net_config(p, with_context=False), "pretrain": asdict(p.pretrain),
                  "train": dataset_identity(train), "val": dataset_identity(val)}

    def build(out: Path) -> None:
        if weights:
            model, history = _from_weights(p, Path(weights), val, cache, device)
        else:
            model, history = _train_classifier(p, train, val, cache, device, p.pretrain, "pretrain")
        history["classes"] = classes
        save_model(model, out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("pretrain", config, build)
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    return load_model(p, folder, n_classes, device), history


def _from_weights(p: Params, path: Path, val: ClassificationDataset | None, cache: Cache,
                  device: torch.device) -> tuple[CaffeNet, dict[str, Any]]:
    t0 = time.time()
    model = nets.load_alexnet_weights(CaffeNet(p.net, 1000), path).to(device)
    history: dict[str, Any] = {"source": f"torchvision AlexNet weights {path} (not trained here)",
                               "device": str(device), "epochs": []}
    if val is not None:
        images = _images_source(val, p.net.input_size, cache, p)
        history["val"] = evaluate_classification(model, images, val.labels, progress=p.runtime.progress)
    history["seconds"] = round(time.time() - t0, 2)
    return model, history


def retrain(p: Params, model: CaffeNet, train: ClassificationDataset, val: ClassificationDataset | None,
            cache: Cache) -> tuple[CaffeNet, dict[str, Any]]:
    """LSDA's classification network: a copy of `model` whose output layer is replaced by
    `len(train.classes)` new classifiers (N(0, 0.01), learning at 10x), trained on image-level
    labels like pre-training but for `lsda.cls_epochs` epochs at `lsda.cls_lr` (lr / 10 after
    two thirds of them). The paper did this to go from ImageNet's 1000 classes to the 200
    detection categories. Cached as `retrain/<key>`; returns (model in eval mode, history)."""
    device = pick_device(p.runtime.device)
    epochs = p.lsda.cls_epochs
    cfg = replace(p.pretrain, epochs=epochs, lr=p.lsda.cls_lr, lr_steps=[max(1, math.ceil(2 * epochs / 3))])
    config = {"model": model_key(model), "net": net_config(p, with_context=False), "schedule": asdict(cfg),
              "seed": p.pretrain.seed, "train": dataset_identity(train), "val": dataset_identity(val)}

    def build(out: Path) -> None:
        tuned, history = _train_classifier(p, train, val, cache, device, cfg, "retrain", init=model)
        history["classes"] = list(train.classes)
        save_model(tuned, out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("retrain", config, build)
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    return load_model(p, folder, len(train.classes), device), history


def _train_classifier(p: Params, train: ClassificationDataset, val: ClassificationDataset | None,
                      cache: Cache, device: torch.device, cfg: Pretrain, stage: str,
                      init: CaffeNet | None = None) -> tuple[CaffeNet, dict[str, Any]]:
    """SGD on image-level labels: a new network (pre-training), or `init` with a new output
    layer learning at 10x (re-training)."""
    S = p.net.input_size
    images = _images_source(train, S, cache, p)
    val_images = _images_source(val, S, cache, p) if val is not None else None
    if isinstance(images, torch.Tensor) and device.type == "cuda":
        images = images.to(device)
    labels = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
    seed = stage_seed(p.pretrain.seed, stage)  # fixed over the training seeds (runtime.seed)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, Any] = {"source": "trained" if init is None else f"re-trained from {model_key(init)}", "device": str(device), "machine": machine(),
                               "threads": torch.get_num_threads(), "n_train": len(train),
                               "n_val": len(val) if val is not None else 0, "epochs": []}
    t_all = time.time()
    with fork_rng(device):
        torch.manual_seed(seed)
        if init is None:
            model = CaffeNet(p.net, len(train.classes))
            model.set_normalization(*_channel_stats(images, gen))
        else:
            model = copy.deepcopy(init).cpu()
            model.replace_head(len(train.classes), std=0.01)
        model.to(device).train()
        groups = param_groups(model, cfg.lr, cfg.weight_decay, head_mult=1.0 if init is None else 10.0)
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        n = len(train)
        steps = max(1, n // cfg.batch_size)  # drop the last partial batch (fixed batch size)
        for epoch in range(cfg.epochs):
            factor = 0.1 ** sum(epoch >= s for s in cfg.lr_steps)
            set_lr(opt, factor)
            t0 = time.time()
            perm = torch.randperm(n, generator=gen)
            loss_sum = correct = seen = 0.0
            bar = progress_bar(range(steps), f"{stage} epoch {epoch + 1}/{cfg.epochs}", p.runtime.progress)
            for s in bar:
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                batch = images[idx.to(images.device)] if isinstance(images, torch.Tensor) else images[idx]
                y = labels[idx].to(device)
                loss, logits = sgd_step(model, opt, batch, y, gen)
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"{stage} diverged at epoch {epoch + 1}, step {s + 1} "
                                             f"(loss {loss.item()}); lower its learning rate")
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(idx)
            row = {"epoch": epoch + 1, "lr": cfg.lr * factor, "train_loss": loss_sum / seen,
                   "train_acc": correct / seen, "train_seconds": round(time.time() - t0, 2)}
            if val_images is not None:
                ev = evaluate_classification(model, val_images, val.labels)
                row.update(val_top1=ev["top1"], val_top5=ev["top5"])
            row["seconds"] = round(time.time() - t0, 2)
            history["epochs"].append(row)
    history["seconds"] = round(time.time() - t_all, 2)
    return model.eval(), history
