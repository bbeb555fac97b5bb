"""Statistics of detector results: the paired bootstrap of mAP over test images, effects with
intervals over training seeds and test images, and the verdict rule of each kind of claim."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from lsda_core.core.structures import DetectionDataset
from lsda_core.data.comp4 import Detections
from lsda_core.evaluation import ap as E
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_save_npy
from lsda_core.store.identity import array_digest, dataset_identity


class Benchmark(Protocol):
    """What the bootstrap reads of a benchmark (`detection.pipeline.Benchmark` has it)."""

    classes: list[str]
    test: DetectionDataset
    metric: str


class DetectorResult(Protocol):
    """What the bootstrap reads of a detector's result (`detection.pipeline.DetectorResult`)."""

    name: str
    detections: dict[str, Detections]


def resamples(n_images: int, n: int, seed: int) -> np.ndarray:
    """(n, n_images) counts: how often each test image is drawn in each bootstrap resample. The
    same `seed` gives the same resamples, so every statistic bootstrapped with it is paired."""
    rng = np.random.default_rng(seed)
    return np.stack([np.bincount(rng.integers(0, n_images, n_images), minlength=n_images) for _ in range(n)]) \
        if n else np.zeros((0, n_images), np.int64)


def bootstrap_map(bench: Benchmark, results: list[DetectorResult], n: int = 100, seed: int = 0,
                  classes: list[str] | None = None, cache: Cache | None = None) -> dict[str, np.ndarray]:
    """mAP (`bench.metric`) of each detector on `n` bootstrap resamples of the test images, the
    same resamples for every detector, so differences between detectors are paired.

    Matching is per image, so an image drawn k times contributes k copies of its
    detections' TP / FP flags and of its positives: each resample reweights one matching
    instead of redoing it (exact, and fast enough for hundreds of resamples). `classes`: the
    mAP over these classes only (LSDA's held-out set), all when None. With `cache`, each
    detector's samples are kept in stage `bootstrap`, keyed on the content of its detections,
    the test split, the metric, the classes, `n` and `seed` (a warm book recomputes none)."""
    classes = bench.classes if classes is None else classes
    positives: dict[str, np.ndarray] = {}  # per class, as evaluation counts them: filled once, when first needed

    def one(dets: dict[str, Detections]) -> np.ndarray:
        if not positives:
            positives.update({c: E.positives_per_image(bench.test, c, bench.metric) for c in classes})
        return _bootstrap_one(bench, dets, positives, n, seed)

    out = {}
    for r in results:
        if cache is None:
            out[r.name] = one(r.detections)
            continue
        config = {"detections": detections_digest(r.detections, classes), "test": dataset_identity(bench.test),
                  "metric": bench.metric, "classes": list(classes), "n": n, "seed": seed}

        def build(folder: Path, dets: dict[str, Detections] = r.detections) -> None:
            atomic_save_npy(folder / "maps.npy", one(dets))

        out[r.name] = np.load(cache.entry("bootstrap", config, build) / "maps.npy")
    return out


def detections_digest(detections: dict[str, Detections], classes: Sequence[str]) -> str:
    """Digest of a detector's detections of `classes` (image ids, scores and boxes)."""
    empty = Detections()
    parts = []
    for c in classes:
        d = detections.get(c, empty)
        parts += [np.frombuffer(c.encode(), np.uint8), np.frombuffer("\n".join(d.image_ids).encode(), np.uint8),
                  d.scores, d.boxes]
    return array_digest(parts)


def _bootstrap_one(bench: Benchmark, detections: dict[str, Detections], positives: dict[str, np.ndarray], n: int,
                   seed: int) -> np.ndarray:
    """(n,) one detector's mAP over the classes of `positives` (each class's positives per test
    image) on the `resamples(.., n, seed)` (`bootstrap_map`)."""
    picks = resamples(len(bench.test.images), n, seed)
    per_class = []
    for c, pos in positives.items():
        m = E.match_detections(bench.test, c, detections.get(c, Detections()), bench.metric)
        counted = m.tp | m.fp
        per_class.append((m.image_index[counted], m.tp[counted], pos))
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
    return maps


# ------------------------------------------------------------------ effects and verdicts

