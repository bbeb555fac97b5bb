"""The package's layer rules (README, "Layout"): no module imports a layer above its own, no
module imports another module's private names, and there is no import cycle."""
from __future__ import annotations

import ast
from pathlib import Path

import lsda_core

PKG = Path(lsda_core.__file__).parent

# lowest first: a module may import its own layer and the layers before it
LAYERS = ["core", "store", "data", "world", "models", "evaluation", "detection", "perf", "experiments",
          "publish", "cli"]


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside lsda_core ('lsda_core.detection.svm' -> detection)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cli"


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported lsda_core module, names taken from it, line) for every import in a file."""
    module = "lsda_core." + ".".join(path.relative_to(PKG).with_suffix("").parts)
    module = module.removesuffix(".__init__")
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lsda_core"):
            names = [a.name for a in node.names]
            # `from lsda_core.x import y` may import a submodule y
            for n in names:
                sub = f"{node.module}.{n}"
                if (PKG / Path(*sub.split(".")[1:])).with_suffix(".py").exists() or \
                        (PKG / Path(*sub.split(".")[1:]) / "__init__.py").exists():
                    out.append((sub, [], node.lineno))
                else:
                    out.append((node.module, [n], node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("lsda_core")]
    return [(m, n, line) for m, n, line in out if m != module]


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = "lsda_core." + ".".join(path.relative_to(PKG).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def test_every_module_is_in_a_layer():
    for name in modules():
        if name != "lsda_core":
            assert layer_of(name) in LAYERS, f"{name}: not in a layer of {LAYERS}"


def test_no_upward_import_and_no_private_name():
    problems = []
    for name, path in modules().items():
        if name == "lsda_core":
            continue
        mine = LAYERS.index(layer_of(name))
        for target, names, line in imports(path):
            if target == "lsda_core":
                continue
            if LAYERS.index(layer_of(target)) > mine:
                problems.append(f"{path.relative_to(PKG)}:{line}: {layer_of(name)} imports {target} (a layer above)")
            for n in names:
                if n.startswith("_"):
                    problems.append(f"{path.relative_to(PKG)}:{line}: imports private {target}.{n}")
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    graph = {name: {t for t, _, _ in imports(path) if t in modules()} for name, path in modules().items()}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in graph[n]:
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [n, m]))
            if m not in state:
                visit(m, stack + [n])
        state[n] = 2

    for n in graph:
        if n not in state:
            visit(n, [])
