"""What code a cached stage runs, and a digest of it that ignores comments and docstrings.

A stage names its root functions ("lsda_core.detection.proposals:compute_proposals"). Its code
is the closure of the roots over lsda_core: every top-level function, class or constant of
lsda_core that a definition in the closure refers to by name (`f(...)`, `M.f` for an imported
module `M`, a type hint), found statically in the source, so an edit to any function a stage
runs changes its digest. Each definition counts as its syntax tree with docstrings removed
(`ast.dump`, no line numbers): comments, docstrings, blank lines and moving a definition within
its module change nothing. Code outside lsda_core (torch, numpy) is not followed, nor the
parameter schema (parameters enter a key as values) and the store layer (it keeps results, it
does not make them).
"""
from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

PACKAGE = "lsda_core"
# not followed: the parameter schema and errors (parameters enter a key as values, not as code)
# and the store layer (where and how results are kept, not how they are made)
NOT_FOLLOWED = ("lsda_core.core.params", "lsda_core.core.errors", "lsda_core.store")
Ref = tuple[str, str]  # (module, top-level name)


@dataclass
class ModuleIndex:
    """One module's top-level definitions and what its imported names stand for."""

    defs: dict[str, ast.AST] = field(default_factory=dict)  # name -> its def / class / assignment
    modules: dict[str, str] = field(default_factory=dict)  # local name -> lsda_core module
    names: dict[str, Ref] = field(default_factory=dict)  # local name -> (lsda_core module, name)


ROOT = Path(__file__).resolve().parents[1]  # the lsda_core folder


def _candidates(module: str) -> tuple[Path, Path]:
    if "." not in module:
        return ROOT / "__init__.py", ROOT / "__init__.py"
    rel = Path(*module.split(".")[1:])
    return (ROOT / rel).with_suffix(".py"), ROOT / rel / "__init__.py"


def module_file(module: str) -> Path:
    """The source file of an lsda_core module (found on disk, without importing it)."""
    for path in _candidates(module):
        if module.startswith(PACKAGE) and path.is_file():
            return path
    raise ValueError(f"{module}: no such module of {PACKAGE}")


def is_module(module: str) -> bool:
    return module.split(".")[0] == PACKAGE and any(p.is_file() for p in _candidates(module))


def _is_text(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove every statement that is only a string (docstrings of modules, classes, functions
    and attributes: they do nothing), in place."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and any(isinstance(s, ast.stmt) and _is_text(s) for s in body):
                kept = [s for s in body if not _is_text(s)]
                setattr(node, name, kept or [ast.Pass()])
    return tree


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    out = []
    for t in targets:
        out += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return out


def index_source(module: str, source: str) -> ModuleIndex:
    """Index one module's source: its definitions and its lsda_core imports."""
    idx = ModuleIndex()
    tree = _strip_docstrings(ast.parse(source))
    package = module if module_file(module).name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):  # imports anywhere (also inside functions) bind names
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            if not base.startswith(PACKAGE):
                continue
            for a in node.names:
                local = a.asname or a.name
                sub = f"{base}.{a.name}"
                if is_module(sub):
                    idx.modules[local] = sub
                else:
                    idx.names[local] = (base, a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith(PACKAGE) and a.asname:
                    idx.modules[a.asname] = a.name
    for node in tree.body:
        for name in _bound_names(node):
            idx.defs[name] = node
    return idx


def _refs(node: ast.AST, module: str, idx: ModuleIndex) -> set[Ref]:
    """The lsda_core definitions that `node` refers to."""
    out: set[Ref] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            if n.id in idx.defs:
                out.add((module, n.id))
            elif n.id in idx.names:
                out.add(idx.names[n.id])
        elif isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in idx.modules:
            out.add((idx.modules[n.value.id], n.attr))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in idx.defs \
                and isinstance(idx.defs[n.value], (ast.FunctionDef, ast.ClassDef)):
            out.add((module, n.value))  # a quoted forward reference ("Markdown" hints and the like)
    return out


class CodeBase:
    """Sources of lsda_core modules, indexed once; `sources` may replace a module's text (tests
    use it to show what an edit would do without touching the files)."""

    def __init__(self, sources: dict[str, str] | None = None) -> None:
        self.sources = dict(sources or {})
        self._index = lru_cache(maxsize=None)(self._build_index)

    def source(self, module: str) -> str:
        return self.sources[module] if module in self.sources else module_file(module).read_text()

    def _build_index(self, module: str) -> ModuleIndex:
        return index_source(module, self.source(module))

    def index(self, module: str) -> ModuleIndex:
        return self._index(module)

    def _follow(self, ref: Ref, seen: set[str] = frozenset()) -> Ref | None:
        """The module and name where `ref`'s definition lives (through re-exports); None
        when it is not an lsda_core definition (a submodule, a name from elsewhere)."""
        module, name = ref
        if not module.startswith(PACKAGE) or module.startswith(NOT_FOLLOWED) or not is_module(module):
            return None
        idx = self.index(module)
        if name in idx.defs:
            return ref
        if name in idx.names and module not in seen:
            return self._follow(idx.names[name], seen | {module})
        return None

    def closure(self, roots: Iterable[str]) -> dict[Ref, str]:
        """Every definition the roots ("module:name") reach, with its normalised dump."""
        todo = []
        for r in roots:
            module, _, name = r.partition(":")
            ref = self._follow((module, name)) if not module.startswith(NOT_FOLLOWED) else None
            if ref is None:
                raise ValueError(f"{r}: not a top-level definition of lsda_core")
            todo.append(ref)
        out: dict[Ref, str] = {}
        while todo:
            ref = todo.pop()
            if ref in out:
                continue
            module, name = ref
            idx = self.index(module)
            node = idx.defs[name]
            out[ref] = ast.dump(node, annotate_fields=False, include_attributes=False)
            for r in _refs(node, module, idx):
                followed = self._follow(r)
                if followed is not None and followed not in out:
                    todo.append(followed)
        return out

    def digest(self, roots: Iterable[str]) -> str:
        """Digest of the closure of `roots`: the same for any comment or docstring edit."""
        h = hashlib.sha256()
        for dump in sorted(self.closure(roots).values()):
            h.update(dump.encode())
            h.update(b"\0")
        return h.hexdigest()[:16]


_SHARED: CodeBase | None = None


def shared() -> CodeBase:
    """The process's CodeBase of the files on disk (modules are parsed once per process)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = CodeBase()
    return _SHARED
