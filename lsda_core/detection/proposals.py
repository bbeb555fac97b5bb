"""Region proposals: selective search in fast mode (OpenCV contrib), as R-CNN used it,
computed in parallel processes and cached per image (an interrupted run resumes). Under
torchrun each rank computes its share of the images (`distributed.shard`) into the shared
cache entry.

Boxes follow the study's convention (structures.py): float [x1, y1, x2, y2], 0-based
pixel edges. OpenCV returns (x, y, w, h) rectangles in pixels, so x2 = x + w.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lsda_core.store import distributed as D
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_save_npy
from lsda_core.data.images import load_image
from lsda_core.store.runtime import progress as progress_bar
from lsda_core.core.structures import DetectionDataset
from lsda_core.store.identity import images_identity


@dataclass(frozen=True)
class ProposalConfig:
    """How proposals are made: selective search mode, the most kept, the smallest side."""

    mode: str = "fast"  # "fast" or "quality", OpenCV's two strategies
    max_boxes: int = 2000  # R-CNN used about 2000 per image
    min_side: float = 2.0  # drop boxes thinner than this (px of the searched image)
    base_k: int = 150  # segmentation k of the first level (OpenCV's default; R-CNN's fast mode: 50)
    width: int = 0  # search the image resized to this width (0: as it is; R-CNN: 500)


def selective_search(image: np.ndarray, cfg: ProposalConfig, seed: int = 0) -> np.ndarray:
    """Proposals of one RGB uint8 image as (N, 4) float32 boxes, in selective search's
    ranking order (hierarchy level times a random factor, as in Uijlings et al.), duplicates
    removed. OpenCV draws that factor from the C library's rand(), so it is seeded here:
    the same image and seed give the same boxes in the same order."""
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from processes, one image each
    ctypes.CDLL(None).srand(seed & 0x7FFFFFFF)
    scale = cfg.width / image.shape[1] if cfg.width else 1.0
    if scale != 1.0:  # R-CNN's selective_search_boxes(im, fast_mode, im_width)
        image = cv2.resize(image, (cfg.width, max(1, int(round(image.shape[0] * scale)))),
                           interpolation=cv2.INTER_LINEAR)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV wants BGR
    if cfg.mode == "fast":
        ss.switchToSelectiveSearchFast(cfg.base_k, cfg.base_k, 0.8)  # k and 2k, sigma 0.8 (as R-CNN)
    else:
        ss.switchToSelectiveSearchQuality(cfg.base_k, cfg.base_k, 0.8)
    rects = ss.process().astype(np.float32).reshape(-1, 4)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    keep = (boxes[:, 2] - boxes[:, 0] >= cfg.min_side) & (boxes[:, 3] - boxes[:, 1] >= cfg.min_side)
    boxes = boxes[keep] / scale
    _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)][: cfg.max_boxes]


def _one(args: tuple[str, str, ProposalConfig]) -> np.ndarray:
    image_id, path, cfg = args
    return selective_search(load_image(path), cfg, seed=zlib.crc32(image_id.encode()))


def compute_proposals(dataset: DetectionDataset, cache: Cache, cfg: ProposalConfig = ProposalConfig(),
                      workers: int = 1, progress: bool = True) -> dict[str, np.ndarray]:
    """Proposals for every image of `dataset`, from the cache or computed in `workers`
    processes (per rank under torchrun, each rank its share of the images); one .npy file
    per image, written atomically, so a rerun resumes."""
    images = {im.image_id: str(im.path) for im in dataset.images}
    config = {"images": images_identity(dataset.images), **asdict(cfg)}

    def build(folder: Path) -> None:
        todo = [i for i in D.shard(sorted(images)) if not (folder / f"{i}.npy").is_file()]
        jobs = [(i, images[i], cfg) for i in todo]
        if not jobs:
            return
        # In forked processes even with one worker: the ranking draws from the C library's rand(),
        # which other threads of this process can draw from too (zmq's in a kernel, gloo's under
        # torchrun) and so reorder the boxes; a forked process has no thread but the forking one.
        with ProcessPoolExecutor(min(max(workers, 1), len(jobs)), mp_context=mp.get_context("fork")) as ex:
            results = ex.map(_one, jobs, chunksize=1 if workers <= 1 else 4)
            for i, boxes in progress_bar(zip(todo, results), "proposals", progress, total=len(todo)):
                atomic_save_npy(folder / f"{i}.npy", boxes)

    folder = cache.entry("proposals", config, build, resumable=True,
                         ranks="shard")
    return {i: np.load(folder / f"{i}.npy") for i in sorted(images)}


def proposal_recall(dataset: DetectionDataset, proposals: dict[str, np.ndarray], iou: float = 0.5) -> dict[str, float]:
    """Share of (non-difficult) ground-truth boxes covered by some proposal at IoU >= `iou`,
    and the mean number of proposals per image."""
    import torch

    from lsda_core.core.boxes import box_iou

    hit = total = 0
    for im in dataset.images:
        gt = np.array([o.box for o in im.objects if not o.difficult]).reshape(-1, 4)
        if not len(gt):
            continue
        total += len(gt)
        props = proposals[im.image_id]
        if len(props):
            best = box_iou(torch.as_tensor(gt), torch.as_tensor(props, dtype=torch.float64)).max(dim=1).values
            hit += int((best >= iou).sum())
    per_image = float(np.mean([len(proposals[im.image_id]) for im in dataset.images])) if dataset.images else 0.0
    return {"recall": hit / max(total, 1), "objects": total, "per_image": per_image}
