"""Supervised pre-training on image-level labels and R-CNN's detection fine-tuning on warped
region proposals, both cached in the artifact folder on exactly their inputs.

Conventions shared with Caffe's CaffeNet / R-CNN solver files: biases learn at twice the
layer's learning rate and have no weight decay; the new output layer of fine-tuning learns at
10x (its bias at 20x). Batch-norm scales and shifts (embedded net only) learn at the layer's
rate without weight decay. The step schedule divides the learning rate by 10 (pre-training: after
each epoch listed in `pretrain.lr_steps`; fine-tuning: every `finetune.lr_step` iterations,
Caffe's `step` policy).

Determinism: every random draw (initialisation, shuffling, augmentation, window sampling,
dropout) comes from generators seeded by `runtime.seed` inside `torch.random.fork_rng`, so the
same parameters give the same weights on the same machine and thread count, and the caller's
global RNG state is left alone. (On CUDA, cuDNN's convolution backward may still be
non-deterministic.)

Under torchrun (`distributed`), fine-tuning runs as DistributedDataParallel with R-CNN's
batch split across the processes: every rank draws the same batch of fg + bg windows and
warps and forwards only its share (every world-th window), the losses are scaled so that the
all-reduced gradient is the gradient of the whole batch's mean loss, so the effective batch
stays `fg_per_batch + bg_per_batch` (128 in R-CNN) and the run is the single-process one up
to the order of float sums and the dropout draws (each rank its own stream). Batch-norm
layers (embedded net only) normalise each rank's share. The model is stored under the same
cache key as a single process's, so the book finds it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsda_core import boxes as B
from lsda_core import distributed as D
from lsda_core import nets
from lsda_core.cache import Cache, atomic_write_bytes, atomic_write_text
from lsda_core.data.images import load_image
from lsda_core.errors import DataError
from lsda_core.nets import CaffeNet, LAYERS
from lsda_core.params import Params, ParamsError
from lsda_core.runtime import machine, pick_device, progress as progress_bar
from lsda_core.structures import ClassificationDataset, DetectionDataset

# A classification set larger than this (as N x 3 x S x S uint8) is streamed from disk per
# batch instead of held in memory (real ImageNet at 227 px would be about 190 GB).
IN_MEMORY_BYTES = 4 << 30
# Detection images are held in memory as uint8 when all of them fit in this many bytes
# (the embedded VOC-like train set: ~60 MB; real VOC 2007 trainval: ~2.8 GB).
IMAGE_STORE_BYTES = 3 << 30
LOG_EVERY = 50  # fine-tuning history: one row per this many iterations


# ---------------------------------------------------------------------------- helpers

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def array_digest(arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """Hash of the bytes, shapes and dtypes of a sequence of arrays."""
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def dataset_identity(ds: ClassificationDataset | DetectionDataset | None) -> dict[str, Any] | None:
    """What identifies a dataset split in a cache key: name, root, split, size, and a digest
    of its content listing (file names and labels, or image ids and annotations)."""
    if ds is None:
        return None
    if isinstance(ds, ClassificationDataset):
        listing = [[Path(pth).name for pth in ds.paths], np.asarray(ds.labels).tolist(), list(ds.classes)]
    else:
        listing = [list(ds.classes), [[im.image_id, Path(im.path).name, im.width, im.height,
                                       [[o.cls, np.asarray(o.box).tolist(), bool(o.difficult)] for o in im.objects]]
                                      for im in ds.images]]
    return {"name": ds.name, "root": str(ds.root), "split": ds.split, "n": len(ds), "content": _digest(listing)}


def model_key(model: CaffeNet) -> str:
    """The cache key of the stage that produced `model`, or a digest of its weights."""
    key = getattr(model, "cache_key", None)
    return key if key else "weights-" + array_digest(v for _, v in sorted(model.state_dict().items()))


def _seed(seed: int, stage: str) -> int:
    """A stage's own seed, derived from the master seed (so stages draw independent streams)."""
    return int(np.random.SeedSequence([seed, int(hashlib.sha256(stage.encode()).hexdigest()[:8], 16)])
               .generate_state(1)[0])


