"""environment.yml (conda) and pyproject.toml (pip) name the same packages and pins."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
CONDA_ONLY = {"python", "pip"}


def _split(spec: str) -> tuple[str, str | None]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:==?\s*([^\s;]+))?", spec)
    return m.group(1).lower().replace("_", "-"), m.group(2)


def pip_specs() -> dict[str, str | None]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(proj["dependencies"]) + [d for ds in proj["optional-dependencies"].values() for d in ds]
    return dict(_split(s) for s in specs)


def conda_specs() -> dict[str, str | None]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, ver = _split(spec)
            if name not in CONDA_ONLY:
                out[CONDA_TO_PIP.get(name, name)] = ver
    return out


def test_same_packages():
    assert set(pip_specs()) == set(conda_specs())


def test_same_pins():
    pip, conda = pip_specs(), conda_specs()
    assert {k: v for k, v in pip.items() if v} == {k: v for k, v in conda.items() if v}


def test_known_toolchain_pins():
    pip = pip_specs()
    assert pip["torch"] == "2.13.0" and pip["torchvision"] == "0.28.0"
    assert pip["jupyter-book"] == "1.0.4.post1"
    assert "opencv-python" not in pip and "opencv-contrib-python-headless" in pip
