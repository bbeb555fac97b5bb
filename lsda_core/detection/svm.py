"""R-CNN's per-class linear SVMs, trained with hard-negative mining (`rcnn_train.m`).

Training data (`RegionSet`, one per training image): the features of every region of the
image, ground-truth boxes first, then the proposals. For each class c:

- positives: the ground-truth boxes of class c, from all images (collected up front, as
  `get_positive_pool5_features` did);
- negatives: regions whose IoU with every instance of c is below `neg_iou` (R-CNN: 0.3);
  regions in [neg_iou, 1) are unused. As in the original code (`d.overlap(:, c) < 0.3` over
  all rows of the image), the candidates are all regions of the image, so the ground-truth
  boxes of *other* classes are negatives too. `neg_iou = 0` would select nothing under a
  strict `<`; it means "touching no instance" (IoU == 0) here, the paper's grid value 0;
- hard-negative mining, one pass over the images: the first image contributes all its
  negatives and every class is trained on them; every later image adds its negatives that
  the current model scores above `hard_thresh` (-1.0001); a class is retrained as soon as
  more than `retrain_every` (2000) negatives have been added since its last training, and
  at the last image; after each retraining the negatives the new model scores below
  `evict_thresh` (-1.2) leave the cache.

All classes go through the same pass, so each image's features are loaded once (plus
once up front for the positives) and its candidates are scored for all classes with one
matrix product.

Solver: liblinear -s 3 (L2-regularised L1-loss SVM, dual coordinate descent), `-c C
-w1 pos_weight -B bias -e 0.1` (R-CNN: 1e-3, 2, 10, liblinear's default eps). The bias is a
constant feature of value `bias` whose weight is regularised like the others:

    0.5 |w|^2 + 0.5 (b / bias)^2 + C * sum_i c_i max(0, 1 - y_i (w.x_i + b)),

with c_i = pos_weight for positives, 1 for negatives. It runs through scikit-learn's own
liblinear (`train_liblinear`), fed the float32 cache directly. Faster alternatives were
measured and rejected: a primal Newton solver in torch on a smoothed hinge (decision values
within 1e-3 of the exact optimum, 30x closer than liblinear's own eps = 0.1 gets, but 5-20x
slower than liblinear on the same problems on CPU), and a torch dual coordinate descent,
whose per-coordinate Python steps cost more than liblinear's whole epochs. liblinear's cost
is one C pass per epoch over the cache (~12 epochs at eps 0.1) plus its copy of the data.
Threads are not used: scikit-learn's liblinear draws from one global random generator, so
concurrent fits are not reproducible.

Features are scaled by one number so that their mean L2 norm is `feature_norm` (20),
measured on a seeded random sample of regions (`rcnn_feature_stats.m`: up to 200 images,
up to 200 regions from each). The returned weights are folded back onto the unscaled
features: `score(raw_feats, W, b)` gives the SVM scores of the scaled features.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from lsda_core.core import params as P
from lsda_core.core.boxes import box_iou
from lsda_core.store.runtime import progress as _progress


# ----------------------------------------------------------------------------- data

@dataclass
class RegionSet:
    """The regions of one training image and how to get their features.

    `boxes`: (N, 4) float, the study's box convention; rows `0 .. n_gt-1` are the
    ground-truth boxes, the rest the proposals.
    `gt_classes`: (n_gt,) int class indices (into the `classes` given to `train_svms`) of the
    ground-truth rows; -1 marks a ground-truth box of no class being trained (it is then
    neither a positive nor an instance, just a region).
    `feats`: (N, D) float array (NumPy or torch) in the row order of `boxes`, or a callable
    returning one, called when needed so that real data need not fit in memory: per
    training, once for the positives, once in the mining pass, and once more for up to 200
    images when the feature scale is measured (`scale=None`).
    `image_id`: for messages only.
    """

    boxes: np.ndarray
    gt_classes: np.ndarray
    feats: np.ndarray | Callable[[], np.ndarray]
    image_id: str = ""

    @property
    def n_gt(self) -> int:
        return int(len(self.gt_classes))

    def load_feats(self) -> np.ndarray:
        f = self.feats() if callable(self.feats) else self.feats
        f = np.asarray(f if not isinstance(f, torch.Tensor) else f.detach().cpu().numpy())
        if f.ndim != 2 or f.shape[0] != len(self.boxes):
            raise ValueError(f"image {self.image_id!r}: feats must be ({len(self.boxes)}, D), got {f.shape}")
        return f.astype(np.float32, copy=False)


def as_region_set(r: RegionSet | Mapping[str, Any]) -> RegionSet:
    """A `RegionSet` from itself or from a mapping with keys feats, boxes, gt_classes
    (and optionally n_gt, which must equal len(gt_classes), and image_id)."""
    if isinstance(r, RegionSet):
        rs = r
    else:
        rs = RegionSet(boxes=r["boxes"], gt_classes=r["gt_classes"], feats=r["feats"],
                       image_id=str(r.get("image_id", "")))
        if "n_gt" in r and int(r["n_gt"]) != len(rs.gt_classes):
            raise ValueError(f"n_gt ({r['n_gt']}) != len(gt_classes) ({len(rs.gt_classes)})")
    boxes = np.asarray(rs.boxes, dtype=np.float64).reshape(-1, 4)
    gtc = np.asarray(rs.gt_classes, dtype=np.int64).reshape(-1)
    if len(gtc) > len(boxes):
        raise ValueError(f"image {rs.image_id!r}: more ground-truth classes than boxes")
    return RegionSet(boxes=boxes, gt_classes=gtc, feats=rs.feats, image_id=rs.image_id)


def class_overlaps(boxes: np.ndarray, gt_classes: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) max IoU of every region with the ground-truth boxes (rows
    `0 .. len(gt_classes)-1` of `boxes`) of each class; 0 for classes absent from the image."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    gtc = np.asarray(gt_classes, dtype=np.int64)
    ov = np.zeros((len(boxes), n_classes))
    valid = np.nonzero(gtc >= 0)[0]
    if len(valid) and len(boxes):
        iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes[valid])).numpy()
        for j, g in enumerate(valid):
            c = gtc[g]
            ov[:, c] = np.maximum(ov[:, c], iou[:, j])
    return ov


def negative_mask(overlaps: np.ndarray, neg_iou: float) -> np.ndarray:
    """Which regions are negatives of each class: IoU < neg_iou with every instance, or
    IoU == 0 (touching no instance) when neg_iou is 0."""
    return overlaps < neg_iou if neg_iou > 0 else overlaps <= 0


# ----------------------------------------------------------------------------- scaling

def sample_regions(region_sets: Sequence[RegionSet | Mapping], seed: int = 0,
                   n_images: int = 200, per_image: int = 200) -> np.ndarray:
    """Features of a seeded random sample of regions, as `rcnn_feature_stats.m` drew it: up
    to `n_images` images picked at random, up to `per_image` regions picked at random from
    each. (M, D) float32; for large features prefer `sample_norms`, which keeps only norms."""
    return np.concatenate(list(_sample(region_sets, seed, n_images, per_image, lambda x: x)))


def sample_norms(region_sets: Sequence[RegionSet | Mapping], seed: int = 0,
                 n_images: int = 200, per_image: int = 200) -> np.ndarray:
    """L2 norms (M,) of the regions `sample_regions` would return (same seed, same regions)."""
    return np.concatenate(list(_sample(region_sets, seed, n_images, per_image, _row_norms)))


def _row_norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def _sample(region_sets: Sequence, seed: int, n_images: int, per_image: int,
            fn: Callable[[np.ndarray], np.ndarray]) -> Iterable[np.ndarray]:
    rng = np.random.default_rng(seed)
    sets = [as_region_set(r) for r in region_sets]
    picked = rng.permutation(len(sets))[:n_images]
    if len(picked) == 0:
        raise ValueError("no regions to sample")
    for i in picked:
        f = sets[i].load_feats()
        rows = rng.permutation(len(f))[:per_image]
        yield fn(f[np.sort(rows)])


def feature_scale(sample_feats: np.ndarray | torch.Tensor, target_norm: float = 20.0) -> float:
    """The factor that brings the mean L2 norm of `sample_feats` (M, D) to `target_norm`
    (R-CNN's `rcnn_scale_features`: feat * target_norm / mean_norm)."""
    f = sample_feats.detach().cpu().numpy() if isinstance(sample_feats, torch.Tensor) else np.asarray(sample_feats)
    return scale_from_norms(_row_norms(f.astype(np.float32, copy=False)), target_norm)


def scale_from_norms(norms: np.ndarray, target_norm: float = 20.0) -> float:
    """target_norm / mean(norms)."""
    mean_norm = float(np.mean(norms)) if len(norms) else 0.0
    if not mean_norm > 0:
        raise ValueError("features have zero mean norm")
    return float(target_norm) / mean_norm


# ----------------------------------------------------------------------------- scoring

def score(feats: np.ndarray | torch.Tensor, W: np.ndarray | torch.Tensor,
          b: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """(N, C) SVM scores `feats @ W.T + b` of (N, D) features for (C, D) weights; a torch
    tensor in gives a tensor out (on its device), NumPy in gives NumPy out."""
    if isinstance(feats, torch.Tensor):
        Wt = torch.as_tensor(W, dtype=feats.dtype, device=feats.device)
        bt = torch.as_tensor(b, dtype=feats.dtype, device=feats.device)
        return torch.addmm(bt, feats, Wt.T)
    f = np.asarray(feats)
    return (f @ np.asarray(W, dtype=f.dtype).T + np.asarray(b, dtype=f.dtype)).astype(f.dtype, copy=False)


# ----------------------------------------------------------------------------- solver

def svm_objective(X: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, C: float = 1e-3,
                  pos_weight: float = 2.0, bias: float = 10.0) -> dict[str, float]:
    """liblinear -s 3's primal objective of (w, b) on (X, y in {+1, -1}), split as R-CNN
    logged it: C * pos_weight * sum of positive hinge losses, C * sum of negative ones,
    0.5 |w|^2 + 0.5 (b / bias)^2."""
    z = np.asarray(X, np.float64) @ np.asarray(w, np.float64) + b
    return _objective(z, y, w, b, P.SVM(C=C, pos_weight=pos_weight, bias=bias))


def _objective(z: np.ndarray, y: np.ndarray, w: np.ndarray, b: float, p: P.SVM) -> dict[str, float]:
    z = np.asarray(z, np.float64)
    pos = np.asarray(y) > 0
    pl = p.C * p.pos_weight * float(np.maximum(0, 1 - z[pos]).sum())
    nl = p.C * float(np.maximum(0, 1 + z[~pos]).sum())
    w64 = np.asarray(w, np.float64)
    rl = 0.5 * float(w64 @ w64) + 0.5 * (b / p.bias) ** 2
    return {"pos_loss": pl, "neg_loss": nl, "reg_loss": rl, "total": pl + nl + rl}


def train_liblinear(X: np.ndarray, y: np.ndarray, C: float = 1e-3, pos_weight: float = 2.0,
                    bias: float = 10.0, seed: int = 0, tol: float = 0.1, max_iter: int = 10000,
                    impl: str = "auto") -> tuple[np.ndarray, float, int]:
    """liblinear -s 3 -c C -w1 pos_weight -B bias -e tol, as R-CNN's `update_model` ran it.

    `y` in {+1, -1}. Returns (w (D,) float64, b, iterations). `impl="public"` goes through
    `sklearn.svm.LinearSVC`, which first copies X to float64; `"auto"` calls the same
    scikit-learn routine one level down (`sklearn.svm._base._fit_liblinear`) with X as it
    is, float32 included, which liblinear reads directly: the same numbers (liblinear stores
    every value as a double either way; tests/test_svm.py checks they are identical) without
    the copy. It falls back to LinearSVC if that private routine is missing or changes.
    tol = 0.1 is liblinear's default eps for -s 3, which R-CNN kept. A run that hits
    `max_iter` warns (RuntimeWarning).
    """
    from sklearn.exceptions import ConvergenceWarning  # noqa: PLC0415

    y = np.where(np.asarray(y) > 0, 1, -1)
    if len(np.unique(y)) < 2:
        raise ValueError("liblinear needs both positives and negatives")
    X = np.ascontiguousarray(X) if np.asarray(X).dtype in (np.float32, np.float64) else np.ascontiguousarray(X, np.float64)
    cw = {1: float(pos_weight), -1: 1.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        out = None
        if impl == "auto":
            out = _fit_liblinear_private(X, y, C, bias, cw, max_iter, tol, seed)
        if out is None:
            from sklearn.svm import LinearSVC  # noqa: PLC0415

            clf = LinearSVC(loss="hinge", dual=True, C=C, class_weight=cw, intercept_scaling=bias,
                            tol=tol, max_iter=max_iter, random_state=seed)
            clf.fit(X, y)
            out = (clf.coef_[0], float(clf.intercept_[0]), int(np.max(clf.n_iter_)))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warnings.warn(f"liblinear did not converge in {max_iter} iterations", RuntimeWarning, stacklevel=2)
    w, b, it = out
    return np.asarray(w, np.float64), float(b), int(it)


def _fit_liblinear_private(X: np.ndarray, y: np.ndarray, C: float, bias: float, cw: dict,
                           max_iter: int, tol: float, seed: int) -> tuple[np.ndarray, float, int] | None:
    """LinearSVC.fit's own call into liblinear, minus its float64 copy; None if unavailable."""
    try:
        from sklearn.svm._base import _fit_liblinear  # noqa: PLC0415

        coef, intercept, n_iter = _fit_liblinear(
            X, y, C, True, bias, cw, "l2", True, 0, max_iter, tol, random_state=seed,
            multi_class="ovr", loss="hinge")
    except (ImportError, TypeError, ValueError):
        return None
    return np.asarray(coef)[0], float(np.asarray(intercept).reshape(-1)[0]), int(np.max(n_iter))


class _Cache:
    """One class's training cache: its positives on top, then its negatives, in one
    growing float32 buffer, so that liblinear gets a contiguous view without a copy."""

    def __init__(self, X_pos: np.ndarray, D: int) -> None:
        self.n_pos = len(X_pos)
        self.n_neg = 0
        self.buf = np.empty((self.n_pos + 1024, D), np.float32)
        self.buf[:self.n_pos] = X_pos
        self.n_added = 0

    def add(self, X: np.ndarray) -> None:
        n = self.n_pos + self.n_neg
        if n + len(X) > len(self.buf):
            new = np.empty((max(2 * len(self.buf), n + len(X)), self.buf.shape[1]), np.float32)
            new[:n] = self.buf[:n]
            self.buf = new
        self.buf[n:n + len(X)] = X
        self.n_neg += len(X)
        self.n_added += len(X)

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_pos + self.n_neg
        y = np.concatenate([np.ones(self.n_pos), -np.ones(self.n_neg)])
        return self.buf[:n], y

    def keep_negatives(self, keep: np.ndarray) -> None:
        """Drop the negatives where `keep` is False, keeping the order of the rest."""
        drop = np.nonzero(~keep)[0]
        if len(drop) == 0:
            return
        # shift the runs between dropped rows down, in order (each run moves to lower rows)
        dst = self.n_pos + drop[0]
        edges = np.append(drop, len(keep))
        for a, b in zip(edges[:-1] + 1, edges[1:]):
            if b > a:
                self.buf[dst:dst + b - a] = self.buf[self.n_pos + a:self.n_pos + b]
                dst += b - a
        self.n_neg = int(keep.sum())


# ----------------------------------------------------------------------------- training

def train_svms(region_sets: Sequence[RegionSet | Mapping[str, Any]], classes: Sequence[str] | int,
               p_svm: P.SVM | None = None, seed: int = 0, progress: bool = False,
               scale: float | None = None, tol: float = 0.1,
               max_iter: int = 10000) -> tuple[np.ndarray, np.ndarray, dict]:
    """Train one linear SVM per class with R-CNN's hard-negative mining (see the module doc).

    `region_sets`: the training images in order (`RegionSet`s or mappings, see
    `as_region_set`); `classes`: class names, or their number C (`gt_classes` index into
    them); `p_svm`: C, pos_weight, bias, neg_iou, feature_norm and the mining thresholds;
    `seed`: liblinear's seed and the feature-norm sample's; `scale`: the feature scale
    factor (None: `scale_from_norms(sample_norms(region_sets, seed), p_svm.feature_norm)`,
    which loads up to 200 images once more; pass it to reuse one scale across trainings);
    `tol`, `max_iter`: liblinear's eps and iteration cap.

    Returns `W` (C, D) float32 and `b` (C,) float32 for the *unscaled* features (the scale
    is folded into W: `score(feats, W, b)` = the SVM scores of the scaled features), and a
    history dict: `scale`; `n_pos` (C,); `retrains`, per class a list of records, one per
    training (`image` index, `n_pos`, `n_neg` in the cache, `n_evicted`, liblinear
    `iterations`, the objective parts `pos_loss`, `neg_loss`, `reg_loss`, `total`, and the
    support-vector counts `n_sv_pos` (score < 1) and `n_sv_neg` (score > -1)); `n_neg_final`
    (C,); `no_positives` (classes without a positive: W = 0, b = -1000 and a warning);
    `seconds` and `solver_seconds`.
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415 (a scikit-learn dependency)

    # The products here are small (one image's regions x C classes, one cache x one class);
    # a multi-threaded BLAS only adds synchronisation, which on a busy machine made them up
    # to 100x slower. liblinear itself is single-threaded.
    with threadpool_limits(limits=1, user_api="blas"):
        return _train_svms(region_sets, classes, p_svm, seed, progress, scale, tol, max_iter)


def _train_svms(region_sets: Sequence[RegionSet | Mapping[str, Any]], classes: Sequence[str] | int,
                p_svm: P.SVM | None, seed: int, progress: bool, scale: float | None, tol: float,
                max_iter: int) -> tuple[np.ndarray, np.ndarray, dict]:
    t0 = time.perf_counter()
    p = p_svm or P.SVM()
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
    nc = len(names)
    sets = [as_region_set(r) for r in region_sets]
    if not sets:
        raise ValueError("no training images")
    for rs in sets:
        if len(rs.gt_classes) and rs.gt_classes.max() >= nc:
            raise ValueError(f"image {rs.image_id!r}: class index {rs.gt_classes.max()} >= {nc} classes")
    if scale is None:
        scale = scale_from_norms(sample_norms(sets, seed=seed), p.feature_norm)
    scale = float(scale)

    # positives: the ground-truth boxes of each class over all images (one pass up front)
    pos: list[list[np.ndarray]] = [[] for _ in range(nc)]
    D = None
    for rs in _progress(sets, "SVM positives", progress):
        if not (rs.gt_classes >= 0).any():
            continue
        f = rs.load_feats()
        D = f.shape[1]
        for g in np.nonzero(rs.gt_classes >= 0)[0]:
            pos[rs.gt_classes[g]].append(f[g] * np.float32(scale))
    n_pos = np.array([len(v) for v in pos])
    caches: list[_Cache | None] = [None] * nc
    missing = [c for c in range(nc) if n_pos[c] == 0]

    W = None
    b = np.zeros(nc, np.float64)
    retrains: list[list[dict]] = [[] for _ in range(nc)]
    solver_s = 0.0
    last = len(sets) - 1
    for i, rs in enumerate(_progress(sets, "SVM hard negatives", progress)):
        f = rs.load_feats()
        if W is None:
            D = f.shape[1] if D is None else D
            W = np.zeros((nc, D), np.float64)
            for c in range(nc):
                if n_pos[c]:
                    caches[c] = _Cache(np.stack(pos[c]), D)
            del pos
        if f.shape[1] != D:
            raise ValueError(f"image {rs.image_id!r}: feature dimension {f.shape[1]} != {D}")
        f = f * np.float32(scale)
        cand = negative_mask(class_overlaps(rs.boxes, rs.gt_classes, nc), p.neg_iou)
        if i > 0 and len(f):
            cand &= (f @ W.T.astype(np.float32) + b.astype(np.float32)) > p.hard_thresh
        for c in range(nc):
            cache = caches[c]
            if cache is None:
                continue
            rows = np.nonzero(cand[:, c])[0]
            if len(rows):
                cache.add(f[rows])
            if not ((i == 0 or cache.n_added > p.retrain_every or i == last) and cache.n_neg > 0):
                continue
            X, y = cache.data()
            ts = time.perf_counter()
            w, bc, iters = train_liblinear(X, y, p.C, p.pos_weight, p.bias, seed=seed, tol=tol,
                                           max_iter=max_iter)
            solver_s += time.perf_counter() - ts
            W[c], b[c] = w, bc
            cache.n_added = 0
            z = X @ w.astype(np.float32) + np.float32(bc)
            obj = _objective(z, y, w, bc, p)
            zn = z[cache.n_pos:]
            keep = zn >= p.evict_thresh
            retrains[c].append({"image": i, "n_pos": cache.n_pos, "n_neg": cache.n_neg,
                                "n_evicted": int((~keep).sum()), "iterations": iters, **obj,
                                "n_sv_pos": int((z[:cache.n_pos] < 1).sum()),
                                "n_sv_neg": int((zn > -1).sum())})
            cache.keep_negatives(keep)
    if W is None:
        raise ValueError("no features")
    for c in missing:
        warnings.warn(f"class {names[c]!r} has no positive example; its SVM is W = 0, b = -1000",
                      RuntimeWarning, stacklevel=2)
        W[c] = 0.0
        b[c] = -1000.0
    hist = {"scale": scale, "n_pos": n_pos, "retrains": retrains,
            "n_neg_final": np.array([0 if k is None else k.n_neg for k in caches]),
            "no_positives": [names[c] for c in missing],
            "seconds": time.perf_counter() - t0, "solver_seconds": solver_s}
    return (W * scale).astype(np.float32), b.astype(np.float32), hist
