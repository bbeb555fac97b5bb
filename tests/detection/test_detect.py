"""Scores to detections: top-k per class and image, per-class NMS."""
import numpy as np
import pytest

from lsda_core.detection.detect import detect, detect_image


def test_per_class_nms_and_top_k():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    # class 0: boxes 0 and 1 overlap (IoU 9/11 > 0.3) -> only the higher (box 1) survives
    # class 1: box 3 is the best; boxes 0 and 1 overlap it -> suppressed; box 2 is far -> kept
    scores = np.array([[0.5, 0.2], [0.9, 0.1], [0.1, 0.3], [-1.0, 0.8]])
    cls, sc, bx = detect_image(boxes, scores, nms=0.3, max_per_image=100)
    assert [(c, s) for c, s in zip(cls.tolist(), sc.tolist()) if c == 0] == [(0, 0.9), (0, 0.1)]
    assert [(c, s) for c, s in zip(cls.tolist(), sc.tolist()) if c == 1] == [(1, 0.8), (1, 0.3)]
    # max_per_image=2 keeps only the two best per class before NMS
    cls2, sc2, _ = detect_image(boxes, scores, nms=0.3, max_per_image=2)
    assert sc2[cls2 == 1].tolist() == [0.8, 0.3]
    assert sc2[cls2 == 0].tolist() == [0.9]


def test_detect_collects_per_class():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]])
    items = [("a", boxes, np.array([[1.0, -1], [0.5, 2]])), ("b", boxes[:1], np.array([[3.0, 0]]))]
    d = detect(items, ["x", "y"], min_score=0.0)
    assert d["x"].image_ids == ["a", "a", "b"] and d["x"].scores.tolist() == [1.0, 0.5, 3.0]
    assert d["y"].image_ids == ["a"] and d["y"].boxes.tolist() == [[20, 20, 30, 30]]


def test_refine_moves_boxes_before_nms():
    boxes = np.array([[0, 0, 10, 10], [30, 30, 40, 40.0]])
    scores = np.array([[0.9], [0.8]])
    # without refinement both survive; refined onto the same box, the second is suppressed
    assert len(detect_image(boxes, scores, 0.3, 100)[0]) == 2
    calls = []

    def onto_first(regions, classes):
        calls.append((regions.tolist(), classes.tolist()))
        return np.repeat(boxes[:1], len(regions), axis=0)

    cls, sc, bx = detect_image(boxes, scores, 0.3, 100, refine=onto_first)
    assert calls == [([0, 1], [0, 0])] and sc.tolist() == [0.9] and bx.tolist() == [[0, 0, 10, 10]]


@pytest.mark.parametrize("min_score", [-np.inf, 0.5])
def test_one_iou_matrix_gives_what_nms_class_by_class_gives(min_score):
    """Without box refinement every class's candidates are the image's regions, and the
    shared-IoU greedy pass must keep exactly what batched NMS keeps, in the same order (ties
    and a score floor included); the refine path still runs batched NMS."""
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (150, 2))
    boxes = np.hstack([xy, xy + rng.uniform(5, 50, (150, 2))])
    boxes[20:30] = boxes[0]  # duplicate regions
    scores = rng.integers(0, 8, (150, 12)).astype(np.float64) / 8  # many equal scores
    same = detect_image(boxes, scores, 0.3, 40, min_score)
    via_nms = detect_image(boxes, scores, 0.3, 40, min_score, refine=lambda r, c: boxes[r])
    for a, b in zip(same, via_nms):
        assert np.array_equal(a, b)
    assert len(same[0]) > 12
