"""HOG (the HOG + linear SVM stand-in for DPM HOG): agreement with scikit-image's `hog`
(hard binning), a per-pixel reference for the interpolated votes, and hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lsda_core.detection import hog as H
from lsda_core.core import params as P

skimage_hog = pytest.importorskip("skimage.feature").hog


def _windows(n, c, s, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.random((n, c, s, s))
    # add some structure: a bright rectangle per window
    for i in range(n):
        y0, x0 = rng.integers(0, s // 2, 2)
        w[i, :, y0:y0 + s // 3, x0:x0 + s // 4] += 2.0
    return w


def test_dimension():
    assert H.feature_dim(64) == 7 * 7 * 4 * 9 == 1764
    assert H.hog_features(torch.zeros(2, 3, 64, 64)).shape == (2, 1764)
    assert H.feature_dim(40, cell=4, block=3, orientations=6) == 8 * 8 * 9 * 6


@pytest.mark.parametrize("size", [64, 67])  # 67: the last 3 rows / columns are outside every cell
def test_matches_skimage_grayscale(size):
    w = _windows(4, 1, size)
    ours = H.hog_features(torch.from_numpy(w), interpolation="none").numpy()
    ref = np.stack([skimage_hog(x[0], 9, (8, 8), (2, 2), block_norm="L2-Hys") for x in w])
    # skimage accumulates cells in float32: agreement to float32 rounding
    assert np.abs(ours - ref).max() < 1e-6
    ours32 = H.hog_features(torch.from_numpy(w).float(), interpolation="none").numpy()
    assert ours32.dtype == np.float32 and np.abs(ours32 - ref).max() < 1e-5


def test_matches_skimage_colour_max_channel():
    w = _windows(3, 3, 64, seed=1)
    w[:, 1] *= 1.7  # different contrast per channel, so the chosen channel varies per pixel
    ours = H.hog_features(torch.from_numpy(w), interpolation="none").numpy()
    ref = np.stack([skimage_hog(x.transpose(1, 2, 0), 9, (8, 8), (2, 2), block_norm="L2-Hys", channel_axis=-1)
                    for x in w])
    assert np.abs(ours - ref).max() < 1e-6
    ours_small = H.hog_features(torch.from_numpy(w[:, :, :32, :32]), cell=4, block=3, orientations=6,
                                interpolation="none").numpy()
    ref_small = np.stack([skimage_hog(x.transpose(1, 2, 0)[:32, :32], 6, (4, 4), (3, 3), block_norm="L2-Hys",
                                      channel_axis=-1) for x in w])
    assert np.abs(ours_small - ref_small).max() < 1e-6


def _reference(img, cell, block, nbins, interpolation, eps=1e-5):
    """A per-pixel implementation written from the description (Dalal & Triggs votes)."""
    C, S, _ = img.shape
    gr = np.zeros_like(img)
    gc = np.zeros_like(img)
    gr[:, 1:-1] = img[:, 2:] - img[:, :-2]
    gc[:, :, 1:-1] = img[:, :, 2:] - img[:, :, :-2]
    k = (gr ** 2 + gc ** 2).argmax(0)
    nc = S // cell
    width = 180 / nbins
    hist = np.zeros((nc, nc, nbins))
    for y in range(nc * cell):
        for x in range(nc * cell):
            r, c = gr[k[y, x], y, x], gc[k[y, x], y, x]
            mag = math.hypot(r, c)
            th = math.degrees(math.atan2(r, c)) % 180
            if interpolation == "none":
                ov = [(min(int(th // width), nbins - 1), 1.0)]
            else:
                u = th / width - 0.5
                f = math.floor(u)
                ov = [(f % nbins, 1 - (u - f)), ((f + 1) % nbins, u - f)]
            if interpolation == "trilinear":
                def sv(p):
                    q = (p + 0.5) / cell - 0.5
                    q0 = math.floor(q)
                    return [(q0, 1 - (q - q0)), (q0 + 1, q - q0)]
                sy, sx = sv(y), sv(x)
            else:
                sy, sx = [(y // cell, 1.0)], [(x // cell, 1.0)]
            for cy, wy in sy:
                for cx, wx in sx:
                    if 0 <= cy < nc and 0 <= cx < nc:
                        for b, wo in ov:
                            hist[cy, cx, b] += mag * wy * wx * wo
    hist /= cell * cell
    out = []
    for by in range(nc - block + 1):
        for bx in range(nc - block + 1):
            v = hist[by:by + block, bx:bx + block].ravel()
            v = v / math.sqrt((v ** 2).sum() + eps ** 2)
            v = np.minimum(v, 0.2)
            out.append(v / math.sqrt((v ** 2).sum() + eps ** 2))
    return np.concatenate(out)


@pytest.mark.parametrize("interpolation", ["trilinear", "orientation", "none"])
def test_matches_per_pixel_reference(interpolation):
    w = _windows(3, 3, 24, seed=2)
    ours = H.hog_features(torch.from_numpy(w), cell=4, block=2, orientations=9, interpolation=interpolation).numpy()
    ref = np.stack([_reference(x, 4, 2, 9, interpolation) for x in w])
    assert np.abs(ours - ref).max() < 1e-9
    ours = H.hog_features(torch.from_numpy(w[:, :1, :22, :22]), cell=6, block=2, orientations=7,
                          interpolation=interpolation).numpy()
    ref = np.stack([_reference(x[:1, :22, :22], 6, 2, 7, interpolation) for x in w])
    assert np.abs(ours - ref).max() < 1e-9


def test_vertical_edge_votes_bin_zero():
    # left half 0, right half 1: horizontal gradient, orientation 0 degrees
    w = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    w[..., 8:] = 1.0
    hard = H.hog_features(w, cell=8, block=1, interpolation="none").reshape(2, 2, 9)
    assert (hard[..., 1:] == 0).all() and (hard[..., 0] > 0).all()
    # orientation interpolation: 0 degrees is between the centres of bins 8 (170) and 0 (10)
    soft = H.hog_features(w, cell=8, block=1, interpolation="orientation").reshape(2, 2, 9)
    assert soft[..., 0] == pytest.approx(soft[..., 8]) and (soft[..., 1:8] == 0).all()


def test_invariances_and_batching():
    w = torch.from_numpy(_windows(5, 3, 64, seed=3)).float()
    f = H.hog_features(w)
    assert torch.allclose(H.hog_features(w + 5.0), f, atol=1e-5)  # gradients ignore offsets
    assert torch.allclose(H.hog_features(w * 3.0), f, atol=1e-4)  # normalisation (up to eps)
    assert torch.equal(H.hog_features(w, chunk=2), f)
    assert torch.equal(H.hog_features(w[2:3]), f[2:3])
    assert torch.allclose(H.hog_features(w[:, :1]), H.hog_features(w[:, 0]))  # (N, S, S) input
    assert (f >= 0).all() and (f <= 1 + 1e-6).all()
    assert H.hog_features(w.double()).dtype == torch.float64


def test_errors_and_params():
    with pytest.raises(ValueError, match="interpolation"):
        H.hog_features(torch.zeros(1, 3, 64, 64), interpolation="bilinear")
    with pytest.raises(ValueError, match="even"):
        H.hog_features(torch.zeros(1, 3, 60, 60), cell=5)
    with pytest.raises(ValueError, match="fewer"):
        H.hog_features(torch.zeros(1, 3, 8, 8))
    w = torch.rand(2, 3, 64, 64)
    assert torch.equal(H.hog_params_features(w, P.Hog()), H.hog_features(w))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    w = torch.from_numpy(_windows(6, 3, 64, seed=4)).float()
    for interpolation in H.INTERPOLATIONS:
        cpu = H.hog_features(w, interpolation=interpolation)
        gpu = H.hog_features(w.cuda(), interpolation=interpolation)
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-5)
        assert torch.equal(H.hog_features(w.cuda(), interpolation=interpolation), gpu)  # deterministic
