"""The parameter schema: presets load, inherit, and reject what does not fit."""
from pathlib import Path

import pytest

from lsda_core.core import params as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["embedded", "smoke", "paper_voc2007", "paper_ilsvrc2013"])
def test_presets_validate(name):
    p = P.load(ROOT / "params" / f"{name}.yaml")
    assert isinstance(p.world, P.World)


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("world:\n  seed: 5\n  n_categories: 80\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nworld:\n  n_categories: 90\n")
    p = P.load(tmp_path / "b.yaml", [("world.voc_classes", "7")])
    assert (p.world.seed, p.world.n_categories, p.world.voc_classes) == (5, 90, 7)
    assert p.world.cls_size == P.World().cls_size  # untouched keys keep the schema default


def test_smoke_inherits_embedded():
    smoke, emb = P.load(ROOT / "params/smoke.yaml"), P.load(ROOT / "params/embedded.yaml")
    assert smoke.data == emb.data and smoke.runtime.seed == emb.runtime.seed
    assert smoke.world.n_categories < emb.world.n_categories


@pytest.mark.parametrize("over, match", [
    ({"world.nope": 1}, r"unknown key 'nope' \(valid: seed, n_categories"),
    ({"nope": 1}, r"top level: unknown key 'nope'"),
    ({"world.seed": "x"}, r"world.seed: expected int, got 'x'"),
    ({"world.seed": -1}, r"world.seed: -1 is out of range \(must be >= 0\)"),
    ({"world.large_box_fraction": 1.5}, r"must be in \[0.0, 1.0\]"),
    ({"data.source": "coco"}, r"data.source: 'coco' is not one of"),
    ({"runtime.device": "tpu"}, r"runtime.device"),
    ({"runtime.progress": 1}, r"expected bool"),
])
def test_bad_values_name_the_key(over, match):
    with pytest.raises(P.ParamsError, match=match):
        P.load(None, over)


def test_int_accepted_as_float_but_not_bool_as_int():
    assert P.load(None, {"world.large_box_fraction": 1}).world.large_box_fraction == 1.0
    with pytest.raises(P.ParamsError):
        P.load(None, {"world.seed": True})


def test_file_errors(tmp_path):
    with pytest.raises(P.ParamsError, match="not found"):
        P.load(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("world: [unclosed\n")
    with pytest.raises(P.ParamsError, match="not valid YAML"):
        P.load(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(P.ParamsError, match="circular"):
        P.load(tmp_path / "loop.yaml")


def test_digest_tracks_only_named_sections():
    a, b = P.load(None), P.load(None, {"runtime.workers": 1})
    assert a.digest("world") == b.digest("world")
    assert a.digest() != b.digest()
    assert a.digest("world") != P.load(None, {"world.seed": 1}).digest("world")


def test_overrides_parse_yaml_values():
    assert P.parse_overrides([("a.b", "3"), ("a.c", "null"), ("d", "x y")]) == {"a": {"b": 3, "c": None}, "d": "x y"}
