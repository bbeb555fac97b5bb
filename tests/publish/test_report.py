"""The chapters' premise tables and the calibration appendix's log of runs."""
import json

import pytest

from lsda_core.experiments.sweep import SweepError
from lsda_core.publish import findings as F
from lsda_core.publish import report


def test_premises_table_paper_ours_target_met():
    rows = F.premise_rows({"recall": 0.81, "pretrain_val": 0.6, "finetune_passes": 3.2})
    t = F.premises_table(rows)
    assert list(t["met"]) == ["NO", "yes", "\u2014"]  # PREMISES order; passes is reported, not judged
    assert list(t["target"]) == [">= 0.95", ">= 0.55", "reported"]
    assert t["ours"].iloc[0] == "0.81" and t["paper"].iloc[0] == "0.98"
    note = report.premises({"recall": 0.81, "pretrain_val": 0.6}).data  # displays the table, returns the note
    assert note.startswith("* **Not met: selective search") and "pre-trained" not in note


def test_calibration_runs_from_a_log(tmp_path):
    log = tmp_path / "runs.jsonl"
    entries = [{"experiment": "pretrain", "overrides": {"runtime.progress": False, "pretrain.epochs": 48},
                "metrics": {"train_top1": 0.74, "val_top1": 0.42, "fit_gap": 0.32, "epochs": 48, "seconds": 338.4},
                "date": "2026-12-02 03:33", "note": "more epochs"},
               {"experiment": "proposals", "overrides": {}, "metrics": {"recall@0.5": 0.81},
                "date": "2026-12-02 03:40", "note": "baseline"}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    t = report.calibration_runs(str(log))
    assert list(t) == ["pretrain", "proposals"]  # one table per premise measured, run numbers kept
    assert list(t["pretrain"].index) == [1] and list(t["proposals"].index) == [2]
    assert t["pretrain"].loc[1, "changed"] == "pretrain.epochs=48"  # runtime keys change no result: left out
    assert t["proposals"].loc[2, "changed"] == "(the default)" and t["proposals"].loc[2, "recall@0.5"] == 0.81
    assert t["pretrain"].loc[1, "val_top1"] == 0.42 and "val_top1" not in t["proposals"]
    assert t["proposals"].loc[2, "recall@0.7"] == "\u2014"  # not measured by that run
    table, why = t["pretrain"].to_html().split("<details><summary>Why each run was made</summary>")
    assert "more epochs" not in table and "<td>more epochs</td>" in why
    log.write_text("not json\n")
    with pytest.raises(SweepError, match="runs.jsonl:1"):
        report.calibration_runs(str(log))


def test_table_2_compact_with_the_per_class_aps_collapsed():
    """Detector, mAP, its spread and the paper's mAP (a dash where the paper has none) make the
    table; the per-class APs follow collapsed, one row per class."""
    import numpy as np
    from lsda_core.detection.pipeline import DetectorResult
    from lsda_core.experiments import rcnn as R
    results = [DetectorResult("FT fc7", {"a": 0.5, "b": 0.25}, 0.375),
               DetectorResult(R.BBOX_ROW, {"a": 0.6, "b": 0.2}, 0.4)]
    t = report.ap_table(results, ["a", "b"], {"FT fc7": np.array([0.3, 0.4]), R.BBOX_ROW: np.array([0.4, 0.4])})
    assert t.loc["FT fc7", "a"] == 50.0 and np.isnan(t.loc[R.BBOX_ROW, "paper mAP (VOC 2007)"])  # the data stay numbers
    page = t.to_html()
    compact, detail = page.split("<details>")
    assert [h.split("</th>")[0] for h in compact.split("<th>")[1:]] == ["detector", *report.AP_MAIN]
    assert "<td>37.5</td>" in compact and "<td>5.0</td>" in compact and "<td>\u2014</td>" in compact
    assert "NaN" not in page and "<th>a</th>" in detail and "<td>25.0</td>" in detail


def test_paper_per_class_compact_or_a_note():
    t = report.paper_per_class(["aeroplane", "bicycle"])
    compact, detail = t.to_html().split("<details>")
    assert "<th>mAP</th>" in compact and "aeroplane" not in compact and "<th>aeroplane</th>" in detail
    assert "not VOC's" in report.paper_per_class(["gulshex"]).data
