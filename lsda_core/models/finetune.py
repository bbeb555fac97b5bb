"""R-CNN's detection fine-tuning on warped region proposals (Caffe's window-data layer),
cached in the artifact folder on exactly its inputs. SGD conventions: `lsda_core.models.solver`.

Under torchrun (`distributed`), fine-tuning runs as DistributedDataParallel with R-CNN's
batch split across the processes: every rank draws the same batch of fg + bg windows and
warps and forwards only its share (every world-th window), the losses are scaled so that the
all-reduced gradient is the gradient of the whole batch's mean loss, so the effective batch
stays `fg_per_batch + bg_per_batch` (128 in R-CNN) and the run is the single-process one up
to the order of float sums and the dropout draws (each rank its own stream). Batch-norm
layers (embedded net only) normalise each rank's share. The model is stored under the same
cache key as a single process's, so the book finds it. Training on cached windows (seconds)
is not split: every rank runs it whole and rank 0's model is kept.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lsda_core.core import boxes as B
from lsda_core.store import distributed as D
from lsda_core.models import nets
from lsda_core.store.cache import Cache, Lazy
from lsda_core.store.files import atomic_write_text
from lsda_core.data.images import load_image
from lsda_core.core.errors import DataError
from lsda_core.models.nets import CaffeNet, LAYERS
from lsda_core.core.params import Params, ParamsError
from lsda_core.store.runtime import machine, pick_device, progress as progress_bar
from lsda_core.models.solver import (FixedRows, fork_rng, freeze_statistics, load_model, net_config, param_groups,
                                     save_model, set_lr, stage_seed, step)
from lsda_core.store.identity import array_digest, dataset_identity, model_key
from lsda_core.core.structures import DetectionDataset

# (the embedded VOC-like train set: ~60 MB; real VOC 2007 trainval: ~2.8 GB).
IMAGE_STORE_BYTES = 3 << 30
NORMALIZED_BYTES = 1 << 30  # the images' normalised float copies (the embedded world: ~0.3 GB)
LOG_EVERY = 50  # fine-tuning history: one row per this many iterations


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
    (float32 (n, 4)), `fg_label` (int64), `fg_iou`, `bg_iou` (float32 max IoU), `fg_window`,
    `bg_window` (int64 position in the image's windows: ground truth first, then proposals,
    the order of `features.regions_with_gt(dataset, proposals, classes)`).
    """
    index = {c: i for i, c in enumerate(classes)}
    out: dict[str, list] = {k: [] for k in ("fg_image", "fg_box", "fg_label", "fg_iou", "fg_window",
                                           "bg_image", "bg_box", "bg_iou", "bg_window")}
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
        out["fg_window"].append(np.flatnonzero(fg))
        out["bg_image"].append(np.full((~fg).sum(), i, dtype=np.int64))
        out["bg_box"].append(win[~fg])
        out["bg_iou"].append(best[~fg])
        out["bg_window"].append(np.flatnonzero(~fg))
    dtypes = {"image": np.int64, "box": np.float32, "label": np.int64, "iou": np.float32, "window": np.int64}
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
            "window": torch.from_numpy(np.concatenate([windows["fg_window"][fi], windows["bg_window"][bi]])),
            "flip": flip}


def context_pixels(p: Params) -> int:
    """R-CNN's 16 px of context at 227 px, scaled to the net's input size."""
    return int(round(p.net.context * p.net.input_size / 227))


class ImageStore:
    """The images of a detection dataset as (3, H, W) uint8 tensors: all in memory when they
    fit in `max_bytes` (the embedded world), else read from disk on demand with a small LRU.
    `normalized` keeps each image's normalised float copy too when all of them fit in
    `NORMALIZED_BYTES`, so that a fine-tuning step does not normalise ~100 whole images again."""

    def __init__(self, dataset: DetectionDataset, device: torch.device | str = "cpu",
                 max_bytes: int = IMAGE_STORE_BYTES, progress: bool = False) -> None:
        self.dataset, self.device = dataset, torch.device(device)
        total = sum(im.width * im.height * 3 for im in dataset.images)
        self.in_memory = total <= max_bytes
        self.keeps_normalized = self.in_memory and 4 * total <= NORMALIZED_BYTES
        self._lru: dict[int, torch.Tensor] = {}
        self._images: list[torch.Tensor] | None = None
        self._normalized: dict[int, torch.Tensor] = {}
        self._normalizer: tuple[torch.Tensor, torch.Tensor] | None = None
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

    def normalized(self, indices: Sequence[int], model: CaffeNet) -> list[torch.Tensor]:
        """`model.normalize` of each image of `indices`, kept (when `keeps_normalized`) while the
        model's normalisation stays the one they were made with."""
        if not self.keeps_normalized:
            return [model.normalize(self[i]) for i in indices]
        if self._normalizer is None or not (torch.equal(self._normalizer[0], model.mean)
                                            and torch.equal(self._normalizer[1], model.std)):
            self._normalized.clear()
            self._normalizer = (model.mean.clone(), model.std.clone())
        for i in indices:
            if i not in self._normalized:
                self._normalized[i] = model.normalize(self[i])
        return [self._normalized[i] for i in indices]


