"""CPMC's learned ranking of mask proposals, in the spirit of O2P's regions (R-CNN section 5).

CPMC does not rank its figure-ground segments at random: a regressor trained on segmentation
ground truth predicts each segment's largest overlap with an object from class-agnostic
mid-level features of the segment (its size, position, shape, and how its colour and its
boundary contrast with the rest of the image), and a diversity step keeps near-duplicates out.
This module does the same for the hierarchical-grouping masks of `mask_proposals`: every mask
of the hierarchy (the *pool*) is described (`describe`), a gradient-boosted regressor is trained
on the train split's masks against their best overlap with any object (`train_ranker`), and
each image keeps its best-predicted masks, skipping one that overlaps a kept mask by more than
`DIVERSITY_IOU` (`rerank`).

Where it departs from CPMC: fewer, simpler features (no Gestalt or graph-partition terms) and a
plain overlap threshold for diversity instead of maximal marginal relevance.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from threadpoolctl import threadpool_limits

from lsda_core.detection.mask_proposals import MaskProposals, adjacency, mask_iou

DIVERSITY_IOU = 0.9  # a mask overlapping a better-ranked kept mask by more than this is skipped
COLOUR_BINS = 4  # per RGB channel, for the inside / outside colour histograms
FEATURES = ("area", "box_fill", "aspect", "cx", "cy", "spread_x", "spread_y", "box_w", "box_h", "touches_border",
            "compactness", "border_share", "boundary_contrast", "colour_contrast", "histogram_distance")


def describe(props: MaskProposals, image: np.ndarray) -> np.ndarray:
    """(P, len(FEATURES)) class-agnostic descriptors of every mask of one (H, W, 3) uint8 image,
    from per-atom sums (no per-mask pixel loop): size, box fill and shape, position and spread,
    whether the box touches the image border, compactness (perimeter^2 / 4 pi area), the share
    of the perimeter on the image border, the mean colour step across the mask's boundary, and
    how its colour differs from the rest of the image (mean and histogram)."""
    h, w = props.atoms.shape
    atoms = props.atoms.ravel().astype(np.int64)
    a = int(atoms.max()) + 1
    m = props.members.astype(np.float64)  # (P, A)
    ys, xs = np.divmod(np.arange(h * w), w)
    count = np.bincount(atoms, minlength=a).astype(np.float64)
    sums = np.stack([np.bincount(atoms, weights=v, minlength=a) for v in (xs / w, ys / h, (xs / w) ** 2, (ys / h) ** 2)], 1)
    pixels = image.reshape(-1, 3).astype(np.float64) / 255
    colour = np.stack([np.bincount(atoms, weights=pixels[:, c], minlength=a) for c in range(3)], 1)
    q = np.minimum((pixels * COLOUR_BINS).astype(np.int64), COLOUR_BINS - 1)
    hist_idx = atoms * COLOUR_BINS ** 3 + (q[:, 0] * COLOUR_BINS + q[:, 1]) * COLOUR_BINS + q[:, 2]
    hist = np.bincount(hist_idx, minlength=a * COLOUR_BINS ** 3).reshape(a, -1).astype(np.float64)
    edge = np.zeros((h, w), bool)
    edge[0], edge[-1], edge[:, 0], edge[:, -1] = True, True, True, True
    on_border = np.bincount(atoms[edge.ravel()], minlength=a).astype(np.float64)
    # boundary length between atoms (4-neighbourhood), and its length times the colour step across it
    pairs, n_px = adjacency(props.atoms)
    i, j = pairs[:, 0], pairs[:, 1]
    mean_col = colour / np.maximum(count, 1)[:, None]
    step = np.linalg.norm(mean_col[i] - mean_col[j], axis=1)
    both = (np.concatenate([i, j]), np.concatenate([j, i]))
    length = csr_matrix((np.tile(n_px.astype(np.float64), 2), both), shape=(a, a))
    stepped = csr_matrix((np.tile(n_px * step, 2), both), shape=(a, a))

    area = m @ count
    frac = area / (h * w)
    mom = (m @ sums) / area[:, None]
    boxes = props.boxes
    bw, bh = (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h
    outside = 1.0 - m
    cut = ((length @ m.T).T * outside).sum(1)  # boundary with other atoms (the matrices are symmetric)
    perimeter = cut + m @ on_border
    contrast = ((stepped @ m.T).T * outside).sum(1) / np.maximum(cut, 1)
    total_col, total_hist = colour.sum(0), hist.sum(0)
    inside_col = (m @ colour) / area[:, None]
    outside_col = (total_col[None] - m @ colour) / np.maximum(h * w - area, 1)[:, None]
    hin = m @ hist
    hin /= np.maximum(hin.sum(1, keepdims=True), 1)
    hout = total_hist[None] - m @ hist
    hout /= np.maximum(hout.sum(1, keepdims=True), 1)
    chi2 = 0.5 * ((hin - hout) ** 2 / np.maximum(hin + hout, 1e-12)).sum(1)
    touches = ((boxes[:, 0] <= 0) | (boxes[:, 1] <= 0) | (boxes[:, 2] >= w) | (boxes[:, 3] >= h)).astype(np.float64)
    return np.stack([
        frac, area / np.maximum(bw * bh * h * w, 1), np.log(np.maximum(bw, 1e-3) / np.maximum(bh, 1e-3)),
        mom[:, 0], mom[:, 1], np.sqrt(np.maximum(mom[:, 2] - mom[:, 0] ** 2, 0)),
        np.sqrt(np.maximum(mom[:, 3] - mom[:, 1] ** 2, 0)), bw, bh, touches,
        perimeter ** 2 / (4 * np.pi * np.maximum(area, 1)), (m @ on_border) / np.maximum(perimeter, 1), contrast,
        np.linalg.norm(inside_col - outside_col, axis=1), chi2], 1)


def best_object_overlap(props: MaskProposals, objects: np.ndarray) -> np.ndarray:
    """(P,) each mask's best IoU with any object of an instance map (void ignored; 0 when the
    image has no object): the ranker's target."""
    ids = [i for i in np.unique(objects) if i not in (0, 255)]
    return mask_iou(props, objects, ids).max(axis=1) if ids else np.zeros(len(props.members))


