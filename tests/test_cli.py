"""The command line: user errors are one clear line, no traceback, exit status 2."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lsda(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsda_core.cli", *args], cwd=ROOT, capture_output=True, text=True)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsda: error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("args, expect", [
    (["-p", "world.nseed", "3"], "unknown key 'nseed'"),
    (["-p", "world.seed", "three"], "world.seed: expected int"),
    (["--params", "params/none.yaml"], "params/none.yaml: parameter file not found"),
])
def test_wrong_parameter(args, expect):
    assert expect in one_line_error(lsda("params", *args))


def test_missing_dataset_path():
    msg = one_line_error(lsda("data", "--params", "params/paper_voc2007.yaml"))
    assert "data.voc_root is not set" in msg and "-p data.voc_root" in msg
    msg = one_line_error(lsda("data", "--params", "params/paper_ilsvrc2013.yaml", "-p", "data.ilsvrc_root", "/no/such"))
    assert "/no/such: data.ilsvrc_root does not exist" in msg


def test_corrupt_annotation(tmp_path):
    voc = tmp_path / "VOC2007"
    (voc / "Annotations").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    for split in ("train", "val", "test"):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("000001\n")
    (voc / "Annotations" / "000001.xml").write_text("<annotation><size><width>10</width></size><object>")
    msg = one_line_error(lsda("data", "--params", "params/paper_voc2007.yaml", "-p", "data.voc_root", str(voc)))
    assert str(voc / "Annotations" / "000001.xml") in msg


def test_params_prints_resolved_yaml():
    res = lsda("params", "--params", "params/smoke.yaml", "-p", "world.seed", "7")
    assert res.returncode == 0 and "seed: 7" in res.stdout and "n_categories: 24" in res.stdout


def test_schema_lists_every_section():
    out = lsda("params", "--schema").stdout
    for section in ("runtime:", "world:", "data:"):
        assert section in out
