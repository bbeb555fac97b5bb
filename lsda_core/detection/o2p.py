"""R-CNN's semantic segmentation (section 5) in the O2P framework: CNN features of mask
proposals, one support vector regressor per class predicting each region's overlap with that
class, and the regions pasted into a pixel labelling.

Features, as the paper computes them three ways:
- *full*: the region's tight box, warped with context exactly as for detection (so the
  features of `features.pool5_of_regions` on the masks' boxes);
- *fg*: the same warp of the image with every pixel outside the region's mask set to the
  mean input (0 after mean subtraction) before warping;
- *full+fg*: the two concatenated.

Where this departs from O2P: the regressors are linear SVRs (liblinear's squared-loss
objective with epsilon 0, solved exactly: `train_svr`) on these features alone (O2P adds its
second-order-pooled features, which the paper's feature comparison drops too); pasting gives each pixel the class of the highest-scoring region covering it when that
score passes a background threshold (O2P pastes regions in order of decreasing score with a
learned background score; the threshold here is chosen on training images, `choose_threshold`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lsda_core.core import boxes as B
from lsda_core.core.params import Params
from lsda_core.core.structures import DetectionDataset
from lsda_core.data.images import load_image
from lsda_core.detection.features import CHUNK, autocast, file_stem, pool5_of_regions, to_device
from lsda_core.detection.mask_proposals import MaskProposals, mask_iou
from lsda_core.models.finetune import context_pixels
from lsda_core.models.nets import CaffeNet
from lsda_core.store.cache import Cache, Lazy
from lsda_core.store.files import atomic_save_npy
from lsda_core.store.identity import array_digest, dataset_identity, model_key
from lsda_core.store.runtime import pick_device, progress as progress_bar

MODES = ("full", "fg")


def fg_pool5(model: CaffeNet, image: np.ndarray, props: MaskProposals, size: int, context: float,
             chunk: int = 64, gpu_path: bool = True) -> torch.Tensor:
    """pool5 maps (P, C, 6, 6) of the *fg* inputs of every proposal of one (H, W, 3) uint8 image:
    the warped box of the mask, background pixels at the mean (module docstring)."""
    device = model.mean.device
    img = to_device(torch.from_numpy(np.require(image, requirements=["W", "C"])).permute(2, 0, 1), device, gpu_path)
    norm = model.normalize(img)
    boxes = torch.as_tensor(props.boxes, dtype=torch.float32)
    out = []
    for s in range(0, len(boxes), chunk):
        part = slice(s, s + chunk)
        masks = to_device(torch.from_numpy(props.masks(part)), device, gpu_path).to(norm.dtype)  # (n, H, W)
        warped = B.warp_regions(norm[None] * masks[:, None], boxes[part], size, context,  # masked, then warped
                                channels_last=True)
        with autocast(device, gpu_path):
            out.append(model.pool5(warped).float())
    if not out:
        return torch.zeros((0, model.conv5.out_channels, 6, 6), device=device)
    return torch.cat(out)


def region_pool5(model: CaffeNet, image: np.ndarray, props: MaskProposals, mode: str, size: int,
                 context: float) -> np.ndarray:
    """float16 (P, pool5_dim) features of one image's proposals, `mode` "full" or "fg"."""
    if mode not in MODES:
        raise ValueError(f"unknown region feature mode {mode!r} ({', '.join(MODES)})")
    with torch.inference_mode():
        maps = (pool5_of_regions(model, image, props.boxes, size, context, CHUNK) if mode == "full"
                else fg_pool5(model, image, props, size, context))
    return maps.reshape(len(props.members), -1).to(torch.float16).cpu().numpy()


