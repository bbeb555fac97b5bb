"""R-CNN box regression: targets by hand, the target/decode round trip, the original's
ridge-with-whitening solution, example selection, and recovery of exactly linear targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lsda_core.detection import bbox_reg as R


def test_targets_by_hand():
    p = np.array([[0, 0, 10, 20]], float)  # w 10, h 20, centre (5, 10)
    g = np.array([[2, -4, 22, 36]], float)  # w 20, h 40, centre (12, 16)
    t = R.bbox_targets(p, g)
    assert t[0] == pytest.approx([7 / 10, 6 / 20, np.log(2), np.log(2)])
    assert R.bbox_targets(p, p)[0] == pytest.approx([0, 0, 0, 0])


def test_round_trip_is_exact():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (50, 2))
    p = np.concatenate([xy, xy + rng.uniform(1, 60, (50, 2))], 1)
    xy = rng.uniform(0, 100, (50, 2))
    g = np.concatenate([xy, xy + rng.uniform(1, 60, (50, 2))], 1)
    assert R.decode(p, R.bbox_targets(p, g)) == pytest.approx(g, abs=1e-9)
    t = rng.normal(0, 0.3, (50, 4))
    assert R.bbox_targets(p, R.decode(p, t)) == pytest.approx(t, abs=1e-9)


def test_assign_gt_picks_the_best_box_of_any_class():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    boxes = np.array([[0, 0, 10, 10], [19, 0, 30, 10], [40, 40, 50, 50], [0, 0, 10, 5]], float)
    ab, ac, ao = R.assign_gt(boxes, gt, [3, 7])
    assert ac.tolist() == [3, 7, 3, 3]  # the far box: all IoU 0, first box (MATLAB's max)
    assert ao == pytest.approx([1, 10 / 11, 0, 0.5])
    assert ab[1].tolist() == [20, 0, 30, 10]
    ab, ac, ao = R.assign_gt(boxes, np.zeros((0, 4)), [])
    assert (ac == -1).all() and (ao == 0).all()


def _matlab_reference(X, Y, lam):
    """rcnn_train_bbox_regressor.m's per-class solve, line by line (features already scaled)."""
    Xi = np.concatenate([X, np.ones((len(X), 1))], 1)
    mu = Y.mean(0)
    Yi = Y - mu
    S = Yi.T @ Yi / len(Yi)
    D, V = np.linalg.eig(S)
    D, V = D.real, V.real
    T = V @ np.diag(1 / np.sqrt(D + 0.001)) @ V.T
    T_inv = V @ np.diag(np.sqrt(D + 0.001)) @ V.T
    Yi = Yi @ T
    R_ = np.linalg.cholesky(Xi.T @ Xi + lam * np.eye(Xi.shape[1])).T  # upper, R'R = A'A + lam I
    Beta = np.linalg.solve(R_, np.linalg.solve(R_.T, Xi.T @ Yi))
    return lambda F: (F @ Beta[:-1] + Beta[-1]) @ T_inv + mu


@pytest.mark.parametrize("n,d", [(200, 30), (40, 120)])  # normal equations / kernel form
def test_matches_the_original_solver(n, d):
    rng = np.random.default_rng(n)
    X = np.abs(rng.normal(size=(n, d)))
    scale = 20 / np.linalg.norm(X, axis=1).mean()
    p = np.tile([10.0, 10.0, 50.0, 60.0], (n, 1))
    t_true = rng.normal(0, 0.1, (n, 4)) + X[:, :4] * 0.05
    g = R.decode(p, t_true)
    m = R.train_bbox_reg(X, p, g, np.zeros(n, int), np.full(n, 0.7), ["a"], lam=1000, scale=scale)
    ref = _matlab_reference(X * scale, t_true, 1000)
    Xt = np.abs(rng.normal(size=(7, d)))
    assert R.predict_targets(Xt, m, 0) == pytest.approx(ref(Xt * scale), abs=1e-9)


