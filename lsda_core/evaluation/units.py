"""pool5 units: the regions one unit responds to most (R-CNN Figures 3 and 6).

A unit is one position (y, x) of one channel of the 6 x 6 pool5 map. Its column in pool5
features (the cache of `lsda_core.detection.features`, pool5 `FeatureSet`s, pool5 SVM weights) is
`channel * 36 + y * 6 + x`: the (channel, y, x) flattening of `pool5.reshape(N, -1)`.

`top_regions` scores every region of a held-out split by each unit's activation, runs NMS
at IoU 0.1 within each image on that score (the paper's setting for these figures; never
across images), and keeps the global top K. It also returns the channel's maximum over the
split (over all its units (y, x) and all regions), by which the paper divides the
activation it prints on each crop.

Receptive fields come from the network's definition (`nets.receptive_field`): in the warped
S x S input the network saw (context padding included), unit (y, x) covers
`[offset + x * stride, offset + x * stride + size)` across and the same down, clipped to the
frame. `receptive_box_in_image` maps that back through the region's context-padded warp
window (`boxes.warp_geometry`), which the warp stretches linearly onto the S x S frame.

Units are chosen as the paper did (a category's pool5 SVM: its largest positive and most
negative weights; plus generic units, here those with the largest weight averaged over every
category's SVM, i.e. evidence for all categories rather than one, at most one per channel)
or listed explicitly (parameter `units.units`, as [y, x, channel]). The weights' order does
not depend on the SVMs' feature scale (one positive number folded into W).

The paper's Figure 3 prints values up to 10, which no maximum over the same regions can
give; here the maximum is over the whole split (its Figure 6 caption), so values are <= 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from lsda_core.core import boxes as B
from lsda_core.models import nets
from lsda_core.data.images import load_image
from lsda_core.models.finetune import context_pixels
from lsda_core.core.params import Net, Params, ParamsError
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_save_npz
from lsda_core.store.identity import digest
from lsda_core.store.runtime import progress as progress_bar
from lsda_core.core.structures import DetectionDataset



class FeatureSet(Protocol):
    """What the unit search reads of region features (`detection.pipeline.FeatureSet` has it):
    the regions per split and image, a loader of their (N, D) features, and the key naming them."""

    key: str
    regions: dict[str, dict[str, np.ndarray]]

    def load(self, split: str, image_id: str) -> np.ndarray: ...

GRID = nets.GRID
CELLS = GRID * GRID


@dataclass(frozen=True)
class Unit:
    """One pool5 unit: grid position (y, x) and channel; `label` says why it was chosen."""

    y: int
    x: int
    channel: int
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not (0 <= self.y < GRID and 0 <= self.x < GRID and self.channel >= 0):
            raise ValueError(f"pool5 unit (y, x, channel) = ({self.y}, {self.x}, {self.channel}): "
                             f"y and x must be in 0..{GRID - 1}, channel >= 0")

    @property
    def column(self) -> int:
        """The unit's column in (channel, y, x)-flattened pool5 features."""
        return self.channel * CELLS + self.y * GRID + self.x

    @classmethod
    def from_column(cls, column: int, label: str = "") -> Unit:
        """The unit of a pool5 feature column (inverse of `column`)."""
        c, cell = divmod(int(column), CELLS)
        return cls(cell // GRID, cell % GRID, c, label)

    def __str__(self) -> str:
        return f"({self.y}, {self.x}, {self.channel})" + (f" {self.label}" if self.label else "")


@dataclass
class UnitTop:
    """A unit's top regions over a split, best first: which image and region, the box, the
    raw activation; and the channel's maximum over the split (for the normalised value)."""

    unit: Unit
    image_ids: list[str]
    region_index: np.ndarray  # (K,) int64: row in the image's regions
    boxes: np.ndarray  # (K, 4) float32, the study's box convention
    activation: np.ndarray  # (K,) float32
    channel_max: float

    @property
    def normalised(self) -> np.ndarray:
        """Activation divided by the channel's maximum over the split (as the paper prints it)."""
        if self.channel_max <= 0:
            return np.zeros_like(self.activation)
        return self.activation / np.float32(self.channel_max)

    def head(self, n: int | None) -> UnitTop:
        """The first `n` regions (all when None)."""
        return replace(self, image_ids=self.image_ids[:n], region_index=self.region_index[:n],
                       boxes=self.boxes[:n], activation=self.activation[:n])


# ------------------------------------------------------------------------- top regions

def _rank_within(sorted_labels: np.ndarray) -> np.ndarray:
    """Position of each element within its run of equal labels (labels sorted ascending)."""
    return np.arange(len(sorted_labels)) - np.searchsorted(sorted_labels, sorted_labels, side="left")


def _image_top(boxes: np.ndarray, acts: np.ndarray, k: int, thresh: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit, region, activation) of each unit's top `k` regions of one image after NMS on
    that unit's activation (`boxes.nms_many`: one IoU matrix for all units)."""
    kept = B.nms_many(torch.from_numpy(boxes), torch.from_numpy(np.ascontiguousarray(acts.T)), thresh, k)
    unit = np.repeat(np.arange(len(kept)), [len(x) for x in kept])
    region = torch.cat(kept).numpy() if kept else np.zeros(0, np.int64)
    return unit, region, acts[region, unit]


def top_regions(fs: FeatureSet, units: Sequence[Unit], k: int, nms: float = 0.1, split: str = "test",
                progress: bool = False) -> list[UnitTop]:
    """Each unit's `k` top regions of `fs`'s `split` (pool5 features), after NMS at `nms`
    within each image on the unit's activation. One pass: each image's features are loaded
    once and all units handled together. Ties: earlier image, then earlier region."""
    units = list(units)
    cols = np.array([u.column for u in units], dtype=np.int64)
    ids = list(fs.regions[split])
    found, cmax = [], None
    for i, image_id in enumerate(progress_bar(ids, "pool5 units", progress)):
        boxes = np.asarray(fs.regions[split][image_id], np.float32).reshape(-1, 4)
        if not len(boxes):
            continue
        f = np.asarray(fs.load(split, image_id), np.float32)
        if f.ndim != 2 or f.shape[0] != len(boxes) or f.shape[1] % CELLS:
            raise ValueError(f"{fs.name}, image {image_id!r}: expected pool5 features ({len(boxes)}, C * {CELLS}), "
                             f"got {f.shape}")
        if len(cols) and cols.max() >= f.shape[1]:
            bad = units[int(np.argmax(cols))]
            raise ValueError(f"unit {bad}: channel beyond the {f.shape[1] // CELLS} pool5 channels of {fs.name}")
        m = f.reshape(len(f), -1, CELLS).max(axis=(0, 2))
        cmax = m if cmax is None else np.maximum(cmax, m)
        u, r, s = _image_top(boxes, f[:, cols], k, nms)
        found.append((u, np.full(len(u), i), r, s))
    if cmax is None:
        raise ValueError(f"{fs.name}: split {split!r} has no regions")
    u, img, r, s = (np.concatenate(a) for a in zip(*found))
    order = np.lexsort((r, img, -s, u))
    u, img, r, s = u[order], img[order], r[order], s[order]
    keep = _rank_within(u) < k
    out = []
    for j, unit in enumerate(units):
        sel = keep & (u == j)
        kept_ids = [ids[t] for t in img[sel]]
        boxes = np.array([fs.regions[split][i][q] for i, q in zip(kept_ids, r[sel])], np.float32).reshape(-1, 4)
        out.append(UnitTop(unit, kept_ids, r[sel].astype(np.int64), boxes, s[sel].astype(np.float32),
                           float(cmax[unit.channel])))
    return out


def cached_top_regions(cache: Cache, fs: FeatureSet, units: Sequence[Unit], k: int, nms: float = 0.1,
                       split: str = "test", progress: bool = False) -> list[UnitTop]:
    """`top_regions`, cached as `units/<key>` on the features' key, the units, `k`, `nms` and
    the split (one npz: per unit the image index in the split's order, region, box and
    activation; every channel's maximum), so a warm chapter does not read the features."""
    units = list(units)
    ids = list(fs.regions[split])
    config = {"features": fs.key, "split": split, "units": [[u.y, u.x, u.channel] for u in units], "k": k,
              "nms": nms, "images": digest(ids)}

    def build(out: Path) -> None:
        tops = top_regions(fs, units, k, nms, split, progress)
        index = {image_id: i for i, image_id in enumerate(ids)}
        arrays: dict[str, np.ndarray] = {"channel_max": np.array([t.channel_max for t in tops], np.float64)}
        for j, t in enumerate(tops):
            arrays[f"image{j}"] = np.array([index[i] for i in t.image_ids], np.int64)
            arrays[f"region{j}"], arrays[f"boxes{j}"], arrays[f"activation{j}"] = t.region_index, t.boxes, t.activation
        atomic_save_npz(out / "units.npz", **arrays)

    z = np.load(cache.entry("units", config, build) / "units.npz")
    return [UnitTop(u, [ids[i] for i in z[f"image{j}"]], z[f"region{j}"], z[f"boxes{j}"], z[f"activation{j}"],
                    float(z["channel_max"][j])) for j, u in enumerate(units)]


# ------------------------------------------------------------------------- receptive fields

def receptive_box(net: Net, unit: Unit) -> np.ndarray:
    """The unit's receptive field in the warped S x S input, [x1, y1, x2, y2] (pixel edges)
    clipped to the frame; from the layer definitions (`nets.receptive_field`)."""
    size, stride, offset = nets.receptive_field(net, "pool5")
    x1, y1 = offset + unit.x * stride, offset + unit.y * stride
    return np.clip(np.array([x1, y1, x1 + size, y1 + size], np.float64), 0, net.input_size)


def receptive_box_in_image(net: Net, unit: Unit, regions: np.ndarray, context: float, width: int,
                           height: int) -> np.ndarray:
    """(N, 4) the unit's receptive field in image coordinates for each region: the warp
    stretches the region's context-padded window onto the S x S frame; clipped to the image."""
    S = net.input_size
    win = B.warp_geometry(regions, width, height, S, context)["window"].numpy()
    rf = receptive_box(net, unit)
    scale = np.tile((win[:, 2:] - win[:, :2]) / S, 2)
    out = np.tile(win[:, :2], 2) + rf[None, :] * scale
    return np.clip(out, 0, [width, height, width, height])


# ------------------------------------------------------------------------- which units

def _pool5_weights(W: Any) -> np.ndarray:
    w = np.asarray(W, np.float64)
    if w.ndim != 2 or w.shape[1] % CELLS:
        raise ValueError(f"expected pool5 SVM weights (classes, C * {CELLS}), got shape {w.shape}")
    return w


def svm_units(W: Any, classes: Sequence[str], category: str, positive: int, negative: int) -> list[Unit]:
    """A category's units as the paper chose them: the `positive` largest positive and the
    `negative` most negative weights of its pool5 SVM (`W` (classes, C * 36), any scale)."""
    w = _pool5_weights(W)[list(classes).index(category)]
    order = np.argsort(-w, kind="stable")
    pos = [Unit.from_column(c, f"{category} +") for c in order[:positive] if w[c] > 0]
    neg = [Unit.from_column(c, f"{category} -") for c in order[::-1][:negative] if w[c] < 0]
    return pos + neg


def generic_units(W: Any, n: int, exclude: Sequence[Unit] = ()) -> list[Unit]:
    """Units every category's SVM counts as evidence, by the weight averaged over all classes
    (`W` (classes, C * 36)): the best unit of each channel (one per channel, for variety),
    channels ranked by it, skipping the channels of `exclude`."""
    order = np.argsort(-_pool5_weights(W).mean(axis=0), kind="stable")
    best = order[np.sort(np.unique(order // CELLS, return_index=True)[1])]
    skip = {u.channel for u in exclude}
    return list(islice((Unit.from_column(c, "generic") for c in best if c // CELLS not in skip), n))


def choose_units(p: Params, svm: dict[str, Any] | None = None, classes: Sequence[str] = ()) -> list[Unit]:
    """The units to show: `units.units` when given, else `units.positive` and
    `units.negative` units of `units.category`'s pool5 SVM (`svm["W"]`) and `units.generic`."""
    q, n_channels = p.units, p.net.conv_channels[4]
    if q.units:
        out = []
        for i, v in enumerate(q.units):
            if len(v) != 3 or not (0 <= v[0] < GRID and 0 <= v[1] < GRID and 0 <= v[2] < n_channels):
                raise ParamsError(f"units.units[{i}]: {v} is not [y, x, channel] with y, x in 0..{GRID - 1} "
                                  f"and channel in 0..{n_channels - 1}")
            out.append(Unit(v[0], v[1], v[2], "chosen"))
        return out
    if svm is None:
        raise ParamsError("units.units is empty, so the units come from a pool5 SVM: pass its weights")
    category = q.category if q.category is not None else classes[0]
    if category not in classes:
        raise ParamsError(f"units.category: {category!r} is not a class of the benchmark ({', '.join(classes)})")
    own = svm_units(svm["W"], classes, category, q.positive, q.negative)
    return own + generic_units(svm["W"], q.generic, own)


# ------------------------------------------------------------------------- crops

def unit_crops(top: UnitTop, dataset: DetectionDataset, p: Params,
               fill: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """The top regions as the network saw them: (K, S, S, 3) uint8 context-padded warps
    (`boxes.warp_regions`), the part outside the image filled with `fill` (RGB, 0..255;
    the network's `mean` shows exactly what it saw)."""
    paths = {im.image_id: im.path for im in dataset.images}
    S, ctx = p.net.input_size, context_pixels(p)
    ids = np.array(top.image_ids, dtype=object)
    shift = torch.tensor(list(fill), dtype=torch.float32).reshape(3, 1, 1)
    out = np.zeros((len(ids), S, S, 3), np.uint8)
    for image_id in dict.fromkeys(top.image_ids):
        idx = np.flatnonzero(ids == image_id)
        img = torch.tensor(load_image(paths[image_id])).permute(2, 0, 1).float() - shift
        warped = B.warp_regions(img, torch.from_numpy(top.boxes[idx]), S, ctx) + shift
        out[idx] = warped.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out
