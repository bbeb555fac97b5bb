"""The papers' premises as records: targets, whether a value meets them, their rows, and the plateau measure."""
import json
import math

import numpy as np
import pytest

from lsda_core.experiments.premises import PREMISES, Premise, plateau
from lsda_core.publish import paper
from lsda_core.publish.findings import premise_rows, unmet_note


def pr(lo=None, hi=None) -> Premise:
    return Premise("x", "a premise", lo=lo, hi=hi)


def test_target_text_for_each_kind_of_bound():
    """The target reads '>= lo', '<= hi', 'lo to hi', or 'reported' when unbounded."""
    assert pr(lo=0.95).target == ">= 0.95"
    assert pr(hi=0.1).target == "<= 0.1"
    assert pr(lo=35.0, hi=80.0).target == "35 to 80"
    assert pr().target == "reported"


@pytest.mark.parametrize("lo,hi,value,expected", [
    (0.5, None, 0.5, True), (0.5, None, 0.7, True), (0.5, None, 0.49, False),
    (None, 0.1, 0.1, True), (None, 0.1, 0.0, True), (None, 0.1, 0.2, False),
    (1.0, 2.0, 1.5, True), (1.0, 2.0, 0.9, False), (1.0, 2.0, 2.1, False),
    (None, None, 1.0, None),
])
def test_met_checks_the_bounds_inclusively(lo, hi, value, expected):
    """met: lo <= value <= hi with either bound optional; no bound means 'reported' (None)."""
    assert pr(lo, hi).met(value) is expected


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_met_is_none_for_unmeasured_values(value):
    """A missing or non-finite value is not judged."""
    assert pr(lo=0.0, hi=1.0).met(value) is None


def test_premise_rows_only_measured_in_premises_order():
    """Rows appear for measured premises only, in PREMISES order, with paper, target and met."""
    measured = {"rcnn_headroom": 90.0, "finetune_passes": 3.0, "recall": 0.97, "pretrain_val": None}
    rows = premise_rows(measured)
    assert [r["id"] for r in rows] == ["recall", "pretrain_val", "finetune_passes", "rcnn_headroom"]
    by = {r["id"]: r for r in rows}
    assert by["recall"]["paper"] == paper.PREMISES["recall"][0]
    assert by["recall"]["target"] == ">= 0.95" and by["recall"]["met"] is True
    assert by["rcnn_headroom"]["met"] is False  # above hi = 80
    assert by["pretrain_val"]["ours"] is None and by["pretrain_val"]["met"] is None
    assert by["finetune_passes"]["target"] == "reported" and by["finetune_passes"]["met"] is None
    assert by["recall"]["premise"] == next(pr for pr in PREMISES if pr.id == "recall").text
    assert [p.id for p in PREMISES].index("recall") < [p.id for p in PREMISES].index("rcnn_headroom")


def test_every_premise_has_the_papers_side_and_says_what_failing_it_does():
    assert set(paper.PREMISES) == {p.id for p in PREMISES}
    assert all(p.if_unmet for p in PREMISES if p.lo is not None or p.hi is not None)
    note = unmet_note(premise_rows({"recall": 0.81, "pretrain_val": 0.6}))
    assert note.startswith("* **Not met: selective search covers") and "0.81, target >= 0.95" in note
    assert "pre-trained" not in note and unmet_note(premise_rows({"pretrain_val": 0.6})) == ""


def test_premise_rows_with_numpy_values_are_json_ready():
    """Rows built from numpy measurements can be written as JSON (premises.json)."""
    rows = premise_rows({"rcnn_headroom": np.float64(50.0), "finetune_plateau": np.float64(0.05)})
    json.dumps(rows)
    assert all(type(r["met"]) is bool for r in rows)


def test_plateau_flat_end_is_near_zero():
    """A loss that falls early and then stays flat has (almost) no fall left at its end."""
    losses = [max(1.0, 10.0 - 0.5 * i) for i in range(100)]  # falls for 18 steps, flat for 82
    assert plateau(losses) == pytest.approx(0.0, abs=0.01)


def test_plateau_still_falling_linearly_is_about_a_quarter():
    """A loss still falling at a constant rate made about a quarter of its fall in the last quarter."""
    assert 0.2 <= plateau([100.0 - i for i in range(100)]) <= 0.3
    assert plateau([1.0] * 60 + [1.0 - 0.01 * i for i in range(40)]) > 0.5  # the fall is all at the end


def test_plateau_rising_curve_is_zero():
    """A curve that does not fall overall counts as flat."""
    assert plateau([float(i) for i in range(50)]) == 0.0


def test_plateau_needs_eight_points():
    """Fewer than 8 losses cannot be judged (NaN); 8 can."""
    assert math.isnan(plateau([5, 4, 3, 2, 1, 1, 1]))
    assert not math.isnan(plateau([5, 4, 3, 2, 1, 1, 1, 1]))
