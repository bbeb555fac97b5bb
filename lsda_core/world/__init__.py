"""The embedded world: a procedurally generated stand-in for ImageNet, PASCAL VOC and
ILSVRC2013 DET, written in those datasets' real formats so the same readers serve both.

`ensure_world` builds it once into the artifact cache; `WorldLayout` names its parts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsda_core.store.cache import Cache
from lsda_core.core.params import Params
from lsda_core.world.write import generate

__all__ = ["WorldLayout", "ensure_world", "generate"]


@dataclass
class WorldLayout:
    """Where each view of a generated world lies, from its root folder."""

    root: Path
    classification: Path = field(init=False)   # ImageNet-style: train/<wnid>/, val/<wnid>/
    voc: Path = field(init=False)              # VOCdevkit year folder: Annotations/, JPEGImages/, ...
    ilsvrc: Path = field(init=False)           # ILSVRC2013_DET_* folders and devkit/
    large: Path = field(init=False)            # VOC layout, splits train / test
    meta: Path = field(init=False)             # world.json
    objects: Path = field(init=False)          # objects.csv: every drawn object, annotated or not

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.classification = self.root / "classification"
        self.voc = self.root / "voc"
        self.ilsvrc = self.root / "ilsvrc"
        self.large = self.root / "large"
        self.meta = self.root / "world.json"
        self.objects = self.root / "objects.csv"

    def info(self) -> dict[str, Any]:
        """The parsed world.json."""
        return json.loads(self.meta.read_text())

    def categories(self) -> list[dict[str, Any]]:
        """Every category (name, wnid, index, superclass, parts, voc, ilsvrc 'A'/'B'/None,
        large_boxes), in index order (sorted by wnid, as ImageNet class folders)."""
        return self.info()["categories"]


def ensure_world(params: Params, cache: Cache) -> WorldLayout:
    """The world of `params.world`, generated into the cache unless already there."""
    w = params.world
    root = cache.entry("world", config=dataclasses.asdict(w),
                       build=lambda out: generate(w, out, params.runtime.workers, params.runtime.progress))
    return WorldLayout(root)
