"""Detection evaluation as the VOC and ILSVRC devkits do it: matching, PR curves, AP, mAP.

Metrics (`metric`):
- `voc07`: VOC2007 devkit (VOCevaldet.m). Detections in descending score order; each is
  compared with *all* ground-truth objects of its class in its image and assigned to the
  one of maximum IoU (the first on ties). If that IoU >= 0.5: a difficult object -> the
  detection is ignored (neither TP nor FP); an object not yet detected -> TP (and the object
  is now detected); an object already detected -> FP (duplicate), even when another,
  undetected object also overlaps >= 0.5. Below 0.5 -> FP. Difficult objects are not
  positives. AP: 11-point interpolation.
- `area`: the same matching, AP = area under the monotone precision envelope (VOC2010+).
- `ilsvrc`: ILSVRC DET devkit (eval_detection.m). Each detection is matched to the
  *not yet detected* object of its class with maximum IoU among those whose IoU reaches
  their own threshold `min(0.5, w*h / ((w+10)*(h+10)))` (w, h: the object's width and
  height in the study's convention, equal to the devkit's inclusive `xmax-xmin+1`).
  `difficult` flags are not used (ILSVRC has none). AP: area under the envelope.

For every metric, `dataset.blacklist` (image id, class) pairs are honoured as ILSVRC does:
the detections of that class in that image are ignored and its objects of that class are
not positives (VOC datasets have an empty blacklist).

Sorting is stable (equal scores keep the input order, like MATLAB's sort). Ignored
detections are dropped from the PR curve, which is exactly what the devkits' arrays give
(their ignored entries repeat the previous point, or are NaN and skipped by max). The
11 recall levels are exactly k/10: MATLAB's `0:0.1:1` holds 0.30000000000000004 for 0.3, so
the devkit does not count a recall of exactly 3/10 as reaching 0.3; that float artefact is
not reproduced (it matters only when tp/n_pos hits k/10 exactly). A class without positives
has AP NaN and is left out of the mAP (the devkits would divide by zero).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsda_core.core.boxes import box_iou_pairs
from lsda_core.data.comp4 import Detections, read_comp4
from lsda_core.data.text import check_output_file, write_output
from lsda_core.core.errors import DataError, LsdaError
from lsda_core.core.structures import DetectionDataset

METRICS = ("voc07", "area", "ilsvrc")
ILSVRC_PIXEL_TOLERANCE = 10.0
_CHUNK = 65536  # detections per vectorised IoU block

__all__ = ["METRICS", "Detections", "Matching", "voc_ap", "match_detections", "evaluate_class",
           "evaluate", "eval_command", "format_table"]


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise LsdaError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")


def voc_ap(recall: Any, precision: Any, use_07: bool) -> float:
    """AP from a PR curve. `use_07`: mean over t in {0, 0.1, ..., 1} of the maximum precision
    at recall >= t (0 where none). Otherwise: area under the monotone envelope of precision
    (the devkit's VOCap: recall padded with 0 and 1, precision with 0 and 0). NaN precision
    entries are skipped."""
    rec = np.asarray(recall, dtype=np.float64).reshape(-1)
    prec = np.asarray(precision, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision differ in length: {rec.shape[0]} and {prec.shape[0]}")
    ok = ~np.isnan(prec)
    rec, prec = rec[ok], prec[ok]
    if use_07:
        t = np.arange(11) / 10.0
        at = np.where(rec[None, :] >= t[:, None], prec[None, :], -np.inf)
        best = at.max(axis=1, initial=-np.inf)
        return float(np.where(np.isfinite(best), best, 0.0).sum() / 11.0)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


@dataclass
class GroundTruth:
    """All objects of a dataset in flat arrays, built once per evaluation."""

    image_index: dict[str, int]
    by_class: dict[str, np.ndarray]  # class -> object rows
    img: np.ndarray  # (K,) image index of each object
    local: np.ndarray  # (K,) index in its image's `objects`
    box: np.ndarray  # (K, 4)
    difficult: np.ndarray  # (K,) bool


def ground_truth(dataset: DetectionDataset) -> GroundTruth:
    img, local, boxes, diff, names = [], [], [], [], []
    index: dict[str, int] = {}
    for i, im in enumerate(dataset.images):
        if im.image_id in index:
            raise DataError(f"dataset {dataset.name} {dataset.split}: image id {im.image_id!r} appears twice")
        index[im.image_id] = i
        for k, o in enumerate(im.objects):
            img.append(i)
            local.append(k)
            boxes.append(np.asarray(o.box, dtype=np.float64).reshape(4))
            diff.append(bool(o.difficult))
            names.append(o.cls)
    by_class: dict[str, list[int]] = {}
    for r, c in enumerate(names):
        by_class.setdefault(c, []).append(r)
    return GroundTruth(index, {c: np.array(r, dtype=np.int64) for c, r in by_class.items()},
                        np.array(img, dtype=np.int64), np.array(local, dtype=np.int64),
                        np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(diff, dtype=bool))


@dataclass
class Matching:
    """The matching of one class's detections, all arrays in descending score order.

    `order`: indices into the input detections; `image_index`: index into
    `dataset.images`; `tp`, `fp`, `ignored`: exactly one is true per detection (ignored:
    matched to a difficult object, or blacklisted); `gt_index`: index into that image's
    `objects` of the object the detection was assigned to (TP, duplicate, or difficult;
    -1 otherwise); `iou`: the maximum IoU with any object of the class in the image (0 when
    none); `n_pos`: positives of the class.
    """

    order: np.ndarray
    scores: np.ndarray
    image_index: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    ignored: np.ndarray
    gt_index: np.ndarray
    iou: np.ndarray
    n_pos: int


def _image_indices(gt: GroundTruth, dataset: DetectionDataset, dets: Detections, cls: str) -> np.ndarray:
    """Each detection's image index in `gt` (a class has thousands of detections: the lookups
    run in C through `map`, not a Python loop)."""
    try:
        return np.fromiter(map(gt.image_index.__getitem__, dets.image_ids), dtype=np.int64, count=len(dets))
    except KeyError as e:
        src = dets.source or f"detections of class {cls}"
        raise DataError(f"{src}: image id {e.args[0]!r} is not in {dataset.name} split {dataset.split!r}") from None


def match_detections(dataset: DetectionDataset, cls: str, dets: Detections, metric: str = "voc07",
                     min_overlap: float = 0.5, *, _gt: GroundTruth | None = None) -> Matching:
    """Match one class's detections to the ground truth (rules of `metric`, see the module
    docstring). `min_overlap` is the IoU threshold (ILSVRC: the cap of the per-object one)."""
    _check_metric(metric)
    gt = _gt if _gt is not None else ground_truth(dataset)
    n = len(dets)
    order = np.argsort(-dets.scores, kind="stable")
    img = _image_indices(gt, dataset, dets, cls)[order]
    boxes = dets.boxes[order]

    blocked = {gt.image_index[i] for (i, c) in dataset.blacklist if c == cls and i in gt.image_index}
    rows = gt.by_class.get(cls, np.zeros(0, dtype=np.int64))
    if blocked:
        rows = rows[~np.isin(gt.img[rows], list(blocked))]
    ignored = np.isin(img, list(blocked)) if blocked else np.zeros(n, dtype=bool)
    use_difficult = metric != "ilsvrc"
    g_diff = gt.difficult[rows] if use_difficult else np.zeros(rows.shape[0], dtype=bool)
    n_pos = int((~g_diff).sum())

    # padded per-image table of the class's objects: (R images, G slots)
    g_img = gt.img[rows]
    uimg, first, count = np.unique(g_img, return_index=True, return_counts=True)
    R, G = uimg.shape[0], int(count.max()) if rows.size else 0
    slot = np.arange(rows.shape[0]) - np.repeat(first, count) if rows.size else np.zeros(0, dtype=np.int64)
    # rows are in image order (built that way), so np.unique's groups are contiguous
    r_of = np.searchsorted(uimg, g_img)
    t_box = np.zeros((R, max(G, 1), 4))
    t_valid = np.zeros((R, max(G, 1)), dtype=bool)
    t_diff = np.zeros((R, max(G, 1)), dtype=bool)
    t_local = np.full((R, max(G, 1)), -1, dtype=np.int64)
    t_box[r_of, slot] = gt.box[rows]
    t_valid[r_of, slot] = True
    t_diff[r_of, slot] = g_diff
    t_local[r_of, slot] = gt.local[rows]
    if metric == "ilsvrc":
        wh = t_box[..., 2:] - t_box[..., :2]
        tol = ILSVRC_PIXEL_TOLERANCE
        t_thr = np.minimum(min_overlap, wh[..., 0] * wh[..., 1] / ((wh[..., 0] + tol) * (wh[..., 1] + tol)))

    row_of_img = np.full(len(dataset.images), -1, dtype=np.int64)
    row_of_img[uimg] = np.arange(R)
    det_row = row_of_img[img] if n else np.zeros(0, dtype=np.int64)
    has = (det_row >= 0) & ~ignored

    tp = np.zeros(n, dtype=bool)
    fp = ~ignored.copy()
    gt_index = np.full(n, -1, dtype=np.int64)
    iou_max = np.zeros(n)
    cand_d: list[np.ndarray] = []  # ILSVRC: detections with an eligible object, and their masked IoU rows
    cand_iou: list[np.ndarray] = []
    hit_d, hit_j = [], []
    for s0 in range(0, n, _CHUNK):
        d = np.nonzero(has[s0:s0 + _CHUNK])[0] + s0
        if d.size == 0:
            continue
        r = det_row[d]
        iou = box_iou_pairs(torch.from_numpy(boxes[d])[:, None, :], torch.from_numpy(t_box[r])).numpy()
        iou = np.where(t_valid[r], iou, -np.inf)
        jmax = np.argmax(iou, axis=1)
        ov = iou[np.arange(d.size), jmax]
        iou_max[d] = np.maximum(ov, 0.0)
        if metric == "ilsvrc":
            elig = iou >= t_thr[r]
            c = elig.any(axis=1)
            cand_d.append(d[c])
            cand_iou.append(np.where(elig[c], iou[c], -np.inf))
        else:
            c = ov >= min_overlap
            hit_d.append(d[c])
            hit_j.append(jmax[c])

    if metric == "ilsvrc":
        detected = np.zeros((R, max(G, 1)), dtype=bool)
        for d_blk, iou_blk in zip(cand_d, cand_iou):
            for d, row in zip(d_blk, iou_blk):
                r = det_row[d]
                row = np.where(detected[r], -np.inf, row)
                j = int(np.argmax(row))
                if np.isfinite(row[j]):
                    detected[r, j] = True
                    tp[d], fp[d] = True, False
                    gt_index[d] = t_local[r, j]
    elif hit_d:
        d = np.concatenate(hit_d)
        j = np.concatenate(hit_j)
        r = det_row[d]
        gt_index[d] = t_local[r, j]
        diff = t_diff[r, j]
        ignored[d[diff]] = True
        fp[d[diff]] = False
        d, r, j = d[~diff], r[~diff], j[~diff]
        # the first detection (in score order) assigned to an object is its TP; later ones are duplicates
        _, first_hit = np.unique(r * max(G, 1) + j, return_index=True)
        tp[d[first_hit]] = True
        fp[d[first_hit]] = False
    return Matching(order=order, scores=dets.scores[order], image_index=img, tp=tp, fp=fp, ignored=ignored,
                    gt_index=gt_index, iou=iou_max, n_pos=n_pos)


def positives_per_image(dataset: DetectionDataset, cls: str, metric: str = "voc07") -> np.ndarray:
    """Per image of `dataset`, how many positives of `cls` evaluation counts (`match_detections`'
    n_pos is their sum): objects of the class, not difficult (VOC metrics), none in an (image,
    class) pair of the blacklist. The bootstrap reweights these."""
    _check_metric(metric)
    use_difficult = metric != "ilsvrc"
    blocked = {i for (i, c) in dataset.blacklist if c == cls}
    return np.array([0.0 if im.image_id in blocked else
                     float(sum(o.cls == cls and not (use_difficult and o.difficult) for o in im.objects))
                     for im in dataset.images])


def evaluate_class(dataset: DetectionDataset, cls: str, dets: Detections, metric: str = "voc07",
                   *, _gt: GroundTruth | None = None) -> dict[str, Any]:
    """AP of one class. Returns `ap` (NaN without positives), `recall` and `precision` (over
    the counted detections, ignored ones dropped), `n_pos`, `n_dets`, the per-detection
    flags `tp`, `fp`, `ignored` in score order, and the full `matching`."""
    m = match_detections(dataset, cls, dets, metric, _gt=_gt)
    counted = m.tp | m.fp
    tp = np.cumsum(m.tp[counted])
    fp = np.cumsum(m.fp[counted])
    precision = tp / np.maximum(tp + fp, 1)
    if m.n_pos > 0:
        recall = tp / m.n_pos
        ap = voc_ap(recall, precision, use_07=metric == "voc07")
    else:
        recall = np.zeros(tp.shape[0])
        ap = math.nan
    return {"ap": ap, "recall": recall, "precision": precision, "n_pos": m.n_pos, "n_dets": len(dets),
            "tp": m.tp, "fp": m.fp, "ignored": m.ignored, "matching": m}


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(sum(v) / len(v)) if v else math.nan


def evaluate(dataset: DetectionDataset, detections: dict[str, Detections], metric: str = "voc07") -> dict[str, Any]:
    """AP of every class of `dataset.classes` and their mean. A class missing from
    `detections` scores 0 (if it has positives); classes not in the dataset are ignored.
    Returns `{"metric", "ap": {class: AP}, "map", "n_pos": {...}, "n_dets": {...}}`."""
    _check_metric(metric)
    gt = ground_truth(dataset)
    ap, n_pos, n_dets = {}, {}, {}
    for c in dataset.classes:
        r = evaluate_class(dataset, c, detections.get(c) or Detections(), metric, _gt=gt)
        ap[c], n_pos[c], n_dets[c] = r["ap"], r["n_pos"], r["n_dets"]
    return {"metric": metric, "ap": ap, "map": _nanmean(list(ap.values())), "n_pos": n_pos, "n_dets": n_dets}


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """The per-class table (class, AP %, n_pos, n_dets) and the mAP of an `evaluate` result."""
    width = max([len("class"), len("mAP")] + [len(c) for c in result["ap"]])
    lines = [f"{'class':<{width}}  {'AP %':>6}  {'n_pos':>6}  {'n_dets':>7}"]
    for c, ap in result["ap"].items():
        lines.append(f"{c:<{width}}  {_pct(ap):>6}  {result['n_pos'][c]:>6d}  {result['n_dets'][c]:>7d}")
    lines.append(f"{'mAP':<{width}}  {_pct(result['map']):>6}   ({result['metric']})")
    return "\n".join(lines)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def eval_command(dataset_dir: Path, split: str, results_dir: Path, metric: str = "voc07",
                 out: Path | None = None) -> dict[str, Any]:
    """`lsda eval --dataset DIR --split SPLIT --results DIR [--metric ...] [--out FILE]`.

    Reads the VOC-layout dataset and the comp4 files of its classes, prints the per-class
    table and the mAP, and with `out` writes `{"metric", "ap": {class: AP in [0, 1]}, "map"}`
    as JSON (NaN, for a class without positives, as null). A class without a results file
    scores 0; a folder with no results file for the split at all is an error."""
    from lsda_core.data.voc import read_voc  # noqa: PLC0415  (reader lives beside the writer)

    _check_metric(metric)
    if out is not None:
        check_output_file(out, "scores file (--out)")
    dataset = read_voc(Path(dataset_dir), split)
    dets = read_comp4(Path(results_dir), split, dataset.classes)
    if dataset.classes and not any(Path(d.source or "").is_file() for d in dets.values()):
        raise DataError(f"{results_dir}: no results files comp4_det_{split}_<class>.txt for any of the "
                        f"{len(dataset.classes)} classes of {dataset_dir}")
    result = evaluate(dataset, dets, metric)
    print(format_table(result))
    if out is not None:
        payload = {"metric": metric, "ap": {c: _json_float(v) for c, v in result["ap"].items()},
                   "map": _json_float(result["map"])}
        write_output(out, json.dumps(payload, indent=1) + "\n", "scores file (--out)")
    return result
