"""The re-run page's reference: the parameter tables come from the schema, the presets table
from the files in params/, and the status page's listing names only the changed keys."""
import pytest

from lsda_core.core import params as P
from lsda_core.core.errors import LsdaError
from lsda_core.publish import reference


def test_parameter_reference_has_one_table_per_section_and_a_row_per_key():
    text = reference.parameter_reference().data
    for section, about in P.schema_sections().items():
        assert f"**{section}**: {about}" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == len(P.schema_fields())
    assert "| `runtime.workers` | `2` | in [1, 256] | worker processes" in text
    assert "| `runtime.progress` | `true` | any bool |" in text  # values as a preset writes them
    assert "| `data.voc_root` | `null` | any str or null |" in text
    assert "| `rcnn.seeds` | `[0, 1, 2]` | each in [0, 4294967295] |" in text


def test_value_text_is_yaml():
    assert [reference.value_text(v) for v in (None, True, [22, 27], "auto", 0.5)] == \
        ["null", "true", "[22, 27]", "auto", "0.5"]


def test_presets_table_from_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("# The base preset: for tests. More prose.\n# (second line)\nworld:\n  seed: 3\n"
                                     "  n_categories: 8\nsvm:\n  C: 0.1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nworld:\n  seed: 4\n")
    lines = reference.presets(tmp_path).data.splitlines()
    assert lines[0] == "| preset | what it is for | builds on | keys it sets |"
    assert lines[2] == "| `a.yaml` | The base preset: for tests. | schema defaults | 3 |"
    assert lines[3] == "| `b.yaml` | (no comment) | `a.yaml` | 1 |"


def test_presets_of_the_project_say_what_each_is_for():
    text = reference.presets().data
    for name in ("embedded", "smoke", "paper_voc2007", "paper_ilsvrc2013"):
        assert f"| `{name}.yaml` |" in text
    assert "| `smoke.yaml` | The smoke set:" in text and "(no comment)" not in text


def test_presets_of_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(LsdaError, match="no parameter presets"):
        reference.presets(tmp_path)


def test_non_defaults_name_only_the_changed_keys():
    p = P.load(None, {"world.seed": 3, "rcnn.seeds": [0], "svm.C": P.SVM().C})
    assert reference.non_defaults(p) == [("world.seed", 3, 0), ("rcnn.seeds", [0], [0, 1, 2])]
    table = reference.non_default_table(p).splitlines()
    assert table[0] == "| key | value | schema default |" and table[2] == "| `world.seed` | `3` | `0` |"
    assert len(table) == 4
    assert reference.non_default_table(P.Params()) == "Every key takes the schema's default."


def test_non_default_paths_name_no_folder_of_the_machine(tmp_path):
    p = P.load(None, {"runtime.artifacts": str(tmp_path / "art"), "data.voc_root": str(tmp_path / "VOC2007")})
    table = reference.non_default_table(p)
    assert str(tmp_path) not in table
    assert "| `runtime.artifacts` | `.../art` | `artifacts` |" in table and "`.../VOC2007`" in table
