"""Statistics of detector results: the paired bootstrap of mAP over test images."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from lsda_core.core.structures import DetectionDataset
from lsda_core.data.comp4 import Detections
from lsda_core.evaluation import ap as E


class Benchmark(Protocol):
    """What the bootstrap reads of a benchmark (`detection.pipeline.Benchmark` has it)."""

    classes: list[str]
    test: DetectionDataset
    metric: str


class DetectorResult(Protocol):
    """What the bootstrap reads of a detector's result (`detection.pipeline.DetectorResult`)."""

    name: str
    detections: dict[str, Detections]


def bootstrap_map(bench: Benchmark, results: list[DetectorResult], n: int = 100, seed: int = 0,
                  classes: list[str] | None = None) -> dict[str, np.ndarray]:
    """mAP (`bench.metric`) of each detector on `n` bootstrap resamples of the test images, the
    same resamples for every detector, so differences between detectors are paired.

    Matching is per image, so an image drawn k times contributes k copies of its
    detections' TP / FP flags and of its positives: each resample reweights one matching
    instead of redoing it (exact, and fast enough for hundreds of resamples). `classes`: the
    mAP over these classes only (LSDA's held-out set), all when None."""
    rng = np.random.default_rng(seed)
    n_img = len(bench.test.images)
    picks = [np.bincount(rng.integers(0, n_img, n_img), minlength=n_img) for _ in range(n)]
    classes = bench.classes if classes is None else classes
    positives = {c: E.positives_per_image(bench.test, c, bench.metric) for c in classes}  # as evaluation counts
    out = {}
    for r in results:
        per_class = []
        for c in classes:
            m = E.match_detections(bench.test, c, r.detections.get(c, Detections()), bench.metric)
            counted = m.tp | m.fp
            per_class.append((m.image_index[counted], m.tp[counted], positives[c]))
        maps = np.zeros(n)
        for k, w in enumerate(picks):
            aps = []
            for img, tp, pos in per_class:
                n_pos = float(w @ pos)
                if n_pos == 0:
                    continue
                wt = w[img]
                ctp, cfp = np.cumsum(wt * tp), np.cumsum(wt * ~tp)
                aps.append(E.voc_ap(ctp / n_pos, ctp / np.maximum(ctp + cfp, 1e-12), use_07=bench.metric == "voc07"))
            maps[k] = np.mean(aps) if aps else np.nan
        out[r.name] = maps
    return out


def difference(spread: dict[str, np.ndarray], a: str, b: str) -> tuple[float, float]:
    """Mean and std over bootstrap resamples of mAP(a) - mAP(b), in points."""
    d = 100 * (spread[a] - spread[b])
    return float(d.mean()), float(d.std())


def verdict(ours: float, noise: float, paper_delta: float) -> str:
    """Whether a difference of `ours` points (bootstrap std `noise`) agrees in sign with the
    paper's `paper_delta`, and whether it stands out from the noise (|d| > 2 std). The book's
    verdict rule on each claim's difference (the findings tables)."""
    clear = abs(ours) > 2 * noise
    same = np.sign(ours) == np.sign(paper_delta)
    if same and clear:
        return "replicates"
    if same:
        return "same direction, within noise"
    if clear:
        return "does not replicate (opposite, beyond noise)"
    return "does not replicate (opposite, within noise)"
