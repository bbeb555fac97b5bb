"""VOC's semantic segmentation accuracy, as the devkit's `VOCevalseg.m` computes it.

One confusion matrix over every pixel of every image of the split, ground truth by
prediction, with the ground truth's void pixels (255: VOC's border around each object, and
"difficult" regions) left out; a class's accuracy is its intersection over union,
TP / (TP + FP + FN), and the score is their mean over every class, background included
(R-CNN's Tables 3 and 4 report it in percent).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsda_core.core.errors import DataError
from lsda_core.data.images import load_labels
from lsda_core.data.text import check_output_file, write_output
from lsda_core.data.voc import read_segmentation_split

VOID = 255


def confusion(truth: np.ndarray, predicted: np.ndarray, n_classes: int, where: str = "labelling") -> np.ndarray:
    """(n_classes, n_classes) pixel counts, row the true class and column the predicted one,
    over the pixels whose truth is not `VOID`. A prediction outside 0..n_classes - 1 on such
    a pixel is a DataError naming `where` (the devkit silently drops it)."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise DataError(f"{where}: labelling is {predicted.shape[1]}x{predicted.shape[0]} px but the ground truth is "
                        f"{truth.shape[1]}x{truth.shape[0]}")
    keep = truth != VOID
    t, p = truth[keep].astype(np.int64), predicted[keep].astype(np.int64)
    if t.size and t.max() >= n_classes:
        raise DataError(f"{where}: ground truth has label {int(t.max())} but there are only {n_classes} classes")
    if p.size and p.max() >= n_classes:
        raise DataError(f"{where}: label {int(p.max())} on a non-void pixel, but there are only {n_classes} classes "
                        f"(0-{n_classes - 1})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def class_iou(conf: np.ndarray) -> np.ndarray:
    """Each class's TP / (TP + FP + FN) from a confusion matrix, or from a stack of them (..., K, K);
    NaN for a class that is neither in the truth nor predicted."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    union = conf.sum(axis=-2) + conf.sum(axis=-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def score(conf: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """{"iou": {class: accuracy in [0, 1]}, "mean": mean over classes (those with a union),
    "pixels": pixels counted}."""
    iou = class_iou(conf)
    return {"iou": dict(zip(classes, iou.tolist())), "mean": float(np.nanmean(iou)) if np.isfinite(iou).any() else np.nan,
            "pixels": int(np.asarray(conf).sum())}


def evaluate_folder(dataset_dir: Path, split: str, results_dir: Path) -> dict[str, Any]:
    """The accuracy of a method's labellings `results_dir/<id>.png` (indexed PNGs, VOC's
    `SegmentationClass` convention) against `dataset_dir/SegmentationClass/<id>.png` over the
    images of `ImageSets/Segmentation/<split>.txt`; a missing labelling is a DataError."""
    ids, classes = read_segmentation_split(Path(dataset_dir), split)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for image_id in ids:
        pred = Path(results_dir) / f"{image_id}.png"
        if not pred.is_file():
            raise DataError(f"{pred}: labelling not found (one indexed PNG per image of the split, named <id>.png)")
        truth = load_labels(Path(dataset_dir) / "SegmentationClass" / f"{image_id}.png")
        conf += confusion(truth, load_labels(pred), len(classes), str(pred))
    return {**score(conf, classes), "images": len(ids)}


def format_table(result: dict[str, Any]) -> str:
    """Per-class accuracy and the mean, in percent, one line each."""
    width = max(len(c) for c in result["iou"])
    rows = [f"{c:<{width}}  {'-' if np.isnan(v) else f'{100 * v:5.1f}'}" for c, v in result["iou"].items()]
    return "\n".join(rows + [f"{'mean':<{width}}  {100 * result['mean']:5.1f}"])


def eval_command(dataset_dir: Path, split: str, results_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """`lsda eval --metric segmentation --dataset DIR --split SPLIT --results DIR [--out FILE]`:
    prints the per-class table and the mean; with `out`, writes them as JSON (fractions; null
    for a class absent from both)."""
    if out is not None:
        check_output_file(out, "scores file (--out)")
    result = evaluate_folder(dataset_dir, split, results_dir)
    print(format_table(result))
    if out is not None:
        payload = {"metric": "segmentation", "iou": {c: None if np.isnan(v) else v for c, v in result["iou"].items()},
                   "mean": result["mean"], "images": result["images"], "pixels": result["pixels"]}
        write_output(out, json.dumps(payload, indent=1) + "\n", "scores file (--out)")
    return result
