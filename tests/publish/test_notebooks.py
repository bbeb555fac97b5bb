"""The chapters stay thin (README, "Layout"): a parameters cell, calls into lsda_core.experiments
and lsda_core.publish, figures and prose; at most 40 lines of code, no loop or function that
defines an experiment, and no paper number typed into code or prose (they live in
lsda_core/publish/paper.py, tested against the papers' text)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
MAX_LINES = 40
ALLOWED_IMPORTS = ("lsda_core.experiments", "lsda_core.publish")
# In prose: a decimal of 1 or more (an mAP like 43.4), a time in seconds ("13 s", "0.5 s"), a
# p-value, or a number of mAP points: the shapes a paper's result takes.
PROSE_NUMBER = re.compile(r"(?<![\w.])[1-9]\d*\.\d+(?![\w.])|\b\d+(?:\.\d+)?\s?s\b(?!\w)|\bp\s*=\s*0?\.\d|"
                          r"\b\d+(?:\.\d+)?\s+(?:mAP\s+)?points\b")
DECIMAL_IN_STRING = re.compile(r"\d\.\d")


def cells(path: Path, kind: str) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == kind]


def is_parameters(cell: nbformat.NotebookNode) -> bool:
    return "parameters" in cell.metadata.get("tags", [])


def code_problems(source: str) -> list[str]:
    """What a code cell (other than the parameters cell) may not hold: number literals other
    than 0 and 1, decimals inside strings, loops, comprehensions, definitions, lambdas, and
    imports from outside lsda_core.experiments / lsda_core.publish."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and \
                not isinstance(node.value, bool):
            if isinstance(node.value, float) or abs(node.value) > 1:
                out.append(f"number literal {node.value!r} (line {node.lineno})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                DECIMAL_IN_STRING.search(node.value):
            out.append(f"a number typed into the string {node.value!r} (line {node.lineno})")
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp,
                               ast.GeneratorExp)):
            out.append(f"a loop (line {node.lineno}): experiments are functions of lsda_core.experiments")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            out.append(f"a definition (line {node.lineno}): it belongs in lsda_core")
        elif isinstance(node, ast.Import):
            out += [f"import {a.name} (line {node.lineno})" for a in node.names
                    if not a.name.startswith(ALLOWED_IMPORTS)]
        elif isinstance(node, ast.ImportFrom) and not (node.module or "").startswith(ALLOWED_IMPORTS):
            out.append(f"import from {node.module} (line {node.lineno})")
    return out


def test_there_are_chapters():
    assert {p.stem for p in NOTEBOOKS} >= {"rcnn", "lsda", "lsda_large", "world", "performance", "status"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_at_most_40_lines_of_code(path):
    lines = sum(1 for c in cells(path, "code") for line in c.source.splitlines() if line.strip())
    assert lines <= MAX_LINES, f"{path.name}: {lines} non-blank lines of code (at most {MAX_LINES})"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_first(path):
    code = cells(path, "code")
    assert code and is_parameters(code[0]) and not any(is_parameters(c) for c in code[1:]), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_code_holds_no_number_loop_or_foreign_import(path):
    problems = [f"cell {k}: {p}" for k, c in enumerate(cells(path, "code")) if not is_parameters(c)
                for p in code_problems(c.source)]
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_holds_no_paper_number(path):
    found = [m.group(0) for c in cells(path, "markdown") for m in PROSE_NUMBER.finditer(c.source)]
    assert not found, f"{path.name}: numbers typed into the prose: {found} (render them from publish.paper)"


def test_the_checks_catch_what_the_chapters_used_to_hold():
    assert code_problems('claims = [("fine-tuning improves fc7", "FT fc7", "fc7", 48.0 - 42.6)]')
    assert code_problems('x = {"paper mAP": [43.4, 40.1]}')
    assert code_problems('print(f"(the paper: 200 and {n - 200})")')
    assert code_problems('print("CaffeNet: 195 px of 227, stride 32 (0.3)")')
    assert code_problems("for t in grid:\n    run(t)")
    assert code_problems("maps = {k: f(r) for k, r in results.items()}")
    assert code_problems("import pandas as pd")
    assert code_problems("from lsda_core.detection import pipeline as DP")
    assert not code_problems("from lsda_core.experiments import chapter, rcnn as R\n"
                             "t2 = R.table2(p, cache, bench, nets)\n"
                             'viz.show(plots.table2_figure(t), "rcnn_table2", figures_dir)\nx = units.tops[:1]')
    for prose in ("lost 3.3 mAP points (43.4 to 40.1)", "13 s per image on a GPU", "from 4 s to 0.5 s per image",
                  "0.5 cost 5 mAP points", "significant at p = 0.017", "takes about 10 s on a CPU"):
        assert PROSE_NUMBER.search(prose), prose
    for prose in ("IoU of at least 0.5 (and 0.7)", "a grid search over {0, 0.1, ..., 0.5}", "2000 x 4096",
                  "batches of 32 windows", "the 6 x 6 map", "from 30% to 95% of them", "R-CNN's Figures 3 and 6"):
        assert not PROSE_NUMBER.search(prose), prose
