"""From region scores to detections: per class, keep the best boxes of each image and
suppress overlaps with greedy NMS (R-CNN: at most 100 per class and image, NMS 0.3)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch

from lsda_core.boxes import batched_nms
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
    return cls[order].numpy(), sc[order].numpy(), b[order].numpy()


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
