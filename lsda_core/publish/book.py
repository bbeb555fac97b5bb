"""Building the book: execute each chapter with Papermill on one validated parameter set,
into a build folder (the sources in git stay free of outputs), then build HTML with
Jupyter Book 1.x (which itself executes nothing), then check the HTML.

Build folder layout (`out`): `src/` is a copy of the book sources with executed notebooks
(and `src/book/figures/<chapter>/` with every figure as PNG and SVG), `run_log.json` records
each chapter's parameters, run time and machine (the status page reads it), `html/` is the
built site.
"""
from __future__ import annotations

import functools
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

from lsda_core.core import params as P
from lsda_core.publish import findings as F
from lsda_core.store.cache import Cache, human_bytes
from lsda_core.store.files import atomic_write_text
from lsda_core.core.errors import LsdaError
from lsda_core.store import terminal
from lsda_core.store.stages import SCRATCH, stage_of
from lsda_core.store.runtime import machine

ROOT_FILES = ("_config.yml", "_toc.yml")
ROOT_DIRS = ("_static",)  # the book's own CSS: Jupyter Book links every .css file in _static/
# what a chapter run in JupyterLab (cwd book/) writes beside the notebooks with its default
# parameters: the cache (runtime.artifacts) and the figures (figures_dir); never book sources
NOTEBOOK_OUTPUTS = ("artifacts", "figures")
# MathJax 3 for the equations, from the build itself (no CDN: pages render offline and from file://):
# the pip package MATHJAX_PACKAGE's single-file bundle (TeX input with every extension, SVG output,
# so no fonts and nothing loaded later) and its licence, copied into the sources' MATHJAX_DIR, which
# _config.yml names as html_extra_path (Sphinx copies it to the site's mathjax/) and mathjax_path uses
MATHJAX_PACKAGE = "django-static-mathjax"
MATHJAX_DIR = "_extra/mathjax"
MATHJAX_FILES = ("tex-svg-full.js", "LICENSE")
STATUS_CHAPTER = "status"
INTRO_CHAPTER = "intro"  # the findings summary: executed after every chapter that judges claims
SUMMARY_CHAPTERS = (INTRO_CHAPTER, STATUS_CHAPTER)  # run last, in this order
RUN_LOG_CHAPTERS = (STATUS_CHAPTER, "performance")  # chapters given the run log (`run_log`)
FINDINGS_CHAPTERS = ("rcnn", "segmentation", "lsda")  # chapters that judge claims and measure premises (`findings_dir`)


class ChapterError(LsdaError):
    """A chapter failed to execute; the message names the chapter, the cell and the error."""


@dataclass
class Chapter:
    """One entry of `_toc.yml`: a notebook (executed) or a Markdown page (copied)."""

    name: str  # file stem, e.g. "world"
    path: Path  # relative to the project root, with suffix

    @property
    def is_notebook(self) -> bool:
        return self.path.suffix == ".ipynb"


def project_root() -> Path:
    """The folder holding `_toc.yml` (the current folder or one of its parents)."""
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "_toc.yml").is_file() and (d / "book").is_dir():
            return d
    raise LsdaError(f"{here}: not inside the lsda-study project (no _toc.yml and book/ found)")


