"""The parameter schema: presets load, inherit, and reject what does not fit."""
from pathlib import Path

import pytest

from lsda_core.core import params as P

ROOT = Path(__file__).resolve().parents[2]


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
    ({"world.seed": -1}, r"world.seed: -1 is out of range \(must be in \[0, 4294967295\]\)"),
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
    assert P.parse_overrides([("a.b", "3"), ("a.c", "null"), ("d", "x y")]) == {"a.b": 3, "a.c": None, "d": "x y"}


@pytest.mark.parametrize("key, value", [
    ("svm.C", ".nan"), ("finetune.lr", ".inf"), ("svm.hard_thresh", "-.inf"), ("pretrain.lr", "1" + "0" * 400),
    ("rcnn.neg_iou_grid", "[0.1, .nan]"),
])
def test_non_finite_numbers_are_rejected(key, value):
    with pytest.raises(P.ParamsError, match=rf"^overrides: {key}(\[\d\])?: .* is not a finite number$"):
        P.load(None, [(key, value)])


def test_non_finite_number_in_a_file_names_the_file(tmp_path):
    (tmp_path / "nan.yaml").write_text("svm:\n  C: .nan\n")
    with pytest.raises(P.ParamsError, match=r"nan.yaml: svm.C: nan is not a finite number"):
        P.load(tmp_path / "nan.yaml")


@pytest.mark.parametrize("pairs, match", [
    ([("svm.C", "[1,")], r"^overrides: svm.C: '\[1,' is not a valid YAML value \(.*line 1, column 4\)"),
    ([("svm.C", "!!python/object:os.system x")], r"^overrides: svm.C: .* is not a valid YAML value"),
    ([("nosection", "3")], r"^overrides: top level: unknown key 'nosection'"),
    ([("svm", "3")], r"^overrides: svm: is a section, not a value \(got 3\); set one of its keys, e.g. svm.C"),
    ([("svm.C", "1"), ("svm", "3")], r"^overrides: svm: is a section"),
    ([("", "3")], r"^overrides: '' is not a parameter key"),
    ([("svm.", "3")], r"^overrides: 'svm.' is not a parameter key"),
    ([("svm..C", "3")], r"^overrides: 'svm..C' is not a parameter key"),
    ([("svm.C.x", "3")], r"^overrides: svm.C: expected float, got \{'x': 3\}"),
    ([("world.seed", str(2**70))], r"^overrides: world.seed: .* is out of range \(must be in \[0, 4294967295\]\)"),
    ([("rcnn.seeds", "[0, -1]")], r"^overrides: rcnn.seeds\[1\]: -1 is out of range"),
    ([("units.units", "[[1, 2]]")], r"^overrides: units.units\[0\]: \[1, 2\] is not a pool5 unit"),
    ([("units.units", "[[1, 2, 32]]")], r"channel in 0-31"),
    ([("net.conv_channels", "[8, 8]")], r"^overrides: net.conv_channels: need 5 channel counts"),
    ([("runtime.artifacts", "''")], r"^overrides: runtime.artifacts: an empty path"),
])
def test_malformed_overrides_name_the_key(pairs, match):
    with pytest.raises(P.ParamsError, match=match):
        P.load(ROOT / "params" / "smoke.yaml", pairs)


def test_a_later_override_wins_over_an_earlier_one_it_overlaps():
    assert P.load(None, [("world.seed", "1"), ("world.seed", "2")]).world.seed == 2
    assert P.load(None, [("svm", "3"), ("svm.C", "0.5")]).svm.C == 0.5


def test_overrides_are_parsed_once():
    """Text from the command line is YAML once; what parse_overrides returns is final: a
    notebook that gets it (as a dict) must not parse it again ('007' stays a string)."""
    assert P.parse_overrides([("units.category", ""), ("svm.C", "1e-3")]) == {"units.category": "", "svm.C": "1e-3"}
    over = P.parse_overrides([("units.category", "'007'"), ("world.seed", "3")])
    assert over == {"units.category": "007", "world.seed": 3}
    p = P.load(None, over)
    assert p.units.category == "007" and p.world.seed == 3
    assert P.load(None, [("units.category", "'007'")]).units.category == "007"
    assert P.parse_overrides(over) == over  # a dict passes through unparsed
    with pytest.raises(P.ParamsError, match="expected str or null, got 7"):
        P.load(None, [("units.category", "007")])  # unquoted, YAML reads the number 7


