"""The embedded world: a procedurally generated stand-in for ImageNet, PASCAL VOC and
ILSVRC2013 DET, written in those datasets' real formats so the same readers serve both.

`ensure_world` builds it once into the artifact cache, each view in its own entry (keyed on
what that view depends on, `write.view_config`) and world.json / objects.csv in a small one
above them; `WorldLayout` names its parts.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsda_core.store.cache import Cache
from lsda_core.core.params import Params
from lsda_core.world.categories import design
from lsda_core.world.write import VIEWS, generate, view_config, write_meta

__all__ = ["WorldLayout", "ensure_world", "generate"]


@dataclass
class WorldLayout:
    """Where each view of a generated world lies: under `root` (world.json, objects.csv and, by
    default, one folder per view), or in the folders `views` names."""

    root: Path
    views: dict[str, Path] = field(default_factory=dict)
    classification: Path = field(init=False)   # ImageNet-style: train/<wnid>/, val/<wnid>/
    voc: Path = field(init=False)              # VOCdevkit year folder: Annotations/, JPEGImages/, ...
    ilsvrc: Path = field(init=False)           # ILSVRC2013_DET_* folders and devkit/
    large: Path = field(init=False)            # VOC layout, splits train / test
    meta: Path = field(init=False)             # world.json
    objects: Path = field(init=False)          # objects.csv: every drawn object, annotated or not

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        where = {v: Path(self.views.get(v, self.root / v)) for v in VIEWS}
        self.classification, self.voc, self.ilsvrc, self.large = (where[v] for v in VIEWS)
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
    """The world of `params.world`, generated into the cache unless already there: each view in
    its own `world-<view>` entry, then world.json and objects.csv in the `world` entry."""
    w = params.world
    d = design(w)
    parts = {v: cache.entry(f"world-{v}", config=view_config(w, v, d),
                            build=lambda out, v=v: generate(w, out, params.runtime.workers, params.runtime.progress,
                                                            views=(v,)))
             for v in VIEWS}
    root = cache.entry("world", config={"params": dataclasses.asdict(w), "views": {v: parts[v].name for v in VIEWS}},
                       build=lambda out: write_meta(w, out, [parts[v] for v in VIEWS]))
    return WorldLayout(root, {v: parts[v] / v for v in VIEWS})