def train_ranker(x: Sequence[np.ndarray], y: Sequence[np.ndarray], seed: int = 0):
    """A gradient-boosted regressor of a mask's best object overlap from its descriptors, on the
    train split's pools (one (P, F) and (P,) array per image); deterministic for a seed."""
    from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415

    model = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.1, random_state=seed)
    with threadpool_limits(1):  # see `predict`
        return model.fit(np.concatenate(x), np.concatenate(y))


def predict(model, x: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The ranker's predicted overlaps of every image's masks (one (P, F) array per image), in
    one call on one thread: its OpenMP threads beside a busy core (torch, a second process) made
    a per-image call on 400 masks take about 5 s instead of milliseconds."""
    with threadpool_limits(1):
        scores = model.predict(np.concatenate(x))
    return np.split(scores, np.cumsum([len(a) for a in x])[:-1])


def rerank(props: MaskProposals, scores: np.ndarray, keep: int, diversity: float = DIVERSITY_IOU) -> np.ndarray:
    """Indices of the masks one image keeps: best `scores` first, each skipped when it overlaps an
    already kept mask by more than `diversity` (IoU), at most `keep`."""
    a = int(props.atoms.max()) + 1
    px = np.bincount(props.atoms.ravel(), minlength=a).astype(np.float64)
    m = props.members.astype(np.float64)
    area = m @ px
    inter = (m * px) @ m.T
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1)
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if not kept or iou[i, kept].max() <= diversity:
            kept.append(int(i))
            if len(kept) == keep:
                break
    return np.array(kept, dtype=np.int64)
