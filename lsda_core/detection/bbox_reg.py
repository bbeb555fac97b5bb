"""R-CNN's bounding-box regression (`bbox_regression/rcnn_train_bbox_regressor.m`,
`rcnn_predict_bbox_regressor.m`), in the study's box convention.

Targets of a proposal P for its ground-truth box G, with widths `x2 - x1` and centres
`x1 + w / 2` (0-based pixel edges; the MATLAB code computes the same numbers on 1-based
inclusive boxes, since it also uses `x2 - x1` there, plus a machine-eps against w = 0):

    t = ((Gx - Px) / Pw, (Gy - Py) / Ph, log(Gw / Pw), log(Gh / Ph)).

Training, per class, exactly as the original:
- examples: every region (ground-truth boxes included, whose targets are 0) assigned to
  the ground-truth box it overlaps most (any class; `assign_gt`), kept when that IoU is
  > `min_iou` (0.6) and the box is of the class;
- features: pool5, scaled so that their mean norm is 20 (the caller passes `scale`, the
  same kind of factor as the SVMs', measured on pool5), with a constant feature 1 appended;
- targets centred and whitened: mu = mean, S = covariance, T = V diag(1/sqrt(d + 0.001)) V';
  the regression fits (t - mu) T;
- ridge regression with lambda = 1000 on all weights, the bias weight included (the MATLAB
  code solves (A'A + lambda I) x = A'y by Cholesky with the ones column inside A), one
  target column at a time (equivalently all four at once);
- prediction: t = (x beta + beta_0) T^-1 + mu, then the box is decoded and (by the caller,
  as `rcnn_test_bbox_regressor.m` did) clipped to the image.

The whitening and the mean are folded into the returned weights, so each class's model is
a plain affine map `t = feats @ W[c] + b[c]` of the unscaled features. The solve uses the
(D+1) x (D+1) normal equations when a class has more examples than features, else the
equivalent n x n "kernel" form beta = A'(AA' + lambda I)^-1 y (same solution, far cheaper
for pool5 with a few hundred examples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from lsda_core.core.boxes import box_iou


def _np(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def bbox_targets(proposals, gts) -> np.ndarray:
    """(N, 4) regression targets of proposals (N, 4) for their ground-truth boxes (N, 4)."""
    p = _np(proposals).astype(np.float64).reshape(-1, 4)
    g = _np(gts).astype(np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    gx, gy = g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)], axis=1)


def decode(boxes, targets) -> np.ndarray:
    """Apply targets (N, 4) to boxes (N, 4): the inverse of `bbox_targets`."""
    p = _np(boxes).astype(np.float64).reshape(-1, 4)
    t = _np(targets).astype(np.float64).reshape(-1, 4)
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    px, py = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph
    cx, cy = t[:, 0] * pw + px, t[:, 1] * ph + py
    w, h = np.exp(t[:, 2]) * pw, np.exp(t[:, 3]) * ph
    return np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=1)


def assign_gt(boxes, gt_boxes, gt_classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every region (N, 4) of an image, the ground-truth box (of any class) it overlaps
    most: (assigned boxes (N, 4), their classes (N,), the IoU (N,)). With no ground truth:
    zero boxes, class -1, IoU 0. Ties go to the first box (MATLAB's max)."""
    b = _np(boxes).astype(np.float64).reshape(-1, 4)
    g = _np(gt_boxes).astype(np.float64).reshape(-1, 4)
    gc = _np(gt_classes).astype(np.int64).reshape(-1)
    if len(g) == 0 or len(b) == 0:
        return np.zeros((len(b), 4)), -np.ones(len(b), np.int64), np.zeros(len(b))
    iou = box_iou(torch.from_numpy(b), torch.from_numpy(g)).numpy()
    j = iou.argmax(axis=1)
    return g[j], gc[j], iou[np.arange(len(b)), j]


@dataclass
class BBoxRegModel:
    """Per-class affine maps from unscaled features to targets: t = feats @ W[c] + b[c].
    `trained[c]` is False for classes without examples (their W, b are 0: boxes unchanged).
    `mu`, `T_inv`: the target whitening (already folded into W, b; kept for inspection)."""

    W: np.ndarray  # (C, D, 4) float64
    b: np.ndarray  # (C, 4) float64
    trained: np.ndarray  # (C,) bool
    n_examples: np.ndarray  # (C,) int
    classes: list[str] = field(default_factory=list)
    scale: float = 1.0
    lam: float = 1000.0
    min_iou: float = 0.6
    mu: np.ndarray | None = None  # (C, 4)
    T_inv: np.ndarray | None = None  # (C, 4, 4)


