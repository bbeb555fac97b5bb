"""Stage identity: the committed lock records every stage's code; a comment or docstring edit
anywhere changes no stage; a result-changing edit to a function a stage runs is caught."""
from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import pytest

from lsda_core.store import code as K
from lsda_core.store import stages

PKG = K.ROOT


def all_modules() -> dict[str, str]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = "lsda_core." + ".".join(path.relative_to(PKG).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path.read_text()
    return out


def digests(sources: dict[str, str] | None = None) -> dict[str, str]:
    cb = K.CodeBase(sources) if sources else K.shared()
    return {name: cb.digest(st.roots) for name, st in stages.LOCKED.items()}


def test_lock_records_the_code_of_every_stage():
    """Fails while a stage's code differs from the lock: run `lsda cache lock --bump STAGE`
    (its results change) or `lsda cache lock --same` (they do not)."""
    status = stages.lock_status(K.shared())
    stale = [f"{n} (lock {s['locked']}, code {s['live']})" for n, s in status.items() if not s["current"]]
    assert not stale, ("stage code changed but the lock was not updated: " + ", ".join(stale) +
                       "; run `lsda cache lock --bump STAGE` if its results change, else `lsda cache lock --same`")


def recomment(source: str) -> str:
    """The same module with every docstring rewritten and a comment after every logical line."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                spans.append(first.value)
    # docstrings, last first so earlier positions stay valid
    for c in sorted(spans, key=lambda c: (c.lineno, c.col_offset), reverse=True):
        start = sum(len(x) for x in lines[:c.lineno - 1]) + len(lines[c.lineno - 1].encode()[:c.col_offset].decode())
        end = sum(len(x) for x in lines[:c.end_lineno - 1]) + \
            len(lines[c.end_lineno - 1].encode()[:c.end_col_offset].decode())
        text = "".join(lines)
        text = text[:start] + '"""Rewritten: says something else now."""' + text[end:]
        lines = text.splitlines(keepends=True)
    text = "".join(lines)
    ends = [t.start for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.NEWLINE]
    commented = {t.start[0] for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT}
    out = text.splitlines(keepends=True)
    for row, col in reversed(ends):
        if row not in commented and row <= len(out):
            line = out[row - 1]
            out[row - 1] = line[:col] + "  # an added comment" + line[col:]
    return "# a new first line\n" + "".join(out) + "\n# a new last line\n"


def test_comment_and_docstring_edits_anywhere_change_no_stage():
    mods = all_modules()
    edited = {name: recomment(src) for name, src in mods.items()}
    for name, src in edited.items():
        compile(src, name, "exec")  # the edit keeps every module valid
    assert digests(edited) == digests()


def insert_statement(source: str, function: str) -> str:
    """`source` with `_edited = 1` as the first statement of top-level `function` (a class: its
    first method): a change of what the code does."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == function)
    if isinstance(node, ast.ClassDef):
        node = next(n for n in node.body if isinstance(n, ast.FunctionDef))
    first = node.body[0]
    lines = source.splitlines(keepends=True)
    indent = " " * first.col_offset
    lines.insert(first.lineno - 1, f"{indent}_edited = 1\n")
    return "".join(lines)


# functions whose result-changing edits must reach a stage's key (the list and more)
MUST_REACH = [
    ("detections", "lsda_core.experiments.lsda", "detector"),  # the LSDA scorer
    ("detections", "lsda_core.detection.bbox_reg", "apply_bbox_reg"),  # box regression
    ("detections", "lsda_core.detection.detect", "detect"),  # per-class NMS
    ("detections", "lsda_core.detection.features", "fc_features"),  # fc6 / fc7 from pool5
    ("detections", "lsda_core.detection.svm", "score"),
    ("world", "lsda_core.data.voc", "write_voc_xml"),  # the world writer
    ("world", "lsda_core.world.render", "superellipse"),
    ("svm", "lsda_core.detection.svm", "train_svms"),
    ("svm", "lsda_core.detection.features", "fc_features"),
    ("pool5", "lsda_core.models.nets", "CaffeNet"),
    ("pool5", "lsda_core.detection.features", "pool5_of_regions"),
    ("finetune", "lsda_core.models.solver", "param_groups"),
    ("proposals", "lsda_core.detection.proposals", "selective_search"),
    ("hog", "lsda_core.detection.hog", "hog_params_features"),
    ("spp", "lsda_core.detection.spp", "spp_pool"),
]


@pytest.mark.parametrize("stage,module,function", MUST_REACH)
def test_result_changing_edit_is_caught(stage, module, function):
    source = K.module_file(module).read_text()
    before = K.shared().digest(stages.STAGES[stage].roots)
    after = K.CodeBase({module: insert_statement(source, function)}).digest(stages.STAGES[stage].roots)
    assert before != after, f"an edit of {module}.{function} does not reach stage {stage}"


@pytest.mark.parametrize("name,module,function", [
    ("derive-transfer", "lsda_core.experiments.lsda", "transfer"),
    ("derive-order", "lsda_core.experiments.lsda", "_reorder_head"),
    ("derive-spp", "lsda_core.detection.spp", "SppHead"),
    ("derive-spp", "lsda_core.models.nets", "CaffeNet"),  # what the head copies from
])
def test_derivation_edit_is_caught(name, module, function):
    source = K.module_file(module).read_text()
    roots = stages.DERIVED[name].roots
    assert K.shared().digest(roots) != K.CodeBase({module: insert_statement(source, function)}).digest(roots)


def test_derived_key_follows_the_lock(monkeypatch):
    """A derived model's key holds the derivation's locked version while its code is the locked
    one (a `--same` refactor keeps it) and the live digest once the code differs."""
    from lsda_core.store.identity import derived_key
    version = stages.read_lock()["derive-transfer"]["version"]
    assert derived_key("base", "knn5", "derive-transfer") == f"base+knn5@v{version}-locked"
    assert derived_key("base", "knn5", "derive-transfer") != derived_key("base", "knn10", "derive-transfer")
    monkeypatch.setattr(stages, "live_digest", lambda name: "0123abcd")
    assert derived_key("base", "knn5", "derive-transfer") == f"base+knn5@v{version}-0123abcd"


def test_every_derived_key_names_its_own_derivation():
    """Each `derived_key(...)` call names, as a literal, the derivation whose root holds it."""
    calls = {}
    for name, src in all_modules().items():
        for top in ast.parse(src).body:
            for n in ast.walk(top):
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "derived_key" and \
                        hasattr(top, "name"):
                    assert isinstance(n.args[2], ast.Constant), f"{name}:{top.name} names no derivation literally"
                    calls[n.args[2].value] = f"{name}:{top.name}"
    assert sorted(calls) == sorted(stages.DERIVED)
    for derivation, holder in calls.items():
        assert holder in stages.DERIVED[derivation].roots, (derivation, holder)


def functions_calling(attr: str) -> set[str]:
    """Every top-level function of lsda_core that calls `<something>.attr(...)` or `attr(...)`."""
    out = set()
    for name, src in all_modules().items():
        for top in ast.parse(src).body:
            if not isinstance(top, ast.FunctionDef):
                continue
            for n in ast.walk(top):
                if isinstance(n, ast.Call) and (isinstance(n.func, ast.Attribute) and n.func.attr == attr or
                                                isinstance(n.func, ast.Name) and n.func.id == attr):
                    out.add(f"{name}:{top.name}")
    return out - {"lsda_core.store.cache:entry"}


def test_every_cache_entry_is_made_by_a_stage_root():
    roots = {r for st in stages.STAGES.values() for r in st.roots}
    makers = {f for f in functions_calling("entry") if not f.startswith("lsda_core.store.")}
    assert makers and makers <= roots, f"cache.entry called outside a stage's roots: {sorted(makers - roots)}"


def test_every_caller_of_cached_detections_is_a_detections_root():
    callers = functions_calling("cached_detections")
    assert callers <= set(stages.STAGES["detections"].roots), sorted(callers - set(stages.STAGES["detections"].roots))


def test_stage_names():
    assert stages.stage_of("pool5-ft").name == "pool5" and stages.stage_of("finetune-spp").name == "finetune-spp"
    with pytest.raises(stages.LsdaError):
        stages.stage_of("../etc")
    with pytest.raises(stages.LsdaError):  # a derivation has no cache entries
        stages.stage_of("derive-spp")


def test_update_lock_needs_a_decision(tmp_path):
    lock = tmp_path / "stages.lock"
    stages.update_lock([], False, lock)  # a new lock: every stage at v1
    doc = stages.read_lock(lock)
    assert {v["version"] for v in doc.values()} == {1}
    changed = dict(doc, svm={"version": 1, "code": "0000"})
    lock.write_text(json.dumps({"format": 1, "stages": changed}))
    stages.read_lock.cache_clear()
    with pytest.raises(stages.LsdaError, match="svm"):
        stages.update_lock([], False, lock)  # changed code, no decision
    stages.update_lock(["svm"], False, lock)
    assert stages.read_lock(lock)["svm"]["version"] == 2 and stages.read_lock(lock)["hog"]["version"] == 1


def test_lock_file_is_package_data():
    assert Path(stages.LOCK).is_file()