def _fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _param_groups(model: CaffeNet, lr: float, weight_decay: float, head_mult: float = 1.0,
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


def _freeze_statistics(model: CaffeNet, frozen: Iterable[str]) -> None:
    """Batch-norm layers of frozen convs keep their running statistics (eval mode)."""
    for name in frozen:
        for mod in model.layer_modules(name):
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eval()


def _set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor


def _save_model(model: CaffeNet, out: Path) -> None:
    import io
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(out / "model.pt", buf.getvalue())


def _load_model(p: Params, folder: Path, num_classes: int, device: torch.device) -> CaffeNet:
    model = CaffeNet(p.net, num_classes)
    model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
    model.cache_key = f"{folder.parent.name}/{folder.name}"
    return model.to(device).eval()


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

    folder = cache.entry("cls-images", config, build, modules=[sys.modules[__name__]])
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
    crop of the original size) and horizontal mirror with p = 0.5, per image, on (N, C, S, S)."""
    n, c, h, w = x.shape
    if pad > 0:
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
        x = xp[torch.arange(n, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if mirror:
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


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

def _net_config(p: Params, *, with_context: bool) -> dict[str, Any]:
    d = asdict(p.net)
    if not with_context:
        d.pop("context")  # only warping uses it
    return d


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
        stat = wpath.stat() if wpath.is_file() else None
        for ds in (train, val):
            if ds is not None and len(ds.classes) != 1000:
                raise DataError(f"{ds.root}: torchvision AlexNet has 1000 ILSVRC2012 outputs, but this {ds.split} "
                                f"split has {len(ds.classes)} classes")
        classes = list(train.classes) if train is not None else (list(val.classes) if val is not None else None)
        config = {"weights": str(wpath), "bytes": stat.st_size if stat else None, "net": _net_config(p, with_context=False),
                  "val": dataset_identity(val)}
        n_classes = 1000
    else:
        if train is None:
            raise DataError("pretrain: no classification training set given and data.imagenet_weights is not set")
        classes = list(train.classes)
        n_classes = len(classes)
        config = {"net": _net_config(p, with_context=False), "pretrain": asdict(p.pretrain), "seed": p.runtime.seed,
                  "train": dataset_identity(train), "val": dataset_identity(val)}

    def build(out: Path) -> None:
        if weights:
            model, history = _from_weights(p, Path(weights), val, cache, device)
        else:
            model, history = _train_classifier(p, train, val, cache, device)
        history["classes"] = classes
        _save_model(model, out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("pretrain", config, build, modules=[nets, sys.modules[__name__]])
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    return _load_model(p, folder, n_classes, device), history


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


def _train_classifier(p: Params, train: ClassificationDataset, val: ClassificationDataset | None,
                      cache: Cache, device: torch.device) -> tuple[CaffeNet, dict[str, Any]]:
    cfg, S = p.pretrain, p.net.input_size
    images = _images_source(train, S, cache, p)
    val_images = _images_source(val, S, cache, p) if val is not None else None
    if isinstance(images, torch.Tensor) and device.type == "cuda":
        images = images.to(device)
    labels = torch.as_tensor(np.asarray(train.labels), dtype=torch.long)
    seed = _seed(p.runtime.seed, "pretrain")
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, Any] = {"source": "trained", "device": str(device), "machine": machine(),
                               "threads": torch.get_num_threads(), "n_train": len(train),
                               "n_val": len(val) if val is not None else 0, "epochs": []}
    t_all = time.time()
    with _fork_rng(device):
        torch.manual_seed(seed)
        model = CaffeNet(p.net, len(train.classes))
        mean, std = _channel_stats(images, gen)
        model.set_normalization(mean, std)
        model.to(device).train()
        opt = torch.optim.SGD(_param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum)
        n = len(train)
        steps = max(1, n // cfg.batch_size)  # drop the last partial batch (fixed batch size)
        for epoch in range(cfg.epochs):
            factor = 0.1 ** sum(epoch >= s for s in cfg.lr_steps)
            _set_lr(opt, factor)
            t0 = time.time()
            perm = torch.randperm(n, generator=gen)
            loss_sum = correct = seen = 0.0
            bar = progress_bar(range(steps), f"pretrain epoch {epoch + 1}/{cfg.epochs}", p.runtime.progress)
            for s in bar:
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                batch = images[idx.to(images.device)] if isinstance(images, torch.Tensor) else images[idx]
                x = augment(model.normalize(batch), gen)
                y = labels[idx].to(device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if not math.isfinite(loss.item()):
                    raise FloatingPointError(f"pre-training diverged at epoch {epoch + 1}, step {s + 1} "
                                             f"(loss {loss.item()}); lower pretrain.lr")
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


# ------------------------------------------------------------------------- fine-tuning

def window_lists(dataset: DetectionDataset, proposals: dict[str, np.ndarray], classes: Sequence[str],
                 fg_iou: float = 0.5) -> dict[str, np.ndarray]:
    """R-CNN's two global window lists over all images of `dataset`.

    Windows of an image: its ground-truth boxes (every object whose class is in `classes`,
    difficult ones included, as R-CNN's roidb) followed by its proposals. Foreground: IoU
    >= `fg_iou` with some ground-truth box, label 1 + index (in `classes`) of the class of
    the box of highest IoU; background: IoU < `fg_iou` with every ground-truth box (0 when
    there is none), label 0. Objects of classes outside `classes` (LSDA's set A) are not
    ground truth here: windows on them are background, as in training without their boxes.

    Returns `fg_image`, `bg_image` (int64 index into `dataset.images`), `fg_box`, `bg_box`
    (float32 (n, 4)), `fg_label` (int64), `fg_iou`, `bg_iou` (float32 max IoU).
    """
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list] = {k: [] for k in ("fg_image", "fg_box", "fg_label", "fg_iou", "bg_image", "bg_box", "bg_iou")}
    for i, im in enumerate(dataset.images):
        objs = [o for o in im.objects if o.cls in index]
        gt = np.array([o.box for o in objs], dtype=np.float64).reshape(-1, 4)
        gt_label = np.array([index[o.cls] for o in objs], dtype=np.int64)
        props = np.asarray(proposals.get(im.image_id, np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        win = np.concatenate([gt, props])
        if len(gt):
            iou = B.box_iou(torch.from_numpy(win), torch.from_numpy(gt)).numpy()
            best, arg = iou.max(axis=1), iou.argmax(axis=1)
        else:
            best, arg = np.zeros(len(win)), np.zeros(len(win), dtype=np.int64)
        fg = best >= fg_iou
        out["fg_image"].append(np.full(fg.sum(), i, dtype=np.int64))
        out["fg_box"].append(win[fg])
        out["fg_label"].append(1 + gt_label[arg[fg]] if len(gt) else np.zeros(0, dtype=np.int64))
        out["fg_iou"].append(best[fg])
        out["bg_image"].append(np.full((~fg).sum(), i, dtype=np.int64))
        out["bg_box"].append(win[~fg])
        out["bg_iou"].append(best[~fg])
    dtypes = {"image": np.int64, "box": np.float32, "label": np.int64, "iou": np.float32}
    res = {}
    for k, parts in out.items():
        dt = dtypes[k.split("_")[1]]
        res[k] = np.concatenate(parts).astype(dt) if parts else np.zeros((0, 4) if k.endswith("box") else 0, dt)
        if k.endswith("box"):
            res[k] = res[k].reshape(-1, 4)
    return res


def sample_windows(windows: dict[str, np.ndarray], n_fg: int, n_bg: int, gen: torch.Generator,
                   mirror: bool = True) -> dict[str, torch.Tensor]:
    """One batch: `n_fg` foreground then `n_bg` background windows, each drawn uniformly with
    replacement from its global list (Caffe's window-data layer), with a mirror flag of
    p = 0.5 each. An empty list gives its share to the other one."""
    nf, nb = len(windows["fg_label"]), len(windows["bg_image"])
    if nf == 0 and nb == 0:
        raise DataError("fine-tuning: no windows (no proposals and no ground-truth boxes)")
    if nf == 0:
        n_fg, n_bg = 0, n_fg + n_bg
    elif nb == 0:
        n_fg, n_bg = n_fg + n_bg, 0
    fi = torch.randint(0, max(nf, 1), (n_fg,), generator=gen).numpy()
    bi = torch.randint(0, max(nb, 1), (n_bg,), generator=gen).numpy()
    flip = torch.rand(n_fg + n_bg, generator=gen) < 0.5 if mirror else torch.zeros(n_fg + n_bg, dtype=torch.bool)
    return {"image": torch.from_numpy(np.concatenate([windows["fg_image"][fi], windows["bg_image"][bi]])),
            "box": torch.from_numpy(np.concatenate([windows["fg_box"][fi], windows["bg_box"][bi]])),
            "label": torch.from_numpy(np.concatenate([windows["fg_label"][fi], np.zeros(n_bg, dtype=np.int64)])),
            "flip": flip}


def context_pixels(p: Params) -> int:
    """R-CNN's 16 px of context at 227 px, scaled to the net's input size."""
    return int(round(p.net.context * p.net.input_size / 227))


class ImageStore:
    """The images of a detection dataset as (3, H, W) uint8 tensors: all in memory when they
    fit in `max_bytes` (the embedded world), else read from disk on demand with a small LRU."""

    def __init__(self, dataset: DetectionDataset, device: torch.device | str = "cpu",
                 max_bytes: int = IMAGE_STORE_BYTES, progress: bool = False) -> None:
        self.dataset, self.device = dataset, torch.device(device)
        total = sum(im.width * im.height * 3 for im in dataset.images)
        self.in_memory = total <= max_bytes
        self._lru: dict[int, torch.Tensor] = {}
        self._images: list[torch.Tensor] | None = None
        if self.in_memory:
            self._images = [self._read(i) for i in progress_bar(range(len(dataset.images)), "load images", progress)]

    def _read(self, i: int) -> torch.Tensor:
        arr = load_image(self.dataset.images[i].path)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(self.device)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._images is not None:
            return self._images[i]
        if i not in self._lru:
            if len(self._lru) >= 256:
                self._lru.pop(next(iter(self._lru)))
            self._lru[i] = self._read(i)
        return self._lru[i]


def warp_batch(model: CaffeNet, store: ImageStore, image: torch.Tensor, box: torch.Tensor, size: int,
               context: float, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Warp windows (image index, box) of many images into a normalised (N, 3, S, S) batch,
    then mirror the flagged windows (as Caffe's window-data layer flips the warped crop).

    The result equals `boxes.warp_regions` on each image's mean-subtracted pixels (the tests
    check equality): the same geometry (`boxes.warp_geometry`) and the same bilinear sampling,
    but the per-window geometry and sampling grids are computed for the whole batch at once
    (one call per distinct image size) and only `grid_sample` runs per image, since a batch
    of 128 windows drawn from the global lists touches ~100 images and `warp_regions`' fixed
    cost per call would dominate.
    """
    device = model.mean.device
    n, S = len(image), int(size)
    img = torch.as_tensor(image).cpu().long()
    bx = torch.as_tensor(box).detach().cpu().to(torch.float64).reshape(-1, 4)
    out = torch.empty((n, 3, S, S), device=device)
    if n == 0:
        return out
    uniq = torch.unique(img).tolist()
    shapes = {i: tuple(store[i].shape[1:]) for i in uniq}  # (H, W)
    hw = torch.tensor([shapes[i] for i in img.tolist()], dtype=torch.float64)  # (n, 2)
    lo = torch.empty(n, 2, dtype=torch.float64)
    hi, pad, crop = torch.empty_like(lo), torch.empty_like(lo), torch.empty_like(lo)
    for h, w in set(shapes.values()):
        sel = torch.nonzero((hw[:, 0] == h) & (hw[:, 1] == w)).flatten()
        g = B.warp_geometry(bx[sel], int(w), int(h), S, context)
        lo[sel], hi[sel] = g["clipped"][:, :2], g["clipped"][:, 2:]
        pad[sel], crop[sel] = g["pad"], g["crop"]
    lim = hw.flip(1)  # (W, H) per window
    step = (hi - lo) / crop.clamp(min=1)
    first = lo + (0.5 - pad) * step
    dt = torch.float32
    n_first = (first * 2 / lim - 1).to(dt)
    n_step = (step * 2 / lim).to(dt)
    n_lo = ((lo + 0.5) * 2 / lim - 1).to(dt)
    n_hi = ((hi - 0.5) * 2 / lim - 1).to(dt)
    j = torch.arange(S)
    coord = n_first[:, :, None] + j.to(dt)[None, None, :] * n_step[:, :, None]  # (n, 2, S)
    coord = torch.maximum(torch.minimum(coord, n_hi[:, :, None]), n_lo[:, :, None]).to(device)
    inside = (j[None, None, :] >= pad.long()[:, :, None]) & (j[None, None, :] < (pad + crop).long()[:, :, None])
    inside = inside.to(device)  # (n, 2, S): output columns / rows inside the pasted crop
    for i in uniq:
        sel = torch.nonzero(img == i).flatten().to(device)
        k = len(sel)
        c = coord[sel]
        grid = torch.stack([c[:, 0][:, None, :].expand(k, S, S), c[:, 1][:, :, None].expand(k, S, S)], dim=-1)
        sampled = F.grid_sample(model.normalize(store[i])[None], grid.reshape(1, k * S, S, 2), mode="bilinear",
                                padding_mode="border", align_corners=False)
        m = inside[sel]
        mask = (m[:, 1][:, :, None] & m[:, 0][:, None, :]).to(sampled.dtype)  # (k, S, S)
        out[sel] = sampled.reshape(3, k, S, S).permute(1, 0, 2, 3) * mask[:, None]
    if flip is not None and bool(flip.any()):
        f = flip.to(device)
        out[f] = out[f].flip(-1)
    return out


def finetune(p: Params, model: CaffeNet, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
             cache: Cache, classes: Sequence[str], frozen: Iterable[str] = (),
             head_init: tuple[Any, Any] | None = None, head_rows: Sequence[int] | None = None,
             ) -> tuple[CaffeNet, dict[str, Any]]:
    """R-CNN's fine-tuning on warped windows of `dataset` (Caffe's window-data layer).

    A copy of `model` gets a new output layer of `len(classes) + 1` outputs (0 = background,
    1 + i = classes[i]) initialised N(0, 0.01), bias 0, or from `head_init = (W, b)` (LSDA:
    the classification rows of set B plus a background row). Each of `finetune.iterations`
    SGD steps draws `fg_per_batch` foreground and `bg_per_batch` background windows from the
    global lists of `window_lists`, mirrors each with p = 0.5, warps them with context
    `context_pixels(p)` from mean-subtracted images, and minimises softmax cross-entropy with
    dropout on. SGD: `finetune.lr` (head x10, biases x2 without decay), momentum, weight
    decay, lr / 10 every `finetune.lr_step` steps.

    Under torchrun: DistributedDataParallel with the batch split across the ranks (see the
    module docstring); rank 0's model becomes the cache entry, which every rank then loads.

    `frozen`: layer names ("conv1".."conv5", "fc6", "fc7", "head") that do not learn
    (requires_grad False). `head_rows`: when given, only these rows of the output layer learn
    (LSDA's "background only" and "+fcB" rows); the others are restored after every step.

    Cached as `finetune/<key>` on: the input model's cache key, the dataset, the proposals
    of its images, `classes`, `net`, `finetune`, the seed, `frozen`, `head_init`, `head_rows`.
    Returns (model in eval mode on `runtime.device` with `cache_key` set, history).
    """
    frozen = sorted(set(frozen))
    bad = [f for f in frozen if f not in LAYERS]
    if bad:
        raise ValueError(f"frozen: unknown layers {bad}; layers are {list(LAYERS)}")
    classes = list(classes)
    n_out = len(classes) + 1
    device = pick_device(p.runtime.device)
    if head_init is not None:
        hw = torch.as_tensor(np.asarray(head_init[0]), dtype=torch.float32)
        hb = torch.as_tensor(np.asarray(head_init[1]), dtype=torch.float32)
        if tuple(hw.shape) != (n_out, p.net.fc_width) or tuple(hb.shape) != (n_out,):
            raise ValueError(f"head_init must be W ({n_out}, {p.net.fc_width}) and b ({n_out},), got "
                             f"{tuple(hw.shape)} and {tuple(hb.shape)}")
        head_init = (hw, hb)
    rows = sorted(set(int(r) for r in head_rows)) if head_rows is not None else None
    if rows is not None and (not rows or rows[0] < 0 or rows[-1] >= n_out):
        raise ValueError(f"head_rows must be non-empty indices in [0, {n_out}), got {head_rows}")
    ids = [im.image_id for im in dataset.images]
    config = {"model": model_key(model), "dataset": dataset_identity(dataset),
              "proposals": array_digest(np.asarray(proposals.get(i, np.zeros((0, 4))), np.float32) for i in ids),
              "classes": classes, "net": _net_config(p, with_context=True), "finetune": asdict(p.finetune),
              "seed": p.runtime.seed, "frozen": frozen,
              "head_init": array_digest(head_init) if head_init is not None else None, "head_rows": rows}

    def build(out: Path) -> None:
        tuned, history = _finetune(p, model, dataset, proposals, classes, frozen, head_init, rows, device)
        _save_model(tuned, out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("finetune", config, build, modules=[nets, B, sys.modules[__name__]], ranks="all")
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    return _load_model(p, folder, n_out, device), history


def _batch_stats(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, world: int) -> list[float]:
    """The whole batch's mean loss, correct foreground and background windows, and
    foreground and background windows, summed over the ranks (one all-reduce)."""
    pred = logits.argmax(1)
    fgm = y > 0
    s = torch.stack([loss.detach().double() / world, (pred[fgm] == y[fgm]).sum().double(),
                     (pred[~fgm] == 0).sum().double(), fgm.sum().double(), (~fgm).sum().double()])
    return D.all_sum(s).tolist()


def _finetune(p: Params, model: CaffeNet, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
              classes: list[str], frozen: list[str], head_init: tuple[torch.Tensor, torch.Tensor] | None,
              rows: list[int] | None, device: torch.device) -> tuple[CaffeNet, dict[str, Any]]:
    cfg, S, ctx = p.finetune, p.net.input_size, context_pixels(p)
    world, rank, total = D.world(), D.rank(), cfg.fg_per_batch + cfg.bg_per_batch
    if total < world:
        raise ParamsError(f"finetune: a batch of {total} windows cannot be split across {world} processes")
    t_all = time.time()
    windows = window_lists(dataset, proposals, classes, cfg.fg_iou)
    if len(windows["fg_label"]) == 0:
        raise DataError(f"fine-tuning on {dataset.name} {dataset.split}: no foreground window (no ground-truth box "
                        f"of the classes {classes[:5]}...)")
    store = ImageStore(dataset, device, progress=p.runtime.progress)
    seed = _seed(p.runtime.seed, "finetune")
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, Any] = {"device": str(device), "machine": machine(), "threads": torch.get_num_threads(),
                               "n_fg_windows": len(windows["fg_label"]),
                               "n_bg_windows": len(windows["bg_image"]), "n_images": len(dataset),
                               "context": ctx, "frozen": frozen, "head_rows": rows, "processes": world,
                               "log": []}
    with _fork_rng(device):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(model).to(device)
        head = tuned.replace_head(len(classes) + 1, std=0.01)
        if head_init is not None:
            with torch.no_grad():
                head.weight.copy_(head_init[0])
                head.bias.copy_(head_init[1])
        keep = None
        if rows is not None and "head" not in frozen:
            fixed = torch.ones(head.out_features, dtype=torch.bool, device=device)
            fixed[rows] = False
            keep = (fixed, head.weight.detach()[fixed].clone(), head.bias.detach()[fixed].clone())
        tuned.train()
        _freeze_statistics(tuned, frozen)
        groups = _param_groups(tuned, cfg.lr, cfg.weight_decay, head_mult=10.0, frozen=frozen)
        if not groups:
            raise ValueError("fine-tuning with every layer frozen")
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        net = tuned
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            ids = [torch.cuda.current_device()] if device.type == "cuda" else None
            net = DistributedDataParallel(tuned, device_ids=ids)
            torch.manual_seed(_seed(p.runtime.seed, f"finetune-rank-{rank}"))  # each rank's own dropout
        loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
        t0 = time.time()
        for it in progress_bar(range(cfg.iterations), "fine-tune", p.runtime.progress):
            factor = 0.1 ** (it // cfg.lr_step)
            _set_lr(opt, factor)
            batch = sample_windows(windows, cfg.fg_per_batch, cfg.bg_per_batch, gen, cfg.mirror)
            if world > 1:  # the same batch on every rank; each takes its share
                batch = {k: v[rank::world] for k, v in batch.items()}
            x = warp_batch(tuned, store, batch["image"], batch["box"], S, ctx, batch["flip"])
            y = batch["label"].to(device)
            logits = net(x)
            # DDP averages the ranks' gradients: scaling each rank's summed loss by world / total
            # makes that average the gradient of the whole batch's mean loss
            if world == 1:
                loss = F.cross_entropy(logits, y)
            else:
                loss = F.cross_entropy(logits, y, reduction="sum") * (world / total)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if keep is not None:
                with torch.no_grad():
                    head.weight[keep[0]] = keep[1]
                    head.bias[keep[0]] = keep[2]
            lv, ok_fg, ok_bg, k_fg, k_bg = _batch_stats(loss, logits, y, world)
            if not math.isfinite(lv):
                raise FloatingPointError(f"fine-tuning diverged at step {it + 1} (loss {lv}); lower finetune.lr")
            loss_sum += lv
            acc_fg += ok_fg
            acc_bg += ok_bg
            n_fg += k_fg
            n_bg += k_bg
            if (it + 1) % LOG_EVERY == 0 or it + 1 == cfg.iterations:
                steps = (it % LOG_EVERY) + 1
                history["log"].append({"iteration": it + 1, "lr": cfg.lr * factor, "loss": loss_sum / steps,
                                       "fg_acc": acc_fg / max(n_fg, 1), "bg_acc": acc_bg / max(n_bg, 1),
                                       "seconds": round(time.time() - t0, 2)})
                loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
    train_s = time.time() - t0
    history["seconds"] = round(time.time() - t_all, 2)
    history["seconds_per_100_steps"] = round(100 * train_s / max(cfg.iterations, 1), 3)
    for t in tuned.parameters():
        t.requires_grad_(True)
    return tuned.eval(), history
