"""Detection evaluation on hand-worked cases: AP by hand, difficult objects, duplicates,
the two devkits' matching rules, ILSVRC's small-object threshold, the blacklist, and the
`lsda eval` command end to end on a VOC-layout fixture."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lsda_core.data.comp4 import Detections, write_comp4
from lsda_core.data.voc import write_imagesets, write_voc_xml
from lsda_core.core.errors import DataError, LsdaError
from lsda_core.evaluation.ap import eval_command, evaluate, evaluate_class, match_detections, voc_ap
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn

FAR = [60.0, 60.0, 70.0, 70.0]  # overlaps nothing below


def box(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def dataset(images: dict[str, list[ObjectAnn]], classes=("a",), blacklist=()) -> DetectionDataset:
    anns = [ImageAnn(i, Path(f"{i}.jpg"), 100, 100, objs) for i, objs in images.items()]
    return DetectionDataset("t", "test", list(classes), anns, blacklist=set(blacklist))


def dets(rows: list[tuple[str, float, list[float]]]) -> Detections:
    return Detections([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


# Three objects of class a in one image; five detections, in score order:
# TP (g1), FP, TP (g2), FP, FP; g3 is never found.
#   tp cumsum 1 1 2 2 2, fp cumsum 0 1 1 2 3
#   recall    1/3 1/3 2/3 2/3 2/3
#   precision 1   1/2 2/3 1/2 2/5
# 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t is 1 (4 levels);
#           t = .4, .5, .6    -> only the recall-2/3 points: max(2/3, 1/2, 2/5) = 2/3 (3 levels);
#           t = .7 ... 1      -> no point, 0 (4 levels).  AP = (4 + 3 * 2/3) / 11 = 6/11.
# Area: envelope 1 up to recall 1/3, 2/3 up to 2/3, then 0: AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
THREE = {"im1": [ObjectAnn("a", box(0, 0, 10, 10)), ObjectAnn("a", box(20, 0, 30, 10)),
                 ObjectAnn("a", box(40, 0, 50, 10))]}
FIVE = [("im1", 0.6, FAR), ("im1", 0.9, [0, 0, 10, 10]), ("im1", 0.8, FAR),
        ("im1", 0.5, FAR), ("im1", 0.7, [20, 0, 30, 10])]  # deliberately not in score order
RECALL = [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3]
PRECISION = [1, 1 / 2, 2 / 3, 1 / 2, 2 / 5]


def test_voc_ap_by_hand():
    assert voc_ap(RECALL, PRECISION, use_07=True) == pytest.approx(6 / 11, abs=1e-12)
    assert voc_ap(RECALL, PRECISION, use_07=False) == pytest.approx(5 / 9, abs=1e-12)
    assert voc_ap([], [], True) == 0.0 and voc_ap([], [], False) == 0.0
    # perfect curve
    assert voc_ap([0.5, 1.0], [1.0, 1.0], True) == pytest.approx(1.0)
    assert voc_ap([0.5, 1.0], [1.0, 1.0], False) == pytest.approx(1.0)
    # recall levels are exactly k/10: a recall of exactly 0.3 reaches t = 0.3 (4 levels)
    assert voc_ap([3 / 10], [1.0], True) == pytest.approx(4 / 11)
    # area: precision rises later -> envelope takes the later, higher value
    assert voc_ap([0.25, 0.5], [0.5, 1.0], False) == pytest.approx(0.5)


def test_hand_case_eleven_point_and_area():
    ds = dataset(THREE)
    r = evaluate_class(ds, "a", dets(FIVE), "voc07")
    assert r["tp"].tolist() == [True, False, True, False, False]
    assert r["fp"].tolist() == [False, True, False, True, True]
    assert r["n_pos"] == 3 and r["n_dets"] == 5
    np.testing.assert_allclose(r["recall"], RECALL)
    np.testing.assert_allclose(r["precision"], PRECISION)
    assert r["ap"] == pytest.approx(6 / 11, abs=1e-12)
    m = r["matching"]
    assert m.order.tolist() == [1, 2, 4, 0, 3]
    assert m.gt_index.tolist() == [0, -1, 1, -1, -1]
    np.testing.assert_allclose(m.iou, [1, 0, 1, 0, 0])
    assert evaluate_class(ds, "a", dets(FIVE), "area")["ap"] == pytest.approx(5 / 9, abs=1e-12)
    # 10x10 objects have the ILSVRC threshold 100/400 = 0.25; exact hits match either way
    assert evaluate_class(ds, "a", dets(FIVE), "ilsvrc")["ap"] == pytest.approx(5 / 9, abs=1e-12)


def test_difficult_object_is_ignored():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10), difficult=True), ObjectAnn("a", box(20, 0, 30, 10))]}
    d = dets([("im1", 0.9, [0, 0, 10, 10]), ("im1", 0.8, [0.5, 0, 10, 10]), ("im1", 0.7, [20, 0, 30, 10])])
    r = evaluate_class(dataset(imgs), "a", d, "voc07")
    # both hits on the difficult object count as neither TP nor FP (it is never "detected")
    assert r["ignored"].tolist() == [True, True, False]
    assert r["tp"].tolist() == [False, False, True] and r["fp"].tolist() == [False, False, False]
    assert r["n_pos"] == 1 and r["ap"] == pytest.approx(1.0)
    assert r["matching"].gt_index.tolist() == [0, 0, 1]
    # the same objects without the flag: TP, duplicate FP, TP with n_pos = 2:
    # PR (1/2, 1), (1/2, 1/2), (1, 2/3): 11-point = (6 * 1 + 5 * 2/3) / 11 = 28/33
    imgs["im1"][0].difficult = False
    r = evaluate_class(dataset(imgs), "a", d, "voc07")
    assert r["tp"].tolist() == [True, False, True] and r["fp"].tolist() == [False, True, False]
    assert r["ap"] == pytest.approx(28 / 33, abs=1e-12)


def test_duplicate_detection_is_fp():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10))]}
    d = dets([("im1", 0.8, [1, 1, 10, 10]), ("im1", 0.9, [0, 0, 10, 10])])
    for metric in ("voc07", "area", "ilsvrc"):
        r = evaluate_class(dataset(imgs), "a", d, metric)
        assert r["tp"].tolist() == [True, False] and r["fp"].tolist() == [False, True], metric
        assert r["ap"] == pytest.approx(1.0)


def test_voc_and_ilsvrc_matching_rules_differ():
    # A and B overlap; the second detection's best object is A (already taken, IoU 90/110),
    # while B (IoU 70/130 = 0.54) is still free.
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10)), ObjectAnn("a", box(4, 0, 14, 10))]}
    d = dets([("im1", 0.9, [0, 0, 10, 10]), ("im1", 0.8, [1, 0, 11, 10])])
    voc = match_detections(dataset(imgs), "a", d, "voc07")
    assert voc.tp.tolist() == [True, False] and voc.gt_index.tolist() == [0, 0]  # VOCevaldet: duplicate of A
    ils = match_detections(dataset(imgs), "a", d, "ilsvrc")
    assert ils.tp.tolist() == [True, True] and ils.gt_index.tolist() == [0, 1]  # eval_detection: takes B
    np.testing.assert_allclose(ils.iou, [1.0, 90 / 110])


def test_voc_threshold_is_inclusive():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10))]}
    # IoU exactly 0.5 (100/200) is a hit (ovmax >= minoverlap); 100/201 is not
    assert match_detections(dataset(imgs), "a", dets([("im1", 1, [0, 0, 10, 20])]), "voc07").tp.tolist() == [True]
    assert match_detections(dataset(imgs), "a", dets([("im1", 1, [0, 0, 10, 20.1])]), "voc07").tp.tolist() == [False]


def test_ilsvrc_small_object_threshold():
    # a 10x10 object needs IoU >= 10*10 / (20*20) = 0.25; a 10x30 one 300 / (20*40) = 0.375
    imgs = {"i1": [ObjectAnn("a", box(0, 0, 10, 10))], "i2": [ObjectAnn("a", box(0, 0, 10, 10))],
            "i3": [ObjectAnn("a", box(0, 0, 10, 30))], "i4": [ObjectAnn("a", box(0, 0, 10, 30))],
            "i5": [ObjectAnn("a", box(0, 0, 100, 100))]}
    d = dets([("i1", 0.9, [0, 0, 10, 40]),    # IoU 100/400 = 0.25  -> hit
              ("i2", 0.8, [0, 0, 10, 41]),    # IoU 100/410 < 0.25  -> miss
              ("i3", 0.7, [0, 0, 10, 80]),    # IoU 300/800 = 0.375 -> hit
              ("i4", 0.6, [0, 0, 10, 81]),    # IoU 300/810         -> miss
              ("i5", 0.5, [0, 0, 100, 190])])  # large: capped at 0.5; IoU 100/190 = 0.526 -> hit
    ils = match_detections(dataset(imgs), "a", d, "ilsvrc")
    assert ils.tp.tolist() == [True, False, True, False, True]
    voc = match_detections(dataset(imgs), "a", d, "voc07")
    assert voc.tp.tolist() == [False, False, False, False, True]


def test_blacklist_ignores_detections_and_positives():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10))], "im2": [ObjectAnn("a", box(0, 0, 10, 10))]}
    d = dets([("im2", 0.95, FAR), ("im1", 0.9, [0, 0, 10, 10])])
    # without a blacklist: FP then TP, n_pos 2: PR (0, 0), (1/2, 1/2): area = 1/2 * 1/2 = 1/4
    r = evaluate_class(dataset(imgs), "a", d, "ilsvrc")
    assert r["n_pos"] == 2 and r["ap"] == pytest.approx(0.25)
    # (im2, a) blacklisted: its detection is ignored and its object is no positive
    r = evaluate_class(dataset(imgs, blacklist={("im2", "a")}), "a", d, "ilsvrc")
    assert r["n_pos"] == 1 and r["ap"] == pytest.approx(1.0)
    assert r["ignored"].tolist() == [True, False] and r["tp"].tolist() == [False, True]
    # a blacklist entry of another class changes nothing
    r = evaluate_class(dataset(imgs, blacklist={("im2", "b")}), "a", d, "ilsvrc")
    assert r["n_pos"] == 2 and r["ap"] == pytest.approx(0.25)


def test_equal_scores_keep_input_order():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10))]}
    # FP first, then TP at the same score: PR (0, 0), (1, 1/2) -> 11-point 1/2
    r = evaluate_class(dataset(imgs), "a", dets([("im1", 0.5, FAR), ("im1", 0.5, [0, 0, 10, 10])]), "voc07")
    assert r["tp"].tolist() == [False, True] and r["ap"] == pytest.approx(0.5)


def test_other_classes_and_images_do_not_interfere():
    imgs = {"im1": [ObjectAnn("a", box(0, 0, 10, 10)), ObjectAnn("b", box(20, 0, 30, 10))],
            "im2": [ObjectAnn("a", box(20, 0, 30, 10))]}
    # a detection of a on im1 at b's place is a FP; one on im2 hits im2's object only
    d = dets([("im1", 0.9, [20, 0, 30, 10]), ("im2", 0.8, [20, 0, 30, 10]), ("im1", 0.7, [0, 0, 10, 10])])
    r = evaluate_class(dataset(imgs, classes=("a", "b")), "a", d, "voc07")
    assert r["tp"].tolist() == [False, True, True] and r["n_pos"] == 2


def test_evaluate_map_missing_class_and_no_positives():
    imgs = dict(THREE)
    imgs["im2"] = [ObjectAnn("b", box(0, 0, 10, 10))]
    ds = dataset(imgs, classes=("a", "b", "c"))
    res = evaluate(ds, {"a": dets(FIVE)}, "voc07")
    assert res["metric"] == "voc07"
    assert res["ap"]["a"] == pytest.approx(6 / 11) and res["ap"]["b"] == 0.0
    assert math.isnan(res["ap"]["c"])  # no positives: left out of the mean
    assert res["map"] == pytest.approx(3 / 11)
    assert res["n_pos"] == {"a": 3, "b": 1, "c": 0} and res["n_dets"] == {"a": 5, "b": 0, "c": 0}
    with pytest.raises(LsdaError, match="unknown metric"):
        evaluate(ds, {}, "coco")


def test_unknown_image_id_is_a_data_error():
    d = Detections(["im1", "im9"], [1.0, 0.5], [[0, 0, 1, 1]] * 2, source="results/comp4_det_test_a.txt")
    with pytest.raises(DataError, match=r"results/comp4_det_test_a.txt: image id 'im9'"):
        evaluate(dataset(THREE), {"a": d})


def test_many_detections_vectorised_path():
    # 300 images with two objects each; per image one exact hit, one duplicate, one miss:
    # the hits score highest, so precision is 1 up to recall 1/2 and falls after
    rng = np.random.default_rng(0)
    imgs = {f"im{i}": [ObjectAnn("a", box(0, 0, 10, 10)), ObjectAnn("a", box(50, 50, 70, 70))] for i in range(300)}
    rows = []
    for i in range(300):
        rows += [(f"im{i}", 2 + rng.uniform(), [0, 0, 10, 10]),  # TP
                 (f"im{i}", 1 + rng.uniform(), [0, 0, 10, 10]),  # duplicate
                 (f"im{i}", rng.uniform(), FAR)]                  # FP (misses the second object)
    for metric in ("voc07", "ilsvrc"):
        r = evaluate_class(dataset(imgs), "a", dets(rows), metric)
        assert r["n_pos"] == 600 and r["tp"].sum() == 300 and r["fp"].sum() == 600
        assert r["tp"][:300].all()  # the hits have the top scores
        # precision 1 up to recall 1/2, then the envelope is 0: area 1/2, 11-point 6/11
        want = 6 / 11 if metric == "voc07" else 0.5
        assert r["ap"] == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------ lsda eval end to end

def make_voc_fixture(root: Path) -> None:
    anns = [ImageAnn("000001", root / "JPEGImages" / "000001.jpg", 100, 100, THREE["im1"]),
            ImageAnn("000002", root / "JPEGImages" / "000002.jpg", 100, 100,
                     [ObjectAnn("square", box(30, 30, 60, 60)), ObjectAnn("circle", box(0, 50, 10, 60), difficult=True)])]
    for a in anns:
        a.objects = [ObjectAnn("circle" if o.cls == "a" else o.cls, o.box, difficult=o.difficult) for o in a.objects]
        write_voc_xml(root / "Annotations" / f"{a.image_id}.xml", a)
    write_imagesets(root, "test", ["000001", "000002"], [])


def test_eval_command_end_to_end(tmp_path, capsys):
    root, res = tmp_path / "voc", tmp_path / "results"
    make_voc_fixture(root)
    rows = [("000001" if i == "im1" else i, s, b) for i, s, b in FIVE]
    # plus a hit on the difficult circle of 000002: ignored, AP unchanged
    rows.append(("000002", 0.95, [0, 50, 10, 60]))
    write_comp4(res, "test", "circle", [r[0] for r in rows], [r[1] for r in rows], np.array([r[2] for r in rows]))
    out = tmp_path / "eval" / "voc07.json"
    result = eval_command(root, "test", res, "voc07", out)
    # circle: the hand case, 6/11; square has no results file: 0
    j = json.loads(out.read_text())
    assert set(j) == {"metric", "ap", "map"} and j["metric"] == "voc07"
    assert j["ap"] == pytest.approx({"circle": 6 / 11, "square": 0.0})
    assert j["map"] == pytest.approx(3 / 11)
    assert result["n_pos"] == {"circle": 3, "square": 1}
    text = capsys.readouterr().out
    assert "circle" in text and "54.5" in text and "27.3" in text and "square" in text
    out2 = tmp_path / "area.json"
    eval_command(root, "test", res, "area", out2)
    assert json.loads(out2.read_text())["ap"]["circle"] == pytest.approx(5 / 9)


def test_eval_command_errors(tmp_path):
    root, res = tmp_path / "voc", tmp_path / "results"
    make_voc_fixture(root)
    res.mkdir()
    with pytest.raises(DataError, match="no results files"):
        eval_command(root, "test", res)
    f = write_comp4(res, "test", "square", ["000001", "999999"], [1.0, 0.5], np.array([[0, 0, 5, 5]] * 2))
    with pytest.raises(DataError) as e:
        eval_command(root, "test", res)
    assert str(f) in str(e.value) and "'999999'" in str(e.value)
    with pytest.raises(LsdaError, match="unknown metric"):
        eval_command(root, "test", res, "map50")


def test_eval_command_out_must_name_a_file_and_is_checked_first(tmp_path, monkeypatch):
    """`lsda eval --out` naming a folder (or a path under a file) fails in one line before
    any reading or scoring, instead of a traceback after the work."""
    import lsda_core.data.voc as V

    root, res = tmp_path / "voc", tmp_path / "results"
    make_voc_fixture(root)
    write_comp4(res, "test", "circle", ["000001"], [1.0], np.array([[0, 0, 10, 10]]))
    with monkeypatch.context() as m:
        m.setattr(V, "read_voc", lambda *a, **k: pytest.fail("read the dataset before checking --out"))
        with pytest.raises(LsdaError) as e:
            eval_command(root, "test", res, out=tmp_path)
    assert str(e.value) == (f"{tmp_path}: is a folder, but the scores file (--out) must be a file "
                            f"(e.g. {tmp_path / 'out.json'})")
    f = tmp_path / "a_file"
    f.write_text("")
    with pytest.raises(LsdaError) as e:
        eval_command(root, "test", res, out=f / "scores.json")
    assert str(e.value) == f"{f / 'scores.json'}: cannot write the scores file (--out): {f} is a file, not a folder"
    assert eval_command(root, "test", res, out=tmp_path / "new" / "dir" / "s.json")["ap"]["circle"] > 0


def test_eval_command_names_results_of_a_class_the_dataset_lacks(tmp_path):
    root, res = tmp_path / "voc", tmp_path / "results"
    make_voc_fixture(root)
    write_comp4(res, "test", "circle", ["000001"], [1.0], np.array([[0, 0, 10, 10]]))
    extra = write_comp4(res, "test", "triangle", ["000001"], [1.0], np.array([[0, 0, 10, 10]]))
    with pytest.raises(DataError) as e:
        eval_command(root, "test", res)
    assert str(e.value).startswith(f"{extra}: results for class 'triangle', which the dataset does not have")


def test_eval_command_voc_classes_without_positives_are_null(tmp_path):
    # with VOC class names the reader takes all 20 VOC classes; those absent from the split
    # have no positives: AP null in the JSON and not in the mean
    root, res = tmp_path / "voc", tmp_path / "results"
    write_voc_xml(root / "Annotations" / "a.xml",
                  ImageAnn("a", root / "JPEGImages" / "a.jpg", 50, 50, [ObjectAnn("dog", box(0, 0, 10, 10))]))
    write_imagesets(root, "val", ["a"], [])
    write_comp4(res, "val", "dog", ["a"], [1.0], np.array([[0, 0, 10, 10]]))
    out = tmp_path / "r.json"
    eval_command(root, "val", res, "voc07", out)
    j = json.loads(out.read_text())
    assert j["ap"]["dog"] == 1.0 and j["ap"]["cat"] is None and j["map"] == 1.0
    assert len(j["ap"]) == 20


# ------------------------------------------------------------------ devkit loops, transcribed

def ref_devkit(ds: DetectionDataset, cls: str, d: Detections, metric: str) -> tuple[list[int], list[int], float]:
    """VOCevaldet.m / eval_detection.m as plain loops on 1-based inclusive boxes."""
    def incl(b):
        return [b[0] + 1, b[1] + 1, b[2], b[3]]

    def ov(bb, bbgt):
        iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
        ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
        if iw > 0 and ih > 0:
            ua = (bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih
            return iw * ih / ua
        return None

    gt = {im.image_id: [(incl(o.box), o.difficult) for o in im.objects if o.cls == cls] for im in ds.images}
    if metric == "ilsvrc":
        gt = {k: [(b, False) for b, _ in v] for k, v in gt.items()}
    npos = sum(not df for v in gt.values() for _, df in v)
    det = {k: [False] * len(v) for k, v in gt.items()}
    order = sorted(range(len(d)), key=lambda k: -d.scores[k])  # Python's sort is stable
    tp, fp = [0] * len(d), [0] * len(d)
    for n, k in enumerate(order):
        bb, g = incl(d.boxes[k]), gt[d.image_ids[k]]
        if metric == "ilsvrc":
            ovmax, kmax = -math.inf, -1
            for j, (bbgt, _) in enumerate(g):
                if det[d.image_ids[k]][j]:
                    continue
                o = ov(bb, bbgt)
                w, h = bbgt[2] - bbgt[0] + 1, bbgt[3] - bbgt[1] + 1
                if o is not None and o >= min(0.5, w * h / ((w + 10) * (h + 10))) and o > ovmax:
                    ovmax, kmax = o, j
            if kmax >= 0:
                tp[n] = 1
                det[d.image_ids[k]][kmax] = True
            else:
                fp[n] = 1
            continue
        ovmax, jmax = -math.inf, -1
        for j, (bbgt, _) in enumerate(g):
            o = ov(bb, bbgt)
            if o is not None and o > ovmax:
                ovmax, jmax = o, j
        if ovmax >= 0.5:
            if not g[jmax][1]:
                if not det[d.image_ids[k]][jmax]:
                    tp[n] = 1
                    det[d.image_ids[k]][jmax] = True
                else:
                    fp[n] = 1
        else:
            fp[n] = 1
    ctp, cfp, rec, prec = 0, 0, [], []
    for a, b in zip(tp, fp):
        ctp, cfp = ctp + a, cfp + b
        if a or b:  # an ignored detection repeats the previous point (or is 0/0 = NaN)
            rec.append(ctp / npos)
            prec.append(ctp / (ctp + cfp))
    if metric == "voc07":
        ap = sum(max([p for r, p in zip(rec, prec) if r >= t / 10], default=0) for t in range(11)) / 11
    else:
        mrec, mpre = [0] + rec + [1], [0] + prec + [0]
        for i in range(len(mpre) - 2, -1, -1):
            mpre[i] = max(mpre[i], mpre[i + 1])
        ap = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    return tp, fp, ap


@pytest.mark.parametrize("metric", ["voc07", "area", "ilsvrc"])
def test_matches_devkit_loops_on_random_data(metric):
    rng = np.random.default_rng(42)
    images = {}
    for i in range(40):
        objs = []
        for _ in range(rng.integers(0, 5)):
            xy = rng.integers(0, 40, 2)
            wh = rng.integers(2, 30, 2)
            objs.append(ObjectAnn(str(rng.choice(["a", "b"])), np.r_[xy, xy + wh].astype(float),
                                  difficult=bool(rng.uniform() < 0.2)))
        images[f"im{i}"] = objs
    ds = dataset(images, classes=("a", "b"))
    rows = []
    for im, objs in images.items():
        for o in objs:  # jittered copies of the objects (hits, duplicates, near misses) ...
            for _ in range(rng.integers(0, 3)):
                rows.append((im, float(rng.integers(0, 20)) / 4, list(o.box + rng.normal(0, 3, 4))))
        for _ in range(rng.integers(0, 3)):  # ... and clutter; scores on a grid, so ties occur
            xy = rng.uniform(0, 50, 2)
            rows.append((im, float(rng.integers(0, 20)) / 4, list(np.r_[xy, xy + rng.uniform(2, 30, 2)])))
    d = dets(rows)
    for cls in ("a", "b"):
        tp, fp, ap = ref_devkit(ds, cls, d, metric)
        r = evaluate_class(ds, cls, d, metric)
        assert r["tp"].astype(int).tolist() == tp and r["fp"].astype(int).tolist() == fp
        assert r["ap"] == pytest.approx(ap, abs=1e-12)
        assert 0 < sum(tp) < len(d)
