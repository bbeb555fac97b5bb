"""CPMC's ranking stand-in: descriptors computed by hand on hand-made masks, the diversity rule,
the regressor's target."""
from __future__ import annotations

import numpy as np
import pytest

from lsda_core.detection import mask_ranking as MR
from lsda_core.detection.mask_proposals import MaskProposals


def _square_scene():
    """An 8 x 8 image: atom 1 a red 4 x 4 square at rows 2-5, cols 2-5; atom 0 the grey rest.
    Mask 0 = the square, mask 1 = the whole image."""
    atoms = np.zeros((8, 8), np.int32)
    atoms[2:6, 2:6] = 1
    image = np.full((8, 8, 3), 128, np.uint8)
    image[2:6, 2:6] = (255, 0, 0)
    return MaskProposals(atoms, np.array([[False, True], [True, True]])), image


def test_descriptors_by_hand():
    props, image = _square_scene()
    d = dict(zip(MR.FEATURES, MR.describe(props, image).T))
    assert d["area"].tolist() == [16 / 64, 1.0] and d["box_fill"].tolist() == [1.0, 1.0]
    assert d["touches_border"].tolist() == [0.0, 1.0] and d["aspect"][0] == 0.0
    # the square: perimeter 16 (all against the grey atom), compactness 16^2 / (4 pi 16)
    assert d["compactness"][0] == pytest.approx(256 / (4 * np.pi * 16)) and d["border_share"][0] == 0.0
    # the colour step across its boundary: |(1, 0, 0) - (128 / 255,) * 3|
    step = np.linalg.norm(np.array([1.0, 0.0, 0.0]) - 128 / 255)
    assert d["boundary_contrast"][0] == pytest.approx(step) and d["colour_contrast"][0] == pytest.approx(step)
    assert d["histogram_distance"][0] == pytest.approx(1.0)  # disjoint colours inside and out
    assert d["cx"][0] == pytest.approx(np.mean(np.arange(2, 6)) / 8)


def test_rerank_keeps_the_best_and_drops_near_duplicates():
    """Atoms: 10 one-pixel columns. Masks: A = cols 0-9, B = cols 0-8 (IoU 0.9 with A), C = cols
    0-4: ranked A > B > C; B is skipped at diversity 0.85, kept at 0.95."""
    atoms = np.arange(10, dtype=np.int32)[None, :]
    members = np.zeros((3, 10), bool)
    members[0], members[1, :9], members[2, :5] = True, True, True
    props = MaskProposals(atoms, members)
    scores = np.array([0.9, 0.8, 0.7])
    assert MR.rerank(props, scores, 3, diversity=0.85).tolist() == [0, 2]
    assert MR.rerank(props, scores, 3, diversity=0.95).tolist() == [0, 1, 2]
    assert MR.rerank(props, scores[::-1], 1).tolist() == [2]


def test_target_is_the_best_overlap_with_any_object():
    props, _ = _square_scene()
    objects = np.zeros((8, 8), np.uint8)
    objects[2:6, 2:6] = 1
    assert MR.best_object_overlap(props, objects).tolist() == [1.0, 16 / 64]
    assert MR.best_object_overlap(props, np.zeros((8, 8), np.uint8)).tolist() == [0.0, 0.0]
