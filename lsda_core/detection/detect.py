"""From region scores to detections: per class, keep the best boxes of each image and
suppress overlaps with greedy NMS (R-CNN: at most 100 per class and image, NMS 0.3)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from lsda_core.core.boxes import batched_nms, box_iou
from lsda_core.data.comp4 import Detections

# (region indices, class indices) -> refined boxes (n, 4) for those region-class pairs
Refine = Callable[[np.ndarray, np.ndarray], np.ndarray]


def detect_image(boxes: np.ndarray, scores: np.ndarray, nms: float, max_per_image: int,
                 min_score: float = -np.inf, refine: Refine | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: `boxes` (N, 4), `scores` (N, C). Per class, the top `max_per_image`
    scores above `min_score`; `refine(regions, classes)`, when given, moves those boxes
    (box regression, applied before NMS as in R-CNN's test code); then per-class NMS in
    one batched call. Returns kept (class index, score, box), by class then descending score."""
    n, c = scores.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 4))
    k = min(max_per_image, n)
    s = torch.as_tensor(scores, dtype=torch.float64)
    top = torch.topk(s, k, dim=0).indices  # (k, C): best regions per class
    cls = torch.arange(c).expand(k, c)
    region, cls = top.reshape(-1), cls.reshape(-1)
    sc = s[region, cls]
    ok = sc > min_score
    region, cls, sc = region[ok], cls[ok], sc[ok]
    b = torch.as_tensor(boxes, dtype=torch.float64)[region]
    if refine is not None and len(region):
        b = torch.as_tensor(refine(region.numpy(), cls.numpy()), dtype=torch.float64)
        keep = batched_nms(b, sc, cls, nms)
        order = keep[torch.argsort(cls[keep], stable=True)]  # by class; NMS order (score-descending) within
    else:  # every candidate is one of the image's regions: one IoU matrix serves every class
        kept = _greedy_by_class(torch.as_tensor(boxes, dtype=torch.float64), top.numpy(), ok.reshape(k, c).numpy(), nms)
        flat = np.arange(k * c).reshape(k, c).T[kept.T]  # class by class, rank (score) order within
        order = torch.as_tensor((np.cumsum(ok.numpy()) - 1)[flat])
    return cls[order].numpy(), sc[order].numpy(), b[order].numpy()


def _greedy_by_class(boxes: torch.Tensor, top: np.ndarray, valid: np.ndarray, nms: float) -> np.ndarray:
    """Greedy NMS of every class at once: `top` (k, C) the region indices of each class's
    candidates in descending score order, `valid` (k, C) which of them take part. Going down
    the ranks, a class's candidate is kept unless an earlier kept one of the same class
    overlaps it by IoU > `nms` (what `boxes.batched_nms` does class by class, with one IoU
    matrix of the image's regions instead of one per class). Returns kept (k, C)."""
    over = (box_iou(boxes, boxes) > nms).numpy()
    k, c = top.shape
    removed = ~valid
    kept = np.zeros_like(valid)
    cols = np.arange(c)
    for t in range(k):
        alive = cols[~removed[t]]
        kept[t, alive] = True
        if t + 1 < k and len(alive):
            removed[t + 1:, alive] |= over[top[t, alive][None, :], top[t + 1:, alive]]
    return kept


def detect(items: Iterable[tuple], classes: list[str], nms: float = 0.3,
           max_per_image: int = 100, min_score: float = -np.inf) -> dict[str, Detections]:
    """Detections of every class over images given as (image id, boxes, scores) triples, or
    (image id, boxes, scores, refine) with a per-image box refinement (see detect_image)."""
    per: dict[int, tuple[list, list, list]] = {i: ([], [], []) for i in range(len(classes))}
    for image_id, boxes, scores, *rest in items:
        cls, sc, bx = detect_image(boxes, scores, nms, max_per_image, min_score, rest[0] if rest else None)
        for ci in np.unique(cls):
            m = cls == ci
            ids, ss, bb = per[int(ci)]
            ids.extend([image_id] * int(m.sum()))
            ss.append(sc[m])
            bb.append(bx[m])
    return {name: Detections(per[i][0], np.concatenate(per[i][1]) if per[i][1] else np.zeros(0),
                             np.concatenate(per[i][2]) if per[i][2] else np.zeros((0, 4)))
            for i, name in enumerate(classes)}