def chapters(root: Path) -> list[Chapter]:
    """Chapters in book order, read from `_toc.yml` (root page first)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for e in entries:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections", []))
            for part in e.get("parts", []):
                walk(part.get("chapters", []))

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    out = []
    for f in files:
        matches = [root / f"{f}{ext}" for ext in (".ipynb", ".md") if (root / f"{f}{ext}").is_file()]
        if not matches:
            raise LsdaError(f"{root / '_toc.yml'}: entry {f!r} has no .ipynb or .md file")
        out.append(Chapter(Path(f).name, matches[0].relative_to(root)))
    return out


def find_chapter(root: Path, name: str) -> Chapter:
    chs = chapters(root)
    for c in chs:
        if c.name == name and c.is_notebook:
            return c
    raise LsdaError(f"unknown chapter {name!r}; chapters: {', '.join(c.name for c in chs if c.is_notebook)}")


def stage_sources(root: Path, src: Path) -> None:
    """Copy the book's sources (config, toc, pages, static files) into the build folder, not
    what chapters run in JupyterLab left beside them (NOTEBOOK_OUTPUTS); executed notebooks
    later overwrite their copies."""
    check_build_folder(src)
    src.mkdir(parents=True, exist_ok=True)
    for f in ROOT_FILES:
        shutil.copy2(root / f, src / f)
    for d in ROOT_DIRS:
        if (root / d).is_dir():
            shutil.copytree(root / d, src / d, dirs_exist_ok=True)
    for p in (root / "book").rglob("*"):
        if p.is_file() and ".ipynb_checkpoints" not in p.parts and \
                p.relative_to(root / "book").parts[0] not in NOTEBOOK_OUTPUTS:
            dest = src / p.relative_to(root)
            if p.suffix == ".ipynb" and dest.exists():
                continue  # keep an already executed copy (from an earlier run)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    stage_mathjax(src)


def mathjax_source() -> Path:
    """The installed MathJax 3 distribution (its folder holding es5/ and LICENSE); an LsdaError
    naming the pip package when it is missing."""
    import importlib.util
    spec = importlib.util.find_spec("mathjax")  # the import name of MATHJAX_PACKAGE
    for d in (spec.submodule_search_locations or []) if spec else []:
        dist = Path(d) / "static" / "mathjax"
        if (dist / "es5" / MATHJAX_FILES[0]).is_file():
            return dist
    raise LsdaError(f"MathJax for the book's equations not found: install the pip package {MATHJAX_PACKAGE} "
                    f"(pip install {MATHJAX_PACKAGE})")


def stage_mathjax(src: Path) -> None:
    """Copy MathJax (MATHJAX_FILES only) into `src/MATHJAX_DIR`, which the site serves as mathjax/."""
    dist, dest = mathjax_source(), src / MATHJAX_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for f in MATHJAX_FILES:
        shutil.copy2(dist / "es5" / f if f.endswith(".js") else dist / f, dest / f)


def _read_log(out: Path) -> dict[str, Any]:
    path = out / "run_log.json"
    return json.loads(path.read_text()) if path.is_file() else {"chapters": {}}


RESOLVED = "params.resolved.yaml"


def check_build_folder(out: Path) -> Path:
    """`out` if it is a folder or can be made one; a build folder (`--out`) that is, or would
    be inside, a file is an LsdaError naming that file."""
    for d in (out, *out.parents):
        if d.exists():
            if not d.is_dir():
                raise LsdaError(f"{d}: is a file, so the build folder (--out) {out} cannot be made; name a folder")
            break
    return out


def resolve_params(params_file: Path, overrides: dict[str, Any], out: Path) -> tuple[P.Params, Path]:
    """Validate the preset with its overrides once and write the resolved values to
    `out/params.resolved.yaml` (every key, with its digest in the first line); every chapter of
    the build is given that one file."""
    p = P.load(params_file, overrides)
    check_build_folder(out).mkdir(parents=True, exist_ok=True)
    path = out / RESOLVED
    head = (f"# resolved parameters, digest {p.digest()}: {params_file}"
            + (f" with {', '.join(f'{k}={v!r}' for k, v in sorted(overrides.items()))}" if overrides else "") + "\n")
    atomic_write_text(path, head + yaml.safe_dump(p.to_dict(), sort_keys=False))
    return p, path


def execute_chapter(root: Path, chapter: Chapter, p: P.Params, resolved: Path, out: Path,
                    progress: bool = True, kernel: Any = None) -> float:
    """Execute one chapter with Papermill into `out/src` on the resolved parameter file, record
    it in the run log and return its run time in seconds. A failure raises ChapterError naming
    the cell. `kernel`: a running kernel's manager (`shared_kernel`), else a fresh kernel."""
    import papermill as pm  # slow import, only for building

    src = out / "src"
    dest = src / chapter.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    figures = src / "book" / "figures" / chapter.name
    injected: dict[str, Any] = {"params_file": str(resolved), "overrides": {}, "figures_dir": str(figures)}
    if chapter.name in RUN_LOG_CHAPTERS:
        injected["run_log"] = str(out / "run_log.json")
    if chapter.name in FINDINGS_CHAPTERS:
        injected["findings_dir"] = str(out / F.PARTS)
    if chapter.name == INTRO_CHAPTER:
        injected["build_dir"] = str(out)
    declared = pm.inspect_notebook(str(root / chapter.path))  # a chapter gets only what it takes
    injected = {k: v for k, v in injected.items() if k in declared}
    t0 = time.time()
    try:
        with terminal.for_children() as own_bars:  # the kernel's own progress replaces Papermill's cell counter
            if kernel is not None:
                fresh_namespace(kernel)
            pm.execute_notebook(str(root / chapter.path), str(dest), parameters=injected, cwd=str(root),
                                progress_bar=progress and not own_bars, kernel_name="python3", log_output=False,
                                **({"km": kernel, "engine_name": shared_engine()} if kernel is not None else {}))
    except pm.PapermillExecutionError as e:
        first = next((ln for ln in e.source.splitlines() if ln.strip()), "")
        raise ChapterError(f"chapter {chapter.name!r} failed in cell {e.cell_index} "
                           f"(execution {e.exec_count}: {first[:80]}): {e.ename}: {e.evalue}") from None
    seconds = time.time() - t0
    prepare_for_reading(dest, injected)
    log = _read_log(out)
    log["params"] = {"file": RESOLVED, "digest": p.digest(), "values": p.to_dict()}
    log["chapters"][chapter.name] = {
        "params_file": RESOLVED, "overrides": {}, "params_digest": p.digest(),
        "seconds": round(seconds, 1), "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_text(out / "run_log.json", json.dumps(log, indent=1, sort_keys=True))
    return seconds


@contextmanager
def shared_kernel(root: Path) -> Iterator[Any]:
    """One Python kernel for every chapter of a build, started in the project root (where
    Papermill starts each chapter's): a chapter then pays no kernel start and no imports of
    its own (about 5 s each, torch and seaborn). Its manager is yielded; shut down at the end."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    with terminal.for_children():  # the kernel inherits where its progress goes
        km.start_kernel(cwd=str(root))
    try:
        yield km
    finally:
        km.shutdown_kernel(now=True)


# A shared kernel that holds more than this after a chapter is replaced by a fresh one before the
# next: the cold R-CNN chapter leaves it at ~8 GB, and the next chapters' work then ran up to 2x
# slower (cause not found: the slow work included forked workers). Restarting after the R-CNN and
# segmentation chapters took a cold build from 61.3 to 46.2 min (segmentation 994 -> 559 s, LSDA
# 1098 -> 688 s), same findings byte for byte; a warm build's kernel stays below the limit.
KERNEL_RSS_LIMIT = 2 * 2**30


def kernel_rss(km: Any) -> int | None:
    """Resident bytes of a running kernel's process (Linux /proc); None where not known."""
    try:
        with open(f"/proc/{km.provisioner.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError, IndexError):
        return None


def renew_if_large(km: Any, limit: int = KERNEL_RSS_LIMIT) -> int | None:
    """Restart a shared kernel (same folder, same progress sink) when it holds more than `limit`
    bytes; returns the bytes it held when it was restarted, else None."""
    rss = kernel_rss(km)
    if rss is None or rss <= limit:
        return None
    with terminal.for_children():
        km.restart_kernel(now=True)
    return rss


SHARED_ENGINE = "lsda-shared-kernel"


@functools.cache
def shared_engine() -> str:
    """Papermill's engine for a chapter in `shared_kernel` (registered once, on first use): as
    Papermill's own, but it closes the chapter's kernel client afterwards. nbclient leaves it
    open when it does not own the kernel, and once the kernel is gone its zmq sockets retry,
    drawing from the C library's rand(), which selective search seeds in this process."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger

    class Client(PapermillNotebookClient):
        def execute(self, **kwargs: Any) -> Any:
            try:
                return super().execute(**kwargs)
            finally:
                if self.kc is not None:
                    self.kc.stop_channels()
                    self.kc = None

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                     stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                     execution_timeout: int | None = None, **kwargs: Any) -> Any:
            kwargs = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
            return Client(nb_man, timeout=execution_timeout, startup_timeout=start_timeout, kernel_name=kernel_name,
                          log=logger, log_output=log_output, stdout_file=stdout_file, stderr_file=stderr_file,
                          **kwargs).execute()

    papermill_engines.register(SHARED_ENGINE, Engine)
    return SHARED_ENGINE


# what a chapter finds in a shared kernel: no figure open, no name defined (modules stay imported)
FRESH = "import matplotlib.pyplot as _plt\n_plt.close('all')\n%reset -f"


def fresh_namespace(km: Any) -> None:
    """Empty a shared kernel's namespace and close its figures before the next chapter, so no
    chapter can lean on another's variables."""
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute_interactive(FRESH, silent=True, store_history=False, timeout=120,
                                       output_hook=lambda msg: None)
    finally:
        kc.stop_channels()
    if reply["content"]["status"] != "ok":
        raise ChapterError(f"the shared kernel could not be reset: {reply['content'].get('evalue', '')}")


HIDE_INPUT, REMOVE_CELL = "hide-input", "remove-cell"  # Jupyter Book's cell tags
PARAMETER_TAGS = ("parameters", "injected-parameters")  # the chapter's defaults and Papermill's values


def prepare_for_reading(notebook: Path, injected: dict[str, Any]) -> None:
    """Make an executed chapter a page for readers and a portable copy: every code cell's input
    hidden behind a toggle (`hide-input`) unless the chapter tags the cell to hide or remove
    something itself, the parameters cell and Papermill's injected one removed from the page
    (`remove-cell`), and the injected paths, in that cell and in
    Papermill's metadata, made relative to the notebook's folder (so the built site and its
    copied sources name no folder of the machine that built them, and the copy re-runs where
    it lies)."""
    import nbformat
    from papermill.translators import translate_parameters

    nb = nbformat.read(notebook, as_version=4)
    here = notebook.parent
    relative = {k: os.path.relpath(v, here) if isinstance(v, str) and Path(v).is_absolute() else v
                for k, v in injected.items()}
    count = 0
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        if c.get("execution_count") is not None:  # from 1, as in a kernel of its own (a shared one counts on)
            count += 1
            c.execution_count = count
            for o in c.outputs:
                if "execution_count" in o:
                    o["execution_count"] = count
        tags = list(c.metadata.get("tags", []))
        if "injected-parameters" in tags:
            c.source = translate_parameters("python3", "python", relative, "Parameters").strip()
        if any(t in tags for t in PARAMETER_TAGS):
            c.metadata["tags"] = [*tags, REMOVE_CELL]
        elif not any(t.startswith(("hide-", "remove-")) for t in tags):
            c.metadata["tags"] = [*tags, HIDE_INPUT]
    pm_meta = nb.metadata.get("papermill", {})
    pm_meta.pop("input_path", None)
    pm_meta.pop("output_path", None)
    if "parameters" in pm_meta:
        pm_meta["parameters"] = relative
    nbformat.write(nb, notebook)


def presentable_path(path: str | Path, anchors: Sequence[str | Path] = (), root: Path | None = None) -> str:
    """A path as a page may print it, never absolute: relative to the project (`root`, found
    from the current folder when None) when inside it; else from the innermost of `anchors`
    (the artifact folder, the build folder) holding it, as `.../<anchor's name>/<rest>`; else
    `.../<name>`. A relative path is returned as it is."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    if root is None:
        try:
            root = project_root()
        except LsdaError:  # not run inside the project: no project-relative form
            root = None
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix() or "."
    holding = [Path(a) for a in anchors if Path(a).is_absolute() and path.is_relative_to(a)]
    if holding:
        anchor = max(holding, key=lambda a: len(a.parts))
        return "/".join(("...", anchor.name, *path.relative_to(anchor).parts))
    return f".../{path.name}"


def chapter_metrics(name: str, out: Path, progress: bool = False) -> Callable[[P.Params, Cache], dict[str, Any]]:
    """A measurement for `lsda sweep` that runs chapter `name` (one that judges claims) through
    Papermill at a grid point, into `out/<parameter digest>/` (its own executed notebook and
    figures), and returns each finding's effect by claim id and each premise's value by id.
    Every stage it runs is cached, so points sharing stages share the work."""
    root = project_root()
    chapter = find_chapter(root, name)
    if name not in FINDINGS_CHAPTERS:
        raise LsdaError(f"lsda sweep {name}: only chapters that judge claims can be swept "
                        f"({', '.join(FINDINGS_CHAPTERS)}), or a named measurement")

    def measure(p: P.Params, cache: Cache) -> dict[str, Any]:
        point = check_build_folder(out / p.digest())
        point.mkdir(parents=True, exist_ok=True)
        resolved = point / RESOLVED
        atomic_write_text(resolved, yaml.safe_dump(p.to_dict(), sort_keys=False))
        stage_sources(root, point / "src")
        execute_chapter(root, chapter, p, resolved, point, progress)
        part = json.loads((point / F.PARTS / f"{name}.json").read_text())
        return {**{f["id"]: f["ours"] for f in part["findings"]}, **{pr["id"]: pr["ours"] for pr in part["premises"]}}

    return measure


def record_build(out: Path, p: P.Params, seconds: float, before: set[tuple[str, str]],
                 entries: list[dict[str, Any]], removed: Sequence[str] = (),
                 chapter_seconds: dict[str, float] | None = None, restarts: dict[str, int] | None = None) -> None:
    """Add this full build to the run log's `builds`: its time (world and chapters, before
    the status page and the HTML), whether it started from an empty cache (cold) or reused
    entries (warm), and per stage the entries it built with their own build seconds
    (`Cache.entries`, read when the chapters were done) and the stage's bytes then, flagged
    when the stage was removed afterwards (`removed`: the scratch stages), and the artifact
    folder's size that leaves, each chapter's run time in this build (`chapter_seconds`) and the
    chapters after which the shared kernel was restarted, with the bytes it held (`restarts`); so
    the status and performance pages can hold the build against the budgets and show where its
    time and space went."""
    after = {(e["stage"], e["key"]) for e in entries}
    stages: dict[str, dict[str, Any]] = {}
    for e in entries:
        st = stages.setdefault(e["stage"], {"built": 0, "seconds": 0.0, "bytes": 0,
                                            "removed": stage_of(e["stage"]).name in removed})
        st["bytes"] += e["bytes"]
        if (e["stage"], e["key"]) not in before:
            st["built"] += 1
            st["seconds"] = round(st["seconds"] + e["own_seconds"], 1)
    log = _read_log(out)
    log.setdefault("builds", []).append({
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(seconds, 1),
        "cache": "cold" if not before else "warm", "entries_reused": len(before & after),
        "entries_built": len(after - before),
        "artifacts_bytes": sum(st["bytes"] for st in stages.values() if not st["removed"]),
        "stages": stages, "chapters": dict(chapter_seconds or {}), "kernel_restarts": dict(restarts or {}),
        "params_digest": p.digest(),
        "machine": machine()})
    atomic_write_text(out / "run_log.json", json.dumps(log, indent=1, sort_keys=True))


def build_html(out: Path) -> Path:
    """Jupyter Book 1.x HTML build of `out/src` into `out/html`; returns index.html."""
    src = out / "src"
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(src), "--builder", "html",
           "--path-output", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stdout + res.stderr).strip().splitlines()[-15:]
        raise LsdaError("jupyter-book build failed:\n" + "\n".join(tail))
    html_dir = out / "_build" / "html"
    final = out / "html"
    if final.exists():
        shutil.rmtree(final)
    shutil.move(str(html_dir), final)
    shutil.rmtree(out / "_build", ignore_errors=True)
    return final / "index.html"


def build(params_file: Path, overrides: dict[str, Any], out: Path, only: str | None = None,
          progress: bool = True, log=print, keep_features: bool = False) -> Path:
    """Execute the chapters in order (or only one) and build the HTML book; returns the
    path of index.html. The intro page (the findings summary) runs after every chapter, once their
    findings are merged into `findings.json` and `premises.json`; the status chapter runs last
    so it sees every run time. A full build then removes the cache's scratch stages (features,
    decoded images: every result made from them is cached) unless `keep_features`."""
    root = project_root()
    out = out.resolve()
    p, resolved = resolve_params(params_file, overrides, out)  # validated once, before any work
    chs = [c for c in chapters(root) if c.is_notebook]
    if only is not None:
        find_chapter(root, only)
    stage_sources(root, out / "src")
    t_build = time.time()
    cache = Cache(p.runtime.artifacts)
    before = {(e["stage"], e["key"]) for e in cache.entries()} if only is None else set()
    if only is None:
        from lsda_core.world import ensure_world  # the world first, so chapters share it
        if p.data.source == "embedded":
            log("world: generating the embedded world if missing ...")
            t0 = time.time()
            ensure_world(p, cache)
            log(f"world: ready ({time.time() - t0:.1f} s)")
    todo = [c for c in chs if c.name == only or (only is None and c.name not in SUMMARY_CHAPTERS)]
    last = sorted((c for c in chs if c.name in SUMMARY_CHAPTERS and only is None),
                  key=lambda c: SUMMARY_CHAPTERS.index(c.name))
    n = len(todo) + len(last)
    times: dict[str, float] = {}
    restarts: dict[str, int] = {}
    with shared_kernel(root) as kernel:
        for i, c in enumerate(todo + last, 1):
            if c.name == INTRO_CHAPTER:
                F.merge(out, [ch.name for ch in chs])
            if c.name == STATUS_CHAPTER and only is None:  # a full build only: `--only status` times nothing
                seconds, entries = time.time() - t_build, cache.entries()
                removed = () if keep_features else SCRATCH
                if removed:
                    log(f"cache: removed the scratch stages ({', '.join(SCRATCH)}), "
                        f"{human_bytes(cache.clean_scratch())}")
                record_build(out, p, seconds, before, entries, removed, times, restarts)
            log(f"[{i}/{n}] {c.name} ...")
            s = execute_chapter(root, c, p, resolved, out, progress, kernel)
            times[c.name] = round(s, 1)
            log(f"[{i}/{n}] {c.name} done in {s:.1f} s")
            held = renew_if_large(kernel) if i < n else None
            if held is not None:
                restarts[c.name] = held
                log(f"kernel: held {human_bytes(held)} after {c.name}; restarted for the next chapter")
    if only in FINDINGS_CHAPTERS:
        F.merge(out, [ch.name for ch in chs])
    log("building HTML ...")
    index = build_html(out)
    problems = check_html(index.parent)
    if problems:
        raise LsdaError("the built HTML has problems:\n" + "\n".join(problems[:20]))
    unread = reader_problems(index.parent, [out, Path(p.runtime.artifacts).resolve(), root])
    if unread:  # reported, not fatal: the reader test (tests/publish/test_reader.py) holds the line
        log(f"reader check: {len(unread)} problems (showing 20):\n" + "\n".join(unread[:20]))
    return index


# ---------------------------------------------------------------------------------------
# checking the built HTML

class _Refs(html.parser.HTMLParser):
    """Collects image sources, link targets and element ids of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _internal(ref: str) -> bool:
    parsed = urllib.parse.urlparse(ref)
    return not parsed.scheme and not parsed.netloc and not ref.startswith("data:")


