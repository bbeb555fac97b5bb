"""The fast detector: one convolutional pass per image and spatial pyramid pooling over each
proposal (SPP-net, He et al. 2014), instead of warping every proposal and running the whole
network on it (R-CNN). LSDA released such a version, 4 s -> 0.5 s per image.

Pipeline: `conv_map` runs the conv layers (`CaffeNet.conv_trunk`: everything `pool5` does but its
final 6 x 6 max-pool) once on the whole image, resized so its shorter side is `fast.scale`;
`spp_pool` projects each box onto that map and max-pools it into b x b bins for every pyramid
level b of `fast.bins` (6, 3, 2, 1); `SppHead` (fc6, fc7, output layer) scores the pooled
vector. `SppHead.from_model` starts from a trained CaffeNet: fc7 and the output layer copied,
fc6 reading the 6 x 6 level with CaffeNet's fc6 weights and the other levels with zeros.
Then, as SPP-net did, only the fc layers are fine-tuned (`finetune_head`), on features cached
once (`extract_spp`); the convolutional layers stay those of the given network.

Projection (SPP-net's appendix): the map cell (i, j) has its receptive-field centre at
resized-image point (c + j * S, c + i * S), with S the trunk's total stride and c the centre of
cell 0 (both from `nets.receptive_field(net, "conv5")`, 0-based pixel edges). A box edge x of
the resized image is `u = (x - c) / S` in cell units (cell k's centre at u = k); the box covers
cells `floor(u_left) + 1 .. ceil(u_right) - 1` (inclusive; likewise top / bottom): exactly the
cells whose centre lies strictly inside the box. This is SPP-net's `floor(x / S) + 1`,
`ceil(x / S) - 1` with the offset c that SPP-net says to add when the paddings are not
floor(k / 2) (they are not here: conv1 pads 1 with an 8 px kernel). A box with no centre
strictly inside along an axis takes the one cell nearest its middle; then the cells are
clamped to the map, so every box covers at least one cell.

Bins: level b splits a box of n cells (per axis) into bins `[floor(i n / b), ceil((i + 1) n / b))`
(SPP-net's edges; torch's adaptive max-pooling uses the same), so bins may overlap and are
never empty, even when n < b. Levels are concatenated in `fast.bins` order, each flattened in
(channel, y, x) order, as pool5 is: level 6 alone has pool5's layout.

No context: SPP pools the box itself, as SPP-net. That is also what pool5 of a warped window
covers: its 6 x 6 bins pool the conv5 cells whose centres lie inside the box (embedded net:
centres 5..53 px of the 64 px window, box 5..59; torchvision AlexNet: 15.5..207.5 of 227,
box 16..211), the context being only in their receptive fields. Measured with an untrained
embedded net on 4 scenes, the level-6 features agree better with warped pool5 on the box
itself than on the box grown by the warp's context (mean centred cosine 0.67 vs 0.62 at
scale 176).

Feature cache (`extract_spp`): `spp-<tag>/<key>/` holds per image `<id>.boxes.npy` (float32
(N, 4), the regions in the order given), `<id>.npy` (float16 (N, C * sum b^2)) and, when
extracted with `mirror=True`, `<id>.flip.npy`: the features of the same regions in the
horizontally mirrored image (one more conv pass per image). Features are written last, so an
interrupted extraction resumes at the first image without them. Fine-tuning from a cache can
only mirror with these (R-CNN mirrors each window with p = 0.5; flipping pooled features
would not be the mirrored window's features).
"""
from __future__ import annotations

import copy
import io
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lsda_core.models import finetune as FT
from lsda_core.models import nets
from lsda_core.models import solver as sgd
from lsda_core.store.cache import Cache, Lazy, entry_folder, entry_ref
from lsda_core.store.files import atomic_save_npy, atomic_write_bytes, atomic_write_text
from lsda_core.data.images import load_image
from lsda_core.core.errors import DataError
from lsda_core.detection.features import autocast, file_stem, load_regions, regions_with_gt, to_device
from lsda_core.models.nets import GRID, CaffeNet, cpu_autocast
from lsda_core.core.params import Params
from lsda_core.store.runtime import machine, pick_device, progress as progress_bar
from lsda_core.core.structures import DetectionDataset
from lsda_core.store.identity import array_digest, dataset_identity, derived_key, model_key

