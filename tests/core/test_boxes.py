"""Box geometry: the pixel convention, IoU and NMS against MATLAB-style NumPy references,
and R-CNN's context-padded warp against hand-worked cases and a per-box reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsda_core.core import boxes as B


# ------------------------------------------------------------------ NumPy references
# Written the way the MATLAB code of R-CNN and the VOC devkit is: 1-based inclusive
# pixel indices with +1 in every width.

def to_inclusive(b: np.ndarray) -> np.ndarray:
    """Study boxes (0-based edges) -> 1-based inclusive (xmin = x1 + 1, xmax = x2)."""
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, 0] + 1, b[:, 1] + 1, b[:, 2], b[:, 3]], axis=1)


def ref_iou_matlab(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of 1-based inclusive boxes, as VOCevaldet.m computes it, one pair at a time."""
    out = np.zeros((len(a), len(b)))
    for i, bb in enumerate(a):
        for j, bbgt in enumerate(b):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                out[i, j] = iw * ih / ua
    return out


def ref_nms_matlab(boxes_incl: np.ndarray, scores: np.ndarray, overlap: float) -> list[int]:
    """R-CNN's nms.m: sort ascending, repeatedly pick the last, drop those with o > overlap."""
    x1, y1, x2, y2 = boxes_incl.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    I = list(np.argsort(scores, kind="stable"))
    pick = []
    while I:
        last = len(I) - 1
        i = I[last]
        pick.append(int(i))
        rest = np.array(I[:last], dtype=int)
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        o = inter / (area[i] + area[rest] - inter)
        I = [int(k) for k, oo in zip(rest, o) if not oo > overlap]
    return pick


def random_boxes(n: int, seed: int, w: float = 160, h: float = 120, integer: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, [w - 5, h - 5], size=(n, 2))
    wh = rng.uniform(1, [w / 2, h / 2], size=(n, 2))
    b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
    return np.round(b) if integer else b


# ------------------------------------------------------------------ convention, IoU

def test_convention_hand_numbers():
    assert float(B.box_area(torch.tensor([[0.0, 0.0, 10.0, 10.0]]))[0]) == 100.0
    iou = B.box_iou(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[5.0, 0.0, 15.0, 10.0]]))
    assert float(iou[0, 0]) == pytest.approx(1 / 3, abs=1e-7)
    # the same boxes in 1-based inclusive form with MATLAB's +1 give the same numbers
    a, b = to_inclusive([[0, 0, 10, 10]]), to_inclusive([[5, 0, 15, 10]])
    assert a.tolist() == [[1, 1, 10, 10]] and b.tolist() == [[6, 1, 15, 10]]
    assert (a[0, 2] - a[0, 0] + 1) * (a[0, 3] - a[0, 1] + 1) == 100
    assert ref_iou_matlab(a, b)[0, 0] == pytest.approx(1 / 3)
    # disjoint, touching edges, degenerate
    iou = B.box_iou(torch.tensor([[0.0, 0, 10, 10]]),
                    torch.tensor([[10.0, 0, 20, 10], [30.0, 30, 40, 40], [5.0, 5, 5, 5]]))
    assert iou.tolist() == [[0.0, 0.0, 0.0]]
    assert float(B.box_area(torch.tensor([[3.0, 3, 1, 8]]))[0]) == 0.0


def test_box_iou_matches_matlab_reference():
    a = random_boxes(40, 1, integer=True)
    b = random_boxes(30, 2, integer=True)
    got = B.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = ref_iou_matlab(to_inclusive(a), to_inclusive(b))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got.shape == (40, 30)
    assert B.box_iou(torch.zeros(0, 4), torch.from_numpy(b)).shape == (0, 30)


def test_box_iou_float32_and_pairs():
    a = random_boxes(10, 3)
    got = B.box_iou(torch.from_numpy(a).float(), torch.from_numpy(a).float())
    assert got.dtype == torch.float32
    np.testing.assert_allclose(np.diag(got.numpy()), 1.0, atol=1e-6)
    pairs = B.box_iou_pairs(torch.from_numpy(a)[:, None], torch.from_numpy(a)[None])
    np.testing.assert_allclose(pairs.numpy(), B.box_iou(a, a).numpy(), atol=1e-12)