def ridge(A: np.ndarray, Y: np.ndarray, lam: float) -> np.ndarray:
    """argmin_x |A x - Y|^2 + lam |x|^2 for every column of Y (A: (n, d), float64), through
    the smaller of the d x d normal equations and the n x n kernel form."""
    n, d = A.shape
    if lam <= 0 and n < d:
        raise ValueError("lam must be > 0 when there are fewer examples than features")
    if n >= d:
        G = A.T @ A
        G[np.diag_indices(d)] += lam
        return np.linalg.solve(G, A.T @ Y)
    K = A @ A.T
    K[np.diag_indices(n)] += lam
    return A.T @ np.linalg.solve(K, Y)


def train_bbox_reg(feats, proposals, gt_boxes, gt_classes, ious, classes: Sequence[str] | int,
                   lam: float = 1000.0, min_iou: float = 0.6, scale: float = 1.0,
                   whiten: bool = True) -> BBoxRegModel:
    """Fit one ridge regressor per class (see the module doc).

    Flat arrays over candidate examples (regions of all training images, ground-truth boxes
    included), each region already assigned to its best ground-truth box (`assign_gt`):
    `feats` (M, D) features (pool5 in R-CNN), `proposals` (M, 4) the regions' boxes,
    `gt_boxes` (M, 4) the assigned boxes, `gt_classes` (M,) their classes (indices into
    `classes`), `ious` (M,) the IoU with them. Examples with IoU > `min_iou` are used.
    `scale`: the feature scale (mean norm 20 in R-CNN), folded into the returned W.
    `whiten=False` drops the target centring / whitening (not R-CNN's; for comparison).
    """
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else list(classes)
    nc = len(names)
    X = _np(feats)
    P = _np(proposals).astype(np.float64).reshape(-1, 4)
    G = _np(gt_boxes).astype(np.float64).reshape(-1, 4)
    C = _np(gt_classes).astype(np.int64).reshape(-1)
    O = _np(ious).astype(np.float64).reshape(-1)
    if not (len(X) == len(P) == len(G) == len(C) == len(O)):
        raise ValueError("feats, proposals, gt_boxes, gt_classes and ious must have the same length")
    D = X.shape[1]
    W = np.zeros((nc, D, 4), np.float64)
    b = np.zeros((nc, 4), np.float64)
    mus = np.zeros((nc, 4))
    T_invs = np.tile(np.eye(4), (nc, 1, 1))
    trained = np.zeros(nc, bool)
    counts = np.zeros(nc, np.int64)
    sel_all = O > min_iou
    for c in range(nc):
        idx = np.nonzero(sel_all & (C == c))[0]
        counts[c] = len(idx)
        if len(idx) == 0:
            continue
        A = np.concatenate([X[idx].astype(np.float64) * scale, np.ones((len(idx), 1))], axis=1)
        Y = bbox_targets(P[idx], G[idx])
        if whiten:
            mu = Y.mean(axis=0)
            Yc = Y - mu
            S = Yc.T @ Yc / len(idx)
            d, V = np.linalg.eigh(S)
            T = V @ np.diag(1 / np.sqrt(d + 0.001)) @ V.T
            T_inv = V @ np.diag(np.sqrt(d + 0.001)) @ V.T
            beta = ridge(A, Yc @ T, lam)  # (D + 1, 4)
            beta = beta @ T_inv
            b[c] = beta[-1] + mu
            mus[c], T_invs[c] = mu, T_inv
        else:
            beta = ridge(A, Y, lam)
            b[c] = beta[-1]
        W[c] = beta[:-1] * scale
        trained[c] = True
    return BBoxRegModel(W=W, b=b, trained=trained,
                        n_examples=counts, classes=names, scale=float(scale), lam=float(lam),
                        min_iou=float(min_iou), mu=mus, T_inv=T_invs)


def predict_targets(feats, model: BBoxRegModel, cls) -> np.ndarray:
    """(N, 4) predicted targets of regions (N, D) for class `cls` (an int, or (N,) ints)."""
    X = _np(feats).astype(np.float64)
    c = np.asarray(cls)
    if c.ndim == 0:
        return X @ model.W[int(c)] + model.b[int(c)]
    return np.einsum("nd,ndk->nk", X, model.W[c]) + model.b[c]


def apply_bbox_reg(boxes, feats, model: BBoxRegModel, cls, image_size: tuple[float, float] | None = None):
    """Regressed boxes (N, 4): `boxes` moved by the class-`cls` regressor's prediction from
    their features (unscaled, as given to training). `image_size=(width, height)` clips to
    the image (as `rcnn_test_bbox_regressor.m` did). Returns the input's type (a torch
    tensor on its device and dtype, or a float64 NumPy array)."""
    out = decode(boxes, predict_targets(feats, model, cls))
    if image_size is not None:
        out[:, 0::2] = out[:, 0::2].clip(0, image_size[0])
        out[:, 1::2] = out[:, 1::2].clip(0, image_size[1])
    if isinstance(boxes, torch.Tensor):
        return torch.as_tensor(out, dtype=boxes.dtype if boxes.is_floating_point() else torch.float32,
                               device=boxes.device)
    return out
