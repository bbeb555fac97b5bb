"""Box geometry in pure torch: areas, IoU, NMS, clipping and R-CNN's context-padded warp.

Pixel convention (the study's, see `lsda_core.core.structures`): a box is a float
`[x1, y1, x2, y2]` in 0-based pixel-edge coordinates. The box covering pixel columns 0..9
is `[0, 10]`; its width is `x2 - x1 = 10` and its area `w * h`, with no `+1` anywhere.
The MATLAB code of R-CNN and the VOC/ILSVRC devkits works on 1-based inclusive pixel
indices and adds 1 to every width (`xmax - xmin + 1`); since `x1 = xmin - 1`, `x2 = xmax`,
both give the same widths, areas and IoU (tests/test_boxes.py checks this). torchvision's
`box_iou` uses the same no-`+1` rule on the same numbers, so it agrees too.

Everything is batched and device-agnostic: tensors stay on the device they come in on.
`nms` uses torchvision's kernel when torchvision imports and works (checked once, lazily);
otherwise a pure-torch greedy NMS over a precomputed IoU matrix (fast for a few thousand
boxes, R-CNN's 2000 proposals per image).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# Above this many boxes, NMS computes IoU rows one kept box at a time instead of the full
# matrix (4096^2 floats = 64 MiB).
_NMS_FULL_MATRIX = 4096


def _as_boxes(boxes: Any) -> torch.Tensor:
    """A (N, 4) floating tensor (integer input becomes float32; numpy becomes a tensor)."""
    b = torch.as_tensor(boxes)
    if not b.is_floating_point():
        b = b.to(torch.float32)
    if b.ndim != 2 or b.shape[-1] != 4:
        if b.numel() == 0:
            return b.reshape(0, 4)
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(b.shape)}")
    return b


def box_area(boxes: Any) -> torch.Tensor:
    """(N,) areas `(x2 - x1) * (y2 - y1)`; boxes with x2 < x1 or y2 < y1 count as 0."""
    b = torch.as_tensor(boxes)
    if not b.is_floating_point():
        b = b.to(torch.float32)
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou_pairs(a: Any, b: Any) -> torch.Tensor:
    """Elementwise IoU of broadcastable `(..., 4)` box tensors (0 where the union is empty)."""
    a = torch.as_tensor(a)
    b = torch.as_tensor(b)
    if not a.is_floating_point():
        a = a.to(torch.float32)
    if not b.is_floating_point():
        b = b.to(a.dtype)
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    union = box_area(a) + box_area(b) - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def box_iou(a: Any, b: Any) -> torch.Tensor:
    """(N, M) IoU between every box of `a` (N, 4) and of `b` (M, 4)."""
    a = _as_boxes(a)
    b = _as_boxes(b).to(device=a.device)
    return box_iou_pairs(a[:, None, :], b[None, :, :])


def clip_boxes(boxes: Any, width: float, height: float) -> torch.Tensor:
    """Clip boxes to the image `[0, width] x [0, height]` (pixel edges, so x2 may equal width)."""
    b = _as_boxes(boxes).clone()
    b[:, 0::2] = b[:, 0::2].clamp(0, width)
    b[:, 1::2] = b[:, 1::2].clamp(0, height)
    return b


def remove_small(boxes: Any, min_size: float = 1.0) -> torch.Tensor:
    """Indices of the boxes at least `min_size` wide and high (drops degenerate boxes)."""
    b = _as_boxes(boxes)
    keep = ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    return torch.nonzero(keep).flatten()


# ---------------------------------------------------------------------------- NMS

@lru_cache(maxsize=1)
def _torchvision_ops() -> Any:
    """torchvision.ops when it imports and its NMS kernel runs here, else None (checked once)."""
    try:
        import torchvision.ops as ops  # noqa: PLC0415

        ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5)
        return ops
    except Exception:  # not installed, or a wheel built for another CUDA/torch: fall back
        return None


def torchvision_available() -> bool:
    return _torchvision_ops() is not None


def _nms_torch(boxes: torch.Tensor, scores: torch.Tensor, thresh: float) -> torch.Tensor:
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    if n <= _NMS_FULL_MATRIX:
        over = (box_iou(b, b) > thresh).cpu().numpy()
        for i in range(n):
            if not removed[i]:
                keep.append(i)
                removed[i + 1:] |= over[i, i + 1:]
    else:
        for i in range(n):
            if not removed[i]:
                keep.append(i)
                if i + 1 < n:
                    row = box_iou(b[i:i + 1], b[i + 1:])[0] > thresh
                    removed[i + 1:] |= row.cpu().numpy()
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def nms(boxes: Any, scores: Any, thresh: float, impl: str = "auto") -> torch.Tensor:
    """Greedy non-maximum suppression as in R-CNN: going down the scores, a box is dropped
    when its IoU with an already kept (higher-scoring) box is > `thresh`.

    Returns the indices of the kept boxes, sorted by descending score (equal scores: the
    lower index first). `impl`: "auto" (torchvision when it works, else torch), "torch",
    or "torchvision" (an error if it is unavailable).
    """
    b = _as_boxes(boxes)
    s = torch.as_tensor(scores, device=b.device)
    if s.shape != (b.shape[0],):
        raise ValueError(f"scores must have shape ({b.shape[0]},), got {tuple(s.shape)}")
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=b.device)
    if impl not in ("auto", "torch", "torchvision"):
        raise ValueError(f"impl must be auto, torch or torchvision, got {impl!r}")
    ops = _torchvision_ops() if impl != "torch" else None
    if impl == "torchvision" and ops is None:
        raise RuntimeError("torchvision.ops is not usable in this environment")
    if ops is not None:
        return ops.nms(b, s.to(b.dtype), float(thresh))
    return _nms_torch(b, s, float(thresh))


def batched_nms(boxes: Any, scores: Any, labels: Any, thresh: float, impl: str = "auto") -> torch.Tensor:
    """NMS within each label separately; kept indices sorted by descending score."""
    b = _as_boxes(boxes)
    s = torch.as_tensor(scores, device=b.device)
    lab = torch.as_tensor(labels, device=b.device)
    if b.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=b.device)
    ops = _torchvision_ops() if impl != "torch" else None
    if impl == "torchvision" and ops is None:
        raise RuntimeError("torchvision.ops is not usable in this environment")
    if ops is not None:
        return ops.batched_nms(b, s.to(b.dtype), lab, float(thresh))
    kept = []
    for value in torch.unique(lab):
        idx = torch.nonzero(lab == value).flatten()
        kept.append(idx[_nms_torch(b[idx], s[idx], float(thresh))])
    keep = torch.cat(kept)
    return keep[torch.sort(s[keep], descending=True, stable=True).indices]


def nms_many(boxes: Any, scores: Any, thresh: float, top_k: int | None = None) -> list[torch.Tensor]:
    """Greedy NMS, as `nms`, of one set of N boxes under each row of `scores` (U, N), with
    one IoU matrix for all rows (cheaper than `batched_nms` on U copies of the boxes); per
    row the first `top_k` kept indices (those do not depend on the rest), by descending
    score, equal scores lower index first."""
    b = _as_boxes(boxes)
    s = torch.as_tensor(scores, device=b.device)
    n = b.shape[0]
    if s.ndim != 2 or s.shape[1] != n:
        raise ValueError(f"scores must have shape (U, {n}), got {tuple(s.shape)}")
    rows, limit = s.shape[0], n if top_k is None else min(int(top_k), n)
    over = np.zeros((n, n), dtype=bool)
    for r0 in range(0, n, _NMS_FULL_MATRIX):
        over[r0:r0 + _NMS_FULL_MATRIX] = (box_iou(b[r0:r0 + _NMS_FULL_MATRIX], b) > thresh).cpu().numpy()
    order = torch.sort(s, dim=1, descending=True, stable=True).indices.cpu().numpy()
    removed = np.zeros((rows, n), dtype=bool)
    kept = np.zeros((rows, limit), dtype=np.int64)
    count = np.zeros(rows, dtype=np.int64)
    every = np.arange(rows)
    for t in range(n if limit else 0):  # rank t of every row at once
        c = order[:, t]
        take = every[~removed[every, c] & (count < limit)]
        kept[take, count[take]] = c[take]
        count[take] += 1
        removed[take] |= over[c[take]]
        if (count == limit).all():
            break
    return [torch.as_tensor(kept[u, :count[u]], device=b.device) for u in range(rows)]


# ---------------------------------------------------------------------------- warping

def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """MATLAB's round (halves away from zero); torch.round rounds halves to even."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def warp_geometry(boxes: Any, width: int, height: int, size: int, context: float = 16.0) -> dict[str, torch.Tensor]:
    """Per-box geometry of `warp_regions` (float64, on the boxes' device; see there).

    Returns `window` (N, 4): the expanded box rounded to whole pixels (before clipping);
    `clipped` (N, 4): it clipped to the image; `pad` (N, 2): (x, y) offset of the pasted
    crop in the S x S output; `crop` (N, 2): (width, height) of the pasted crop in output
    pixels (0 when the window misses the image).
    """
    b = _as_boxes(boxes).to(torch.float64)
    S = float(size)
    if not 0 <= 2 * context < S:
        raise ValueError(f"context must be in [0, size/2), got {context} for size {size}")
    if context > 0:
        scale = S / (S - 2 * context)
        half = (b[:, 2:] - b[:, :2]) / 2 * scale
        centre = (b[:, :2] + b[:, 2:]) / 2
        win = torch.cat([centre - half, centre + half], dim=1)
    else:
        win = b.clone()
    win = _round_half_away(win)
    # at least one pixel wide and high
    win[:, 2:] = torch.maximum(win[:, 2:], win[:, :2] + 1)
    unclipped = win[:, 2:] - win[:, :2]
    lim = torch.tensor([width, height], dtype=torch.float64, device=b.device)
    lo = win[:, :2].clamp(min=0)
    hi = torch.minimum(win[:, 2:], lim)
    clipped_size = (hi - lo).clamp(min=0)
    scale_xy = S / unclipped
    crop = _round_half_away(clipped_size * scale_xy)
    pad = _round_half_away((-win[:, :2]).clamp(min=0) * scale_xy)
    crop = torch.minimum(crop, S - pad).clamp(min=0)
    crop = torch.where(clipped_size > 0, crop, torch.zeros_like(crop))
    return {"window": win, "clipped": torch.cat([lo, hi], dim=1), "pad": pad, "crop": crop}


