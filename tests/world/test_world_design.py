"""The category design (superclass templates, confusable siblings, names, ids) and the
cached entry point."""
from __future__ import annotations

import dataclasses
import filecmp
import re

import numpy as np

from lsda_core.store import cache as C
from lsda_core.core import params as P
from lsda_core.world import WorldLayout
from lsda_core.world import ensure_world, generate
from lsda_core.world.write import DESIGN_PARAMS, VIEW_PARAMS, VIEWS
from lsda_core.world.categories import design
from lsda_core.world.scenes import Style, compose


def test_design_is_a_function_of_the_seed(tiny) -> None:
    assert design(tiny) == design(tiny)
    assert design(tiny) != design(dataclasses.replace(tiny, seed=5))


def test_default_design_names_ids_and_superclasses() -> None:
    w = P.World()
    d = design(w)
    names = [c.name for c in d.categories] + [s.name for s in d.superclasses]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[a-z]{3,14}", n) for n in names)
    wnids = [c.wnid for c in d.categories]
    assert wnids == sorted(wnids) and len(set(wnids)) == len(wnids)
    assert all(re.fullmatch(r"n\d{8}", x) for x in wnids)
    assert len(d.categories) == w.n_categories and len(d.superclasses) == w.n_superclasses
    for s in d.superclasses:
        sibs = [c for c in d.categories if c.superclass == s.index]
        assert sibs
        faces = {(len(c.eyes), c.beak, round(c.face_hue * 6) % 6, c.eye_light) for c in sibs}
        assert len(faces) == len(sibs)  # the discriminative part tells siblings apart


def test_benchmark_categories_come_in_confusable_groups() -> None:
    w = P.World()
    d = design(w)
    assert len(d.voc) == w.voc_classes and len(d.ilsvrc) == w.ilsvrc_classes
    groups = np.bincount([d.categories[c].superclass for c in d.voc])
    assert (groups >= 2).sum() >= 3  # several superclasses with several siblings each
    assert [d.categories[c].name for c in d.ilsvrc] == sorted(d.categories[c].name for c in d.ilsvrc)
    assert len(d.ilsvrc_b) == len(d.ilsvrc_a) == w.ilsvrc_classes // 2
    assert len(d.large_boxes) == round(w.large_box_fraction * w.n_categories)


def test_scene_annotations_follow_the_drawing(tiny) -> None:
    d = design(tiny)
    style = Style(primary_size=(0, 0), n_other=(3, 3), other_size=(0.2, 0.6), decay=1.0,
                  distractors=0, occluders=0, truncate_p=0.0)
    scene = compose(np.random.default_rng(3), d, d.voc, 160, 120, style)
    assert scene.image.shape == (120, 160, 3) and scene.image.dtype == np.uint8
    for i, o in enumerate(scene.objects, start=1):
        ys, xs = np.nonzero(scene.labels == i)
        assert o.visible_area >= len(xs) > 0
        assert o.box[0] <= xs.min() and xs.max() < o.box[2] and o.box[1] <= ys.min() and ys.max() < o.box[3]
        assert 0 <= o.occlusion <= 1 and o.truncation <= 0.05


def test_boxes_are_the_visible_extent_and_full_boxes_the_whole_object(tiny) -> None:
    """VOC's guidelines box what is visible: the box is its visible pixels' extent exactly; the
    whole object's extent (occluded parts included, clipped to the image) is `full_box`."""
    d = design(tiny)
    style = Style(primary_size=(0, 0), n_other=(3, 4), other_size=(0.3, 0.7), decay=1.0,
                  distractors=2, occluders=3, truncate_p=0.5)
    larger = 0
    for seed in range(6):
        scene = compose(np.random.default_rng(seed), d, d.voc, 160, 120, style)
        for i, o in enumerate(scene.objects, start=1):
            ys, xs = np.nonzero(scene.labels == i)
            assert tuple(o.box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            f = o.full_box
            assert f[0] <= o.box[0] and f[1] <= o.box[1] and f[2] >= o.box[2] and f[3] >= o.box[3]
            assert 0 <= f[0] and 0 <= f[1] and f[2] <= 160 and f[3] <= 120
            larger += bool((f != o.box).any())
    assert larger > 0  # some objects are partly hidden, so their whole extent is larger


SMALL = {"world.n_categories": 6, "world.n_superclasses": 2, "world.cls_size": 24,
            "world.cls_train_per_class": 1, "world.cls_val_per_class": 1, "world.voc_classes": 3,
            "world.voc_train": 2, "world.voc_val": 2, "world.voc_test": 2, "world.ilsvrc_classes": 4,
            "world.ilsvrc_train": 2, "world.ilsvrc_val": 2, "world.large_train": 2, "world.large_test": 2,
            "runtime.progress": False, "runtime.workers": 1}


def test_ensure_world_builds_once_into_the_cache(tmp_path) -> None:
    p = P.load(None, SMALL)
    cache = C.Cache(tmp_path / "artifacts")
    layout = ensure_world(p, cache)
    assert isinstance(layout, WorldLayout)
    for path in (layout.classification, layout.voc / "Annotations", layout.ilsvrc / "devkit", layout.large, layout.meta):
        assert path.exists(), path
    assert len(layout.categories()) == 6
    stamp = layout.meta.stat().st_mtime_ns
    assert ensure_world(p, cache).root == layout.root and layout.meta.stat().st_mtime_ns == stamp


def test_every_world_parameter_is_a_design_or_a_view_parameter() -> None:
    """A view is cached on its own parameters (`view_config`): a World field in neither list
    could change a view's images without changing its key."""
    fields = {f.name for f in dataclasses.fields(P.World)}
    listed = set(DESIGN_PARAMS).union(*VIEW_PARAMS.values())
    assert fields == listed, fields ^ listed


def _files(root) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def test_the_cached_world_is_the_generated_world_and_a_view_change_rebuilds_that_view_only(tmp_path) -> None:
    p = P.load(None, SMALL)
    cache = C.Cache(tmp_path / "artifacts")
    layout = ensure_world(p, cache)
    whole = tmp_path / "whole"
    generate(p.world, whole)
    for v in VIEWS:  # byte for byte what one generate call writes
        assert _files(getattr(layout, v)) == _files(whole / v), v
    for name in ("world.json", "objects.csv"):
        assert filecmp.cmp(layout.root / name, whole / name, shallow=False), name
    bigger = ensure_world(P.load(None, {**SMALL, "world.ilsvrc_train": 4}), cache)
    assert bigger.ilsvrc != layout.ilsvrc and bigger.root != layout.root
    for v in ("classification", "voc", "large"):  # the same entries: nothing trained on them rebuilds
        assert getattr(bigger, v) == getattr(layout, v), v
    assert bigger.info()["views"]["ilsvrc"]["train"]["images"] == 4
    moved = ensure_world(P.load(None, {**SMALL, "world.cls_train_per_class": 2}), cache)
    assert moved.classification != layout.classification and moved.voc == layout.voc


def test_design_of_an_impossible_world_is_an_error_not_a_hang(tiny) -> None:
    """A `World` built directly (not loaded, so not validated) with more VOC classes than
    categories: picking them could never finish; it is the loader's one-line error instead."""
    import pytest

    bad = dataclasses.replace(tiny, voc_classes=tiny.n_categories + 1)
    with pytest.raises(P.ParamsError, match="world.voc_classes .* exceeds world.n_categories"):
        design(bad)
