"""Plain data structures shared by readers, the world generator, detectors and evaluation.

Box convention (one for the whole study): boxes are float `[x1, y1, x2, y2]` in 0-based
pixel-edge coordinates, so a box covering pixel columns 0..9 is `[0, 10]` and its width is
`x2 - x1`. VOC/ILSVRC files and comp4 result files use 1-based inclusive pixel indices;
`from_voc` / `to_voc` convert (`x1 = xmin - 1`, `x2 = xmax`). Widths then equal the MATLAB
devkit's `xmax - xmin + 1`, so IoU matches the original code exactly without any `+1`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsda_core.core.errors import DataError


def from_voc(xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
    """1-based inclusive file coordinates -> 0-based edge box."""
    return np.array([xmin - 1, ymin - 1, xmax, ymax], dtype=np.float64)


def to_voc(box: np.ndarray) -> tuple[float, float, float, float]:
    """0-based edge box -> 1-based inclusive file coordinates."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1 + 1, y1 + 1, x2, y2


@dataclass
class ObjectAnn:
    """One annotated object. `attrs` carries what error analysis needs when the source has
    it (the embedded world: occlusion fraction, visible parts, superclass, viewpoint, ...)."""

    cls: str
    box: np.ndarray
    difficult: bool = False
    truncated: bool = False
    occluded: bool = False
    pose: str = "Unspecified"
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageAnn:
    """One image with its objects (possibly none)."""

    image_id: str
    path: Path
    width: int
    height: int
    objects: list[ObjectAnn] = field(default_factory=list)

    def boxes(self, cls: str | None = None) -> np.ndarray:
        """(N, 4) boxes of all objects, or of one class."""
        b = [o.box for o in self.objects if cls is None or o.cls == cls]
        return np.array(b, dtype=np.float64).reshape(-1, 4)


@dataclass
class DetectionDataset:
    """A split of a detection dataset: class names (index order) and annotated images."""

    name: str
    split: str
    classes: list[str]
    images: list[ImageAnn]
    root: Path | None = None
    # (image_id, class) pairs whose detections evaluation ignores (ILSVRC's blacklist)
    blacklist: set[tuple[str, str]] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.images)

    def by_id(self) -> dict[str, ImageAnn]:
        return {im.image_id: im for im in self.images}


@dataclass
class ClassificationDataset:
    """Image-level labels only (ImageNet-style class folders)."""

    name: str
    split: str
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray  # int64 index into classes, one per path
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.paths)


def keep_classes(ds: DetectionDataset, classes: list[str] | set[str], split: str | None = None) -> DetectionDataset:
    """The same images with only the objects of `classes` (LSDA: training without set A's
    boxes); the class list is unchanged, so label indices stay the same."""
    keep = set(classes)
    images = [ImageAnn(im.image_id, im.path, im.width, im.height, [o for o in im.objects if o.cls in keep])
              for im in ds.images]
    return DetectionDataset(ds.name, split or ds.split, list(ds.classes), images, ds.root, set(ds.blacklist))


def concat(datasets: list[DetectionDataset], split: str) -> DetectionDataset:
    """Several splits of one dataset as one (same classes; image ids must be unique)."""
    first = datasets[0]
    images = [im for ds in datasets for im in ds.images]
    ids = [im.image_id for im in images]
    if len(set(ids)) != len(ids):
        raise ValueError(f"concat: image ids repeat across the splits {[ds.split for ds in datasets]}")
    if any(ds.classes != first.classes for ds in datasets):
        raise ValueError("concat: the splits have different class lists")
    return DetectionDataset(first.name, split, list(first.classes), images, first.root,
                            set().union(*(ds.blacklist for ds in datasets)))


def subset_classes(ds: ClassificationDataset, classes: list[str]) -> ClassificationDataset:
    """The images of `classes` only, labels re-indexed into `classes` (LSDA's K categories
    out of a larger classification set). A class with no images is an error naming it."""
    index = {c: i for i, c in enumerate(ds.classes)}
    missing = [c for c in classes if c not in index]
    if missing:
        raise DataError(f"{ds.root}: classification split {ds.split!r} has no class {missing[0]!r} "
                         f"({len(missing)} of the {len(classes)} wanted are missing)")
    old = np.array([index[c] for c in classes])
    labels = np.asarray(ds.labels)
    pick = np.flatnonzero(np.isin(labels, old))
    remap = {o: n for n, o in enumerate(old)}
    return ClassificationDataset(ds.name, ds.split, list(classes), [ds.paths[i] for i in pick],
                                 np.array([remap[int(labels[i])] for i in pick], dtype=np.int64), ds.root)
