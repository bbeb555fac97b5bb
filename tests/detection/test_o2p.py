"""The O2P steps of R-CNN's segmentation: fg features, overlap targets, SVR, pasting."""
import numpy as np
import pytest
import torch

from lsda_core.detection import o2p
from lsda_core.detection.mask_proposals import MaskProposals
from lsda_core.models.nets import CaffeNet
from synthetic import params


@pytest.fixture(scope="module")
def net() -> CaffeNet:
    p = params()
    torch.manual_seed(0)
    return CaffeNet(p.net, 3).eval()


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (40, 48, 3)).astype(np.uint8)


def test_fg_of_a_mask_filling_its_box_is_full(net):
    """A mask that covers the whole image hides nothing: fg equals full (context included)."""
    props = MaskProposals(np.zeros((40, 48), np.int32), np.ones((1, 1), bool))
    size = net.net.input_size
    full = o2p.region_pool5(net, _image(0), props, "full", size, 4.0)
    fg = o2p.region_pool5(net, _image(0), props, "fg", size, 4.0)
    assert np.allclose(full.astype(np.float32), fg.astype(np.float32), atol=1e-2)


def test_fg_ignores_pixels_outside_the_mask_and_full_does_not(net):
    """Atoms: a 20 x 24 block (atom 1) in the top-left, the rest atom 0. Changing pixels outside
    the block but inside its context window changes *full* and leaves *fg* alone."""
    atoms = np.zeros((40, 48), np.int32)
    atoms[5:25, 6:30] = 1
    props = MaskProposals(atoms, np.array([[False, True]]))
    a, b = _image(1), _image(1)
    b[25:30, 6:30] = 255 - b[25:30, 6:30]  # just below the block: inside the context window
    size = net.net.input_size
    fa, fb = (o2p.region_pool5(net, im, props, "fg", size, 4.0).astype(np.float32) for im in (a, b))
    ga, gb = (o2p.region_pool5(net, im, props, "full", size, 4.0).astype(np.float32) for im in (a, b))
    assert np.allclose(fa, fb, atol=1e-3) and not np.allclose(ga, gb, atol=1e-3)
    with pytest.raises(ValueError, match="mode"):
        o2p.region_pool5(net, a, props, "box", size, 4.0)


def test_overlap_targets_by_hand():
    """Atoms: columns 0-1 (atom 0) and 2-3 (atom 1) of a 2 x 4 image. Object 1 (class 0) is atom 0
    exactly; object 2 (class 1) is column 3, with void at (0, 2). Proposal {0}: class 0 IoU 1,
    class 1 IoU 0; proposal {1} (3 non-void pixels): class 1 IoU 2 / 3; class 2 has no object."""
    atoms = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.int32)
    objects = np.array([[1, 1, 255, 2], [1, 1, 0, 2]], np.uint8)
    props = MaskProposals(atoms, np.array([[True, False], [False, True]]))
    t = o2p.overlap_targets(props, objects, [0, 1], 3)
    assert t.tolist() == [[1.0, 0.0, 0.0], [0.0, pytest.approx(2 / 3), 0.0]]


def test_svr_fits_a_linear_target_per_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    true = rng.normal(size=(5, 2))
    y = x @ true + np.array([0.5, -1.0])
    w, b = o2p.train_svr(x, y, c=100.0)
    assert np.abs(x @ w + b - y).max() < 0.05


def test_paste_takes_the_best_region_per_pixel_above_the_threshold():
    """Atoms 0 | 1 | 2 in three columns. Region A = {0, 1} scores class 0 at 0.6; region B = {1, 2}
    class 1 at 0.8: column 0 is class 0 (label 1), columns 1-2 class 1 (label 2); with the
    threshold at 0.7 column 0 turns background."""
    atoms = np.array([[0, 1, 2]], np.int32)
    props = MaskProposals(atoms, np.array([[True, True, False], [False, True, True]]))
    scores = np.array([[0.6, 0.1], [0.2, 0.8]])
    assert o2p.paste(props, scores, 0.5).tolist() == [[1, 2, 2]]
    assert o2p.paste(props, scores, 0.7).tolist() == [[0, 2, 2]]
    assert o2p.choose_threshold(lambda t: {0.5: 0.3, 0.7: 0.4, 0.9: 0.4}[t], [0.5, 0.7, 0.9]) == 0.7


def test_svr_equals_liblinear_within_its_tolerance():
    """The exact solve and liblinear's primal Newton method (scikit-learn's LinearSVR, squared
    loss, epsilon 0, bias regularised) reach the same regressor on the same problem."""
    from sklearn.svm import LinearSVR

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8))
    y = np.clip(x @ rng.normal(size=(8, 3)) * 0.1 + 0.3 + rng.normal(scale=0.2, size=(300, 3)), 0, 1)
    for c in (0.01, 10.0):
        w, b = o2p.train_svr(x, y, c=c)
        for k in range(3):
            r = LinearSVR(C=c, epsilon=0.0, loss="squared_epsilon_insensitive", dual=False, tol=1e-8,
                          max_iter=10000).fit(x, y[:, k])
            assert np.allclose(w[:, k], r.coef_, atol=1e-5) and b[k] == pytest.approx(r.intercept_[0], abs=1e-5)
    with pytest.raises(ValueError, match="svr_c"):
        o2p.train_svr(x, y, c=0.0)