def test_clip_and_remove_small():
    b = torch.tensor([[-5.0, -1, 50, 30], [10, 10, 20, 20], [3, 3, 3.5, 9]])
    c = B.clip_boxes(b, 40, 25)
    assert c.tolist() == [[0, 0, 40, 25], [10, 10, 20, 20], [3, 3, 3.5, 9]]
    assert b[0, 0] == -5  # input untouched
    assert B.remove_small(c, 1.0).tolist() == [0, 1]
    assert B.remove_small(c, 15.0).tolist() == [0]


# ------------------------------------------------------------------ NMS

def test_nms_hand_case():
    # A, B, C, D with scores .9 .8 .7 .95
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [5, 0, 15, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    # IoU(D, A) = 50/150 = 1/3 > 0.3 and IoU(D, B) = 60/140 > 0.3: both go; C is apart
    assert B.nms(boxes, scores, 0.3, impl="torch").tolist() == [3, 2]
    # at 0.5, A survives D (1/3), B does not survive A (90/110)
    assert B.nms(boxes, scores, 0.5, impl="torch").tolist() == [3, 0, 2]


def test_nms_threshold_is_strict():
    # IoU exactly 0.5: suppressed only when IoU > thresh
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20]])
    scores = torch.tensor([1.0, 0.5])
    assert B.nms(boxes, scores, 0.5, impl="torch").tolist() == [0, 1]
    assert B.nms(boxes, scores, 0.49, impl="torch").tolist() == [0]


@pytest.mark.parametrize("thresh", [0.0, 0.1, 0.3, 0.5, 0.7])
def test_nms_matches_rcnn_reference(thresh):
    b = random_boxes(300, 7, integer=True)
    s = np.random.default_rng(8).uniform(-2, 2, size=300)
    got = B.nms(torch.from_numpy(b), torch.from_numpy(s), thresh, impl="torch").tolist()
    assert got == ref_nms_matlab(to_inclusive(b), s, thresh)
    assert np.all(np.diff(s[got]) <= 0)


def test_nms_large_path_matches_matrix_path(monkeypatch):
    b = torch.from_numpy(random_boxes(500, 9))
    s = torch.from_numpy(np.random.default_rng(10).uniform(size=500))
    full = B.nms(b, s, 0.3, impl="torch")
    monkeypatch.setattr(B, "_NMS_FULL_MATRIX", 10)
    assert B.nms(b, s, 0.3, impl="torch").tolist() == full.tolist()


def test_nms_2000_boxes_and_empty():
    b = torch.from_numpy(random_boxes(2000, 11)).float()
    s = torch.rand(2000, generator=torch.Generator().manual_seed(0))
    keep = B.nms(b, s, 0.3, impl="torch")
    assert 0 < len(keep) < 2000
    assert B.nms(torch.zeros(0, 4), torch.zeros(0), 0.3).tolist() == []


def test_batched_nms_per_class():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.85, 0.1])
    labels = torch.tensor([0, 0, 1, 0])
    # box 1 is suppressed by box 0 (same label); box 2 has another label and stays
    assert B.batched_nms(boxes, scores, labels, 0.3, impl="torch").tolist() == [0, 2, 3]
    b = torch.from_numpy(random_boxes(400, 12))
    s = torch.from_numpy(np.random.default_rng(13).uniform(size=400))
    lab = torch.from_numpy(np.random.default_rng(14).integers(0, 5, size=400))
    got = set(B.batched_nms(b, s, lab, 0.4, impl="torch").tolist())
    want = set()
    for c in range(5):
        idx = np.nonzero(lab.numpy() == c)[0]
        want |= {int(idx[k]) for k in ref_nms_matlab(to_inclusive(b.numpy()[idx]), s.numpy()[idx], 0.4)}
    assert got == want


