"""Hoiem et al.'s diagnosis on hand-made cases: every false-positive type and the order of
the tests, the trend, AP impact, normalised AP, characteristic subsets, similarity groups,
and `lsda analyze` end to end on a VOC-layout fixture."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from lsda_core.evaluation import hoiem as A
from lsda_core.evaluation.ap import voc_ap
from lsda_core.cli import main
from lsda_core.data.comp4 import Detections, write_comp4
from lsda_core.data.voc import VOC_CLASSES, write_imagesets, write_voc_xml
from lsda_core.core.errors import DataError
from lsda_core.core.structures import DetectionDataset, ImageAnn, ObjectAnn

LOC, SIM, OTH, BG = range(4)
ANIMALS = {"animals": ["cat", "dog"]}


def box(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def dataset(images: dict[str, list[ObjectAnn]], classes=("cat", "dog", "car")) -> DetectionDataset:
    anns = [ImageAnn(i, Path(f"{i}.jpg"), 100, 100, objs) for i, objs in images.items()]
    return DetectionDataset("t", "test", list(classes), anns)


def dets(rows: list[tuple[str, float, list[float]]]) -> Detections:
    return Detections([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


# i1: cat A, a dog, a car, cat B apart from each other; i2: a cat and a dog overlapping;
# i3: a dog and a car overlapping, no cat.
SCENE = {
    "i1": [ObjectAnn("cat", box(0, 0, 20, 20)), ObjectAnn("dog", box(40, 0, 60, 20)),
           ObjectAnn("car", box(0, 40, 20, 60)), ObjectAnn("cat", box(70, 70, 90, 90))],
    "i2": [ObjectAnn("cat", box(0, 0, 20, 20)), ObjectAnn("dog", box(10, 0, 30, 20))],
    "i3": [ObjectAnn("dog", box(0, 0, 20, 20)), ObjectAnn("car", box(10, 0, 30, 20))],
}
# cat detections, in score order, with the type each must get
CAT_DETS = [
    ("i1", 0.99, [0, 0, 20, 20], -1),      # TP on cat A
    ("i1", 0.95, [0, 0, 20, 20], LOC),     # duplicate of cat A
    ("i1", 0.90, [70, 70, 80, 80], LOC),   # IoU 100/400 = 0.25 with cat B
    ("i1", 0.85, [40, 0, 60, 20], SIM),    # on the dog
    ("i1", 0.80, [0, 40, 20, 60], OTH),    # on the car
    ("i1", 0.75, [30, 70, 50, 90], BG),    # touches nothing
    ("i2", 0.70, [12, 0, 32, 20], LOC),    # IoU 0.25 with the cat and 0.82 with the dog: Loc first
    ("i3", 0.65, [5, 0, 25, 20], SIM),     # IoU 0.6 with the dog and with the car: Sim before Oth
    ("i1", 0.60, [0, 40, 20, 42], OTH),    # IoU exactly 0.1 with the car: counts (>=)
    ("i1", 0.55, [0, 40, 20, 41.9], BG),   # IoU 0.095: does not
]


def test_every_fp_type_and_their_order():
    ds = dataset(SCENE)
    d = A.diagnose(ds, {"cat": dets([r[:3] for r in CAT_DETS])}, ANIMALS)
    assert d["cat"].fp_type.tolist() == [r[3] for r in CAT_DETS]
    assert d["cat"].counts() == {"loc": 3, "sim": 2, "oth": 2, "bg": 2}
    assert d["cat"].matching.n_pos == 3
    # classes without detections have no false positives
    assert A.fp_counts(d)["dog"] == {"loc": 0, "sim": 0, "oth": 0, "bg": 0}
    # without similarity groups the dog is just another class: Sim becomes Oth
    d0 = A.diagnose(ds, {"cat": dets([r[:3] for r in CAT_DETS])}, {})
    assert d0["cat"].counts() == {"loc": 3, "sim": 0, "oth": 4, "bg": 2}
    # a higher weak threshold turns the 0.1 touch into background, and the 0.25 Loc too
    d3 = A.diagnose(ds, {"cat": dets([r[:3] for r in CAT_DETS])}, ANIMALS, weak_iou=0.3)
    assert d3["cat"].fp_type.tolist()[2] == BG and d3["cat"].fp_type.tolist()[8] == BG


def test_groups_are_symmetric_and_multiple():
    ds = dataset(SCENE)
    # dog detections on the cat are Sim too; a class in two groups is similar to both
    groups = {"pets": ["cat", "dog"], "things": ["dog", "car"]}
    d = A.diagnose(ds, {"dog": dets([("i1", 1.0, [0, 0, 20, 20]), ("i1", 0.9, [0, 40, 20, 60])]),
                        "car": dets([("i1", 1.0, [0, 0, 20, 20])])}, groups)
    assert d["dog"].fp_type.tolist() == [SIM, SIM]
    assert d["car"].fp_type.tolist() == [OTH]


def test_difficult_hits_are_ignored_not_typed():
    ds = dataset({"i1": [ObjectAnn("cat", box(0, 0, 20, 20), difficult=True)]})
    d = A.diagnose(ds, {"cat": dets([("i1", 1.0, [0, 0, 20, 20]), ("i1", 0.5, [0, 0, 20, 8])])}, {})
    # the exact hit is ignored (-1); the IoU-0.4 one is a FP near a cat: Loc
    assert d["cat"].fp_type.tolist() == [-1, LOC]
    assert d["cat"].matching.ignored.tolist() == [True, False]


# ------------------------------------------------------------------ trend

def fake(cls: str, types: list[int]) -> A.ClassDiagnosis:
    """A diagnosis with only FP types (all fp_trend reads)."""
    return A.ClassDiagnosis(cls, None, np.array(types, dtype=np.int8))  # type: ignore[arg-type]


def test_trend_interleaves_classes_by_rank_and_shares_sum_to_one():
    diags = {"a": fake("a", [-1] + [LOC] * 30 + [BG] * 30), "b": fake("b", [OTH] * 60 + [-1])}
    t = A.fp_trend(diags)
    assert t["n"] == [25, 50, 100, 120] and t["n_available"] == 120 and t["truncated"]
    # N=25: ranks 0-11 of both classes, then rank 12 of a (class order within a rank)
    assert t["counts"]["loc"][0] == 13 and t["counts"]["oth"][0] == 12
    assert t["shares"]["loc"][1] == pytest.approx(0.5) and t["shares"]["oth"][1] == pytest.approx(0.5)
    assert [t["shares"][k][2] for k in A.FP_TYPES] == pytest.approx([0.3, 0.0, 0.5, 0.2])
    assert [t["counts"][k][3] for k in A.FP_TYPES] == [30, 0, 60, 30]
    total = np.sum([t["shares"][k] for k in A.FP_TYPES], axis=0)
    np.testing.assert_allclose(total, 1.0)
    t2 = A.fp_trend(diags, ["a"], ns=(25, 50))
    assert t2["n"] == [25, 50] and not t2["truncated"] and t2["classes"] == ["a"]
    assert t2["shares"]["loc"] == pytest.approx([1.0, 0.6])
    empty = A.fp_trend(diags, [], ns=(25,))
    assert empty["n"] == [] and empty["n_available"] == 0


# ------------------------------------------------------------------ AP impact and AP_N

# two cats; detections: background FP, TP, duplicate (Loc), TP
IMPACT = {"i1": [ObjectAnn("cat", box(0, 0, 20, 20)), ObjectAnn("cat", box(50, 50, 70, 70))]}
IMPACT_DETS = [("i1", 0.9, [30, 0, 40, 10]), ("i1", 0.8, [0, 0, 20, 20]), ("i1", 0.7, [0, 0, 20, 20]),
               ("i1", 0.6, [50, 50, 70, 70])]


def test_ap_impact_by_hand():
    d = A.diagnose(dataset(IMPACT), {"cat": dets(IMPACT_DETS)}, {})
    cat = d["cat"]
    assert cat.fp_type.tolist() == [BG, -1, LOC, -1]
    # all: precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1 -> 0.5 at every level
    assert A.ap_without(cat) == pytest.approx(0.5)
    # no BG: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> (6 * 1 + 5 * 2/3) / 11
    assert A.ap_without(cat, ["bg"]) == pytest.approx(28 / 33)
    # no Loc: precision 0, 1/2, 2/3 -> 2/3 everywhere
    assert A.ap_without(cat, ["loc"]) == pytest.approx(2 / 3)
    # every FP removed and every positive found: AP 1
    assert A.ap_without(cat, A.FP_TYPES) == pytest.approx(1.0)
    imp = A.ap_impact(d)
    assert imp["ap"]["cat"] == pytest.approx(0.5) and np.isnan(imp["ap"]["dog"])
    assert imp["map"] == pytest.approx(0.5)  # classes without positives are left out
    assert imp["without"]["sim"]["cat"] == pytest.approx(0.5)
    assert imp["gain"] == pytest.approx({"loc": 2 / 3 - 0.5, "sim": 0.0, "oth": 0.0, "bg": 28 / 33 - 0.5})


def test_normalized_ap_formula():
    # TP, FP, TP with 2 positives and N_norm = 4: recall 1/2, 1/2, 1; tp' = 2, 2, 4;
    # precision 1, 2/3, 4/5 -> envelope area 1/2 * 1 + 1/2 * 4/5 = 0.9
    assert A.normalized_ap([1, 0, 1], [0, 1, 0], 2, 4.0) == pytest.approx(0.9)
    # N_norm = n_pos: plain precision 1, 1/2, 2/3 -> 1/2 + 1/2 * 2/3
    assert A.normalized_ap([1, 0, 1], [0, 1, 0], 2, 2.0) == pytest.approx(5 / 6)
    # more normalised positives make the same false positives cost less
    assert A.normalized_ap([0, 1], [1, 0], 1, 10.0) > A.normalized_ap([0, 1], [1, 0], 1, 1.0)
    assert np.isnan(A.normalized_ap([], [], 0, 1.0))


# ------------------------------------------------------------------ characteristics

def test_area_and_aspect_bins_per_class_percentiles():
    # class a: boxes k x 1 (area and aspect k), class b: 10k x 10 (area 100k, aspect k);
    # percentiles of 1..10 at 10/30/70/90: 1.9, 3.7, 7.3, 9.1
    objs = [ObjectAnn("a", box(0, 0, k, 1)) for k in range(1, 11)]
    objs += [ObjectAnn("b", box(0, 0, 10 * k, 10)) for k in range(1, 11)]
    ds = dataset({"i1": objs}, classes=("a", "b"))
    s = A.object_subsets(ds)
    want = {"XS": [1], "S": [2, 3], "M": [4, 5, 6, 7], "L": [8, 9], "XL": [10]}
    for name, ks in want.items():
        assert np.nonzero(s["area"][name])[0].tolist() == [k - 1 for k in ks] + [k + 9 for k in ks]
    assert np.nonzero(s["aspect"]["XW"])[0].tolist() == [9, 19]
    assert np.nonzero(s["aspect"]["XT"])[0].tolist() == [0, 10]
    # no truncation flags, occlusion only as VOC's flag (all 0), pose unspecified: one subset each -> left out
    assert set(s) == {"area", "aspect"}


def test_attribute_subsets_from_annotations():
    def obj(occ: float, view: str, parts: dict, trunc: bool = False) -> ObjectAnn:
        return ObjectAnn("a", box(0, 0, 10, 10), truncated=trunc,
                         attrs={"occlusion": occ, "viewpoint": view, "parts": parts, "superclass": "s"})
    objs = [obj(0.0, "left", {"head": 1.0, "tail": 0.2}), obj(0.05, "right", {"head": 0.5}),
            obj(0.1, "left", {"head": 0.49}, True), obj(0.7, "front", {})]
    s = A.object_subsets(dataset({"i1": objs}, classes=("a",)))
    occ = {k: np.nonzero(v)[0].tolist() for k, v in s["occlusion"].items()}
    assert occ == {"none": [0], "1-10%": [1], "10-50%": [2], "50-100%": [3]}
    assert np.nonzero(s["truncation"]["truncated"])[0].tolist() == [2]
    assert np.nonzero(s["viewpoint"]["left"])[0].tolist() == [0, 2]
    parts = {k: np.nonzero(v)[0].tolist() for k, v in s["parts"].items()}
    assert parts == {"head visible": [0, 1], "head hidden": [2], "tail hidden": [0]}
    # VOC-style objects: the occluded flag and the pose
    voc = [ObjectAnn("a", box(0, 0, 10, 10), occluded=True, pose="Left"), ObjectAnn("a", box(0, 0, 10, 10), pose="Rear"),
           ObjectAnn("a", box(0, 0, 10, 10))]
    s = A.object_subsets(dataset({"i1": voc}, classes=("a",)))
    assert np.nonzero(s["occlusion"]["occluded"])[0].tolist() == [0]
    assert {k: np.nonzero(v)[0].tolist() for k, v in s["viewpoint"].items()} == {"Left": [0], "Rear": [1]}
    assert "parts" not in s


def test_characteristic_normalised_ap_ignores_objects_outside_the_subset():
    # two cats, the second truncated; detections: TP on the first, a BG FP, TP on the second
    ds = dataset({"i1": [ObjectAnn("cat", box(0, 0, 20, 20)), ObjectAnn("cat", box(50, 50, 70, 70), truncated=True)]})
    d = A.diagnose(ds, {"cat": dets([("i1", 0.9, [0, 0, 20, 20]), ("i1", 0.8, [30, 0, 40, 10]),
                                     ("i1", 0.7, [50, 50, 70, 70])])}, {})
    ch = A.characteristics(ds, d, n_norm=2.0)
    assert ch["ap_n"]["cat"] == pytest.approx(5 / 6) and ch["overall"] == pytest.approx(5 / 6)
    tr = ch["per_characteristic"]["truncation"]
    # truncated: the TP on the other cat is ignored -> FP, TP: precision 0 then 2/3 -> 2/3
    # not truncated: TP, FP (the last TP ignored) -> 1
    assert tr["subsets"] == pytest.approx({"not truncated": 1.0, "truncated": 2 / 3})
    assert tr["min"] == pytest.approx(2 / 3) and tr["max"] == pytest.approx(1.0)
    assert tr["sensitivity"] == pytest.approx(1 / 3) and tr["impact"] == pytest.approx(1 / 6)
    assert tr["n_classes"] == 1


# ------------------------------------------------------------------ groups

def test_similarity_groups_from_superclasses_voc_and_files(tmp_path):
    objs = [ObjectAnn("cat", box(0, 0, 5, 5), attrs={"superclass": "pets"}),
            ObjectAnn("dog", box(0, 0, 5, 5), attrs={"superclass": "pets"}),
            ObjectAnn("car", box(0, 0, 5, 5), attrs={"superclass": "vehicles"})]
    assert A.similarity_groups(dataset({"i": objs})) == {"pets": ["cat", "dog"], "vehicles": ["car"]}
    voc = DetectionDataset("v", "test", list(VOC_CLASSES), [])
    assert A.similarity_groups(voc) == A.VOC_GROUPS
    assert A.largest_groups(A.VOC_GROUPS) == ["animals", "vehicles", "furniture"]
    # VOC class names without superclasses: VOC's groups, restricted to the classes
    assert A.similarity_groups(dataset({"i": []})) == {"animals": ["cat", "dog"], "vehicles": ["car"]}
    assert A.similarity_groups(dataset({"i": []}, classes=("a", "b"))) == {}
    f = tmp_path / "g.yaml"
    f.write_text("pets: [cat, dog]\n")
    assert A.read_groups(f, ["cat", "dog"]) == {"pets": ["cat", "dog"]}
    j = tmp_path / "g.json"
    j.write_text('{"pets": ["cat", "dgo"]}')
    with pytest.raises(DataError, match=f"{j}: classes not in the dataset: dgo"):
        A.read_groups(j, ["cat", "dog"])
    f.write_text("pets: cat\n")
    with pytest.raises(DataError, match=f"{f}: group 'pets' must be a list"):
        A.read_groups(f)
    with pytest.raises(DataError, match="cannot read groups file"):
        A.read_groups(tmp_path / "none.yaml")


# ------------------------------------------------------------------ lsda analyze end to end

def make_fixture(root: Path, res: Path) -> None:
    """SCENE as a VOC-layout dataset whose objects carry superclasses (cat and dog: animal),
    and the cat detections as a comp4 file."""
    sup = {"cat": "animal", "dog": "animal", "car": "vehicle"}
    for i, objs in SCENE.items():
        objs = [ObjectAnn(o.cls, o.box, truncated=k == 0, attrs={"superclass": sup[o.cls], "occlusion": 0.05 * k})
                for k, o in enumerate(objs)]
        write_voc_xml(root / "Annotations" / f"{i}.xml", ImageAnn(i, root / "JPEGImages" / f"{i}.jpg", 100, 100, objs))
    write_imagesets(root, "test", list(SCENE), [])
    write_comp4(res, "test", "cat", [r[0] for r in CAT_DETS], [r[1] for r in CAT_DETS],
                np.array([r[2] for r in CAT_DETS]))


def test_analyze_command_end_to_end(tmp_path, capsys):
    root, res, out = tmp_path / "voc", tmp_path / "results", tmp_path / "out" / "a.json"
    make_fixture(root, res)
    assert main(["analyze", "--dataset", str(root), "--split", "test", "--results", str(res), "--out", str(out)]) == 0
    j = json.loads(out.read_text())
    assert {"fp_types", "trend", "characteristics", "ap_impact", "groups"} <= set(j)
    assert j["groups"] == {"animal": ["cat", "dog"], "vehicle": ["car"]}
    # VOC class names: the reader takes all 20 VOC classes; the superclasses still win over VOC's groups
    assert set(j["fp_types"]) == set(VOC_CLASSES)
    assert j["fp_types"]["cat"] == {"loc": 3, "sim": 2, "oth": 2, "bg": 2}
    assert all(v == {"loc": 0, "sim": 0, "oth": 0, "bg": 0} for c, v in j["fp_types"].items() if c != "cat")
    assert j["ap_impact"]["ap"]["bird"] is None  # no positives: null
    all_ = j["trend"]["all"]
    assert all_["n"] == [9] and all_["truncated"] and all_["counts"]["loc"] == [3]
    assert set(j["trend"]) == {"all", "animal", "vehicle"} and j["trend"]["vehicle"]["n_available"] == 0
    ch = j["characteristics"]
    assert ch["n_norm"] == pytest.approx(0.15 * 3)
    # every box is 20 x 20: one area / aspect bin only, so those characteristics are left out
    assert set(ch["per_characteristic"]) == {"occlusion", "truncation"}
    assert set(ch["per_characteristic"]["occlusion"]["subsets"]) == {"none", "1-10%", "10-50%"}
    assert ch["ap_n"]["dog"] == 0.0 and 0 < ch["ap_n"]["cat"] < 1  # dog: positives, no detections
    assert capsys.readouterr().out == ""
    # a groups file that keeps cat and dog apart: the Sim ones become Oth; printed summary
    g = tmp_path / "groups.yaml"
    g.write_text("cats: [cat]\ndogs: [dog]\n")
    assert main(["analyze", "--dataset", str(root), "--split", "test", "--results", str(res), "--groups", str(g)]) == 0
    text = capsys.readouterr().out
    assert "cat" in text and "loc %" in text and "only 9 false positives" in text


def test_analyze_command_errors(tmp_path, capsys):
    root, res = tmp_path / "voc", tmp_path / "results"
    make_fixture(root, res)
    missing = tmp_path / "nothing"
    assert main(["analyze", "--dataset", str(root), "--split", "test", "--results", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lsda: error: ") and f"{missing}: results folder does not exist" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no results files comp4_det_test_<class>.txt"):
        A.analyze_command(root, "test", tmp_path / "empty")
    g = tmp_path / "g.yaml"
    g.write_text("[not, a, mapping]\n")
    with pytest.raises(DataError, match=f"{g}: expected a mapping"):
        A.analyze_command(root, "test", res, groups_file=g)


@pytest.mark.parametrize("name, content, problem", [
    ("g.yaml", b"cats: [cat\n", r"not valid YAML \(expected ',' or '\]', but got '<stream end>' at line 2, column 1\)$"),
    ("g.yaml", b"cats: [cat]\ncats: [dog]\n", r"not valid YAML \(found key 'cats' twice at line 2, column 1\)$"),
    ("g.json", b'{"cats": ["cat"], "cats": ["dog"]}', r"not valid JSON \(key 'cats' given twice\)$"),
    ("g.yaml", b"\xff\xfe\x00", r"cannot read groups file \(not UTF-8 text: byte 0xff at offset 0\)$"),
])
def test_groups_file_errors_are_one_line(tmp_path, name, content, problem):
    g = tmp_path / name
    g.write_bytes(content)
    with pytest.raises(DataError) as e:
        A.read_groups(g, ["cat", "dog", "car"])
    assert str(e.value).startswith(f"{g}: ") and "\n" not in str(e.value)
    assert re.search(problem, str(e.value)), str(e.value)


def test_groups_file_that_is_a_folder_and_out_that_is_a_folder(tmp_path, capsys):
    root, res = tmp_path / "voc", tmp_path / "results"
    make_fixture(root, res)
    with pytest.raises(DataError, match=rf"^{tmp_path}: is a folder, not a groups file"):
        A.read_groups(tmp_path)
    args = ["analyze", "--dataset", str(root), "--split", "test", "--results", str(res)]
    assert main(args + ["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"lsda: error: {tmp_path}: is a folder, but the diagnosis file (--out) must be "
                                       f"a file (e.g. {tmp_path / 'out.json'})\n")


# ------------------------------------------------------------------ the book's plots

def test_plots_draw_trend_and_sensitivity():
    from lsda_core.publish import plots
    from lsda_core.publish import viz
    diags = {"a": fake("a", [LOC] * 30 + [BG] * 30), "b": fake("b", [OTH] * 60)}
    fig, axes = viz.figure(1, 4, width=viz.MAX_WIDTH)
    plots.fp_trend(axes[0], A.fp_trend(diags), "all")
    assert axes[0].get_xscale() == "log" and len(axes[0].collections) == 4
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["BG", "Oth", "Sim", "Loc"]
    plots.fp_trend(axes[1], A.fp_trend(diags, ns=(500,)), "one point", legend=False)
    assert len(axes[1].patches) == 4 and axes[1].get_legend() is None
    assert "only 120 FPs" in axes[1].get_title()
    plots.fp_trend(axes[2], A.fp_trend({}, ns=(25,)), "none")
    assert any("no false positives" in t.get_text() for t in axes[2].texts)
    ch = {"overall": 0.5, "per_characteristic": {"occlusion": {"min": 0.2, "max": 0.7}, "area": {"min": 0.4, "max": 0.6}}}
    plots.sensitivity(axes[3], ch)
    assert [t.get_text() for t in axes[3].get_xticklabels()] == ["occ", "size"]
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.5 for line in axes[3].lines)
    viz.plt.close(fig)


def _cats(extra: str = "") -> dict[str, list[ObjectAnn]]:
    return {"i1": [ObjectAnn("cat", box(0, 0, 20, 20)), ObjectAnn("cat", box(50, 50, 70, 70), truncated=True)],
            "i2": [ObjectAnn("cat", box(10, 10, 40, 40), truncated=True)],
            "i3": [ObjectAnn("cat", box(60, 0, 90, 30)), ObjectAnn("dog", box(0, 60, 30, 90))]}


CAT_ROWS = [("i1", 0.9, [0, 0, 20, 20]), ("i2", 0.85, [10, 10, 40, 40]), ("i1", 0.8, [30, 0, 40, 10]),
            ("i3", 0.75, [0, 60, 30, 90]), ("i1", 0.7, [50, 50, 70, 70]), ("i3", 0.6, [60, 0, 90, 30]),
            ("i2", 0.5, [80, 80, 95, 95])]


def test_weighted_characteristics_equal_the_test_set_with_images_repeated():
    """A bootstrap resample's weights (i1 twice, i2 never, i3 once) give the normalised APs of
    the test set with those images copied; all-ones weights give the unweighted result."""
    ds = dataset(_cats())
    d = A.diagnose(ds, {"cat": dets(CAT_ROWS)}, {})
    plain = A.characteristics(ds, d, n_norm=2.0)
    assert A.characteristics(ds, d, n_norm=2.0, weights=np.ones(3, np.int64)) == plain
    weighted = A.characteristics(ds, d, n_norm=2.0, weights=np.array([2, 0, 1]))
    scene = _cats()
    rep = dataset({"i1": scene["i1"], "i1b": scene["i1"], "i3": scene["i3"]})
    rows = [r for r in CAT_ROWS if r[0] == "i1"] + [("i1b", *r[1:]) for r in CAT_ROWS if r[0] == "i1"] \
        + [r for r in CAT_ROWS if r[0] == "i3"]
    copied = A.characteristics(rep, A.diagnose(rep, {"cat": dets(sorted(rows, key=lambda r: -r[1]))}, {}), n_norm=2.0)
    assert weighted["ap_n"]["cat"] == pytest.approx(copied["ap_n"]["cat"])
    assert weighted["ap_n"]["cat"] != pytest.approx(plain["ap_n"]["cat"])
    for name in ("truncation",):  # an attribute subset (area bins would move with the copies' percentiles)
        w, c = weighted["per_characteristic"][name], copied["per_characteristic"][name]
        assert w["subsets"] == pytest.approx(c["subsets"], nan_ok=True) and w["min"] == pytest.approx(c["min"])


def test_extreme_subsets_samples_are_the_mean_worst_and_best_subsets():
    ds = dataset(_cats())
    d = A.diagnose(ds, {"cat": dets(CAT_ROWS)}, {})
    ch = A.characteristics(ds, d, n_norm=2.0)["per_characteristic"]
    picks = np.array([[1, 1, 1], [2, 0, 1]])
    out = A.extreme_subsets_samples(ds, d, 2.0, 0.5, picks)
    worst = np.nanmean([r["min"] for r in ch.values()])
    assert out["worst"][0] == pytest.approx(worst) and out["worst"][1][0] == pytest.approx(worst)
    assert out["best"][0] == pytest.approx(np.nanmean([r["max"] for r in ch.values()]))
    assert out["worst"][1].shape == (2,) and out["best"][0] >= out["worst"][0]


def test_weighted_normalized_ap_equals_repeating_each_detection():
    """The batched AP_N (one sparse product per class and subset) against its definition: each
    detection repeated its image's count of times, on random curves and resamples with zeros."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, images = int(rng.integers(0, 40)), 6
        hit = rng.random(n) < 0.4
        counted = rng.random(n) < 0.9  # an uncounted detection (ignored) is neither TP nor FP
        tp, fp = hit & counted, ~hit & counted
        image = rng.integers(0, images, n)
        weights = rng.integers(0, 3, (4, images))
        n_pos = weights.sum(axis=1) + int(tp.sum() > 0)
        got = A.normalized_ap_weighted(tp, fp, image, weights, n_pos, 5.0)
        for b, w in enumerate(weights):
            t, f = np.repeat(tp, w[image]), np.repeat(fp, w[image])
            keep = t | f
            rec = np.cumsum(t[keep]) / max(n_pos[b], 1)
            prec = rec * 5.0 / np.maximum(rec * 5.0 + np.cumsum(f[keep]), 1e-300)
            want = voc_ap(rec, prec, use_07=False) if n_pos[b] else np.nan
            assert got[b] == pytest.approx(want, abs=1e-12, nan_ok=True)
    assert np.isnan(A.normalized_ap_weighted(np.ones(2, bool), np.zeros(2, bool), np.zeros(2, int), np.ones((1, 1)),
                                             np.zeros(1), 5.0)[0])