def region_pool5_entry(model: CaffeNet, dataset: DetectionDataset, props: dict[str, MaskProposals], mode: str,
                       p: Params, cache: Cache, tag: str) -> Lazy:
    """`region_pool5` of every image of `dataset` (float16, one .npy per image, read with
    `load_region_pool5`), warped as detection warps (`net.input_size`, `context_pixels`), cached
    resumable in `segpool5-<mode>-<tag>` on the model, the images and the proposals."""
    device = pick_device(p.runtime.device)
    ids = [im.image_id for im in dataset.images]
    config = {"model": model_key(model), "dataset": dataset_identity(dataset), "mode": mode,
              "input_size": p.net.input_size, "context": context_pixels(p),
              "proposals": array_digest(a for i in ids for a in (props[i].atoms, props[i].members))}

    def build(out: Path) -> None:
        todo = [im for im in dataset.images if not (out / f"{file_stem(im.image_id)}.npy").is_file()]
        was, dev0 = model.training, model.mean.device
        model.eval().to(device)
        try:
            for im in progress_bar(todo, f"region pool5 ({mode}, {tag})", p.runtime.progress):
                feats = region_pool5(model, load_image(im.path), props[im.image_id], mode, p.net.input_size,
                                     context_pixels(p))
                atomic_save_npy(out / f"{file_stem(im.image_id)}.npy", feats)
        finally:
            model.to(dev0).train(was)

    return cache.lazy(f"segpool5-{mode}-{tag}", config, build, resumable=True)


def load_region_pool5(folder: Path, image_id: str) -> np.ndarray:
    """float16 (P, pool5_dim) region features of one image, in its proposals' order."""
    return np.load(Path(folder) / f"{file_stem(image_id)}.npy")


def overlap_targets(props: MaskProposals, objects: np.ndarray, object_class: Sequence[int], n_classes: int) -> np.ndarray:
    """(P, n_classes) each proposal's best IoU with a ground-truth object of each class (the
    regression targets): `objects` is the instance map (0 background, i the i-th object, 255
    void: counted in neither mask), `object_class[i - 1]` the class (0-based) of object i."""
    out = np.zeros((len(props.members), n_classes))
    if not len(object_class):
        return out
    iou = mask_iou(props, objects, range(1, len(object_class) + 1))
    for k in range(n_classes):  # few classes: the best object of each
        cols = np.asarray(object_class) == k
        if cols.any():
            out[:, k] = iou[:, cols].max(axis=1)
    return out


def train_svr(x: np.ndarray, y: np.ndarray, c: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """One linear support vector regressor per class on features `x` (N, D) and targets `y`
    (N, K), every class at once; returns (W (D, K), b (K,)).

    The objective is liblinear's L2-regularised L2-loss SVR with epsilon 0 and a bias feature
    of 1 (`-s 11 -p 0 -B 1`, scikit-learn's `LinearSVR(loss="squared_epsilon_insensitive")`):
    0.5 |w|^2 + C sum (y - w.x - b)^2 with b regularised like w. With epsilon 0 that is ridge
    regression, so it is solved exactly from the normal equations, (X'X + I / 2C) w = X'y with
    X carrying the bias column: one D x D solve shared by the classes, where liblinear's Newton
    method ran once per class to a tolerance (tested equal within it)."""
    if c <= 0:
        raise ValueError(f"svr_c must be positive, got {c}")
    xa = np.concatenate([np.asarray(x, np.float64), np.ones((len(x), 1))], axis=1)
    gram = xa.T @ xa
    gram[np.diag_indices_from(gram)] += 1.0 / (2.0 * c)
    wb = np.linalg.solve(gram, xa.T @ np.asarray(y, np.float64))  # (D + 1, K)
    return wb[:-1], wb[-1]


def atom_scores(props: MaskProposals, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per atom, the highest score of any region covering it over every class, and that class:
    (A,) and (A,) (-inf and 0 where no region covers the atom)."""
    s = np.where(props.members[:, :, None], scores[:, None, :], -np.inf).max(axis=0)  # (A, K)
    return s.max(axis=1), s.argmax(axis=1)


def paste(props: MaskProposals, scores: np.ndarray, threshold: float) -> np.ndarray:
    """(H, W) uint8 labelling: each pixel takes 1 + the class of the highest score among the
    regions covering it (over every class), background (0) when that score is below
    `threshold` or no region covers it."""
    best, cls = atom_scores(props, scores)
    return np.where(best >= threshold, cls + 1, 0).astype(np.uint8)[props.atoms]


def choose_threshold(pasted_accuracy, candidates: Sequence[float]) -> float:
    """The background threshold of the candidates that gives the best accuracy on training
    images (`pasted_accuracy(t)` -> mean class IoU); the first of equals."""
    scores = [pasted_accuracy(t) for t in candidates]
    return float(candidates[int(np.argmax(scores))])
