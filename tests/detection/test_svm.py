"""R-CNN's SVM training: negative selection by IoU, hard-negative mining bookkeeping (with a
stub solver whose scores are known by hand), the liblinear call, scaling and determinism."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lsda_core.core import params as P
from lsda_core.detection import svm


# ------------------------------------------------------------------ negatives by IoU

def test_negative_selection_bands():
    # class 0 instance [0, 0, 10, 10] (area 100), class 1 instance [20, 0, 30, 10]
    boxes = np.array([
        [0, 0, 10, 10],      # 0 gt class 0: IoU 1 with itself -> unused for class 0
        [20, 0, 30, 10],     # 1 gt class 1: IoU 0 with class 0 -> a class-0 negative
        [0, 0, 10, 3],       # 2 IoU 30/100 = 0.3 exactly -> unused (band [0.3, 1))
        [0, 0, 10, 2.9],     # 3 IoU 0.29 -> negative
        [0, 0, 10, 5],       # 4 IoU 0.5 -> unused
        [9, 0, 19, 10],      # 5 IoU 10/190 with class 0 -> negative; 0 with class 1
        [10, 0, 20, 10],     # 6 shares an edge with both: IoU 0 -> negative, also at neg_iou 0
        [40, 40, 50, 50],    # 7 far away: IoU 0
        [0, 0, 10, 9],       # 8 IoU 0.9 -> unused
    ], dtype=np.float64)
    gtc = np.array([0, 1])
    ov = svm.class_overlaps(boxes, gtc, 3)
    assert ov[:, 0] == pytest.approx([1, 0, 0.3, 0.29, 0.5, 10 / 190, 0, 0, 0.9])
    assert ov[:, 1] == pytest.approx([0, 1, 0, 0, 0, 0, 0, 0, 0])
    assert (ov[:, 2] == 0).all()  # a class absent from the image
    neg = svm.negative_mask(ov, 0.3)
    assert np.nonzero(neg[:, 0])[0].tolist() == [1, 3, 5, 6, 7]
    assert np.nonzero(neg[:, 1])[0].tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    assert neg[:, 2].all()
    # neg_iou = 0: the paper's grid value means "touching no instance" (IoU == 0)
    neg0 = svm.negative_mask(ov, 0.0)
    assert np.nonzero(neg0[:, 0])[0].tolist() == [1, 6, 7]
    # neg_iou = 0.5: 0.3 and 0.29 join, 0.5 itself stays out
    assert np.nonzero(svm.negative_mask(ov, 0.5)[:, 0])[0].tolist() == [1, 2, 3, 5, 6, 7]


def test_unlabelled_gt_rows_are_plain_regions():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 9]], dtype=np.float64)
    ov = svm.class_overlaps(boxes, np.array([-1, 0]), 1)
    assert ov[:, 0] == pytest.approx([1, 1, 0.9])
    ov = svm.class_overlaps(boxes, np.array([-1, -1]), 1)
    assert (ov == 0).all()


# ------------------------------------------------------------------ hard-negative mining

def _img(pos_feats, neg_feats, unused_feats=()):
    """One image of class 0: gt box(es) first, then negatives (far away, IoU 0), then
    regions overlapping the first gt box with IoU 0.5 (unused). Features are 2-D."""
    n_gt = len(pos_feats)
    boxes = [[0, 0, 10, 10]] * n_gt + [[50, 50, 60, 60]] * len(neg_feats) + [[0, 0, 10, 5]] * len(unused_feats)
    feats = np.array(list(pos_feats) + list(neg_feats) + list(unused_feats), dtype=np.float32).reshape(-1, 2)
    return svm.RegionSet(boxes=np.array(boxes, float), gt_classes=np.zeros(n_gt, int), feats=feats)


class StubSolver:
    """Stands in for liblinear: records each training set and returns fixed models."""

    def __init__(self, models):
        self.models = list(models)
        self.calls = []

    def __call__(self, X, y, C, pos_weight, bias, seed=0, tol=0.1, max_iter=1000):
        self.calls.append((np.array(X), np.array(y)))
        w, b = self.models[min(len(self.calls), len(self.models)) - 1]
        return np.array(w, float), float(b), 1


def test_hard_negative_mining_adds_and_evicts_as_specified(monkeypatch):
    # the stub model scores a region by its first feature: z = x0
    stub = StubSolver([((1.0, 0.0), 0.0)])
    monkeypatch.setattr(svm, "train_liblinear", stub)
    images = [
        # image 0: all negatives join, whatever their score; then -3 (< -1.2) is evicted
        _img([(5, 0)], [(-3, 0), (-1.1, 0), (-0.5, 0)]),
        # image 1: -2 and -1.001 are not hard (not > -1.0001); -1.0 and 0.5 are; the
        # region with IoU 0.5 scores 9 but is unused, and so is the gt box. 2 added: not > 2,
        # so no retraining
        _img([(6, 1)], [(-2, 0), (-1.001, 0), (-1.0, 0), (0.5, 0)], unused_feats=[(9, 0)]),
        # image 2: 0.7 added -> 3 added since the last training > 2: retrain
        _img([], [(0.7, 0), (-1.5, 0)]),
        # image 3 (last): 0.2 added, and the last image always retrains
        _img([], [(0.2, 0), (-4, 0)]),
    ]
    p = P.SVM(retrain_every=2)
    W, b, hist = svm.train_svms(images, ["a"], p, scale=1.0)
    negs = [sorted(X[y < 0, 0].tolist()) for X, y in stub.calls]
    poss = [sorted(X[y > 0, 0].tolist()) for X, y in stub.calls]
    assert poss == [[5, 6]] * 3  # all positives of all images from the first training on
    assert negs[0] == pytest.approx([-3, -1.1, -0.5])
    assert negs[1] == pytest.approx([-1.1, -1.0, -0.5, 0.5, 0.7])
    assert negs[2] == pytest.approx([-1.1, -1.0, -0.5, 0.2, 0.5, 0.7])
    rec = hist["retrains"][0]
    assert [r["image"] for r in rec] == [0, 2, 3]
    assert [r["n_evicted"] for r in rec] == [1, 0, 0]
    assert [r["n_neg"] for r in rec] == [3, 5, 6]
    assert hist["n_neg_final"].tolist() == [6]
    assert W[0].tolist() == [1, 0] and b[0] == 0


def test_mining_uses_the_latest_model(monkeypatch):
    # after image 0 the model scores by x0; after the retraining at image 1 by -x0
    stub = StubSolver([((1.0, 0.0), 0.0), ((-1.0, 0.0), 0.0)])
    monkeypatch.setattr(svm, "train_liblinear", stub)
    images = [
        _img([(5, 0)], [(-0.5, 0)]),
        _img([], [(0.1, 0), (0.2, 0), (0.3, 0), (-3, 0)]),  # 3 hard under x0 -> retrain
        _img([], [(2, 0), (-2, 0)]),  # under -x0 only -2 is hard
        _img([], []),  # last: retrain
    ]
    svm.train_svms(images, 1, P.SVM(retrain_every=2), scale=1.0)
    negs = [sorted(X[y < 0, 0].tolist()) for X, y in stub.calls]
    assert negs[1] == pytest.approx([-0.5, 0.1, 0.2, 0.3])
    # image 2 is mined with the second model (-x0): the region at x0 = -2 scores 2 (hard),
    # the one at x0 = 2 scores -2 (not); nothing is evicted (all cached scores > -1.2)
    assert negs[2] == pytest.approx([-2, -0.5, 0.1, 0.2, 0.3])


def test_eviction_threshold(monkeypatch):
    stub = StubSolver([((1.0, 0.0), 0.0)])
    monkeypatch.setattr(svm, "train_liblinear", stub)
    images = [_img([(5, 0)], [(-1.19, 0), (-1.21, 0), (-1.0, 0)]), _img([], [])]
    svm.train_svms(images, 1, P.SVM(), scale=1.0)
    assert sorted(stub.calls[1][0][stub.calls[1][1] < 0, 0].tolist()) == pytest.approx([-1.19, -1.0])


def test_feature_scale_is_applied_and_folded_into_W(monkeypatch):
    stub = StubSolver([((1.0, 0.0), 0.5)])
    monkeypatch.setattr(svm, "train_liblinear", stub)
    images = [_img([(5, 0)], [(-1, 0)]), _img([(3, 0)], [])]
    W, b, hist = svm.train_svms(images, 1, P.SVM(), scale=2.0)
    X, y = stub.calls[0]
    assert sorted(X[:, 0].tolist()) == [-2, 6, 10]  # the solver saw scaled features
    assert W[0].tolist() == [2, 0] and b[0] == 0.5  # raw @ W.T + b = scaled scores
    assert svm.score(np.array([[1.0, 7.0]], np.float32), W, b)[0, 0] == pytest.approx(2.5)


# ------------------------------------------------------------------ liblinear

def _blobs(n_pos=20, n_neg=80, seed=0):
    rng = np.random.default_rng(seed)
    pos = rng.normal([2.0, 1.0], 0.5, (n_pos, 2))
    neg = rng.normal([-2.0, 1.0], 0.5, (n_neg, 2))
    return pos.astype(np.float32), neg.astype(np.float32)


def test_liblinear_paths_agree_and_match_linearsvc():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(1)
    X = np.abs(rng.normal(size=(300, 40))).astype(np.float32)
    y = np.where(X[:, 0] + 0.3 * rng.normal(size=300) > 1.0, 1, -1)
    X *= 20 / np.linalg.norm(X, axis=1).mean()
    w1, b1, _ = svm.train_liblinear(X, y, 1e-3, 2.0, 10.0, seed=3, impl="auto")
    w2, b2, _ = svm.train_liblinear(X, y, 1e-3, 2.0, 10.0, seed=3, impl="public")
    assert np.array_equal(w1, w2) and b1 == b2
    ref = LinearSVC(loss="hinge", dual=True, C=1e-3, class_weight={1: 2, -1: 1}, intercept_scaling=10,
                    tol=0.1, max_iter=10000, random_state=3).fit(X.astype(np.float64), y)
    assert np.array_equal(w1, ref.coef_[0]) and b1 == pytest.approx(ref.intercept_[0], abs=0)
    # near the optimum: a 1000x tighter run improves the objective by little
    w3, b3, _ = svm.train_liblinear(X, y, 1e-3, 2.0, 10.0, seed=3, tol=1e-4)
    o1 = svm.svm_objective(X, y, w1, b1)["total"]
    o3 = svm.svm_objective(X, y, w3, b3)["total"]
    assert o3 <= o1 + 1e-9 and o1 - o3 < 0.02 * o3


def test_objective_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([1, -1])
    o = svm.svm_objective(X, y, np.array([0.5, 0.5]), 1.0, C=0.1, pos_weight=2.0, bias=10.0)
    # z = [1.5, 1.5]; pos hinge 0; neg hinge 1 + 1.5 = 2.5
    assert o["pos_loss"] == 0 and o["neg_loss"] == pytest.approx(0.25)
    assert o["reg_loss"] == pytest.approx(0.25 + 0.5 * 0.01)


def test_separable_toy_is_classified_correctly():
    pos, neg = _blobs()
    # 10 images with 2 positives (gt) and 8 negatives (far-away proposals) each
    images = [_img(pos[2 * k:2 * k + 2], neg[8 * k:8 * k + 8]) for k in range(10)]
    W, b, hist = svm.train_svms(images, ["a"], P.SVM(), seed=0)
    assert hist["scale"] == pytest.approx(20 / np.linalg.norm(np.concatenate([pos, neg]), axis=1).mean(), rel=1e-5)
    s_pos = svm.score(pos, W, b)[:, 0]
    s_neg = svm.score(neg, W, b)[:, 0]
    assert (s_pos > 0).all() and (s_neg < 0).all()
    tp, tn = _blobs(seed=7)
    assert (svm.score(tp, W, b)[:, 0] > 0).all() and (svm.score(tn, W, b)[:, 0] < 0).all()
    assert W.dtype == np.float32 and W.shape == (1, 2) and b.shape == (1,)


def test_training_is_deterministic_and_lazy_loading_matches():
    pos, neg = _blobs(40, 400)
    calls = []

    def lazy(i, f):
        def load():
            calls.append(i)
            return f
        return load

    images, lazy_images = [], []
    for k in range(20):
        r = _img(pos[2 * k:2 * k + 2], neg[20 * k:20 * k + 20])
        images.append(r)
        lazy_images.append(svm.RegionSet(r.boxes, r.gt_classes, lazy(k, r.feats), image_id=f"im{k}"))
    W1, b1, h1 = svm.train_svms(images, 1, P.SVM(retrain_every=30), seed=0)
    W2, b2, h2 = svm.train_svms(images, 1, P.SVM(retrain_every=30), seed=0)
    W3, b3, h3 = svm.train_svms(lazy_images, 1, P.SVM(retrain_every=30), seed=0, progress=False)
    assert np.array_equal(W1, W2) and np.array_equal(b1, b2)
    assert np.array_equal(W1, W3) and np.array_equal(b1, b3)
    assert len(h1["retrains"][0]) >= 2
    assert sorted(set(calls)) == list(range(20))  # each image loaded (scale, positives, mining)


def test_dict_input_and_several_classes():
    pos, neg = _blobs()
    imgs = []
    for k in range(5):
        # class 0 at [0,0,10,10], class 1 at [20,0,30,10]; features: class 0 -> pos blob,
        # class 1 -> mirrored blob, negatives in between
        f = np.concatenate([pos[k:k + 1], -pos[k:k + 1] * [1, -1], neg[4 * k:4 * k + 4] * [0, 1]])
        boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]] + [[50, 50, 60, 60]] * 4, float)
        imgs.append({"feats": f.astype(np.float32), "boxes": boxes, "gt_classes": np.array([0, 1]), "n_gt": 2})
    W, b, hist = svm.train_svms(imgs, ["a", "b"], P.SVM(), seed=0)
    assert hist["n_pos"].tolist() == [5, 5]
    s = svm.score(np.concatenate([pos[:5], -pos[:5] * [1, -1]]).astype(np.float32), W, b)
    assert (s[:5, 0] > s[:5, 1]).all() and (s[5:, 1] > s[5:, 0]).all()
    with pytest.raises(ValueError, match="n_gt"):
        svm.as_region_set({**imgs[0], "n_gt": 3})


def test_class_without_positives_warns():
    pos, neg = _blobs()
    images = [_img(pos[:2], neg[:8]), _img(pos[2:4], neg[8:16])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        W, b, hist = svm.train_svms(images, ["a", "never"], P.SVM(), seed=0)
    assert any("never" in str(w.message) for w in caught)
    assert hist["no_positives"] == ["never"] and (W[1] == 0).all() and b[1] == -1000


# ------------------------------------------------------------------ scaling and scoring

def test_feature_scale_by_hand():
    assert svm.feature_scale(np.array([[3.0, 4.0], [0.0, 5.0]]), 20) == pytest.approx(4.0)
    assert svm.feature_scale(torch.tensor([[3.0, 4.0], [6.0, 8.0]]), 15) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        svm.feature_scale(np.zeros((3, 2)))


def test_sample_regions_is_seeded_and_norms_agree():
    rng = np.random.default_rng(0)
    sets = [svm.RegionSet(np.zeros((30, 4)), np.zeros(0, int), rng.normal(size=(30, 5)).astype(np.float32))
            for _ in range(12)]
    a = svm.sample_regions(sets, seed=4, n_images=5, per_image=7)
    assert a.shape == (35, 5)
    assert np.array_equal(a, svm.sample_regions(sets, seed=4, n_images=5, per_image=7))
    assert not np.array_equal(a, svm.sample_regions(sets, seed=5, n_images=5, per_image=7))
    n = svm.sample_norms(sets, seed=4, n_images=5, per_image=7)
    assert n == pytest.approx(np.linalg.norm(a, axis=1), rel=1e-6)
    assert len(svm.sample_regions(sets, seed=0)) == 12 * 30  # fewer than 200 of each: all


def test_score_numpy_and_torch():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(7, 4)).astype(np.float32)
    W = rng.normal(size=(3, 4)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    ref = f.astype(np.float64) @ W.T.astype(np.float64) + b
    s = svm.score(f, W, b)
    assert isinstance(s, np.ndarray) and s.shape == (7, 3) and s == pytest.approx(ref, abs=1e-5)
    st = svm.score(torch.from_numpy(f), W, b)
    assert isinstance(st, torch.Tensor) and st.numpy() == pytest.approx(ref, abs=1e-5)


def test_cache_eviction_keeps_order():
    rng = np.random.default_rng(0)
    c = svm._Cache(np.ones((2, 3), np.float32), 3)
    negs = rng.normal(size=(3000, 3)).astype(np.float32)  # beyond the first capacity: growth
    c.add(negs[:1000])
    c.add(negs[1000:])
    keep = rng.random(3000) < 0.4
    c.keep_negatives(keep)
    X, y = c.data()
    assert np.array_equal(X[2:], negs[keep]) and np.array_equal(X[:2], np.ones((2, 3)))
    assert y.tolist() == [1, 1] + [-1] * int(keep.sum())


def test_neg_iou_zero_in_training(monkeypatch):
    stub = StubSolver([((1.0, 0.0), 0.0)])
    monkeypatch.setattr(svm, "train_liblinear", stub)
    # regions: gt, one overlapping it with IoU 0.05 (negative at 0.3, not at 0), one far
    boxes = np.array([[0, 0, 10, 10], [9.5, 0, 19.5, 10], [50, 50, 60, 60]], float)
    feats = np.array([[5, 0], [-0.3, 0], [-0.7, 0]], np.float32)
    img = svm.RegionSet(boxes, np.array([0]), feats)
    svm.train_svms([img], 1, P.SVM(neg_iou=0.0), scale=1.0)
    assert sorted(stub.calls[0][0][stub.calls[0][1] < 0, 0].tolist()) == pytest.approx([-0.7])
    svm.train_svms([img], 1, P.SVM(neg_iou=0.3), scale=1.0)
    assert sorted(stub.calls[1][0][stub.calls[1][1] < 0, 0].tolist()) == pytest.approx([-0.7, -0.3])