@dataclass
class Seeded:
    """mAP of detectors over training seeds and test images: `points[row]`, per seed on the
    whole test set, (S,); `samples[row]`, per seed on the same bootstrap resamples, (S, B).
    Rows trained once (not per seed) have S = 1. Values are fractions, as `DetectorResult.map`."""

    seeds: list[int]
    points: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]

    @classmethod
    def stack(cls, seeds: list[int], maps: list[dict[str, float]], spreads: list[dict[str, np.ndarray]]) -> "Seeded":
        """From one {row: mAP} and one {row: (B,) resampled mAP} per seed (the rows of the first seed)."""
        rows = list(maps[0])
        return cls(list(seeds), {k: np.array([m[k] for m in maps]) for k in rows},
                   {k: np.stack([np.asarray(s[k]) for s in spreads]) for k in rows})

    @classmethod
    def once(cls, seed: int, rows: dict[str, tuple[float, np.ndarray]]) -> "Seeded":
        """Rows measured with one seed: {row: (value on the test set, (B,) values on the resamples)}."""
        return cls([seed], {k: np.array([v]) for k, (v, _) in rows.items()},
                   {k: np.asarray(b)[None, :] for k, (_, b) in rows.items()})

    def add(self, maps: dict[str, float], spread: dict[str, np.ndarray]) -> "Seeded":
        """A new Seeded with rows measured once (same resamples) added, with S = 1; rows already
        here are kept."""
        return self.merge(Seeded.once(self.seeds[0], {k: (m, spread[k]) for k, m in maps.items()}))

    def merge(self, other: "Seeded") -> "Seeded":
        """A new Seeded with both sets of rows (this one's kept where both have a row)."""
        new = [k for k in other.points if k not in self.points]
        return Seeded(self.seeds, {**self.points, **{k: other.points[k] for k in new}},
                      {**self.samples, **{k: other.samples[k] for k in new}})

    def table(self) -> list[dict[str, Any]]:
        """One row per seed: mAP (%) of every row retrained with each seed."""
        many = [k for k, v in self.points.items() if len(v) == len(self.seeds) > 1]
        return [{"seed": s, **{k: round(100 * float(self.points[k][i]), 1) for k in many}}
                for i, s in enumerate(self.seeds)]


VERDICTS = ("replicated", "direction only", "not replicated", "inconclusive")
SIZE_RATIO = 2.0  # "the paper's size": within a factor of this of the paper's effect
LEVEL = 0.95      # two-sided confidence of the intervals (equivalence: 1 - 2 * 0.05 = 0.90)

VERDICT_RULE = {
    "difference": "A beats B (the paper's sign). With our 95 % interval [lo, hi] of A - B turned to the paper's "
                  "sign and P the paper's |A - B|: replicated when lo > 0 and the interval reaches the band "
                  f"[P / {SIZE_RATIO:g}, {SIZE_RATIO:g} P]; direction only when lo > 0 but the interval misses that band; "
                  f"not replicated when hi < P / {SIZE_RATIO:g} (our data rule out even half the paper's effect, "
                  "or show the opposite); inconclusive otherwise (the interval holds both 0 and the paper's size).",
    "difference of differences": "(A - B) - (C - D), e.g. fine-tuning helps fc7 more than pool5: the "
                                 "difference rule applied to that contrast.",
    "magnitude": f"our effect is the paper's within a factor of {SIZE_RATIO:g}: replicated when the whole 95 % interval "
                 f"lies in [P / {SIZE_RATIO:g}, {SIZE_RATIO:g} P]; direction only when lo > 0 but the interval misses "
                 f"the band; not replicated when hi < P / {SIZE_RATIO:g}; inconclusive otherwise.",
    "no difference": "A is no better (and no worse) than B: an equivalence test (two one-sided tests at 5 %) with "
                     "the claim's margin m: replicated when the 90 % interval lies inside [-m, m]; not replicated "
                     "when it lies wholly outside; inconclusive otherwise.",
    "optimum": "the paper's chosen value is the best of the grid: replicated when it beats every other value "
               "(each paired 95 % interval of its lead above 0); not replicated when some value beats it; "
               "inconclusive otherwise.",
    "qualitative": "a figure's claim reduced to one statistic whose sign is the claim (the paper gives no size): "
                   "replicated when the 95 % interval is above 0, not replicated when it is below 0, "
                   "inconclusive otherwise.",
}