def check_html(html_dir: Path, pages: list[str] | None = None) -> list[str]:
    """Problems in a built site: missing pages, images that do not exist, internal links
    (including #fragments) that point nowhere. Empty list when all is well."""
    html_dir = Path(html_dir)
    problems = [f"missing page {p}" for p in (pages or []) if not (html_dir / p).is_file()]
    parsed: dict[Path, _Refs] = {}

    def refs(page: Path) -> _Refs:
        if page not in parsed:
            r = _Refs()
            r.feed(page.read_text(errors="replace"))
            parsed[page] = r
        return parsed[page]

    for page in sorted(html_dir.rglob("*.html")):
        if "_static" in page.parts or page.name in ("search.html", "genindex.html"):
            continue
        r = refs(page)
        for src in r.imgs:
            if _internal(src) and not (page.parent / urllib.parse.unquote(src.split("#")[0])).is_file():
                problems.append(f"{page.relative_to(html_dir)}: image {src} does not exist")
        for href in r.links:
            if not _internal(href):
                continue
            path, _, frag = href.partition("#")
            target = (page.parent / urllib.parse.unquote(path)).resolve() if path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{page.relative_to(html_dir)}: link {href} points to a missing file")
            elif frag and target.suffix == ".html" and frag not in refs(target).ids:
                problems.append(f"{page.relative_to(html_dir)}: link {href} points to a missing anchor")
    return problems


