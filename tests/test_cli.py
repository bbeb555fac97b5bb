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


# ------------------------------------------------------------------ bad input, as a new user gives it

@pytest.fixture
def in_process(capsys, monkeypatch):
    """`lsda ARGS` in this process (no interpreter start-up), as a CompletedProcess."""
    from lsda_core import cli

    monkeypatch.chdir(ROOT)

    def run(*args: str) -> subprocess.CompletedProcess:
        try:
            rc = cli.main(list(args))
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), rc, out.out, out.err)

    return run


@pytest.mark.parametrize("args, expect", [
    (["-p", "svm.C", ".nan"], "lsda: error: overrides: svm.C: nan is not a finite number"),
    (["-p", "finetune.lr", ".inf"], "lsda: error: overrides: finetune.lr: inf is not a finite number"),
    (["-p", "svm.C", "[1,"], "lsda: error: overrides: svm.C: '[1,' is not a valid YAML value"),
    (["-p", "nosection", "3"], "lsda: error: overrides: top level: unknown key 'nosection'"),
    (["-p", "svm", "3"], "lsda: error: overrides: svm: is a section, not a value"),
    (["-p", "svm.", "3"], "lsda: error: overrides: 'svm.' is not a parameter key"),
    (["-p", "svm.C"], "lsda: error: argument -p: expected 2 arguments (see `lsda params --help`)"),
    (["--params"], "lsda: error: argument --params: expected one argument"),
    (["--params", "params"], f"lsda: error: {ROOT / 'params'}: is a folder, not a parameter file"),
])
def test_bad_parameters_are_one_line(in_process, args, expect):
    assert one_line_error(in_process("params", *args)).startswith(expect)


def test_bad_parameter_files_are_one_line(in_process, tmp_path):
    (tmp_path / "b.yaml").write_text("base: [embedded.yaml]\n")
    assert "b.yaml: base: expected the file name of another preset" in one_line_error(
        in_process("params", "--params", str(tmp_path / "b.yaml")))
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    assert "bin.yaml: not a text file" in one_line_error(in_process("params", "--params", str(tmp_path / "bin.yaml")))


@pytest.mark.parametrize("args, expect", [
    ([], "lsda: error: the following arguments are required: command (see `lsda --help`)"),
    (["nosuchcommand"], "lsda: error: argument command: invalid choice: 'nosuchcommand'"),
    (["eval"], "lsda: error: the following arguments are required: --dataset, --split, --results"),
    (["prepare", "--stage", "all"], "lsda: error: argument --stage: invalid choice: 'all'"),
])
def test_usage_errors_are_one_line(in_process, args, expect):
    assert one_line_error(in_process(*args)).startswith(expect)


def test_unknown_chapter_and_build_folder_that_is_a_file(in_process, tmp_path):
    msg = one_line_error(in_process("run", "nosuchchapter", "--out", str(tmp_path)))
    assert msg.startswith("lsda: error: unknown chapter 'nosuchchapter'; chapters: intro, world, ")
    f = tmp_path / "file"
    f.write_text("")
    msg = one_line_error(in_process("run", "world", "--out", str(f)))
    assert msg == f"lsda: error: {f}: is a file, so the build folder (--out) {f} cannot be made; name a folder"


def test_sweep_errors_are_one_line(in_process, tmp_path):
    """What cannot be swept, a malformed grid and an unknown metric each give one line."""
    out = ["--out", str(tmp_path / "sw"), "-p", "runtime.artifacts", str(tmp_path / "art")]
    assert "only chapters that judge claims can be swept (rcnn, segmentation, lsda)" in one_line_error(
        in_process("sweep", "world", *out))
    assert "--grid 'pretrain.epochs': expected KEY=V1,V2" in one_line_error(
        in_process("sweep", "pretrain", "--grid", "pretrain.epochs", *out))
    assert "no_such_key" in one_line_error(in_process("sweep", "pretrain", "--grid", "pretrain.no_such_key=1", *out))


def test_check_images_names_a_truncated_jpeg(in_process, tmp_path):
    """`lsda data --check-images` decodes every image: a truncated one fails, named."""
    import io

    from PIL import Image

    from lsda_core.core.structures import ImageAnn
    from lsda_core.data.voc import write_imagesets, write_voc_xml

    voc = tmp_path / "VOC2007"
    for i in ("000001", "000002"):
        write_voc_xml(voc / "Annotations" / f"{i}.xml", ImageAnn(i, voc / "JPEGImages" / f"{i}.jpg", 40, 30, []))
        buf = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="JPEG")
        (voc / "JPEGImages").mkdir(exist_ok=True)
        (voc / "JPEGImages" / f"{i}.jpg").write_bytes(buf.getvalue())
    for split in ("train", "val", "test"):
        write_imagesets(voc, split, ["000001", "000002"], [])
    args = ("data", "--params", "params/paper_voc2007.yaml", "-p", "data.voc_root", str(voc))
    assert in_process(*args, "--check-images").returncode == 0
    bad = voc / "JPEGImages" / "000002.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    assert in_process(*args).returncode == 0  # without the check, images are not opened
    msg = one_line_error(in_process(*args, "--check-images"))
    assert msg.startswith(f"lsda: error: {bad}: cannot read image (") and "runcated" in msg
    # the classification images a preset uses are decoded too
    bad.write_bytes((voc / "JPEGImages" / "000001.jpg").read_bytes())
    cls = tmp_path / "imagenet"
    for split in ("train", "val"):
        (cls / split / "n01").mkdir(parents=True)
        (cls / split / "n01" / "a.jpg").write_bytes(bad.read_bytes())
    args = (*args, "-p", "data.imagenet_root", str(cls))
    assert in_process(*args, "--check-images").returncode == 0
    worse = cls / "val" / "n01" / "a.jpg"
    worse.write_bytes(worse.read_bytes()[:150])
    msg = one_line_error(in_process(*args, "--check-images"))
    assert msg.startswith(f"lsda: error: {worse}: cannot read image (")


def test_overrides_are_parsed_once_on_the_way_to_the_chapters(tmp_path, monkeypatch):
    """`-p units.category "'007'"`: the quoted YAML string stays the string 007 through the
    CLI, the book's resolved parameter file and a chapter's load of it (it used to arrive as 7)."""
    from lsda_core import cli
    from lsda_core.core import params as P
    from lsda_core.publish import book

    seen = {}
    monkeypatch.setattr(book, "build", lambda params, overrides, out, **kw: seen.update(overrides) or out / "index.html")
    assert cli.main(["book", "--params", str(ROOT / "params/smoke.yaml"), "-p", "units.category", "'007'",
                     "-p", "world.seed", "3", "--out", str(tmp_path)]) == 0
    assert seen == {"units.category": "007", "world.seed": 3}
    p, resolved = book.resolve_params(ROOT / "params/smoke.yaml", seen, tmp_path)
    assert p.units.category == "007"
    chapter = P.load(resolved, {})  # what a chapter does with the file it is given
    assert chapter.units.category == "007" and chapter.world.seed == 3


def test_params_prints_a_quoted_string_override_as_a_string():
    res = lsda("params", "-p", "units.category", "'007'")
    assert res.returncode == 0 and "category: '007'" in res.stdout