@dataclass(frozen=True)
class Effect:
    """An effect in points: its estimate and its intervals over seeds and test images."""

    point: float
    lo: float     # 95 % interval
    hi: float
    lo90: float   # 90 % interval (equivalence tests)
    hi90: float
    seeds: int
    resamples: int


def effect(terms: Sequence[tuple[str, float]], points: dict[str, np.ndarray], samples: dict[str, np.ndarray],
           seed: int = 0) -> Effect:
    """The effect sum(w * mAP(row)) in points, from `points[row]` (mAP per training seed on the
    whole test set, shape (S,) or (1,)) and `samples[row]` (per seed and bootstrap resample of the
    test images, shape (S, B) or (1, B); the resamples are the same for every row and seed, so
    rows are paired). A row with one seed is the same for every seed (it was not retrained).

    The interval crosses both sources: each of the B draws takes one image resample and S
    seeds drawn with replacement, and averages the effect over those seeds (a two-level
    bootstrap), so it widens with the seed-to-seed spread as well as with the test images."""
    n_seeds = max(np.atleast_1d(points[r]).shape[0] for r, _ in terms)
    per_seed = sum(w * np.broadcast_to(np.atleast_1d(points[r]).astype(np.float64), (n_seeds,)) for r, w in terms)
    b = np.atleast_2d(samples[terms[0][0]]).shape[1]
    boot = sum(w * np.broadcast_to(np.atleast_2d(samples[r]).astype(np.float64), (n_seeds, b)) for r, w in terms)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n_seeds, (b, n_seeds))
    draws = 100 * boot[pick, np.arange(b)[:, None]].mean(axis=1)
    draws = draws[np.isfinite(draws)]
    if not len(draws):
        nan = float("nan")
        return Effect(100 * float(np.mean(per_seed)), nan, nan, nan, nan, n_seeds, b)
    q = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2, 0.05, 0.95])
    return Effect(100 * float(np.mean(per_seed)), *map(float, q), n_seeds, b)


def verdict(kind: str, eff: Effect, paper: float | None = None, margin: float | None = None) -> str:
    """The verdict of one claim from our effect's intervals, by `VERDICT_RULE[kind]`.
    `paper`: the paper's effect in points (its sign is the claim's direction); `margin`:
    the equivalence margin in points (kind "no difference")."""
    if not (np.isfinite(eff.lo) and np.isfinite(eff.hi)):
        return "inconclusive"
    if kind == "no difference":
        if margin is None or margin <= 0:
            raise ValueError("a no-difference claim needs a positive margin")
        if -margin < eff.lo90 and eff.hi90 < margin:
            return "replicated"
        if eff.lo90 > margin or eff.hi90 < -margin:
            return "not replicated"
        return "inconclusive"
    if kind == "qualitative":
        sign = 1.0 if not paper else float(np.sign(paper))
        lo, hi = sorted((sign * eff.lo, sign * eff.hi))
        return "replicated" if lo > 0 else "not replicated" if hi < 0 else "inconclusive"
    if kind not in ("difference", "difference of differences", "magnitude"):
        raise ValueError(f"unknown claim kind {kind!r}; known: {', '.join(VERDICT_RULE)}")
    if not paper:
        raise ValueError(f"a {kind} claim needs the paper's (non-zero) effect")
    sign, size = float(np.sign(paper)), abs(paper)
    lo, hi = sorted((sign * eff.lo, sign * eff.hi))
    band = (size / SIZE_RATIO, size * SIZE_RATIO)
    reaches = hi >= band[0] and lo <= band[1]
    inside = lo >= band[0] and hi <= band[1]
    if lo > 0 and (inside if kind == "magnitude" else reaches):
        return "replicated"
    if lo > 0 and not reaches:
        return "direction only"
    if hi < band[0]:
        return "not replicated"
    return "inconclusive"


def optimum_verdict(leads: Sequence[Effect]) -> str:
    """Kind "optimum": `leads` are the paired effects mAP(paper's value) - mAP(v), one per other
    grid value v."""
    if any(e.hi < 0 for e in leads):
        return "not replicated"
    if leads and all(e.lo > 0 for e in leads):
        return "replicated"
    return "inconclusive"
