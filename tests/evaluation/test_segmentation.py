"""VOC segmentation accuracy on hand-made masks, computed by hand, and `lsda eval --metric
segmentation` on a tiny VOC-layout folder the tests write."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsda_core.core.errors import DataError
from lsda_core.core.structures import ImageAnn, ObjectAnn
from lsda_core.data.voc import write_voc_xml
from lsda_core.evaluation import segmentation as S

V = S.VOID
# 3 x 4 truth: background (0), class 1, class 2, a void border; and a prediction
TRUTH = np.array([[0, 0, 1, 1],
                  [0, V, 1, 1],
                  [2, 2, V, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 1, 0],
                 [2, 0, 0, 0]], dtype=np.uint8)


def test_confusion_counts_non_void_pixels_only():
    """By hand: of 10 non-void pixels, background 4 (3 right, 1 called class 1), class 1 four (3
    right, 1 called background), class 2 two (1 right, 1 called background); the void pixels'
    predictions (2 and 0) count nowhere."""
    c = S.confusion(TRUTH, PRED, 3)
    assert c.tolist() == [[3, 1, 0], [1, 3, 0], [1, 0, 1]]
    assert c.sum() == 10


def test_class_iou_and_mean_by_hand():
    """IoU = TP / (TP + FP + FN): background 3 / (3 + 2 + 1) = 1/2, class 1 3 / (3 + 1 + 1) = 3/5,
    class 2 1 / (1 + 0 + 1) = 1/2; the mean 8/15."""
    r = S.score(S.confusion(TRUTH, PRED, 3), ["background", "a", "b"])
    assert r["iou"] == pytest.approx({"background": 0.5, "a": 0.6, "b": 0.5})
    assert r["mean"] == pytest.approx(8 / 15) and r["pixels"] == 10


def test_perfect_labelling_and_absent_class():
    """A perfect labelling scores 1 everywhere; a class neither present nor predicted has no
    accuracy (NaN) and leaves the mean alone."""
    r = S.score(S.confusion(TRUTH, np.where(TRUTH == V, 7, TRUTH), 4), ["background", "a", "b", "c"])
    assert r["iou"]["a"] == 1.0 and np.isnan(r["iou"]["c"]) and r["mean"] == 1.0


def test_bad_labellings_are_clear_errors():
    with pytest.raises(DataError, match="x.png: label 5 on a non-void pixel"):
        S.confusion(TRUTH, np.full_like(TRUTH, 5), 3, "x.png")
    with pytest.raises(DataError, match="labelling is 2x3 px but the ground truth is 4x3"):
        S.confusion(TRUTH, PRED[:, :2], 3)


def _png(path: Path, labels: np.ndarray, mode: str = "P") -> None:
    """An indexed PNG of `labels` (as VOC's masks), or an RGB one (`mode="RGB"`: not a label image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels)
    if mode == "P":
        im.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    (im.convert("RGB") if mode == "RGB" else im).save(path)


@pytest.fixture
def seg_root(tmp_path: Path) -> Path:
    """Two images of a VOC-layout segmentation split: the hand-made masks above and a second
    image that is all background in truth and prediction (4 more right pixels)."""
    root = tmp_path / "voc"
    box = np.array([0.0, 0.0, 2.0, 2.0])
    for image_id, truth, objs in (("a", TRUTH, [ObjectAnn("fox", box), ObjectAnn("owl", box)]),
                                  ("b", np.zeros((2, 2), np.uint8), [ObjectAnn("fox", box)])):
        write_voc_xml(root / "Annotations" / f"{image_id}.xml",
                      ImageAnn(image_id, f"{image_id}.jpg", truth.shape[1], truth.shape[0], objs))
        _png(root / "SegmentationClass" / f"{image_id}.png", truth)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    _png(tmp_path / "res" / "a.png", PRED)
    _png(tmp_path / "res" / "b.png", np.zeros((2, 2), np.uint8))
    return root


def test_folder_evaluation_sums_one_confusion_over_images(seg_root: Path):
    """Background gains 4 true pixels from image b: 7 / (7 + 2 + 1) = 0.7; classes named from the
    annotations (background, fox, owl)."""
    r = S.evaluate_folder(seg_root, "val", seg_root.parent / "res")
    assert r["iou"] == pytest.approx({"background": 0.7, "fox": 0.6, "owl": 0.5})
    assert r["images"] == 2 and r["pixels"] == 14


def test_folder_errors_name_the_file(seg_root: Path):
    (seg_root.parent / "res" / "b.png").unlink()
    with pytest.raises(DataError, match=r"res/b.png: labelling not found"):
        S.evaluate_folder(seg_root, "val", seg_root.parent / "res")
    _png(seg_root.parent / "res" / "b.png", np.zeros((2, 2), np.uint8), "RGB")
    with pytest.raises(DataError, match=r"b.png: a label image must be indexed"):
        S.evaluate_folder(seg_root, "val", seg_root.parent / "res")
    with pytest.raises(DataError, match=r"Segmentation/test.txt: segmentation split list not found"):
        S.evaluate_folder(seg_root, "test", seg_root.parent / "res")


def test_cli_prints_table_and_writes_json(seg_root: Path, tmp_path: Path):
    out = tmp_path / "scores.json"
    res = subprocess.run([sys.executable, "-m", "lsda_core.cli", "eval", "--metric", "segmentation", "--dataset",
                          str(seg_root), "--split", "val", "--results", str(tmp_path / "res"), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "mean" in res.stdout and "60.0" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["metric"] == "segmentation" and doc["mean"] == pytest.approx((0.7 + 0.6 + 0.5) / 3)
    bad = subprocess.run([sys.executable, "-m", "lsda_core.cli", "eval", "--metric", "segmentation", "--dataset",
                          str(seg_root), "--split", "val", "--results", str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "labelling not found" in bad.stderr and "Traceback" not in bad.stderr