def warp_regions(image: torch.Tensor, boxes: Any, size: int, context: float = 16.0,
                 chunk: int = 256, channels_last: bool = False) -> torch.Tensor:
    """R-CNN's context-padded anisotropic warp of every box to a `size` x `size` window.

    `image` is a (C, H, W) float tensor, already mean-subtracted: the area of the window
    outside the image is filled with 0, which is the mean after mean subtraction (as in
    R-CNN); or (N, C, H, W), one image per box (R-CNN's *fg* segmentation features: each
    region's own masked image). `boxes` (N, 4) in the study's convention. Returns (N, C, size, size) on the
    image's device and in its dtype.

    Per box, following `rcnn_im_crop.m` (crop_mode "warp", padding = `context`):
    1. expand the box about its centre by `scale = S / (S - 2 * context)`, so that after
       warping it to S x S there are `context` pixels of surrounding image on each side;
       round the expanded window to whole pixels (MATLAB round: halves away from zero);
    2. clip the window to the image;
    3. resize the clipped part bilinearly, without antialiasing (imresize(..., 'bilinear',
       'antialias', false), which Caffe's OpenCV resize also matches), to its share of the
       S x S output: `round(clipped * S / unclipped)` pixels, and paste it at the offset
       `round(cut_off_left_or_top * S / unclipped)`; the rest of the output stays 0.

    `context` is measured in pixels of the warped S x S frame (R-CNN: 16 for S = 227).
    For a smaller network input the caller scales it, e.g. `context = 16 * S / 227`, to keep
    the same share of context. `context = 0` warps the box itself (R-CNN's setting without
    padding; the box is rounded to whole pixels).

    One deliberate difference from the MATLAB code: it takes the centre as
    `xmin + (xmax - xmin + 1) / 2` on 1-based indices, half a pixel right of / below the
    true centre, which makes the expanded window one pixel larger on the right and bottom.
    Here the centre is the true one, `(x1 + x2) / 2`, so the warp commutes with mirroring
    (up to exact rounding ties).

    All boxes go through one `grid_sample` per `chunk` of boxes (bounding the sampling
    grid's memory; the output itself is N x C x S x S, so callers with thousands of boxes
    and a large S should pass boxes in batches). `channels_last`: the output is stored
    channels-last, the layout the network's convolutions read, so a network input needs no
    copy (warping ~190 regions of a world image: 7.4-8.3 ms instead of 9.6-11.8); same values.
    """
    b = _as_boxes(boxes)
    n = b.shape[0]
    per_box = image.ndim == 4  # (N, C, H, W): box i warps image i
    if not (image.ndim == 3 or (per_box and image.shape[0] == n)):
        raise ValueError(f"image must be (C, H, W), or (N, C, H, W) with one image per box, got shape "
                         f"{tuple(image.shape)} for {n} boxes")
    if not image.is_floating_point():
        raise ValueError("image must be a float tensor (mean-subtracted)")
    C, H, W = image.shape[-3:]
    S = int(size)
    shape = (n, S, S, C) if channels_last else (n, C, S, S)
    out = torch.empty(shape, dtype=image.dtype, device=image.device)
    out = out.permute(0, 3, 1, 2) if channels_last else out
    if n == 0:
        return out
    g = warp_geometry(b.detach().to("cpu"), W, H, S, context)
    lo, hi, pad, crop = g["clipped"][:, :2], g["clipped"][:, 2:], g["pad"], g["crop"]
    # output pixel j of the crop (0-based) samples the clipped window at the pixel-edge
    # coordinate lo + (j + 0.5) * clipped / crop (imresize's mapping), clamped to the centres
    # of the window's first and last pixels (imresize replicates the window's border).
    step = (hi - lo) / crop.clamp(min=1)
    first = lo + (0.5 - pad) * step  # coordinate at output pixel 0
    lim = torch.tensor([W, H], dtype=torch.float64)
    # to grid_sample's normalised coordinates (align_corners=False: -1 and 1 are the image edges)
    n_first = (first * 2 / lim - 1).to(image.dtype).to(image.device)
    n_step = (step * 2 / lim).to(image.dtype).to(image.device)
    n_lo = ((lo + 0.5) * 2 / lim - 1).to(image.dtype).to(image.device)
    n_hi = ((hi - 0.5) * 2 / lim - 1).to(image.dtype).to(image.device)
    pad_d = pad.long().to(image.device)
    end_d = (pad + crop).long().to(image.device)
    j = torch.arange(S, device=image.device)
    jf = j.to(image.dtype)
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        m = s1 - s0
        coord = n_first[s0:s1, :, None] + jf[None, None, :] * n_step[s0:s1, :, None]  # (m, 2, S)
        coord = torch.maximum(torch.minimum(coord, n_hi[s0:s1, :, None]), n_lo[s0:s1, :, None])
        gx = coord[:, 0][:, None, :].expand(m, S, S)
        gy = coord[:, 1][:, :, None].expand(m, S, S)
        grid = torch.stack([gx, gy], dim=-1)
        if per_box:
            sampled = F.grid_sample(image[s0:s1], grid, mode="bilinear", padding_mode="border", align_corners=False)
        else:
            sampled = F.grid_sample(image[None], grid.reshape(1, m * S, S, 2), mode="bilinear", padding_mode="border",
                                    align_corners=False).reshape(C, m, S, S).permute(1, 0, 2, 3)
        inside = (j[None, None, :] >= pad_d[s0:s1, :, None]) & (j[None, None, :] < end_d[s0:s1, :, None])
        mask = inside[:, 1][:, :, None] & inside[:, 0][:, None, :]  # (m, S, S)
        torch.mul(sampled, mask[:, None].to(image.dtype), out=out[s0:s1])
    return out