def warp_batch(model: CaffeNet, store: ImageStore, image: torch.Tensor, box: torch.Tensor, size: int,
               context: float, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Warp windows (image index, box) of many images into a normalised (N, 3, S, S) batch,
    then mirror the flagged windows (as Caffe's window-data layer flips the warped crop).

    The result equals `boxes.warp_regions` on each image's mean-subtracted pixels (the tests
    check equality): the same geometry (`boxes.warp_geometry`) and the same bilinear sampling.
    A batch of 128 windows drawn from the global lists touches ~115 images, so everything but
    the sampling itself is done for the whole batch at once: the geometry (one call per
    distinct image size), the sampling grids, the crop masks; the windows are sorted by image
    so that each image's `grid_sample` reads one contiguous slice of the grids. A mirrored
    window samples its columns in reverse order (the same values as flipping the warped crop,
    without a pass over the batch), and the windows go back to their drawn order in one copy.
    """
    device = model.mean.device
    n, S = len(image), int(size)
    if n == 0:
        return torch.empty((n, 3, S, S), device=device)
    img = torch.as_tensor(image).cpu().long()
    order = torch.argsort(img, stable=True)
    img = img[order]
    bx = torch.as_tensor(box).detach().cpu().to(torch.float64).reshape(-1, 4)[order]
    uniq, counts = (t.tolist() for t in torch.unique_consecutive(img, return_counts=True))
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
    coord = torch.maximum(torch.minimum(coord, n_hi[:, :, None]), n_lo[:, :, None])
    # output columns / rows inside the pasted crop
    inside = (j[None, None, :] >= pad.long()[:, :, None]) & (j[None, None, :] < (pad + crop).long()[:, :, None])
    if flip is not None:  # mirrored windows: columns (and their crop mask) right to left
        f = torch.as_tensor(flip).cpu().bool()[order]
        coord[f, 0], inside[f, 0] = coord[f, 0].flip(-1), inside[f, 0].flip(-1)
    coord, inside = coord.to(device), inside.to(device)  # (n, 2, S)
    grid = torch.stack([coord[:, 0][:, None, :].expand(n, S, S), coord[:, 1][:, :, None].expand(n, S, S)], dim=-1)
    parts, s = [], 0
    for x, k in zip(store.normalized(uniq, model), counts):
        parts.append(F.grid_sample(x[None], grid[s:s + k].reshape(1, k * S, S, 2), mode="bilinear",
                                   padding_mode="border", align_corners=False).reshape(3, k, S, S))
        s += k
    mask = (inside[:, 1][:, :, None] & inside[:, 0][:, None, :]).to(dt)  # (n, S, S)
    sampled = torch.cat(parts, 1).mul_(mask)  # (3, n, S, S), windows sorted by image
    return torch.empty((n, 3, S, S), device=device).index_copy_(0, order.to(device), sampled.permute(1, 0, 2, 3))


@dataclass
class CachedWindows:
    """pool5 of every window of a dataset, computed once by the network's (frozen) conv layers:
    `load(image_id)` gives (N, C * 36) features of the image's windows in `window_lists` order
    (ground truth of the classes, then proposals); `key` identifies them in cache keys."""

    key: str
    load: Callable[[str], np.ndarray]
    entry: Lazy | None = None  # the cache entry `load` reads, when it is one (built on first read)


class _WindowFeatures:
    """All cached window features in one (N, D) tensor, indexed by (image, window)."""

    def __init__(self, cached: CachedWindows, dataset: DetectionDataset, device: torch.device) -> None:
        parts = [np.asarray(cached.load(im.image_id)) for im in dataset.images]
        sizes = torch.tensor([len(x) for x in parts], dtype=torch.long)
        self.offset = torch.cumsum(sizes, 0) - sizes
        self.rows = torch.from_numpy(np.concatenate(parts)).to(device)

    def __call__(self, image: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        idx = (self.offset[image.long()] + window.long()).to(self.rows.device)
        return self.rows[idx].float()


def finetune(p: Params, model: CaffeNet, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
             cache: Cache, classes: Sequence[str], frozen: Iterable[str] = (),
             head_init: tuple[Any, Any] | None = None, head_rows: Sequence[int] | None = None,
             cached: CachedWindows | None = None,
             val: tuple[DetectionDataset, dict[str, np.ndarray]] | None = None) -> tuple[CaffeNet, dict[str, Any]]:
    """R-CNN's fine-tuning on warped windows of `dataset` (Caffe's window-data layer).

    A copy of `model` gets a new output layer of `len(classes) + 1` outputs (0 = background,
    1 + i = classes[i]) initialised N(0, 0.01), bias 0, or from `head_init = (W, b)` (LSDA:
    the classification rows of set B plus a background row). Each of `finetune.iterations`
    SGD steps draws `fg_per_batch` foreground and `bg_per_batch` background windows from the
    global lists of `window_lists`, mirrors each with p = 0.5, warps them with context
    `context_pixels(p)` from mean-subtracted images, and minimises softmax cross-entropy with
    dropout on. SGD: `finetune.lr` (head x10, biases x2 without decay), momentum, weight
    decay, lr / 10 every `finetune.lr_step` steps.

    `frozen`: layer names ("conv1".."conv5", "fc6", "fc7", "head") that do not learn
    (requires_grad False). `head_rows`: when given, only these rows of the output layer learn
    (LSDA's "background only" and "+fcB" rows); the others are restored after every step.

    Under torchrun: DistributedDataParallel with the batch split across the ranks (see the
    module docstring); rank 0's model becomes the cache entry, which every rank then loads.

    `cached`: when every conv layer is frozen, pool5 of the windows can come from a cache
    instead of warping and running conv1-5 at every step (LSDA's fc-only rows train in seconds).
    The result is the same procedure except mirroring: cached windows are not mirrored.

    `val`: a held-out (dataset, proposals) whose loss on a fixed sample of `VAL_WINDOWS`
    windows (the batch's foreground share, no mirroring, eval mode) is logged as `val_loss`
    beside each training-loss row: how calibration sees when fine-tuning stops improving.

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
    if cached is not None and not set(nets.CONVS) <= set(frozen):
        raise ValueError(f"cached pool5 windows need every conv layer frozen, got frozen={frozen}")
    ids = [im.image_id for im in dataset.images]
    config = {"model": model_key(model), "dataset": dataset_identity(dataset),
              "proposals": array_digest(np.asarray(proposals.get(i, np.zeros((0, 4))), np.float32) for i in ids),
              "classes": classes, "net": net_config(p, with_context=True), "finetune": asdict(p.finetune),
              "seed": p.runtime.seed, "frozen": frozen,
              "head_init": array_digest(head_init) if head_init is not None else None, "head_rows": rows,
              "cached": cached.key if cached is not None else None}
    if val is not None:  # only then: entries without a validation set keep their keys
        config["val"] = {"dataset": dataset_identity(val[0]),
                         "proposals": array_digest(np.asarray(val[1].get(im.image_id, np.zeros((0, 4))), np.float32)
                                                   for im in val[0].images)}

    def build(out: Path) -> None:
        tuned, history = _finetune(p, model, dataset, proposals, classes, frozen, head_init, rows, device, cached, val)
        save_model(tuned, out)
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("finetune", config, build, ranks="all")
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    return load_model(p, folder, n_out, device), history


VAL_WINDOWS = 1024  # held-out windows whose loss `finetune(val=...)` logs


def _validation(p: Params, val: tuple[DetectionDataset, dict[str, np.ndarray]], classes: list[str], seed: int):
    """A function (model, size, context, device, frozen layers) -> mean loss on a fixed sample of `VAL_WINDOWS`
    windows of the held-out set (drawn once, with the fine-tuning batch's foreground share)."""
    cfg = p.finetune
    windows = window_lists(val[0], val[1], classes, cfg.fg_iou)
    n_fg = round(VAL_WINDOWS * cfg.fg_per_batch / max(cfg.fg_per_batch + cfg.bg_per_batch, 1))
    batch = sample_windows(windows, n_fg, VAL_WINDOWS - n_fg, torch.Generator().manual_seed(seed + 1), mirror=False)
    store = ImageStore(val[0])

    @torch.no_grad()
    def loss(model: CaffeNet, size: int, ctx: int, device: torch.device, frozen: list[str]) -> float:
        model.eval()
        total = 0.0
        for s in range(0, VAL_WINDOWS, 256):
            x = warp_batch(model, store, batch["image"][s:s + 256], batch["box"][s:s + 256], size, ctx)
            total += float(F.cross_entropy(model(x.to(device)), batch["label"][s:s + 256].to(device), reduction="sum"))
        model.train()
        freeze_statistics(model, frozen)  # back to the training state of `_finetune`
        return total / VAL_WINDOWS

    return loss


def _batch_stats(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, world: int) -> list[float]:
    """The whole batch's mean loss, correct foreground and background windows, and
    foreground and background windows, summed over the ranks (one all-reduce)."""
    pred = logits.argmax(1)
    fgm = y > 0
    s = torch.stack([loss.detach().double() / world, (pred[fgm] == y[fgm]).sum().double(),
                     (pred[~fgm] == 0).sum().double(), fgm.sum().double(), (~fgm).sum().double()])
    return (D.all_sum(s) if world > 1 else s).tolist()


def _finetune(p: Params, model: CaffeNet, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
              classes: list[str], frozen: list[str], head_init: tuple[torch.Tensor, torch.Tensor] | None,
              rows: list[int] | None, device: torch.device, cached: CachedWindows | None = None,
              val: tuple[DetectionDataset, dict[str, np.ndarray]] | None = None) -> tuple[CaffeNet, dict[str, Any]]:
    cfg, S, ctx = p.finetune, p.net.input_size, context_pixels(p)
    split = cached is None  # cached windows: every rank trains the whole batch
    world, rank, total = (D.world(), D.rank(), cfg.fg_per_batch + cfg.bg_per_batch) if split else (1, 0, 0)
    if split and total < world:
        raise ParamsError(f"finetune: a batch of {total} windows cannot be split across {world} processes")
    t_all = time.time()
    windows = window_lists(dataset, proposals, classes, cfg.fg_iou)
    if len(windows["fg_label"]) == 0:
        raise DataError(f"fine-tuning on {dataset.name} {dataset.split}: no foreground window (no ground-truth box "
                        f"of the classes {classes[:5]}...)")
    store = _WindowFeatures(cached, dataset, device) if cached is not None else \
        ImageStore(dataset, device, progress=p.runtime.progress)
    seed = stage_seed(p.runtime.seed, "finetune")
    gen = torch.Generator().manual_seed(seed)
    held = _validation(p, val, classes, seed) if val is not None else None
    history: dict[str, Any] = {"device": str(device), "machine": machine(), "threads": torch.get_num_threads(),
                               "n_fg_windows": len(windows["fg_label"]),
                               "n_bg_windows": len(windows["bg_image"]), "n_images": len(dataset),
                               "context": ctx, "frozen": frozen, "head_rows": rows, "processes": world,
                               "windows": "cached pool5, not mirrored" if cached is not None else "warped", "log": []}
    with fork_rng(device):
        torch.manual_seed(seed)
        tuned = copy.deepcopy(model).to(device)
        head = tuned.replace_head(len(classes) + 1, std=0.01)
        if head_init is not None:
            with torch.no_grad():
                head.weight.copy_(head_init[0])
                head.bias.copy_(head_init[1])
        fixed = FixedRows(head, rows) if rows is not None and "head" not in frozen else None
        tuned.train()
        freeze_statistics(tuned, frozen)
        groups = param_groups(tuned, cfg.lr, cfg.weight_decay, head_mult=10.0, frozen=frozen)
        if not groups:
            raise ValueError("fine-tuning with every layer frozen")
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        net = tuned
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel
            ids = [torch.cuda.current_device()] if device.type == "cuda" else None
            net = DistributedDataParallel(tuned, device_ids=ids)
            torch.manual_seed(stage_seed(p.runtime.seed, f"finetune-rank-{rank}"))  # each rank's own dropout
        loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
        t0 = time.time()
        for it in progress_bar(range(cfg.iterations), "fine-tune", p.runtime.progress):
            factor = 0.1 ** (it // cfg.lr_step)
            set_lr(opt, factor)
            batch = sample_windows(windows, cfg.fg_per_batch, cfg.bg_per_batch, gen, cfg.mirror)
            if world > 1:  # the same batch on every rank; each takes its share
                batch = {k: v[rank::world] for k, v in batch.items()}
            if cached is not None:
                logits = tuned.head(tuned.features(store(batch["image"], batch["window"])))
            else:
                logits = net(warp_batch(tuned, store, batch["image"], batch["box"], S, ctx, batch["flip"]))
            y = batch["label"].to(device)
            # DDP averages the ranks' gradients: scaling each rank's summed loss by world / total
            # makes that average the gradient of the whole batch's mean loss
            if world == 1:
                loss = F.cross_entropy(logits, y)
            else:
                loss = F.cross_entropy(logits, y, reduction="sum") * (world / total)
            step(opt, loss, fixed)
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
                if held is not None:
                    history["log"][-1]["val_loss"] = held(tuned, S, ctx, device, frozen)
                loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
    train_s = time.time() - t0
    history["seconds"] = round(time.time() - t_all, 2)
    history["seconds_per_100_steps"] = round(100 * train_s / max(cfg.iterations, 1), 3)
    for t in tuned.parameters():
        t.requires_grad_(True)
    return tuned.eval(), history
