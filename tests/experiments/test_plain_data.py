"""lsda_core.experiments returns plain data: tables are built by publish/report.py (pandas) and
figures by publish/plots.py (matplotlib), never in an experiment module."""
import ast
from pathlib import Path

import lsda_core.experiments

FOLDER = Path(lsda_core.experiments.__file__).parent


def test_experiments_import_no_pandas_matplotlib_or_ipython():
    problems = []
    for path in sorted(FOLDER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            problems += [f"{path.name}:{node.lineno}: {n}" for n in names
                         if n.split(".")[0] in ("pandas", "matplotlib", "IPython", "seaborn")]
    assert not problems, problems
