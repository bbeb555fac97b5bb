"""The papers' premises, measured: what must hold before a finding of either paper is tested.

Each premise is a record (what is measured, the paper's value, our target) and a measurement
that reads only cached stages, so the chapters, `lsda sweep` and the calibration appendix
measure it the same way. Calibration looks at these numbers only, never at a finding.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lsda_core.core.params import Params
from lsda_core.data.imagenet import read_image_folder
from lsda_core.data.voc import read_voc
from lsda_core.detection.pipeline import proposals_of
from lsda_core.detection.proposals import proposal_recall
from lsda_core.experiments import sources
from lsda_core.models import finetune as FT
from lsda_core.models import pretrain as PT
from lsda_core.models.nets import CaffeNet
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_write_text
from lsda_core.store.identity import dataset_identity, model_key
from lsda_core.core.structures import ClassificationDataset


@dataclass(frozen=True)
class Premise:
    """One premise: its measured value must satisfy `lo <= value <= hi` (neither: reported
    only). `if_unmet`: what an unmet premise does to the findings that rest on it. The papers'
    values beside ours live with the papers' other numbers (`publish.paper.PREMISES`)."""

    id: str
    text: str
    lo: float | None = None
    hi: float | None = None
    if_unmet: str = ""

    @property
    def target(self) -> str:
        """The target as a reader reads it."""
        if self.lo is None and self.hi is None:
            return "reported"
        if self.lo is not None and self.hi is not None:
            return f"{self.lo:g} to {self.hi:g}"
        return f">= {self.lo:g}" if self.lo is not None else f"<= {self.hi:g}"

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets the target (None when it was not measured)."""
        if value is None or not np.isfinite(value) or (self.lo is None and self.hi is None):
            return None
        return bool((self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi))


# The premises of issue 11: a finding is tested only where they hold.
PREMISES = (
    Premise("recall", "selective search covers the test objects (recall at IoU 0.5)", lo=0.95,
            if_unmet="objects no proposal covers are missed by every detector alike: every AP is capped, "
                     "differences between rows shrink, and Loc errors of the small objects are over-counted"),
    Premise("lsda_recall", "selective search covers the held-out categories' test objects (recall at IoU 0.5)",
            lo=0.95, if_unmet="as for R-CNN: every held-out AP is capped alike"),
    Premise("pretrain_val", "the pre-trained classifier is strong (val top-1)", lo=0.55,
            if_unmet="weak pool5 features leave fine-tuning more to add than in the paper and fc6 / fc7 "
                     "less to build on: the layer and fine-tuning comparisons are not the paper's"),
    Premise("pretrain_fit", "pre-training does not underfit (train top-1 minus val top-1)", lo=0.05,
            if_unmet="an underfit network is not a converged classifier: what fine-tuning adds is confounded "
                     "with what pre-training left unfinished"),
    Premise("finetune_plateau", "fine-tuning runs until its loss plateaus (the smoothed loss's fall over the "
            "last quarter of the run, as a share of its whole fall)", hi=0.1,
            if_unmet="fine-tuning stopped while still improving: its gains are underestimated"),
    Premise("finetune_passes", "passes fine-tuning makes over the foreground windows"),
    Premise("lsda_headroom", "the LSDA oracle has headroom (oracle held-out mAP / classification network's)", lo=2.0,
            if_unmet="with little room between the classification network and the oracle, no adaptation "
                     "can show a clear gain on the held-out categories"),
    Premise("rcnn_headroom", "the detection task has headroom both ways (best R-CNN row mAP)", lo=35.0, hi=80.0,
            if_unmet="near the floor every row is noise; near the ceiling no row can beat another"),
    Premise("seg_recall", "the mask proposals cover the eval objects (share some mask overlaps at IoU >= 0.5)",
            lo=0.9, if_unmet="objects no region covers cannot be labelled by any features: every row is capped "
                             "alike and the differences between feature strategies shrink"),
    Premise("seg_headroom", "segmentation labels objects: the best row's mean accuracy above an all-background "
            "labelling's (points)", lo=10.0,
            if_unmet="rows that label (almost) nothing but background differ only by noise: no feature "
                     "comparison is tested"),
)


# --------------------------------------------------------------------------- measurements

def pretrain_quality(p: Params, cache: Cache, model: CaffeNet, hist: dict[str, Any]) -> dict[str, float]:
    """Top-1 of the pre-trained network (`model`, its training `hist`) on the classification
    view's train and val images, both in eval mode without augmentation (the training log's
    accuracy has dropout and augmentation on, so it is not the fit), and the gap between them."""
    root = sources.classification_root(p, cache)
    train, val = read_image_folder(root, "train"), read_image_folder(root, "val")
    tr, va = evaluated(p, cache, model, train), evaluated(p, cache, model, val)
    return {"train_top1": tr["top1"], "val_top1": va["top1"], "val_top5": va["top5"],
            "fit_gap": tr["top1"] - va["top1"], "classes": len(train.classes), "train_images": len(train),
            "epochs": len(hist.get("epochs", [])), "seconds": float(hist.get("seconds", 0.0))}


def evaluated(p: Params, cache: Cache, model: CaffeNet, ds: ClassificationDataset) -> dict[str, float]:
    """`pretrain.evaluate_classification` of `model` on `ds` at the net's input size (eval
    mode, no augmentation), cached as `evaluation/<key>` on the model's key and the split, so a
    warm chapter neither decodes nor scores the images again."""
    config = {"model": model_key(model), "dataset": dataset_identity(ds), "size": p.net.input_size}

    def build(out: Path) -> None:
        images = PT.load_classification_tensor(ds, p.net.input_size, cache, False)
        atomic_write_text(out / "accuracy.json", json.dumps(PT.evaluate_classification(model, images, ds.labels)))

    return json.loads((cache.entry("evaluation", config, build) / "accuracy.json").read_text())


def proposal_quality(p: Params, cache: Cache) -> dict[str, float]:
    """Selective search's recall at IoU 0.5 and 0.7 on the VOC-like test split, and boxes per image."""
    test = read_voc(sources.voc_root(p, cache), "test")
    props = proposals_of(p, cache, test)
    r5, r7 = proposal_recall(test, props, 0.5), proposal_recall(test, props, 0.7)
    return {"recall@0.5": r5["recall"], "recall@0.7": r7["recall"], "boxes_per_image": r5["per_image"],
            "objects": r5["objects"]}


