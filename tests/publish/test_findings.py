"""Findings as data: judging hand-made claims on hand-made mAPs, the chapter parts, their merge and the tables."""
import json

import numpy as np
import pytest

from lsda_core.publish import findings as F
from lsda_core.publish.paper import Claim

B = 41
OFFSETS = np.linspace(-0.01, 0.01, B)  # the same resample offsets for every row (paired)


def rows(**maps):
    """points and samples from {row: per-seed mAPs}, each seed's resamples = its mAP + OFFSETS * scale."""
    points, samples = {}, {}
    for name, (vals, scale) in maps.items():
        points[name] = np.array(vals, float)
        samples[name] = points[name][:, None] + scale * OFFSETS[None, :]
    return points, samples


def diff_claim(a="A", b="B", paper=10.0, id="a-b", kind="difference", margin=None):
    return Claim(id, f"{a} beats {b}", kind, ((a, 1.0), (b, -1.0)), paper, "Paper 1", "sec-" + id, margin)


def test_clear_difference_is_replicated_with_our_effect_in_points():
    """A beats B by 10 points on every seed: ours is 10 (x100 of the fraction), its interval hugs it, replicated."""
    points, samples = rows(A=([0.50, 0.52, 0.48], 1.0), B=([0.40, 0.41, 0.39], 0.5))
    (f,) = F.judge([diff_claim()], points, samples, "rcnn")
    assert f["ours"] == pytest.approx(10.0, abs=1e-3)  # mean of 10, 11, 9 points
    assert 8.5 - 1e-6 <= f["ci_low"] <= 10.0 <= f["ci_high"] <= 11.5 + 1e-6
    assert f["verdict"] == "replicated" and f["ci_level"] == 0.95
    assert (f["seeds"], f["resamples"]) == (3, B)
    assert (f["id"], f["chapter"], f["section"], f["paper"], f["kind"]) == ("a-b", "rcnn", "sec-a-b", 10.0,
                                                                             "difference")


def test_claim_with_missing_rows_is_skipped():
    """Only claims whose every row was measured become findings."""
    points, samples = rows(A=([0.5], 1.0), B=([0.4], 1.0))
    out = F.judge([diff_claim(b="C", id="a-c"), diff_claim()], points, samples, "rcnn")
    assert [f["id"] for f in out] == ["a-b"]


def opt_claim():
    return Claim("best", "0.3 is best", "optimum", (("t0.3", 1.0),), None, "Paper 2.3", "grid",
                 alternatives=("t0.0", "t0.5"))


def test_optimum_replicated_when_the_choice_beats_every_alternative():
    """The chosen value leads every alternative: replicated, ours = the lead over the runner-up."""
    points, samples = rows(**{"t0.3": ([0.50], 1.0), "t0.0": ([0.45], 1.0), "t0.5": ([0.40], 1.0)})
    (f,) = F.judge([opt_claim()], points, samples, "rcnn")
    assert f["verdict"] == "replicated"
    assert f["ours"] == pytest.approx(5.0, abs=1e-3)


def test_optimum_not_replicated_when_an_alternative_beats_it():
    """An alternative 10 points better: not replicated, ours = -10."""
    points, samples = rows(**{"t0.3": ([0.50], 1.0), "t0.0": ([0.45], 1.0), "t0.5": ([0.60], 1.0)})
    (f,) = F.judge([opt_claim()], points, samples, "rcnn")
    assert f["verdict"] == "not replicated"
    assert f["ours"] == pytest.approx(-10.0, abs=1e-3)


def test_no_difference_reports_the_90_percent_interval_and_uses_its_margin():
    """Equivalence: the 90 % interval of A - B (here the 5th-95th percentile of -1..1 points), judged by the margin."""
    d = np.linspace(-1.0, 1.0, B)  # A - B per resample, in points
    points = {"A": np.array([0.5]), "B": np.array([0.5])}
    samples = {"A": (0.5 + d / 100)[None, :], "B": np.full((1, B), 0.5)}
    wide = diff_claim(kind="no difference", paper=-0.8, margin=2.0)
    (f,) = F.judge([wide], points, samples, "rcnn")
    assert f["ci_level"] == 0.9 and f["margin"] == 2.0
    assert f["ci_low"] == pytest.approx(np.quantile(d, 0.05), abs=1e-3)
    assert f["ci_high"] == pytest.approx(np.quantile(d, 0.95), abs=1e-3)
    assert f["ours"] == pytest.approx(0.0, abs=1e-3) and f["verdict"] == "replicated"
    narrow = diff_claim(kind="no difference", paper=-0.8, margin=0.5)
    assert F.judge([narrow], points, samples, "rcnn")[0]["verdict"] == "inconclusive"


