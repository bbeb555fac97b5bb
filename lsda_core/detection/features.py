"""Region features: pool5 of every warped region, cached per image; fc6 / fc7 computed from it.

Cache layout (`extract_pool5`): a folder `pool5-<tag>/<key>/` holding, per image,
`<image_id>.boxes.npy` (the regions, float32 (N, 4), in the order given) and
`<image_id>.npy` (float16 (N, C * 6 * 6): pool5 flattened in (channel, y, x) order, i.e.
`pool5.reshape(N, -1)` of the (N, C, 6, 6) maps; unit (c, y, x) is column `c * 36 + y * 6 + x`).
Both are written atomically, features last, so an interrupted extraction resumes at the first
image without features. Images with '/' in their id have it written as '%2F' in file names.
Under torchrun each rank extracts its share of the images (`distributed.shard`) into the
shared entry.

Regions of training images put the ground-truth boxes first (R-CNN computes features for
them too: they are the SVM positives): `regions_with_gt` builds `(regions, n_gt)` so that
`regions[image_id][:n_gt[image_id]]` are the image's ground-truth boxes, in annotation order
(difficult ones included, as R-CNN's roidb), followed by its proposals.

The GPU path (`gpu_path`, on by default, effective only on CUDA): the network runs under
float16 autocast, and images and features reach the device through pinned memory with
asynchronous copies. The warp is batched on the device and the input is channels-last
either way. On the CPU `gpu_path` changes nothing. Features are stored in float16 whichever
path computed them, so cache keys do not distinguish the paths (nor the device).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from lsda_core.core import boxes as B
from lsda_core.store import distributed as D
from lsda_core.models import nets
from lsda_core.store.cache import Cache, Lazy
from lsda_core.store.files import atomic_save_npy
from lsda_core.data.images import load_image
from lsda_core.models.nets import CaffeNet
from lsda_core.core.params import Params
from lsda_core.store.runtime import pick_device, progress as progress_bar
from lsda_core.core.structures import DetectionDataset
from lsda_core.models.finetune import context_pixels
from lsda_core.store.identity import array_digest, dataset_identity, model_key


CHUNK = 512  # regions per forward pass


def file_stem(image_id: str) -> str:
    return image_id.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")


def regions_with_gt(dataset: DetectionDataset, proposals: dict[str, np.ndarray],
                    classes: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per image: its ground-truth boxes (of `classes`, all when None), then its proposals,
    as float32 (N, 4); and the number of ground-truth boxes at the front."""
    keep = set(classes) if classes is not None else None
    regions, n_gt = {}, {}
    for im in dataset.images:
        gt = [o.box for o in im.objects if keep is None or o.cls in keep]
        gt_arr = np.array(gt, dtype=np.float32).reshape(-1, 4)
        props = np.asarray(proposals.get(im.image_id, np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        regions[im.image_id] = np.concatenate([gt_arr, props])
        n_gt[im.image_id] = len(gt_arr)
    return regions, n_gt


def to_device(x: torch.Tensor, device: torch.device, gpu_path: bool = True) -> torch.Tensor:
    """`x` on `device`. On the GPU path (CUDA and `gpu_path`) a CPU tensor goes through pinned
    memory with an asynchronous copy, so the host goes on (warp geometry, the next chunk)
    while it transfers."""
    if gpu_path and device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def autocast(device: torch.device, gpu_path: bool = True) -> contextlib.AbstractContextManager:
    """The GPU path's mixed precision: float16 autocast on CUDA when `gpu_path`; nothing
    otherwise (on the CPU results stay float32)."""
    if gpu_path and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def warped_windows(model: CaffeNet, image: np.ndarray | torch.Tensor, regions: np.ndarray, size: int,
                   context: float, chunk: int = CHUNK, gpu_path: bool = True) -> Iterator[torch.Tensor]:
    """The regions of one (H, W, 3) uint8 RGB image (or a (3, H, W) tensor) warped to the
    network's input, in chunks of `chunk` regions: one normalisation, then the warps, on the
    model's device (`gpu_path`: see the module docstring)."""
    img = torch.from_numpy(np.require(image, requirements=["W", "C"])) if isinstance(image, np.ndarray) else image
    img = to_device(img, model.mean.device, gpu_path)
    if img.ndim == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
        img = img.permute(2, 0, 1)
    norm = model.normalize(img)
    boxes = torch.as_tensor(np.asarray(regions, dtype=np.float32)).reshape(-1, 4)
    for s in range(0, len(boxes), chunk):
        yield B.warp_regions(norm, boxes[s:s + chunk], size, context, channels_last=True)


@torch.inference_mode()
def pool5_of_regions(model: CaffeNet, image: np.ndarray | torch.Tensor, regions: np.ndarray, size: int,
                     context: float, chunk: int = CHUNK, gpu_path: bool = True) -> torch.Tensor:
    """pool5 maps (N, C, 6, 6), float32, of the regions of one image (`warped_windows`), each
    chunk's forward pass as it is warped."""
    device = model.mean.device
    out = []
    for x in warped_windows(model, image, regions, size, context, chunk, gpu_path):
        with autocast(device, gpu_path):
            out.append(model.pool5(x).float())
    if not out:
        c = model.conv5.out_channels
        return torch.zeros((0, c, nets.GRID, nets.GRID), device=device)
    return torch.cat(out)


def extract_pool5(model: CaffeNet, dataset: DetectionDataset, regions: dict[str, np.ndarray], p: Params,
                  cache: Cache, tag: str, chunk: int = CHUNK) -> Path:
    """`pool5_entry`'s folder, built now if it is not in the cache."""
    return pool5_entry(model, dataset, regions, p, cache, tag, chunk).folder()


def pool5_entry(model: CaffeNet, dataset: DetectionDataset, regions: dict[str, np.ndarray], p: Params,
                cache: Cache, tag: str, chunk: int = CHUNK) -> Lazy:
    """pool5 features of `regions[image_id]` for every image of `dataset`, warped with
    `context_pixels(p)` to `net.input_size`, in eval mode under `torch.inference_mode`, on
    `runtime.device` (on CUDA by the GPU path; under torchrun each rank its share of the
    images, on its own GPU).
    Cached resumable per image in `pool5-<tag>/<key>` (see the module docstring for the
    layout), keyed on the model's cache key, the dataset, the regions and the warp settings.
    Returns the entry, deferred (`store.cache.Lazy`: its `ref` now, its folder, read with
    `load_pool5` / `load_regions`, when asked for); `model` must not change before then."""
    device = pick_device(p.runtime.device)
    size, ctx = p.net.input_size, context_pixels(p)
    ids = [im.image_id for im in dataset.images]
    missing = [i for i in ids if i not in regions]
    if missing:
        raise KeyError(f"extract_pool5: no regions for {len(missing)} image(s), e.g. {missing[0]!r}")
    config = {"model": model_key(model), "dataset": dataset_identity(dataset), "input_size": size, "context": ctx,
              "regions": array_digest(np.asarray(regions[i], np.float32).reshape(-1, 4) for i in ids)}

    def build(out: Path) -> None:
        todo = [im for im in D.shard(dataset.images) if not (out / f"{file_stem(im.image_id)}.npy").is_file()]
        was = model.training
        model.eval()
        dev0 = model.mean.device
        model.to(device)
        try:
            for im in progress_bar(todo, f"pool5 {tag}", p.runtime.progress):
                boxes = np.asarray(regions[im.image_id], dtype=np.float32).reshape(-1, 4)
                feats = pool5_of_regions(model, load_image(im.path), boxes, size, ctx, chunk)
                flat = feats.reshape(len(boxes), model.pool5_dim).to(torch.float16).cpu().numpy()
                name = file_stem(im.image_id)
                atomic_save_npy(out / f"{name}.boxes.npy", boxes)
                atomic_save_npy(out / f"{name}.npy", flat)
        finally:
            model.to(dev0).train(was)

    return cache.lazy(f"pool5-{tag}", config, build, resumable=True, ranks="shard")


def load_pool5(folder: Path, image_id: str, mmap: bool = False) -> np.ndarray:
    """float16 (N, C * 36) pool5 features of one image, (channel, y, x) order."""
    return np.load(Path(folder) / f"{file_stem(image_id)}.npy", mmap_mode="r" if mmap else None)


def load_regions(folder: Path, image_id: str) -> np.ndarray:
    """float32 (N, 4) boxes whose features `load_pool5` returns, in the same order."""
    return np.load(Path(folder) / f"{file_stem(image_id)}.boxes.npy")


@torch.inference_mode()
def fc_features(model: CaffeNet, pool5: np.ndarray | torch.Tensor, layer: str, chunk: int = 4096,
                gpu_path: bool = True) -> np.ndarray:
    """fc6 or fc7 features (float32 numpy) from cached pool5 features (N, C * 36) or maps,
    as relu(x W + b) without dropout (R-CNN's layer ablation); `layer == "pool5"` returns
    the pool5 features themselves as float32. `gpu_path`: see the module docstring."""
    x = torch.as_tensor(np.asarray(pool5) if not isinstance(pool5, torch.Tensor) else pool5)
    x = x.flatten(1) if x.ndim > 2 else x
    if layer == "pool5":
        return x.to(torch.float32).cpu().numpy()
    device = model.mean.device
    out = []
    for s in range(0, x.shape[0], chunk):
        part = to_device(x[s:s + chunk], device, gpu_path).to(torch.float32)
        with autocast(device, gpu_path):
            out.append(model.fc(part, layer).float().cpu())
    if not out:
        return np.zeros((0, model.net.fc_width), dtype=np.float32)
    return torch.cat(out).numpy()


def warp_scorer(model: CaffeNet, context: float, gpu_path: bool) -> Callable[[np.ndarray, np.ndarray], Any]:
    """Scores of every region of an image by warping (the timed unit of the warping detector):
    warp, pool5, fc7, the output layer."""
    device, size = model.mean.device, model.net.input_size

    def scores(image: np.ndarray, boxes: np.ndarray) -> torch.Tensor:
        pool5 = pool5_of_regions(model, image, boxes, size, context, gpu_path=gpu_path)
        with autocast(device, gpu_path):
            return model.head(model.fc(pool5, "fc7")).float().cpu()
    return scores