def plateau(losses: list[float]) -> float:
    """How much a loss curve still falls at its end: the change over its last quarter divided by
    the change over the whole run (0: flat at the end; 1: all the fall was in the last quarter).
    Noisy per-step losses are smoothed first by averaging blocks of a tenth of the run."""
    x = np.asarray(losses, np.float64)
    if len(x) < 8:
        return float("nan")
    k = max(1, len(x) // 10)
    sm = np.convolve(x, np.ones(k) / k, mode="valid")
    total = sm[0] - sm[-1]
    if total <= 0:
        return 0.0
    q = len(sm) - max(1, len(sm) // 4)
    return float(max(0.0, sm[q] - sm[-1]) / total)


def finetune_quality(p: Params, cache: Cache, model: CaffeNet) -> dict[str, float]:
    """R-CNN's fine-tuning of the pre-trained `model` on the VOC-like *train* split with its loss
    on windows of the *val* split logged as it goes (R-CNN chose its settings on val too; the
    chapter then fine-tunes on trainval): how flat the validation loss is at the end
    (`plateau`), its last value, and the passes made over the foreground windows."""
    root = sources.voc_root(p, cache)
    train, val = read_voc(root, "train"), read_voc(root, "val")
    props = proposals_of(p, cache, train, val)
    _, hist = FT.finetune(p, model, train, props, cache, list(train.classes), val=(val, props))
    vl = [r["val_loss"] for r in hist["log"]]
    return {"plateau": plateau(vl), "val_loss": vl[-1], "train_plateau": plateau([r["loss"] for r in hist["log"]]),
            "passes": p.finetune.iterations * p.finetune.fg_per_batch / max(hist["n_fg_windows"], 1),
            "iterations": p.finetune.iterations, "seconds": float(hist["seconds"])}