def test_ours_maps_paper_rows_to_our_detector_names():
    """`ours` renames the claim's paper rows to the keys of points/samples."""
    points, samples = rows(**{"ft-fc7": ([0.55], 1.0), "fc7": ([0.45], 1.0)})
    claim = diff_claim("R-CNN FT fc7", "R-CNN fc7")
    assert F.judge([claim], points, samples, "rcnn") == []
    (f,) = F.judge([claim], points, samples, "rcnn", ours={"R-CNN FT fc7": "ft-fc7", "R-CNN fc7": "fc7"})
    assert f["ours"] == pytest.approx(10.0, abs=1e-3)


def finding(id, chapter, paper=5.0, lo=1.0, hi=2.0, level=0.95, margin=None, section="sec"):
    return {"id": id, "chapter": chapter, "claim": f"claim {id}", "kind": "difference", "source": "s",
            "paper": paper, "ours": 1.5, "ci_low": lo, "ci_high": hi, "ci_level": level, "margin": margin,
            "seeds": 3, "resamples": 100, "verdict": "replicated", "section": section}


def premise(id, met=True, paper=0.98):
    return {"premise": f"premise {id}", "id": id, "paper": paper, "paper_note": "", "ours": 0.5,
            "target": ">= 0.4", "met": met}


def test_write_part_none_writes_nothing(tmp_path, monkeypatch):
    """A chapter opened by hand (folder None) writes no file."""
    monkeypatch.chdir(tmp_path)
    assert F.write_part(None, "rcnn", [finding("x", "rcnn")], []) is None
    assert not list(tmp_path.iterdir())


def test_write_part_and_merge_in_book_order(tmp_path):
    """Parts merge in the given order; a premise in two chapters is kept once (the first); missing parts skipped."""
    parts = tmp_path / F.PARTS
    path = F.write_part(parts, "rcnn", [finding("r1", "rcnn"), finding("r2", "rcnn")],
                        [premise("recall", met=True), premise("pretrain_val")])
    assert path == parts / "rcnn.json"
    assert json.loads(path.read_text())["chapter"] == "rcnn"
    F.write_part(parts, "lsda", [finding("l1", "lsda")], [premise("recall", met=False), premise("lsda_headroom")])
    found, prem = F.merge(tmp_path, ["lsda", "absent", "rcnn"])
    assert [f["id"] for f in found] == ["l1", "r1", "r2"]
    assert [(p["id"], p["chapter"]) for p in prem] == [("recall", "lsda"), ("lsda_headroom", "lsda"),
                                                        ("pretrain_val", "rcnn")]
    assert prem[0]["met"] is False  # the first chapter's measurement
    assert json.loads((tmp_path / F.FINDINGS_FILE).read_text()) == found
    assert json.loads((tmp_path / F.PREMISES_FILE).read_text()) == prem


def test_table_em_dash_and_interval_text():
    """The findings table: em dash for a paper without a number, the interval with its level, margin in kind."""
    t = F.table([finding("a", "rcnn", paper=None, lo=-0.31, hi=1.04, level=0.9, margin=1.65),
                 finding("b", "rcnn", paper=-3.3)])
    assert t.loc["claim a", "paper"] == "\u2014" and t.loc["claim b", "paper"] == "-3.30"
    assert t.loc["claim a", "interval"] == "[-0.3,\u00a0+1.0] (90\u00a0%)"  # breaks before the level only
    assert t.loc["claim b", "interval"] == "[+1.0,\u00a0+2.0] (95\u00a0%)"
    assert t.loc["claim a", "kind"] == "difference (margin 1.65)" and t.loc["claim b", "kind"] == "difference"
    assert t.loc["claim a", "ours"] == "+1.5"
    assert F.table([]).empty


def test_premises_table_met_words():
    """met reads yes / NO / em dash; a missing paper value is an em dash."""
    rows = [premise("a", True), premise("b", False), premise("c", None, paper=None)]
    rows[2]["ours"] = float("nan")  # measured, but no number came out (a run too short to judge)
    t = F.premises_table(rows)
    assert list(t["met"]) == ["yes", "NO", "\u2014"]
    assert list(t["paper"]) == ["0.98", "0.98", "\u2014"] and list(t["ours"]) == ["0.5", "0.5", "\u2014"]


def test_summary_without_build_is_a_note():
    """Without a build folder both parts are a note telling how to build."""
    a, b = F.summary(None)
    assert "make book" in a.data and a is b


def test_summary_links_each_finding_to_its_section(tmp_path):
    """With a build folder, the findings HTML links each finding to <chapter>.html#<section>."""
    F.write_part(tmp_path / F.PARTS, "rcnn", [finding("r1", "rcnn", section="table-2")], [premise("recall")])
    F.merge(tmp_path, ["rcnn"])
    table, prem = F.summary(tmp_path)
    page = table.to_html()
    assert '<a href="rcnn.html#table-2">R-CNN</a>' in page and "claim r1" in page
    assert list(prem["met"]) == ["yes"]