@pytest.mark.parametrize("base, match", [
    ("[a, b]", r"b.yaml: base: expected the file name of another preset .*got \['a', 'b'\]"),
    ("3", r"b.yaml: base: expected the file name .*got 3"),
    ("true", r"got True"),
    ("{a: 1}", r"got \{'a': 1\}"),
    ("''", r"got ''"),
    ("/no/such/preset.yaml", r"b.yaml: base: '/no/such/preset.yaml' not found \(/no/such/preset.yaml\)"),
    ("sub", r"b.yaml: base: 'sub' is a folder \(.*sub\), not a parameter file"),
    ("..", r"b.yaml: base: '..' is a folder"),
])
def test_base_must_name_a_preset_file(tmp_path, base, match):
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.yaml").write_text(f"base: {base}\nworld:\n  seed: 1\n")
    with pytest.raises(P.ParamsError, match=match):
        P.load(tmp_path / "b.yaml")


def test_bad_base_file_is_named(tmp_path):
    (tmp_path / "bad.yaml").write_text("world: [\n")
    (tmp_path / "b.yaml").write_text("base: bad.yaml\n")
    with pytest.raises(P.ParamsError, match=r"bad.yaml: not valid YAML \(.* at line 2, column 1\)$"):
        P.load(tmp_path / "b.yaml")


def test_unusable_parameter_files(tmp_path, monkeypatch):
    with pytest.raises(P.ParamsError, match=r"is a folder, not a parameter file"):
        P.load(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(P.ParamsError, match=r"bin.yaml: not a text file"):
        P.load(tmp_path / "bin.yaml")
    (tmp_path / "dup.yaml").write_text("world:\n  seed: 1\nworld:\n  seed: 2\n")
    with pytest.raises(P.ParamsError, match=r"dup.yaml: not valid YAML \(found key 'world' twice at line 3"):
        P.load(tmp_path / "dup.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(P.ParamsError, match=r"list.yaml: expected a mapping of sections at the top level, got list"):
        P.load(tmp_path / "list.yaml")
    (tmp_path / "locked.yaml").write_text("world:\n  seed: 1\n")

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)  # the tests may run as root, where chmod 000 reads fine
    with pytest.raises(P.ParamsError, match=r"locked.yaml: cannot read the parameter file \(Permission denied\)"):
        P.load(tmp_path / "locked.yaml")


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    """A merge key (`<<: *anchor`) followed by a key it also brings is YAML's way to override."""
    (tmp_path / "m.yaml").write_text("svm: &s {C: 0.5, bias: 3.0}\ndetect:\n  nms: 0.4\nhog: {}\n"
                                     "proposals:\n  <<: {mode: quality, max_boxes: 10}\n  max_boxes: 20\n")
    p = P.load(tmp_path / "m.yaml")
    assert (p.proposals.mode, p.proposals.max_boxes, p.svm.C) == ("quality", 20, 0.5)


def test_schema_fields_describe_every_key_with_its_rule():
    """One record per key of the schema (the re-run page's reference and `lsda params --schema`)."""
    fields = P.schema_fields()
    defaults = P.Params().to_dict()
    assert [(f.section, f.key) for f in fields] == [(s, k) for s, keys in defaults.items() for k in keys]
    by_key = {f"{f.section}.{f.key}": f for f in fields}
    assert by_key["runtime.workers"].allowed == "in [1, 256]" and by_key["runtime.workers"].type == "int"
    assert by_key["rcnn.seeds"].allowed.startswith("each ") and by_key["rcnn.seeds"].type == "list of int"
    assert by_key["data.source"].allowed.startswith("one of [") and by_key["data.voc_root"].default is None
    assert by_key["runtime.device"].allowed == "" and by_key["world.seed"].help.startswith("seed of the world")
    assert {k for k, f in by_key.items() if f.path} >= {"runtime.artifacts", "data.voc_root"}
    assert not by_key["world.seed"].path
    assert list(P.schema_sections()) == list(defaults) and P.schema_sections()["runtime"].startswith("Where and how")
    assert all(f"  {f.key} ({f.type}" in P.schema_help() for f in fields)


@pytest.mark.parametrize("spaces", [[], ["rgb", "rgb"], ["rgb", "xyz"]])
def test_colour_spaces_are_distinct_known_names(spaces):
    with pytest.raises(P.ParamsError, match="segmentation.colour_spaces"):
        P.load(None, {"segmentation.colour_spaces": spaces})
    assert P.load(None, {"segmentation.colour_spaces": ["lab", "rgb"]}).segmentation.colour_spaces == ["lab", "rgb"]
