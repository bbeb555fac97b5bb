"""Where each chapter's data comes from: the embedded world, or real datasets by path.

Chapters never look at paths themselves; they ask here, so a missing dataset gives one
clear error that names the parameter to set.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lsda_core.store.cache import Cache
from lsda_core.core.errors import DataError
from lsda_core.core.params import Params

if TYPE_CHECKING:
    from lsda_core.world import WorldLayout

HINTS = {
    "voc_root": "the VOC folder holding Annotations/, JPEGImages/ and ImageSets/ (e.g. VOCdevkit/VOC2007)",
    "ilsvrc_root": "the ILSVRC2013 DET folder holding ILSVRC2013_DET_train/, ILSVRC2013_DET_val/ and devkit/",
    "imagenet_root": "an ImageNet-style folder holding train/<class>/ and val/<class>/",
}


def require_path(p: Params, key: str) -> Path:
    """The dataset path `data.<key>`, or a DataError saying how to set it."""
    value = getattr(p.data, key)
    if not value:
        raise DataError(f"data.{key} is not set: data.source is {p.data.source!r}, which needs "
                        f"{HINTS[key]}; pass -p data.{key} /path/to/it")
    path = Path(value)
    if not path.is_dir():
        raise DataError(f"{path}: data.{key} does not exist or is not a folder (expected {HINTS[key]})")
    return path


def voc_root(p: Params, cache: Cache) -> Path:
    """VOC-layout root of the R-CNN benchmark."""
    if p.data.source == "embedded":
        from lsda_core.world import ensure_world
        return ensure_world(p, cache).voc
    return require_path(p, "voc_root")


def ilsvrc_root(p: Params, cache: Cache) -> Path:
    """ILSVRC2013-DET-layout root of the LSDA benchmark."""
    if p.data.source == "embedded":
        from lsda_core.world import ensure_world
        return ensure_world(p, cache).ilsvrc
    return require_path(p, "ilsvrc_root")


def classification_root(p: Params, cache: Cache) -> Path:
    """ImageNet-style root of the classification (pre-training) data."""
    if p.data.source == "embedded":
        from lsda_core.world import ensure_world
        return ensure_world(p, cache).classification
    return require_path(p, "imagenet_root")


def large_root(p: Params, cache: Cache) -> Path:
    """VOC-layout root of the large-scale view (embedded world only)."""
    from lsda_core.world import ensure_world
    return ensure_world(p, cache).large


def summary(p: Params, cache: Cache, check_images: bool = False) -> list[dict[str, object]]:
    """Read every dataset split the preset uses and count images, objects and classes;
    any missing path or malformed file raises a DataError naming it."""
    from lsda_core.data.ilsvrc import read_ilsvrc_det
    from lsda_core.data.imagenet import read_image_folder
    from lsda_core.data.images import check_image
    from lsda_core.data.voc import read_voc

    rows: list[dict[str, object]] = []

    def det(view: str, ds) -> None:
        if check_images and view == "ilsvrc":  # read_voc checks its own images
            for im in ds.images:
                check_image(im.path)
        rows.append({"view": view, "split": ds.split, "images": len(ds), "classes": len(ds.classes),
                     "objects": sum(len(im.objects) for im in ds.images),
                     "difficult": sum(o.difficult for im in ds.images for o in im.objects)})

    def cls(view: str, root: Path, split: str) -> None:
        ds = read_image_folder(root, split)
        if check_images:
            for path in ds.paths:
                check_image(path)
        rows.append({"view": view, "split": split, "images": len(ds), "classes": len(ds.classes),
                     "objects": len(ds), "difficult": 0})

    src = p.data.source
    if src == "embedded" or p.data.imagenet_root:
        root = classification_root(p, cache)
        for split in ("train", "val"):
            cls("classification", root, split)
    if src in ("embedded", "voc2007"):
        root = voc_root(p, cache)
        for split in ("train", "val", "test"):
            det("voc", read_voc(root, split, check_images=check_images))
    if src in ("embedded", "ilsvrc2013"):
        root = ilsvrc_root(p, cache)
        for split in ("train", "val1", "val2"):
            det("ilsvrc", read_ilsvrc_det(root, split))
    if src == "embedded":
        root = large_root(p, cache)
        for split in ("train", "test"):
            det("large", read_voc(root, split, check_images=check_images))
    return rows


def world(p: Params, cache: Cache) -> WorldLayout:
    """The embedded world's files (generated into the cache on first use), for the chapter that
    shows the world itself."""
    from lsda_core.world import ensure_world
    return ensure_world(p, cache)
