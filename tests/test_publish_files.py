"""Publishing the book (README, "Publish the book"): `make publish` pushes the built html/ with
ghp-import, and the CI workflow builds the book with `lsda book` and deploys it to GitHub Pages."""
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    """`make -n` (print the commands, run nothing) in the project."""
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True)


def test_makefile_publish_target_pushes_the_build_folders_html():
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^publish:", text, re.M) and re.search(r"^OUT \?= _build/book$", text, re.M)
    assert re.search(r"^\t\S*ghp-import -n -p -f \$\(OUT\)/html$", text, re.M)
    assert re.search(r"^\t\S*lsda book --params \$\(PARAMS\) --out \$\(OUT\)$", text, re.M)


@pytest.mark.skipif(subprocess.run(["which", "make"], capture_output=True).returncode != 0, reason="no make")
def test_make_publish_names_the_build_folder():
    res = make_dry_run("publish", "OUT=/some/build")
    assert res.returncode == 0, res.stderr
    assert "ghp-import -n -p -f /some/build/html" in res.stdout


def test_workflow_builds_the_book_and_deploys_it_to_pages():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as true
    assert "push" in on and "workflow_dispatch" in on
    assert wf["permissions"]["pages"] == "write" and wf["permissions"]["id-token"] == "write"
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    assert build["runs-on"].startswith("ubuntu") and deploy["needs"] == "build"
    steps = build["steps"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python"))
    assert str(python["with"]["python-version"]) == "3.11"
    runs = "\n".join(s.get("run", "") for s in steps)
    assert re.search(r"^lsda book --params \S+ --out \S+", runs, re.M)
    assert wf["env"]["PARAMS"] in ("params/smoke.yaml", "params/embedded.yaml")
    assert (ROOT / wf["env"]["PARAMS"]).is_file()
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "${{ env.OUT }}/html"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])


def test_files_a_notebook_run_writes_are_ignored():
    """A chapter run in JupyterLab (cwd book/) writes its cache and figures beside it."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    assert "artifacts/" in lines and "/book/figures/" in lines and "_build/" in lines
