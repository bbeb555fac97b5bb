"""Dataset helpers: keeping some classes' boxes, joining splits, sub-setting classification labels."""
from pathlib import Path

import numpy as np
import pytest

from lsda_core.core.errors import DataError
from lsda_core.core.structures import (ClassificationDataset, DetectionDataset, ImageAnn, ObjectAnn, concat,
                                  keep_classes, subset_classes)


def _ds(split, ids, blacklist=()):
    ims = [ImageAnn(i, Path(f"{i}.png"), 10, 10, [ObjectAnn("a", np.array([0, 0, 5, 5.])),
                                                  ObjectAnn("b", np.array([1, 1, 6, 6.]))]) for i in ids]
    return DetectionDataset("d", split, ["a", "b"], ims, None, set(blacklist))


def test_keep_classes_drops_other_boxes_but_not_images_or_classes():
    ds = _ds("train", ["1", "2"])
    kept = keep_classes(ds, ["b"], "train (b)")
    assert kept.classes == ["a", "b"] and len(kept) == 2 and kept.split == "train (b)"
    assert [o.cls for im in kept.images for o in im.objects] == ["b", "b"]
    assert len(ds.images[0].objects) == 2  # the original is untouched


def test_concat_joins_splits_and_refuses_repeated_ids():
    both = concat([_ds("x", ["1"], {("1", "a")}), _ds("y", ["2"])], "x+y")
    assert [im.image_id for im in both.images] == ["1", "2"] and both.blacklist == {("1", "a")}
    with pytest.raises(ValueError, match="repeat"):
        concat([_ds("x", ["1"]), _ds("y", ["1"])], "x+y")


def test_subset_classes_reindexes_labels():
    ds = ClassificationDataset("c", "train", ["p", "q", "r"], [Path(f"{i}.png") for i in range(5)],
                               np.array([0, 1, 2, 2, 1]), Path("/root"))
    sub = subset_classes(ds, ["r", "p"])
    assert sub.classes == ["r", "p"]
    assert [x.name for x in sub.paths] == ["0.png", "2.png", "3.png"]
    assert sub.labels.tolist() == [1, 0, 0]
    with pytest.raises(DataError, match="no class 'z'"):
        subset_classes(ds, ["p", "z"])