# ---------------------------------------------------------------------------------------
# checking the built HTML as a reader

# a folder of a machine: a Unix absolute path under a top folder that no page should name
ABSOLUTE_PATH = re.compile(r"(?<![\w.+=/-])/(?:tmp|work|home|root|Users|var|private|mnt|opt|srv|usr|scratch)/"
                           r"[^\s\"'<>\\]*")
URL = re.compile(r"\b(?:https?|data):[^\s\"'<>)]*")  # URLs and inlined images are no folders
TRUNCATED = ("...", "\u2026")  # what pandas puts where it leaves rows, columns or text out
NO_NUMBER = {"NaN", "nan", "None", "NaT", "<NA>"}  # what pandas prints for a missing value
FIGURE_NUMBER = re.compile(r"Fig\.\s*\d")  # Sphinx numfig's caption prefix


class _Reader(html.parser.HTMLParser):
    """What a reader sees in one page's content (the `<article>`, not the theme's chrome):
    table cells' text, and each image with whether it sits in a `<figure>` whose `<figcaption>`
    carries a figure number."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = {"article": 0, "figure": 0, "figcaption": 0, "td": 0, "th": 0}
        self.cells: list[str] = []
        self.images: list[tuple[str, bool]] = []  # (src, numbered caption)
        self._cell: list[str] = []
        self._figure_imgs: list[str] = []
        self._caption: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.depth:
            self.depth[tag] += 1
            if tag in ("td", "th"):
                self._cell = []
            if tag == "figure":
                self._figure_imgs, self._caption = [], []
        if tag == "img" and self.depth["article"]:
            src = dict(attrs).get("src") or ""
            if self.depth["figure"]:
                self._figure_imgs.append(src)
            else:
                self.images.append((src, False))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.depth or not self.depth[tag]:
            return
        self.depth[tag] -= 1
        if tag in ("td", "th") and self.depth["article"]:
            self.cells.append(" ".join("".join(self._cell).split()))
        if tag == "figure":
            numbered = bool(FIGURE_NUMBER.search(" ".join(self._caption)))
            self.images += [(src, numbered) for src in self._figure_imgs]

    def handle_data(self, data: str) -> None:
        if self.depth["td"] or self.depth["th"]:
            self._cell.append(data)
        if self.depth["figcaption"]:
            self._caption.append(data)


def absolute_paths(text: str, folders: Sequence[str | Path] = ()) -> list[str]:
    """The absolute paths a page names: any of `folders` (the build and artifact folders), and
    any path under a machine's top folders (/tmp, /work, /home, ...); URLs are not paths."""
    text = URL.sub(" ", text.replace("file://", " "))
    found = ABSOLUTE_PATH.findall(text)
    named = [str(f) for f in folders if Path(f).is_absolute()]
    return found + [f for f in named if f in text and not any(f in m for m in found)]