@pytest.mark.skipif(not B.torchvision_available(), reason="torchvision not usable here")
def test_against_torchvision():
    import torchvision.ops as ops

    a = torch.from_numpy(random_boxes(200, 15)).float()
    s = torch.rand(200, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(B.box_iou(a, a).numpy(), ops.box_iou(a, a).numpy(), atol=1e-6)
    assert B.nms(a, s, 0.3, impl="torch").tolist() == ops.nms(a, s, 0.3).tolist()
    assert B.nms(a, s, 0.3, impl="torchvision").tolist() == ops.nms(a, s, 0.3).tolist()


# ------------------------------------------------------------------ warping

def mround(x: float) -> int:
    """MATLAB round: halves away from zero."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def imresize_bilinear(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """imresize(a, [oh ow], 'bilinear', 'antialias', false) of a (C, h, w) array."""
    def axis(n: int, m: int):
        x = (np.arange(m) + 0.5) * n / m - 0.5  # output pixel centres in input centre coords
        x0 = np.floor(x).astype(int)
        f = x - x0
        return np.clip(x0, 0, n - 1), np.clip(x0 + 1, 0, n - 1), f

    r0, r1, fr = axis(a.shape[1], oh)
    c0, c1, fc = axis(a.shape[2], ow)
    rows = a[:, r0, :] * (1 - fr)[None, :, None] + a[:, r1, :] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def ref_warp(img: np.ndarray, box: np.ndarray, S: int, padding: float) -> np.ndarray:
    """rcnn_im_crop.m (crop_mode 'warp'), one box, on 1-based inclusive indices; the one
    change: the centre is the true centre (x1 + x2) / 2 of the 0-based edge box."""
    C, H, W = img.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    if padding > 0:
        scale = S / (S - padding * 2)
        hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        e = [mround(cx - hw * scale), mround(cy - hh * scale), mround(cx + hw * scale), mround(cy + hh * scale)]
    else:
        e = [mround(v) for v in (x1, y1, x2, y2)]
    bb = [e[0] + 1, e[1] + 1, e[2], e[3]]  # 1-based inclusive
    unclipped_h = bb[3] - bb[1] + 1
    unclipped_w = bb[2] - bb[0] + 1
    pad_x1 = max(0, 1 - bb[0])
    pad_y1 = max(0, 1 - bb[1])
    bb = [max(1, bb[0]), max(1, bb[1]), min(W, bb[2]), min(H, bb[3])]
    clipped_h = bb[3] - bb[1] + 1
    clipped_w = bb[2] - bb[0] + 1
    scale_x, scale_y = S / unclipped_w, S / unclipped_h
    crop_w, crop_h = mround(clipped_w * scale_x), mround(clipped_h * scale_y)
    pad_x1, pad_y1 = mround(pad_x1 * scale_x), mround(pad_y1 * scale_y)
    crop_h = min(crop_h, S - pad_y1)
    crop_w = min(crop_w, S - pad_x1)
    window = img[:, bb[1] - 1:bb[3], bb[0] - 1:bb[2]]
    out = np.zeros((C, S, S))
    if crop_w > 0 and crop_h > 0:
        out[:, pad_y1:pad_y1 + crop_h, pad_x1:pad_x1 + crop_w] = imresize_bilinear(window, crop_h, crop_w)
    return out


def test_warp_hand_cases():
    img = torch.arange(16.0).reshape(1, 4, 4)
    # context 1 in a 4-pixel frame doubles the box: [1,1,3,3] becomes the whole image
    np.testing.assert_array_equal(B.warp_regions(img, [[1, 1, 3, 3]], 4, 1)[0].numpy(), img.numpy())
    # [0,0,2,2] doubles to [-1,-1,3,3]: one pixel cut off on the left and top -> one zero
    # row and column, then the 3x3 image part at scale 1
    out = B.warp_regions(img, [[0, 0, 2, 2]], 4, 1)[0, 0].numpy()
    want = np.array([[0, 0, 0, 0], [0, 0, 1, 2], [0, 4, 5, 6], [0, 8, 9, 10]], dtype=float)
    np.testing.assert_array_equal(out, want)
    # 4 -> 2 downscale: each output pixel is the mean of a 2x2 block
    out = B.warp_regions(img, [[0, 0, 4, 4]], 2, 0)[0, 0].numpy()
    np.testing.assert_allclose(out, [[2.5, 4.5], [10.5, 12.5]], atol=1e-6)
    # upscale of the window [10, 20] inside the row [0, 10, 20, 30]: the window's own border
    # is replicated (imresize sees only the window), its neighbours 0 and 30 never enter
    row = torch.tensor([[[0.0, 10, 20, 30]]])
    out = B.warp_regions(row, [[1, 0, 3, 1]], 4, 0)[0, 0].numpy()
    np.testing.assert_allclose(out, np.tile([10, 12.5, 17.5, 20], (4, 1)), atol=1e-5)


def test_warp_whole_image_no_context_is_a_resize():
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 30, 47, generator=g, dtype=torch.float64)
    for S in (8, 16, 31, 64):
        got = B.warp_regions(img, [[0, 0, 47, 30]], S, 0)
        want = F.interpolate(img[None], size=(S, S), mode="bilinear", align_corners=False, antialias=False)
        assert got.shape == (1, 3, S, S)
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-10)
        # float32: grid coordinates carry ~1e-6 px of rounding
        got32 = B.warp_regions(img.float(), [[0, 0, 47, 30]], S, 0)
        np.testing.assert_allclose(got32.numpy(), want.numpy(), atol=1e-4)


def test_warp_border_zero_padding():
    img = torch.ones(2, 30, 40)
    # the corner box [0,0,10,10] with S=16, context 2: scale 16/12, window [-2,-2,12,12]
    # (14 px), 2 px cut off -> pad round(2*16/14) = 2, crop round(12*16/14) = 14
    out = B.warp_regions(img, [[0, 0, 10, 10]], 16, 2)[0]
    assert out.shape == (2, 16, 16)
    assert torch.all(out[:, :2, :] == 0) and torch.all(out[:, :, :2] == 0)
    np.testing.assert_allclose(out[:, 2:, 2:].numpy(), 1.0, atol=1e-6)
    # a box whose expansion stays inside the image has no padding at all
    out = B.warp_regions(img, [[10, 10, 20, 20]], 16, 2)[0]
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)
    # a box entirely outside the image warps to zeros
    assert torch.all(B.warp_regions(img, [[100, 100, 120, 120]], 16, 2) == 0)
    g = B.warp_geometry(torch.tensor([[0.0, 0, 10, 10]]), 40, 30, 16, 2)
    assert g["window"].tolist() == [[-2, -2, 12, 12]]
    assert g["pad"].tolist() == [[2, 2]] and g["crop"].tolist() == [[14, 14]]


def test_warp_matches_per_box_reference():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(3, 37, 53))
    boxes = np.concatenate([random_boxes(40, 4, w=53, h=37, integer=True),
                            random_boxes(40, 5, w=53, h=37),
                            [[0, 0, 53, 37], [-3, 4, 20, 41], [50, 30, 53, 37]]])
    for S, ctx in ((16, 0), (16, 2), (27, 16 * 27 / 227), (32, 5)):
        got = B.warp_regions(torch.from_numpy(img), torch.from_numpy(boxes), S, ctx).numpy()
        assert got.shape == (len(boxes), 3, S, S) and got.dtype == np.float64
        for k, bx in enumerate(boxes):
            np.testing.assert_allclose(got[k], ref_warp(img, bx, S, ctx), atol=1e-9,
                                       err_msg=f"box {bx}, S={S}, context={ctx}")


def test_warp_mirror_symmetry():
    rng = np.random.default_rng(6)
    W, H, S, ctx = 60, 45, 20, 3
    img = torch.from_numpy(rng.normal(size=(3, H, W)))
    # float boxes whose expanded window stays inside the image (no rounding ties), and the
    # clipped corner box of test_warp_border_zero_padding (no ties either)
    scale = S / (S - 2 * ctx)
    c = rng.uniform([15, 12], [W - 15, H - 12], size=(30, 2))
    half = rng.uniform(1, 9, size=(30, 2)) / scale
    boxes = np.concatenate([np.concatenate([c - half, c + half], 1), [[0, 5, 10, 20]]])
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = W - boxes[:, 2], W - boxes[:, 0]
    a = B.warp_regions(img, torch.from_numpy(boxes), S, ctx)
    b = B.warp_regions(torch.flip(img, dims=[2]), torch.from_numpy(flipped), S, ctx)
    np.testing.assert_allclose(torch.flip(a, dims=[3]).numpy(), b.numpy(), atol=1e-9)


def test_warp_dtype_chunks_and_errors():
    img = torch.randn(3, 20, 30, generator=torch.Generator().manual_seed(2))
    bx = torch.from_numpy(random_boxes(10, 16, w=30, h=20))
    one = B.warp_regions(img, bx, 12, 2)
    assert one.dtype == torch.float32 and one.shape == (10, 3, 12, 12)
    np.testing.assert_allclose(B.warp_regions(img, bx, 12, 2, chunk=3).numpy(), one.numpy(), atol=0)
    assert B.warp_regions(img, torch.zeros(0, 4), 12, 2).shape == (0, 3, 12, 12)
    with pytest.raises(ValueError):
        B.warp_regions(img, bx, 12, 6)  # 2 * context >= size
    with pytest.raises(ValueError):
        B.warp_regions(img.to(torch.uint8), bx, 12, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    img = torch.randn(3, 50, 70, generator=torch.Generator().manual_seed(3))
    bx = torch.from_numpy(random_boxes(100, 17, w=70, h=50)).float()
    s = torch.rand(100, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(B.warp_regions(img.cuda(), bx.cuda(), 24, 4).cpu().numpy(),
                               B.warp_regions(img, bx, 24, 4).numpy(), atol=1e-4)
    assert B.nms(bx.cuda(), s.cuda(), 0.3).cpu().tolist() == B.nms(bx, s, 0.3, impl="torch").tolist()
    assert B.nms(bx.cuda(), s.cuda(), 0.3, impl="torch").cpu().tolist() == B.nms(bx, s, 0.3, impl="torch").tolist()


def test_batched_nms_equals_nms_label_by_label_exactly():
    """Per-label greedy NMS's indices in descending score order, ties (equal scores,
    duplicate boxes) included."""
    rng = np.random.default_rng(21)
    b = torch.from_numpy(random_boxes(300, 22))
    b[10:20] = b[0]  # duplicates
    s = torch.from_numpy(rng.integers(0, 6, size=300).astype(np.float64))  # many ties
    lab = torch.from_numpy(rng.integers(0, 7, size=300))
    got = B.batched_nms(b, s, lab, 0.3, impl="torch")
    kept = torch.cat([torch.nonzero(lab == c).flatten()[B.nms(b[lab == c], s[lab == c], 0.3, impl="torch")]
                      for c in range(7)])
    want = kept[torch.sort(s[kept], descending=True, stable=True).indices]
    assert got.tolist() == want.tolist()


def test_warp_regions_one_image_per_box():
    """(N, C, H, W) images: box i warps image i, exactly as warping that image alone; a batch
    whose size is not the number of boxes is an error."""
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(3, 2, 20, 24, generator=g)
    boxes = [[1, 2, 15, 18], [0, 0, 24, 20], [5, 6, 9, 30]]
    out = B.warp_regions(imgs, boxes, 8, 2, chunk=2)
    for i in range(3):
        torch.testing.assert_close(out[i], B.warp_regions(imgs[i], boxes[i:i + 1], 8, 2)[0])
    with pytest.raises(ValueError, match="one image per box"):
        B.warp_regions(imgs, boxes[:2], 8, 2)


def test_warp_regions_channels_last_stores_the_same_values():
    """channels_last changes the output's memory layout only, for one image and one image per box."""
    g = torch.Generator().manual_seed(1)
    img = torch.randn(3, 20, 24, generator=g)
    boxes = torch.tensor([[1, 2, 15, 18], [0, 0, 24, 20], [5, 6, 9, 30], [-4, -3, 6, 5]], dtype=torch.float32)
    for image in (img, img[None] * torch.rand(4, 1, 20, 24, generator=g)):
        ref = B.warp_regions(image, boxes, 8, 2, chunk=3)
        out = B.warp_regions(image, boxes, 8, 2, chunk=3, channels_last=True)
        assert ref.is_contiguous() and out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out, ref) and (ref == 0).any()  # padding included
    assert B.warp_regions(img, boxes[:0], 8, 2, channels_last=True).shape == (0, 3, 8, 8)