def test_exactly_linear_targets_are_recovered():
    rng = np.random.default_rng(1)
    n, d = 300, 12
    X = rng.normal(size=(n, d))
    A = rng.normal(0, 0.05, (d, 4))
    c = np.array([0.02, -0.01, 0.1, -0.05])
    xy = rng.uniform(0, 100, (n, 2))
    p = np.concatenate([xy, xy + rng.uniform(20, 60, (n, 2))], 1)
    g = R.decode(p, X @ A + c)
    m = R.train_bbox_reg(X, p, g, np.zeros(n, int), np.full(n, 0.9), 1, lam=1e-9)
    assert m.W[0] == pytest.approx(A, abs=1e-6) and m.b[0] == pytest.approx(c, abs=1e-6)
    Xt = rng.normal(size=(20, d))
    pt = p[:20]
    assert R.apply_bbox_reg(pt, Xt, m, 0) == pytest.approx(R.decode(pt, Xt @ A + c), abs=1e-6)
    # torch in, torch out; and the training boxes land on their ground truth
    out = R.apply_bbox_reg(torch.from_numpy(p), torch.from_numpy(X), m, 0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert out.numpy() == pytest.approx(g, abs=1e-6)


def test_huge_lambda_predicts_the_class_mean():
    # with every weight (the bias too) shrunk to 0, the prediction is the whitening mean
    rng = np.random.default_rng(2)
    n = 50
    X = rng.normal(size=(n, 5))
    p = np.tile([0.0, 0.0, 40.0, 40.0], (n, 1))
    t = rng.normal(0, 0.2, (n, 4))
    m = R.train_bbox_reg(X, p, R.decode(p, t), np.zeros(n, int), np.ones(n), 1, lam=1e12)
    assert R.predict_targets(X[:3], m, 0) == pytest.approx(np.tile(t.mean(0), (3, 1)), abs=1e-6)


def test_example_selection_and_untrained_classes():
    rng = np.random.default_rng(3)
    n = 60
    X = rng.normal(size=(n, 4))
    p = np.tile([0.0, 0.0, 40.0, 40.0], (n, 1))
    g = R.decode(p, rng.normal(0, 0.1, (n, 4)))
    cls = np.array([0] * 30 + [1] * 30)
    ious = np.concatenate([np.full(10, 0.6), np.full(20, 0.61), np.full(30, 0.95)])
    m = R.train_bbox_reg(X, p, g, cls, ious, ["a", "b", "c"])
    assert m.n_examples.tolist() == [20, 30, 0]  # IoU 0.6 itself is out (> 0.6)
    assert m.trained.tolist() == [True, True, False]
    # an untrained class leaves boxes as they are
    assert R.apply_bbox_reg(p[:5], X[:5], m, 2) == pytest.approx(p[:5])
    # per-box classes
    both = R.apply_bbox_reg(p[:4], X[:4], m, np.array([0, 1, 0, 1]))
    assert both[0] == pytest.approx(R.apply_bbox_reg(p[:1], X[:1], m, 0)[0])
    assert both[1] == pytest.approx(R.apply_bbox_reg(p[1:2], X[1:2], m, 1)[0])
    clipped = R.apply_bbox_reg(p[:5] + [-10, -10, 10, 10], X[:5] * 0, m, 2, image_size=(45, 35))
    assert clipped[:, 0].min() >= 0 and clipped[:, 2].max() <= 45 and clipped[:, 3].max() <= 35


def test_scale_is_folded_into_W():
    rng = np.random.default_rng(4)
    n = 80
    X = np.abs(rng.normal(size=(n, 6)))
    p = np.tile([0.0, 0.0, 40.0, 40.0], (n, 1))
    g = R.decode(p, rng.normal(0, 0.1, (n, 4)))
    a = R.train_bbox_reg(X, p, g, np.zeros(n, int), np.ones(n), 1, scale=3.0)
    b = R.train_bbox_reg(X * 3.0, p, g, np.zeros(n, int), np.ones(n), 1, scale=1.0)
    assert R.predict_targets(X, a, 0) == pytest.approx(R.predict_targets(X * 3.0, b, 0), abs=1e-10)