BINS = (6, 3, 2, 1)  # SPP-net's pyramid
FC_LAYERS = ("fc6", "fc7", "head")
POOL_BYTES = 64 << 20  # bound on one spp_pool chunk's gathered corner values
FEATURE_BYTES = 2 << 30  # training features are held in memory up to this size, else read per batch


# ------------------------------------------------------------------------ the conv pass

def _boxes64(boxes: Any) -> np.ndarray:
    """(N, 4) boxes (array, list or tensor on any device) -> float64 (N, 4) array."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().to(torch.float64).numpy()
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class MapTransform:
    """Image -> conv-map coordinates of one conv pass: the image was resized by (`sx`, `sy`);
    map cell (i, j) of the `height` x `width` map has its receptive-field centre at the resized
    image's point (centre + j * stride, centre + i * stride) (0-based pixel edges)."""

    sx: float
    sy: float
    stride: int
    centre: float
    height: int
    width: int

    def to_cells(self, boxes: Any) -> np.ndarray:
        """(N, 4) image boxes -> float64 (N, 4) positions in cell units (cell k's centre at k)."""
        return (_boxes64(boxes) * np.array([self.sx, self.sy, self.sx, self.sy]) - self.centre) / self.stride


def _chw(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 array or (3, H, W) tensor -> (3, H, W) tensor."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.require(image, requirements=["W", "C"])).permute(2, 0, 1)
    return image


@torch.inference_mode()
def conv_map(model: CaffeNet, image: np.ndarray | torch.Tensor, scale: int) -> tuple[torch.Tensor, MapTransform]:
    """conv5 maps (C, h, w) of one whole image, and the image -> map transform.

    The image ((H, W, 3) uint8 RGB array or (3, H, W) tensor on 0..255) is normalised, then
    resized bilinearly (no antialiasing, as the warp) so that its shorter side is `scale` px,
    and goes through `CaffeNet.conv_trunk` in eval mode (batch norm folded) on the model's device.

    Choice of `scale` (`fast.scale`): warping shows every region at one size, the box filling
    `S_in - 2 p` of the S_in px input (54 of 64 px on the embedded net); one pass per image
    shows each object at its own size times the resize factor. The default makes the two agree
    for a proposal of typical size: the median sqrt(area) of the embedded world's selective
    search proposals is about 37 px (10 / 50 / 90 % quantiles 17 / 37 / 83 px, measured on 12
    VOC-view scenes, 2205 proposals), so 120 px * 54 / 37 ~ 175 -> 176. Smaller proposals then
    cover fewer cells, larger ones more, as in SPP-net (single scale 688 px for 224 px inputs).
    """
    img = _chw(image)
    H, W = int(img.shape[1]), int(img.shape[2])
    r = scale / min(H, W)
    h, w = max(1, int(math.floor(H * r + 0.5))), max(1, int(math.floor(W * r + 0.5)))
    x = model.normalize(img)[None]
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    with nets.in_eval(model):
        conv = model.conv_trunk(x)[0]
    if conv.shape[1] < 1 or conv.shape[2] < 1:
        raise ValueError(f"conv_map: a {h} x {w} px image gives an empty conv5 map; raise fast.scale ({scale})")
    size, stride, offset = nets.receptive_field(model.net, "conv5")
    return conv, MapTransform(w / W, h / H, stride, offset + size / 2, int(conv.shape[1]), int(conv.shape[2]))


# ------------------------------------------------------------------ spatial pyramid pooling

def project_boxes(boxes: Any, transform: MapTransform) -> torch.Tensor:
    """(N, 4) image boxes -> int64 (N, 4) inclusive map cells (x0, y0, x1, y1), SPP-net's
    projection (see the module docstring): the cells whose receptive-field centre lies
    strictly inside the box; the cell nearest the box's middle when none does; clamped to
    the map."""
    return torch.from_numpy(_cells(boxes, transform))


def _cells(boxes: Any, transform: MapTransform) -> np.ndarray:
    """`project_boxes` as an int64 (N, 4) array: the pooling's index arithmetic runs in numpy,
    a few microseconds an operation on these small arrays where torch takes several more."""
    u = transform.to_cells(boxes)
    lo = np.floor(u[:, :2]) + 1
    hi = np.ceil(u[:, 2:]) - 1
    empty = hi < lo
    mid = np.floor((u[:, :2] + u[:, 2:]) / 2 + 0.5)
    lo, hi = np.where(empty, mid, lo), np.where(empty, mid, hi)
    top = np.array([transform.width - 1, transform.height - 1], dtype=np.float64)
    lo = np.minimum(np.maximum(lo, 0), top)
    hi = np.minimum(np.maximum(hi, 0), top)
    return np.concatenate([lo, hi], axis=1).astype(np.int64)


def _sparse_table(conv: torch.Tensor, levels_y: int, levels_x: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Range maxima of (C, H, W) maps: block (a, b), for a < `levels_y` and b < `levels_x`
    (at most log2 H + 1 and log2 W + 1), holds at (y, x) the max over rows [y, y + 2^a) and
    columns [x, x + 2^b), for every (y, x) where that range fits (H - 2^a + 1 rows,
    W - 2^b + 1 columns). Returns the blocks' rows of C values stacked into one (M, C) tensor,
    each block's first row (KH, KW) and width (KW,) (int64 arrays), so that entry (a, b, y, x)
    is row `first[a, b] + y * width[b] + x`. Each block is computed from the previous one by one
    elementwise max, written in place."""
    C, H, W = conv.shape
    hs = [H - (1 << a) + 1 for a in range(min(levels_y, H.bit_length()))]
    ws = [W - (1 << b) + 1 for b in range(min(levels_x, W.bit_length()))]
    sizes = np.outer(hs, ws)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).reshape(sizes.shape)
    flat = conv.new_empty((int(sizes.sum()), C))

    def block(a: int, b: int) -> torch.Tensor:
        return flat[starts[a, b]:starts[a, b] + hs[a] * ws[b]].view(hs[a], ws[b], C)

    block(0, 0).copy_(conv.permute(1, 2, 0))
    for a in range(1, len(hs)):
        d, prev = 1 << (a - 1), block(a - 1, 0)
        torch.maximum(prev[:hs[a]], prev[d:d + hs[a]], out=block(a, 0))
    for a in range(len(hs)):
        for b in range(1, len(ws)):
            d, prev = 1 << (b - 1), block(a, b - 1)
            torch.maximum(prev[:, :ws[b]], prev[:, d:d + ws[b]], out=block(a, b))
    return flat, starts, np.array(ws, dtype=np.int64)


def _bin_edges(first: np.ndarray, n: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive), (N, b), of b bins over n cells from `first`: SPP-net's
    [floor(i n / b), ceil((i + 1) n / b))."""
    i = np.arange(b)
    return first[:, None] + i[None] * n[:, None] // b, first[:, None] - (-(i[None] + 1) * n[:, None] // b)


def _gathered_levels(bins: Sequence[int]) -> list[int]:
    """The pyramid levels pooled from the map: those no other level is a multiple of. Level b
    of a box is the max over k x k blocks of level k b's bins: k b bins of n cells, taken k at a
    time, cover [floor(j n / b), ceil((j + 1) n / b)), exactly level b's bin j."""
    return sorted({b for b in bins if not any(m != b and m % b == 0 for m in bins)})


def _level_bins(cells: np.ndarray, b: int) -> tuple[np.ndarray, ...]:
    """Every box's b x b bins as (N, b, 1) row and (N, 1, b) column edges, end exclusive."""
    y0, y1 = _bin_edges(cells[:, 1], cells[:, 3] - cells[:, 1] + 1, b)
    x0, x1 = _bin_edges(cells[:, 0], cells[:, 2] - cells[:, 0] + 1, b)
    return y0[:, :, None], y1[:, :, None], x0[:, None, :], x1[:, None, :]


def _log2(n: np.ndarray) -> np.ndarray:
    """floor(log2 n) of positive integers, exactly (the exponent of n's float64 form)."""
    return np.frexp(n)[1] - 1


def _pool_level(flat: torch.Tensor, first: np.ndarray, width: np.ndarray, edges: tuple[np.ndarray, ...],
                C: int) -> torch.Tensor:
    """(N, C, b, b) max over each of b x b bins (`_level_bins`) of every box's cells: 4
    sparse-table lookups a bin, their rows gathered by one `index_select` per chunk of boxes
    (chunks bound the gathered values to `POOL_BYTES`)."""
    y0, y1, x0, x1 = edges
    n, b = y0.shape[0], y0.shape[1]
    ky, kx = _log2(y1 - y0), _log2(x1 - x0)
    base, w = first[ky, kx], width[kx]
    corners = np.stack([base + r * w + c for r in (y0, y1 - (1 << ky)) for c in (x0, x1 - (1 << kx))])
    idx = torch.from_numpy(corners.reshape(4, n * b * b)).to(flat.device)
    step = max(1, POOL_BYTES // (4 * b * b * C * flat.element_size())) * b * b  # rows of whole boxes
    out = []
    for s in range(0, n * b * b, step):
        got = flat.index_select(0, idx[:, s:s + step].reshape(-1)).view(4, -1, C)
        out.append(torch.maximum(torch.maximum(got[0], got[1]), torch.maximum(got[2], got[3])))
    pooled = torch.cat(out) if len(out) > 1 else out[0]  # (n * b * b, C)
    return pooled.view(n, b, b, C).permute(0, 3, 1, 2)


def spp_pool(conv: torch.Tensor, boxes: Any, transform: MapTransform, bins: Sequence[int] = BINS) -> torch.Tensor:
    """Spatial pyramid pooling of every box: (C, H, W) or (1, C, H, W) conv maps and (N, 4)
    image boxes -> (N, C * sum b^2), levels in `bins` order, each flattened (channel, y, x).

    Exact and batched over boxes: a 2-D sparse table of range maxima (`_sparse_table`, up to
    log H x log W shrinking copies of the map, as many as the longest bin needs) answers the
    max over any rectangle of cells with 4 lookups (the max over [y0, y1) is the max of the two
    overlapping ranges of length 2^floor(log2(y1 - y0)) starting at y0 and ending at y1;
    likewise for columns). Only the levels of `_gathered_levels` are looked up (6 of SPP-net's
    6, 3, 2, 1); the others are maxima over blocks of their bins. No loop over boxes."""
    if conv.ndim == 4:
        conv = conv[0]
    C, H, W = conv.shape
    bins = [int(b) for b in bins]
    cells = _cells(boxes, transform)
    n = len(cells)
    out = conv.new_empty((n, C * sum(b * b for b in bins)))
    if n == 0:
        return out
    edges = {b: _level_bins(cells, b) for b in _gathered_levels(bins)}
    longest = [max(int((e[1] - e[0]).max()) for e in edges.values()),  # the longest bin, rows and columns
               max(int((e[3] - e[2]).max()) for e in edges.values())]
    flat, first, width = _sparse_table(conv, *(k.bit_length() for k in longest))
    levels = {b: _pool_level(flat, first, width, e, C) for b, e in edges.items()}
    for b in sorted(set(bins), reverse=True):  # finest first, so each level reads the coarsest finer one
        if b not in levels:
            m = min(m for m in levels if m % b == 0)  # the coarsest level already pooled
            levels[b] = F.max_pool2d(levels[m], m // b)
    at = 0
    for b in bins:  # each level straight into its columns of the output, (channel, y, x) order
        out[:, at:at + C * b * b].view(n, C, b, b).copy_(levels[b])
        at += C * b * b
    return out


@torch.inference_mode()
def spp_features(model: CaffeNet, image: np.ndarray | torch.Tensor, boxes: Any, p: Params) -> torch.Tensor:
    """(N, C * sum b^2) SPP features of the boxes of one image, in one conv pass at
    `fast.scale`, on the model's device."""
    conv, tf = conv_map(model, image, p.fast.scale)
    return spp_pool(conv, boxes, tf, p.fast.bins)


# --------------------------------------------------------------------------- the fc head

class SppHead(nn.Module):
    """fc6 (C * sum b^2 -> fc_width), fc7 and the output layer over SPP features, with
    CaffeNet's activations and dropout: ReLU and dropout after fc6 and after fc7, in the
    CaffeNet's arithmetic (`bf16`: bfloat16 autocast on the CPU, float32 returned)."""

    def __init__(self, channels: int, bins: Sequence[int], fc_width: int, n_out: int, dropout: float,
                 bf16: bool = False) -> None:
        super().__init__()
        self.channels, self.bins, self.dropout_p = int(channels), tuple(int(b) for b in bins), float(dropout)
        self.bf16 = bf16
        self.cache_key: str | None = None  # set by the stage that built or loaded the weights
        self.fc6 = nets.Linear(self.channels * sum(b * b for b in self.bins), fc_width)
        self.fc7 = nets.Linear(fc_width, fc_width)
        self.head = nets.Linear(fc_width, n_out)
        for m in (self.fc6, self.fc7):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.weight, 0.0, 0.01)
        nn.init.zeros_(self.head.bias)

    @property
    def in_dim(self) -> int:
        return self.fc6.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def level_slice(self, b: int) -> slice:
        """The columns of pyramid level `b` in the feature vector."""
        if b not in self.bins:
            raise ValueError(f"no level {b} in bins {self.bins}")
        start = self.channels * sum(k * k for k in self.bins[:self.bins.index(b)])
        return slice(start, start + self.channels * b * b)

    def layer_modules(self, name: str) -> list[nn.Module]:
        """The modules of a layer by CaffeNet's names (none for conv layers), so that
        `sgd.param_groups` gives the head Caffe's per-blob learning rates."""
        return [getattr(self, name)] if name in FC_LAYERS else []

    def fc(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """fc6 or fc7 features as relu(x W + b) without dropout (R-CNN's layer ablation)."""
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"layer must be fc6 or fc7, got {layer!r}")
        with cpu_autocast(self.bf16, x):
            x = F.relu(self.fc6(x))
            return (x if layer == "fc6" else F.relu(self.fc7(x))).float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """fc7 after dropout (training) or fc7 (eval): the input of the output layer."""
        with cpu_autocast(self.bf16, x):
            return self._features(x).float()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.relu(self.fc6(x)), self.dropout_p, self.training)
        return F.dropout(F.relu(self.fc7(x)), self.dropout_p, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with cpu_autocast(self.bf16, x):
            return self.head(self._features(x)).float()

    @classmethod
    def from_model(cls, model: CaffeNet, bins: Sequence[int] = BINS) -> SppHead:
        """A head computing, before any training, what `model`'s fc layers compute on pool5
        when given the 6 x 6 level as pool5: fc7 and the output layer copied, fc6's columns of
        level 6 copied from the model's fc6 (same (channel, y, x) order), the other levels' 0.
        On the model's device, in eval mode."""
        bins = tuple(int(b) for b in bins)
        if GRID not in bins:
            raise ValueError(f"bins {list(bins)} lack level {GRID}, the one initialised from pool5's fc6")
        ref = model.fc6.weight
        head = cls(model.conv5.out_channels, bins, model.net.fc_width, model.num_classes, model.net.dropout,
                   model.bf16)
        head.to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            head.fc6.weight.zero_()
            head.fc6.weight[:, head.level_slice(GRID)] = model.fc6.weight
            head.fc6.bias.copy_(model.fc6.bias)
            for name in ("fc7", "head"):
                getattr(head, name).weight.copy_(getattr(model, name).weight)
                getattr(head, name).bias.copy_(getattr(model, name).bias)
        head.cache_key = derived_key(model_key(model), f"spp{list(bins)}", "derive-spp")
        return head.eval()


# ------------------------------------------------------------------------ cached features

def extract_spp(model: CaffeNet, dataset: DetectionDataset, regions: dict[str, np.ndarray], p: Params,
                cache: Cache, tag: str, mirror: bool = False) -> Path:
    """`spp_entry`'s folder, built now if it is not in the cache."""
    return spp_entry(model, dataset, regions, p, cache, tag, mirror).folder()


def spp_entry(model: CaffeNet, dataset: DetectionDataset, regions: dict[str, np.ndarray], p: Params,
              cache: Cache, tag: str, mirror: bool = False) -> Lazy:
    """SPP features of `regions[image_id]` for every image of `dataset` (one conv pass per
    image, `spp_features`), eval mode, on `runtime.device`; with `mirror`, also those of the
    mirrored regions in the mirrored image (for fine-tuning with mirroring). Cached resumable
    per image in `spp-<tag>/<key>` (layout: module docstring), keyed on the model's cache key,
    the dataset, the regions, `fast` and `mirror`. Returns the entry, deferred
    (`store.cache.Lazy`; read its folder with `load_spp` and `features.load_regions`)."""
    device = pick_device(p.runtime.device)
    ids = [im.image_id for im in dataset.images]
    missing = [i for i in ids if i not in regions]
    if missing:
        raise KeyError(f"extract_spp: no regions for {len(missing)} image(s), e.g. {missing[0]!r}")
    config = {"model": model_key(model), "dataset": dataset_identity(dataset), "fast": asdict(p.fast),
              "regions": array_digest(np.asarray(regions[i], np.float32).reshape(-1, 4) for i in ids),
              "mirror": mirror}

    def build(out: Path) -> None:
        todo = [im for im in dataset.images if not (out / f"{file_stem(im.image_id)}.npy").is_file()]
        was, dev0 = model.training, model.mean.device
        model.to(device).eval()
        try:
            for im in progress_bar(todo, f"spp {tag}", p.runtime.progress):
                boxes = np.asarray(regions[im.image_id], dtype=np.float32).reshape(-1, 4)
                img = load_image(im.path)
                name = file_stem(im.image_id)
                atomic_save_npy(out / f"{name}.boxes.npy", boxes)
                if mirror:
                    w = img.shape[1]
                    flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
                    f = spp_features(model, img[:, ::-1], flipped, p)
                    atomic_save_npy(out / f"{name}.flip.npy", f.to(torch.float16).cpu().numpy())
                feats = spp_features(model, img, boxes, p)
                atomic_save_npy(out / f"{name}.npy", feats.to(torch.float16).cpu().numpy())
        finally:
            model.to(dev0).train(was)

    return cache.lazy(f"spp-{tag}", config, build, resumable=True)


def load_spp(folder: Path, image_id: str, flip: bool = False, mmap: bool = False) -> np.ndarray:
    """float16 (N, C * sum b^2) SPP features of one image (`flip`: of its mirrored regions)."""
    suffix = ".flip.npy" if flip else ".npy"
    return np.load(Path(folder) / f"{file_stem(image_id)}{suffix}", mmap_mode="r" if mmap else None)


@torch.inference_mode()
def cached_scores(head: SppHead, folder: Path, dataset: DetectionDataset, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Output-layer scores (N, n_out), float32, of every cached region of every image of
    `dataset`, in the cached order (eval mode, no dropout)."""
    device = head.fc6.weight.device
    out = {}
    with nets.in_eval(head):
        for im in dataset.images:
            f = torch.from_numpy(load_spp(folder, im.image_id))
            parts = [head(f[s:s + chunk].to(device=device, dtype=torch.float32)).cpu() for s in range(0, len(f), chunk)]
            out[im.image_id] = torch.cat(parts).numpy() if parts else np.zeros((0, head.num_classes), np.float32)
    return out


@torch.inference_mode()
def detect_scores(model: CaffeNet, head: SppHead, image: np.ndarray | torch.Tensor, boxes: Any,
                  p: Params) -> np.ndarray:
    """Output-layer scores (n_boxes, n_out), float32, of the boxes of one image: one conv
    pass (`fast.scale`), SPP, the head in eval mode; on the model's device (the head's must
    be the same)."""
    with nets.in_eval(head):
        return head(spp_features(model, image, boxes, p).float()).cpu().numpy()


# ------------------------------------------------------------------- fc-only fine-tuning

class _Rows:
    """The cached features of a training split, gathered by (image, row, flip): all in memory
    (one array per orientation) when they fit in `max_bytes`, else read per batch from disk."""

    def __init__(self, folder: Path, image_ids: Sequence[str], mirror: bool, max_bytes: int = FEATURE_BYTES) -> None:
        self.folder, self.ids = Path(folder), list(image_ids)
        self.flips = (False, True) if mirror else (False,)
        shapes = [load_spp(folder, i, mmap=True).shape for i in self.ids]
        self.dim = shapes[0][1]
        counts = np.array([s[0] for s in shapes], dtype=np.int64)
        self.offsets = np.cumsum(counts) - counts
        self.mem: dict[bool, np.ndarray] | None = None
        if counts.sum() * self.dim * 2 * len(self.flips) <= max_bytes:
            self.mem = {f: np.concatenate([load_spp(folder, i, flip=f) for i in self.ids]) for f in self.flips}

    def gather(self, image: np.ndarray, row: np.ndarray, flip: np.ndarray) -> np.ndarray:
        """float16 (n, D) features of rows `row` of images `image` (mirrored where `flip`)."""
        out = np.empty((len(image), self.dim), dtype=np.float16)
        for f in self.flips:
            sel = flip == f
            if self.mem is not None:
                out[sel] = self.mem[f][self.offsets[image[sel]] + row[sel]]
                continue
            for i in np.unique(image[sel]):  # the batch's images, not its regions
                s = sel & (image == i)
                out[s] = load_spp(self.folder, self.ids[i], flip=f, mmap=True)[row[s]]
        return out


def finetune_head(p: Params, head: SppHead, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
                  cache: Cache, classes: Sequence[str], features: Path | Lazy, frozen: Iterable[str] = (),
                  head_rows: Sequence[int] | None = None, seed: int | None = None,
                  mirror: bool | None = None) -> tuple[SppHead, dict[str, Any]]:
    """SPP-net's fine-tuning of the fc layers only, on cached SPP features; the conv layers
    are not touched (they are not part of the head).

    `features`: `extract_spp` of `features.regions_with_gt(dataset, proposals, classes)` (the
    windows of `finetune.window_lists`, in its order; checked). R-CNN's procedure and schedule
    from `finetune`, as `finetune.finetune`: each of `iterations` SGD steps draws
    `fg_per_batch` foreground and `bg_per_batch` background windows (`finetune.sample_windows`),
    softmax cross-entropy with dropout on; lr `finetune.lr`, output layer 10x, biases 2x without
    decay, momentum, weight decay, lr / 10 every `lr_step` steps.

    Output rows are the head's (0 = background, 1 + i = classes[i]). `head_rows`: only these
    rows learn (the others are restored after every step). `frozen`: fc layers ("fc6", "fc7",
    "head") that do not learn. `mirror` (default `finetune.mirror`): windows flagged with
    p = 0.5 use the mirrored features (`extract_spp(..., mirror=True)`; `DataError` without
    them). `seed`: default `runtime.seed`. Cached as `finetune-spp/<key>` on the head, the
    features, the dataset, the proposals, `classes`, `finetune`, the seed, `frozen`,
    `head_rows` and `mirror`. Returns (a trained copy of the head, eval mode, on
    `runtime.device`, `cache_key` set; history).
    """
    frozen = sorted(set(frozen))
    bad = [f for f in frozen if f not in FC_LAYERS]
    if bad:
        raise ValueError(f"frozen: unknown layers {bad}; the head's layers are {list(FC_LAYERS)}")
    if len(frozen) == len(FC_LAYERS):
        raise ValueError("fine-tuning with every layer frozen")
    classes = list(classes)
    if head.num_classes != len(classes) + 1:
        raise ValueError(f"the head has {head.num_classes} outputs; {len(classes)} classes need {len(classes) + 1}")
    rows = sorted(set(int(r) for r in head_rows)) if head_rows is not None else None
    if rows is not None and (not rows or rows[0] < 0 or rows[-1] >= head.num_classes):
        raise ValueError(f"head_rows must be non-empty indices in [0, {head.num_classes}), got {head_rows}")
    mirror = p.finetune.mirror if mirror is None else mirror
    seed = p.runtime.seed if seed is None else int(seed)
    device = pick_device(p.runtime.device)
    ids = [im.image_id for im in dataset.images]
    config = {"head": model_key(head), "features": entry_ref(features),
              "dataset": dataset_identity(dataset), "classes": classes, "finetune": asdict(p.finetune),
              "proposals": array_digest(np.asarray(proposals.get(i, np.zeros((0, 4))), np.float32) for i in ids),
              "seed": seed, "frozen": frozen, "head_rows": rows, "mirror": mirror}

    def build(out: Path) -> None:
        folder = entry_folder(features)
        _check_features(folder, dataset, proposals, classes, mirror)
        tuned, history = _finetune_head(p, head, dataset, proposals, classes, folder, frozen, rows, seed, mirror, device)
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in tuned.state_dict().items()}, buf)
        atomic_write_bytes(out / "head.pt", buf.getvalue())
        atomic_write_text(out / "history.json", json.dumps(history, indent=1))

    folder = cache.entry("finetune-spp", config, build)
    history = json.loads((folder / "history.json").read_text())
    history["key"] = f"{folder.parent.name}/{folder.name}"
    tuned = copy.deepcopy(head).cpu()
    tuned.load_state_dict(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))
    tuned.cache_key = history["key"]
    return tuned.to(device).eval(), history


def _check_features(folder: Path, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
                    classes: list[str], mirror: bool) -> None:
    """The cached SPP features must be those of the fine-tuning windows (and mirrored ones)."""
    windows, _ = regions_with_gt(dataset, proposals, classes)
    for im in dataset.images:
        if not np.array_equal(load_regions(folder, im.image_id), windows[im.image_id]):
            raise ValueError(f"{folder}: the cached regions of image {im.image_id!r} are not its windows "
                             f"(features.regions_with_gt(dataset, proposals, classes))")
        if mirror and not (folder / f"{file_stem(im.image_id)}.flip.npy").is_file():
            raise DataError(f"{folder}: no mirrored features; extract them with extract_spp(..., mirror=True) "
                            f"or fine-tune with mirror=False (finetune.mirror)")


def _finetune_head(p: Params, head: SppHead, dataset: DetectionDataset, proposals: dict[str, np.ndarray],
                   classes: list[str], features: Path, frozen: list[str], rows: list[int] | None, seed: int,
                   mirror: bool, device: torch.device) -> tuple[SppHead, dict[str, Any]]:
    cfg = p.finetune
    t_all = time.time()
    windows = FT.window_lists(dataset, proposals, classes, cfg.fg_iou)
    if len(windows["fg_label"]) == 0:
        raise DataError(f"fine-tuning on {dataset.name} {dataset.split}: no foreground window (no ground-truth box "
                        f"of the classes {classes[:5]}...)")
    store = _Rows(features, [im.image_id for im in dataset.images], mirror)
    s = sgd.stage_seed(seed, "finetune-spp")
    gen = torch.Generator().manual_seed(s)
    history: dict[str, Any] = {"device": str(device), "machine": machine(), "threads": torch.get_num_threads(),
                               "n_fg_windows": len(windows["fg_label"]), "n_bg_windows": len(windows["bg_image"]),
                               "n_images": len(dataset), "features_in_memory": store.mem is not None,
                               "mirror": mirror, "frozen": frozen, "head_rows": rows, "log": []}
    with sgd.fork_rng(device):
        torch.manual_seed(s)
        tuned = copy.deepcopy(head).to(device).train()
        fixed = sgd.FixedRows(tuned.head, rows) if rows is not None and "head" not in frozen else None
        groups = sgd.param_groups(tuned, cfg.lr, cfg.weight_decay, head_mult=10.0, frozen=frozen)
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
        t0 = time.time()
        for it in progress_bar(range(cfg.iterations), "fine-tune fc (SPP)", p.runtime.progress):
            factor = 0.1 ** (it // cfg.lr_step)
            sgd.set_lr(opt, factor)
            batch = FT.sample_windows(windows, cfg.fg_per_batch, cfg.bg_per_batch, gen, mirror)
            x = store.gather(batch["image"].numpy(), batch["window"].numpy(), batch["flip"].numpy())
            logits = tuned(torch.from_numpy(x).to(device=device, dtype=torch.float32))
            y = batch["label"].to(device)
            loss = F.cross_entropy(logits, y)
            sgd.step(opt, loss, fixed)
            lv = loss.item()
            if not math.isfinite(lv):
                raise FloatingPointError(f"fc fine-tuning diverged at step {it + 1} (loss {lv}); lower finetune.lr")
            pred = logits.argmax(1)
            fgm = y > 0
            loss_sum += lv
            acc_fg += (pred[fgm] == y[fgm]).sum().item()
            acc_bg += (pred[~fgm] == 0).sum().item()
            n_fg += fgm.sum().item()
            n_bg += (~fgm).sum().item()
            if (it + 1) % FT.LOG_EVERY == 0 or it + 1 == cfg.iterations:
                steps = (it % FT.LOG_EVERY) + 1
                history["log"].append({"iteration": it + 1, "lr": cfg.lr * factor, "loss": loss_sum / steps,
                                       "fg_acc": acc_fg / max(n_fg, 1), "bg_acc": acc_bg / max(n_bg, 1),
                                       "seconds": round(time.time() - t0, 2)})
                loss_sum = acc_fg = acc_bg = n_fg = n_bg = 0.0
    history["seconds"] = round(time.time() - t_all, 2)
    history["seconds_per_100_steps"] = round(100 * (time.time() - t0) / max(cfg.iterations, 1), 3)
    for t in tuned.parameters():
        t.requires_grad_(True)
    return tuned.eval(), history


def fast_scorer(model: CaffeNet, head: SppHead, p: Params, gpu_path: bool) -> Callable[[np.ndarray, np.ndarray], Any]:
    """Scores of every region of an image by the fast detector (its timed unit): one conv
    pass, SPP, the head (`detect_scores`)."""
    device = model.mean.device

    def scores(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        x = to_device(torch.from_numpy(image), device, gpu_path).permute(2, 0, 1)
        with autocast(device, gpu_path):
            return detect_scores(model, head, x, boxes, p)
    return scores
