"""The smoke build of the whole book, shared by the tests of its HTML (test_book, test_reader)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory):
    """`lsda book` on params/smoke.yaml into a temporary folder, with its own cache."""
    tmp = tmp_path_factory.mktemp("smoke")
    out, artifacts = tmp / "book", tmp / "artifacts"
    cmd = [sys.executable, "-m", "lsda_core.cli", "book", "--params", "params/smoke.yaml", "--out", str(out),
           "--quiet", "-p", "runtime.artifacts", str(artifacts)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"book: {out / 'html' / 'index.html'}" in res.stdout
    return out