def reader_problems(html_dir: Path, folders: Sequence[str | Path] = (), pages: list[str] | None = None) -> list[str]:
    """What a reader of the built site would trip over, one line each: what `check_html` finds
    (missing pages, broken links and images); an absolute path (`absolute_paths`, `folders`:
    the build's own) in any page, the search index or a copied source; a table cell cut by
    pandas ("..." or "\u2026") or showing NaN; an image in a page's content that is not a
    figure with a numbered caption ("Fig. N"). Empty when the site reads well."""
    html_dir = Path(html_dir)
    problems = check_html(html_dir, pages)
    for f in sorted(html_dir.rglob("*")):
        rel = f.relative_to(html_dir)
        if not f.is_file() or rel.parts[0] in ("_static", Path(MATHJAX_DIR).name) \
                or f.suffix not in (".html", ".js", ".txt", ".ipynb", ".md"):  # third-party bundles skipped
            continue
        text = f.read_text(errors="replace")
        problems += [f"{rel}: absolute path {p[:80]}" for p in dict.fromkeys(absolute_paths(text, folders))]
        if f.suffix != ".html":
            continue
        r = _Reader()
        r.feed(text)
        for c in r.cells:
            if c.endswith(TRUNCATED):
                problems.append(f"{rel}: table cell cut short: {c[-60:]!r}")
            elif c in NO_NUMBER:
                problems.append(f"{rel}: table cell {c!r} where a number or a dash belongs")
        problems += [f"{rel}: image {src[:60]} is not a numbered, captioned figure"
                     for src, numbered in r.images if not numbered]
    return problems
