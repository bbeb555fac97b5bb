"""`lsda sweep`: the grid parser, the grid's points, a sweep with a fake measurement and its record file."""
import json

import pytest

from lsda_core.core import params as P
from lsda_core.core.errors import LsdaError
from lsda_core.experiments import sweep
from lsda_core.experiments.sweep import SweepError, grid_points, parse_grid, read_record, run_sweep


def test_parse_grid_comma_values_are_yaml_scalars():
    """KEY=V1,V2 gives the values as YAML scalars (ints, floats, bools, strings)."""
    g = parse_grid(["pretrain.epochs=24,48", "pretrain.lr=0.01, 1.0e-3", "runtime.progress=true,false",
                    "runtime.device=cpu,cuda"])
    assert g == {"pretrain.epochs": [24, 48], "pretrain.lr": [0.01, 0.001], "runtime.progress": [True, False],
                 "runtime.device": ["cpu", "cuda"]}
    assert list(g) == ["pretrain.epochs", "pretrain.lr", "runtime.progress", "runtime.device"]


def test_parse_grid_bracketed_lists_are_separated_by_semicolons():
    """A value in brackets is a list, and `;` separates the grid's values."""
    g = parse_grid(["pretrain.lr_steps=[16,21];[8, 12]"])
    assert g == {"pretrain.lr_steps": [[16, 21], [8, 12]]}


@pytest.mark.parametrize("specs", [["pretrain.epochs"], ["pretrain.epochs="], ["=1,2"],
                                   ["pretrain.epochs=1,2", "pretrain.epochs=3"]])
def test_parse_grid_rejects_missing_equals_empty_parts_and_repeats(specs):
    """No `=`, an empty key or value, or a key given twice is a SweepError."""
    with pytest.raises(SweepError):
        parse_grid(specs)


def test_parse_grid_rejects_a_malformed_yaml_value():
    """A value YAML cannot parse is a SweepError naming the key."""
    with pytest.raises(SweepError, match="pretrain.lr_steps"):
        parse_grid(["pretrain.lr_steps=[1,2"])
    with pytest.raises(SweepError, match="pretrain.epochs"):
        parse_grid(["pretrain.epochs=1,{"])


def test_parse_grid_rejects_a_malformed_key():
    """A key with an empty dotted part fails `parse_overrides`' form check (ParamsError)."""
    with pytest.raises(P.ParamsError):
        parse_grid(["pretrain..epochs=1,2"])


def test_every_point_is_validated_before_any_is_measured(monkeypatch, tmp_path):
    """An unknown key, or a bad value at the grid's last point, stops the sweep before any work."""
    calls = []
    monkeypatch.setitem(sweep.MEASUREMENTS, "fake", lambda p, cache: calls.append(1) or {})
    base = {"runtime.artifacts": str(tmp_path / "art")}
    with pytest.raises(LsdaError, match="no_such_key"):
        run_sweep("fake", None, base, parse_grid(["pretrain.no_such_key=1,2"]))
    with pytest.raises(LsdaError):
        run_sweep("fake", None, base, parse_grid(["pretrain.epochs=24,-3"]))
    assert calls == []


def test_grid_points_cartesian_first_key_slowest():
    """Every combination, the first key varying slowest."""
    pts = grid_points({"a": [1, 2], "b": ["x", "y", "z"]})
    assert pts == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"},
                   {"a": 2, "b": "x"}, {"a": 2, "b": "y"}, {"a": 2, "b": "z"}]
    assert grid_points({"a": [1]}) == [{"a": 1}]


@pytest.fixture
def fake(monkeypatch):
    """A measurement computed from the loaded params only; records each call's params."""
    seen = []

    def measure(p, cache):
        seen.append((p.pretrain.epochs, p.pretrain.lr, str(cache.root)))
        return {"epochs_x2": 2 * p.pretrain.epochs, "lr": p.pretrain.lr}

    monkeypatch.setitem(sweep.MEASUREMENTS, "fake", measure)
    return seen


def test_run_sweep_measures_every_point_with_base_under_it(fake, tmp_path):
    """One row per point (its values, then the metrics), the params loaded with base and point."""
    base = {"runtime.artifacts": str(tmp_path / "art"), "pretrain.lr": 0.5}
    rows = run_sweep("fake", None, base, {"pretrain.epochs": [3, 5], "pretrain.lr": [0.1, 0.2]})
    assert rows == [{"pretrain.epochs": 3, "pretrain.lr": 0.1, "epochs_x2": 6, "lr": 0.1},
                    {"pretrain.epochs": 3, "pretrain.lr": 0.2, "epochs_x2": 6, "lr": 0.2},
                    {"pretrain.epochs": 5, "pretrain.lr": 0.1, "epochs_x2": 10, "lr": 0.1},
                    {"pretrain.epochs": 5, "pretrain.lr": 0.2, "epochs_x2": 10, "lr": 0.2}]
    assert [s[:2] for s in fake] == [(3, 0.1), (3, 0.2), (5, 0.1), (5, 0.2)]  # the point wins over base
    assert (tmp_path / "art").is_dir()


def test_run_sweep_appends_one_json_line_per_point(fake, tmp_path):
    """With `record`, each point is one JSON line (experiment, overrides incl. base, metrics, note),
    and a second sweep appends to the file."""
    log = tmp_path / "log.jsonl"
    base = {"runtime.artifacts": str(tmp_path / "art")}
    run_sweep("fake", None, base, {"pretrain.epochs": [2, 4]}, record=log, note="first")
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["experiment"] == "fake" and first["note"] == "first" and first["params"] is None
    assert first["overrides"] == {"runtime.artifacts": str(tmp_path / "art"), "pretrain.epochs": 2}
    assert first["metrics"]["epochs_x2"] == 4
    assert json.loads(lines[1])["metrics"]["epochs_x2"] == 8

    run_sweep("fake", None, base, {"pretrain.epochs": [7]}, record=log, note="second")
    entries = read_record(log)
    assert [e["metrics"]["epochs_x2"] for e in entries] == [4, 8, 14]
    assert [e["note"] for e in entries] == ["first", "first", "second"]


def test_read_record_skips_blank_lines_and_names_a_bad_line(tmp_path):
    """Blank lines are skipped; a malformed one is a SweepError naming file:line."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert read_record(log) == [{"a": 1}, {"a": 2}]
    log.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(SweepError, match=rf"{log}:2\b"):
        read_record(log)


def test_run_sweep_unknown_experiment(tmp_path):
    """An experiment without a measurement is a SweepError listing the known ones."""
    with pytest.raises(SweepError, match="pretrain"):
        run_sweep("no-such", None, {"runtime.artifacts": str(tmp_path)}, {"pretrain.epochs": [1]})
    assert not list(tmp_path.iterdir())
