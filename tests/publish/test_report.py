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
    log.write_text("not json\n")
    with pytest.raises(SweepError, match="runs.jsonl:1"):
        report.calibration_runs(str(log))
