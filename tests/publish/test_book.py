"""The smoke build of the whole book, and the checks its HTML must pass."""
import json
import re
import threading
from pathlib import Path

import nbformat
import pytest

from lsda_core.core import params as P
from lsda_core.publish import book

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_chapter_page_exists(smoke_build):
    html = smoke_build / "html"
    for ch in book.chapters(ROOT):
        assert (html / ch.path.with_suffix(".html")).is_file(), ch.path
    assert (html / "index.html").is_file()


@pytest.mark.slow
def test_html_images_and_links_resolve(smoke_build):
    html = smoke_build / "html"
    pages = [str(c.path.with_suffix(".html")) for c in book.chapters(ROOT)]
    assert book.check_html(html, pages) == []
    # and the chapters do show figures
    assert list((html / "_images").glob("*.png"))


@pytest.mark.slow
def test_executed_notebooks_have_outputs_and_sources_do_not(smoke_build):
    for ch in book.chapters(ROOT):
        if not ch.is_notebook:
            continue
        src = nbformat.read(ROOT / ch.path, as_version=4)
        assert not any(c.get("outputs") for c in src.cells if c.cell_type == "code"), f"{ch.path} has outputs in git"
        done = nbformat.read(smoke_build / "src" / ch.path, as_version=4)
        assert any(c.get("outputs") for c in done.cells if c.cell_type == "code"), f"{ch.path} was not executed"


@pytest.mark.slow
def test_run_log_and_status_page(smoke_build):
    log = json.loads((smoke_build / "run_log.json").read_text())
    notebooks = [c.name for c in book.chapters(ROOT) if c.is_notebook]
    assert sorted(log["chapters"]) == sorted(notebooks)
    for entry in log["chapters"].values():
        assert entry["seconds"] > 0 and entry["machine"]["cores"] >= 1
        assert entry["params_file"] == book.RESOLVED and entry["params_digest"] == log["params"]["digest"]
    resolved = smoke_build / book.RESOLVED  # the parameters, resolved once for every chapter
    assert P.load(resolved).to_dict() == log["params"]["values"]
    assert log["params"]["digest"] == P.load(resolved).digest() and "smoke.yaml" in resolved.read_text().splitlines()[0]
    status = (smoke_build / "html" / "book" / "status.html").read_text()
    for name in notebooks:
        assert name in status
    (build,) = log["builds"]  # one full build, from an empty cache
    assert build["cache"] == "cold" and build["entries_reused"] == 0 and build["entries_built"] > 0
    assert 0 < build["seconds"] < sum(e["seconds"] for e in log["chapters"].values()) + 600
    # where the time and the space went: every stage built, none counted twice
    artifacts = Path(log["params"]["values"]["runtime"]["artifacts"])
    stages = build["stages"]
    assert {"world", "pretrain", "finetune", "pool5-ft", "hog", "svm", "detections"} <= set(stages)
    assert sum(s["built"] for s in stages.values()) == build["entries_built"]
    assert 0 < sum(s["seconds"] for s in stages.values()) <= build["seconds"]
    # the scratch stages (features, decoded images) are gone; the size kept is the rest's
    removed = {n for n, s in stages.items() if s["removed"]}
    assert {"pool5-ft", "pool5-pre", "hog", "cls-images"} <= removed and "detections" not in removed
    assert not any((artifacts / n).exists() for n in removed)
    on_disk = sum(f.stat().st_size for f in artifacts.rglob("*") if f.is_file() and "bench" not in f.parts)
    assert build["artifacts_bytes"] == sum(s["bytes"] for n, s in stages.items() if n not in removed) <= on_disk
    assert "Where the cold build" in status and "removed after the build" in status
    assert "Build times" in status and "not run yet" in status  # no warm build on record yet


@pytest.mark.slow
def test_findings_and_premises_of_the_build(smoke_build):
    """The build merges the chapters' findings (every claim of both papers, with an interval and
    a verdict of the stated rule, in book order: R-CNN, its segmentation section, LSDA) and
    premises into findings.json / premises.json, and the intro page shows them with links to the
    sections that test them."""
    from lsda_core.evaluation.stats import VERDICTS
    from lsda_core.publish import paper
    found = json.loads((smoke_build / "findings.json").read_text())
    assert [f["id"] for f in found] == [c.id for c in paper.RCNN_CLAIMS + paper.SEG_CLAIMS + paper.LSDA_CLAIMS]
    for f in found:
        assert f["verdict"] in VERDICTS and {"claim", "paper", "ours", "ci_low", "ci_high"} <= set(f)
        assert f["ci_low"] is None or f["ci_low"] <= f["ci_high"]
    assert {f["seeds"] for f in found if f["id"] in ("rcnn-ft-fc7", "lsda-transfer")} == {2}  # smoke: 2 seeds
    premises = json.loads((smoke_build / "premises.json").read_text())
    ids = [pr["id"] for pr in premises]
    assert len(ids) == len(set(ids))
    assert {"recall", "pretrain_val", "rcnn_headroom", "seg_recall", "seg_headroom", "lsda_headroom"} <= set(ids)
    assert all(set(pr) >= {"premise", "paper", "ours", "target", "met"} for pr in premises)
    intro = (smoke_build / "html" / "book" / "intro.html").read_text()
    assert 'href="rcnn.html#table-2-which-layer-and-what-fine-tuning-adds"' in intro
    assert paper.RCNN_CLAIMS[0].text in intro and "Premises" in intro


def test_chapter_metrics_reads_the_chapters_findings(tmp_path, monkeypatch):
    """`lsda sweep rcnn`: each point runs the chapter into its own folder (named by the parameter
    digest) and returns its findings' effects and premises' values by id."""
    runs = []

    def execute(root, chapter, p, resolved, out, progress=True):
        runs.append((chapter.name, out, P.load(resolved).digest() == p.digest()))
        part = {"findings": [{"id": "rcnn-ft-fc7", "ours": 3.5}], "premises": [{"id": "recall", "ours": 0.8}]}
        (out / "findings").mkdir(parents=True)
        (out / "findings" / "rcnn.json").write_text(json.dumps(part))
        return 1.0

    monkeypatch.setattr(book, "execute_chapter", execute)
    p = P.load("params/smoke.yaml")
    assert book.chapter_metrics("rcnn", tmp_path)(p, None) == {"rcnn-ft-fc7": 3.5, "recall": 0.8}
    assert runs == [("rcnn", tmp_path / p.digest(), True)]
    with pytest.raises(book.LsdaError, match="only chapters that judge claims"):
        book.chapter_metrics("world", tmp_path)


@pytest.mark.slow
def test_figures_saved_as_png_and_svg(smoke_build):
    figs = smoke_build / "src" / "book" / "figures"
    pngs = sorted(figs.rglob("*.png"))
    assert pngs
    for p in pngs:
        assert p.with_suffix(".svg").is_file()


def test_check_html_finds_broken_things(tmp_path):
    (tmp_path / "a.html").write_text('<h1 id="top">A</h1><img src="missing.png"><a href="b.html#nope">b</a>'
                                     '<a href="gone.html">x</a><a href="#top">ok</a><a href="https://x.org">ext</a>')
    (tmp_path / "b.html").write_text('<p id="here">B</p><a href="a.html#top">back</a>')
    problems = book.check_html(tmp_path, pages=["a.html", "c.html"])
    assert "missing page c.html" in problems
    assert any("image missing.png" in p for p in problems)
    assert any("b.html#nope" in p and "anchor" in p for p in problems)
    assert any("gone.html" in p for p in problems)
    assert len(problems) == 4


def test_failing_chapter_names_cell_and_error(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/bad\n")
    nb = nbformat.v4.new_notebook()
    params_cell = nbformat.v4.new_code_cell("params_file = ''\noverrides = {}\nfigures_dir = ''")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 1 / 0")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "book" / "bad.ipynb")
    ch = book.find_chapter(tmp_path, "bad")
    p, resolved = book.resolve_params(ROOT / "params" / "smoke.yaml", {}, tmp_path / "out")
    with pytest.raises(book.ChapterError, match=r"chapter 'bad' failed in cell \d+ .*y = 1 / 0.*ZeroDivisionError"):
        book.execute_chapter(tmp_path, ch, p, resolved, tmp_path / "out", progress=False)


def test_a_chapter_gets_only_the_parameters_it_declares(tmp_path, caplog):
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/few\n")
    nb = nbformat.v4.new_notebook()
    params_cell = nbformat.v4.new_code_cell("figures_dir = ''")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell("assert figures_dir.endswith('few')\n"
                                                       "assert 'params_file' not in globals()")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "book" / "few.ipynb")
    p, resolved = book.resolve_params(ROOT / "params" / "smoke.yaml", {}, tmp_path / "out")
    book.execute_chapter(tmp_path, book.find_chapter(tmp_path, "few"), p, resolved, tmp_path / "out", progress=False)
    assert "unknown parameter" not in caplog.text  # Papermill warns of each one it is given in vain


def test_chapters_in_a_shared_kernel_start_from_an_empty_namespace(tmp_path):
    """The second chapter in the build's one kernel sees no variable and no figure of the first,
    keeps its imports, and its executed copy is numbered from 1 as in a kernel of its own."""
    (tmp_path / "book").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/first\nchapters:\n- file: book/second\n")
    bodies = {"first": "import colorsys\nimport matplotlib.pyplot as plt\nleak = plt.figure()",
              "second": "import sys\nassert 'leak' not in globals() and 'plt' not in globals()\n"
                        "assert 'colorsys' in sys.modules\n"
                        "import matplotlib.pyplot as plt\nassert plt.get_fignums() == []\n7"}
    for name, body in bodies.items():
        nb = nbformat.v4.new_notebook()
        params_cell = nbformat.v4.new_code_cell("figures_dir = ''")
        params_cell.metadata["tags"] = ["parameters"]
        nb.cells = [params_cell, nbformat.v4.new_code_cell(body)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "book" / f"{name}.ipynb")
    p, resolved = book.resolve_params(ROOT / "params" / "smoke.yaml", {}, tmp_path / "out")
    with book.shared_kernel(tmp_path) as kernel:
        for name in bodies:
            book.execute_chapter(tmp_path, book.find_chapter(tmp_path, name), p, resolved, tmp_path / "out",
                                 progress=False, kernel=kernel)
    # no kernel client left open: its sockets would retry the dead kernel from zmq's thread
    assert not [t for t in threading.enumerate() if type(t).__name__ == "HBChannel" and t.is_alive()]
    done = nbformat.read(tmp_path / "out" / "src" / "book" / "second.ipynb", as_version=4)
    counts = [c.execution_count for c in done.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    assert done.cells[-1].outputs[0]["execution_count"] == counts[-1]


def _run_in(kernel, code: str) -> str:
    """What `code` prints in a running kernel."""
    kc = kernel.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        seen: list[str] = []
        kc.execute_interactive(code, timeout=60, output_hook=lambda m: seen.append(m["content"].get("text", "")))
    finally:
        kc.stop_channels()
    return "".join(seen).strip()


def test_a_large_shared_kernel_is_restarted_and_a_small_one_kept(tmp_path):
    """Over the limit the kernel is a new process in the same folder; under it, the same process."""
    with book.shared_kernel(tmp_path) as kernel:
        first = _run_in(kernel, "import os; print(os.getpid())")
        held = book.kernel_rss(kernel)
        assert held is not None and held > 10 * 2**20  # a running Python kernel holds some tens of MB
        assert book.renew_if_large(kernel, limit=100 * 2**30) is None
        assert _run_in(kernel, "import os; print(os.getpid())") == first
        assert book.renew_if_large(kernel, limit=2**20) == pytest.approx(held, rel=0.5)
        assert _run_in(kernel, "import os; print(os.getpid())") != first
        assert _run_in(kernel, "import os; print(os.getcwd())") == str(tmp_path)


def test_unknown_chapter_lists_chapters():
    with pytest.raises(book.LsdaError, match="unknown chapter 'nope'; chapters: .*world"):
        book.find_chapter(ROOT, "nope")


def test_resolved_params_round_trip(tmp_path):
    """The one resolved file gives back exactly the validated parameters, quoted strings included."""
    p, resolved = book.resolve_params(ROOT / "params" / "smoke.yaml", {"units.category": "007", "svm.C": 0.5},
                                      tmp_path)
    again = P.load(resolved)
    assert again == p and again.units.category == "007" and again.svm.C == 0.5
    assert resolved.read_text().startswith(f"# resolved parameters, digest {p.digest()}")


@pytest.mark.slow
def test_lsda_sweep_measures_the_chapters_premise_from_its_cache(smoke_build):
    """`lsda sweep lsda_headroom` reads the LSDA chapter's own cache entries (nothing rebuilt)
    and gives the premise the chapter published."""
    from lsda_core.experiments import sweep
    from lsda_core.store.cache import Cache
    artifacts = smoke_build.parent / "artifacts"
    p = P.load(ROOT / "params" / "smoke.yaml", {"runtime.artifacts": str(artifacts), "runtime.progress": False})
    before = sorted(str(x) for x in artifacts.glob("*/*"))
    measured = sweep.MEASUREMENTS["lsda_headroom"](p, Cache(artifacts))
    assert sorted(str(x) for x in artifacts.glob("*/*")) == before
    published = {pr["id"]: pr["ours"] for pr in json.loads((smoke_build / "premises.json").read_text())}
    assert measured["lsda_headroom"] == pytest.approx(published["lsda_headroom"])
    assert measured["lsda_headroom"] == pytest.approx(measured["oracle_held_out_map"] / measured["cls_held_out_map"])


def test_stage_sources_leaves_out_what_jupyterlab_runs_wrote(tmp_path):
    """A chapter run in JupyterLab (cwd book/) leaves its cache and figures beside the notebooks;
    the build copies the book's sources, not those."""
    (tmp_path / "book" / "artifacts" / "world").mkdir(parents=True)
    (tmp_path / "book" / "figures" / "world").mkdir(parents=True)
    for f in ("_config.yml", "_toc.yml", "book/a.ipynb", "book/refs.bib", "book/artifacts/world/x.npz",
              "book/figures/world/f.png"):
        (tmp_path / f).write_text("x")
    book.stage_sources(tmp_path, tmp_path / "out" / "src")
    copied = sorted(str(p.relative_to(tmp_path / "out" / "src")) for p in (tmp_path / "out" / "src").rglob("*")
                    if p.is_file())
    assert copied == sorted(["_config.yml", "_toc.yml", f"{book.MATHJAX_DIR}/LICENSE",
                             f"{book.MATHJAX_DIR}/tex-svg-full.js", "book/a.ipynb", "book/refs.bib"])


@pytest.mark.slow
def test_status_page_lists_chapters_in_book_order_with_cold_times(smoke_build):
    log = json.loads((smoke_build / "run_log.json").read_text())
    notebooks = [c.name for c in book.chapters(ROOT) if c.is_notebook]
    (build,) = log["builds"]
    assert set(build["chapters"]) == set(notebooks) - {book.STATUS_CHAPTER}  # it runs after the record
    assert all(s > 0 for s in build["chapters"].values())
    status = (smoke_build / "html" / "book" / "status.html").read_text()
    chapters = status[status.index('id="chapters"'):]
    table = chapters[chapters.index("<table"):]
    positions = [re.search(rf">\s*{n}\s*<", table).start() for n in notebooks]
    assert positions == sorted(positions), "chapters not in book order"
    assert "in the latest cold build (s)" in status and "differ from the schema" in status
    assert "n_categories" in status and "neg_iou_grid" not in status  # changed keys only


def test_prepare_for_reading_hides_code_removes_parameters_and_relativises_paths(tmp_path):
    """The executed copy: code input behind a toggle, both parameter cells off the page, and the
    injected paths relative to the notebook's folder, in the cell and in Papermill's metadata."""
    out = tmp_path / "out"
    dest = out / "src" / "book" / "ch.ipynb"
    dest.parent.mkdir(parents=True)
    injected = {"params_file": str(out / book.RESOLVED), "overrides": {"svm.C": 0.5},
                "figures_dir": str(dest.parent / "figures" / "ch")}
    nb = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_code_cell("params_file = ''"), nbformat.v4.new_code_cell("# Parameters\nx = '/abs'"),
             nbformat.v4.new_code_cell("print(1)"), nbformat.v4.new_code_cell("print(2)"),
             nbformat.v4.new_code_cell("print(3)"), nbformat.v4.new_markdown_cell("prose")]
    cells[0].metadata["tags"] = ["parameters"]
    cells[1].metadata["tags"] = ["injected-parameters"]
    cells[2].metadata["tags"] = ["keep-me"]
    cells[3].metadata["tags"] = ["remove-input"]  # the chapter's own choice stands
    nb.cells = cells
    nb.metadata["papermill"] = {"input_path": "/work/x.ipynb", "output_path": str(dest), "parameters": injected}
    nbformat.write(nb, dest)
    book.prepare_for_reading(dest, injected)
    done = nbformat.read(dest, as_version=4)
    assert [c.metadata.get("tags") for c in done.cells] == [["parameters", "remove-cell"],
                                                            ["injected-parameters", "remove-cell"],
                                                            ["keep-me", "hide-input"], ["remove-input"],
                                                            ["hide-input"], None]
    assert 'params_file = "../../params.resolved.yaml"' in done.cells[1].source
    assert 'figures_dir = "figures/ch"' in done.cells[1].source and "svm.C" in done.cells[1].source
    assert done.metadata["papermill"] == {"parameters": {**injected, "params_file": "../../params.resolved.yaml",
                                                         "figures_dir": "figures/ch"}}
    assert str(tmp_path) not in dest.read_text() and "/work/" not in dest.read_text()


def test_presentable_path_is_never_absolute(tmp_path):
    root, art = tmp_path / "project", tmp_path / "elsewhere" / "art"
    assert book.presentable_path(root / "artifacts" / "world" / "k", [art], root) == "artifacts/world/k"
    assert book.presentable_path(art / "world" / "k", [art, art.parent], root) == ".../art/world/k"
    assert book.presentable_path(tmp_path / "x" / "y.yaml", [art], root) == ".../y.yaml"
    assert book.presentable_path("params/smoke.yaml", [art], root) == "params/smoke.yaml"


CLEAN_PAGE = """<html><body><nav><img src="logo.png"> /tmp is not named here</nav>
<article class="bd-article"><h1 id="top">Page</h1>
<figure id="fig-a"><img src="a.png" alt="a"><figcaption><p><span class="caption-number">Fig. 1 </span>
<span class="caption-text">What it shows.</span></p></figcaption></figure>
<table><tr><th>detector</th><th>mAP</th></tr><tr><td>fc7</td><td>45.0</td></tr>
<tr><td>BB</td><td>\u2014</td></tr></table>
<p>See <a href="#fig-a">Fig. 1</a>, <a href="https://example.org/home/x">a site</a> and
<img src="data:image/png;base64,AAAA/tmp/BBBB" alt="inline"/> in a figure:</p>
</article></body></html>"""


def test_reader_problems_passes_a_clean_page(tmp_path):
    (tmp_path / "page.html").write_text(CLEAN_PAGE.replace('<img src="data', '<figure><img src="data')
                                        .replace('alt="inline"/>', 'alt="inline"/><figcaption>Fig. 2 x</figcaption>'
                                                                   '</figure>'))
    for f in ("logo.png", "a.png"):
        (tmp_path / f).write_bytes(b"png")
    assert book.reader_problems(tmp_path, [tmp_path / "build"]) == []


def test_reader_problems_finds_each_kind(tmp_path):
    """Each problem a reader would trip over is named once, with its page."""
    page = (CLEAN_PAGE
            .replace("<p>See", "<p>world files under /tmp/sb/art/world/f20e and /data/build/x.yaml. See")
            .replace("<td>45.0</td>", "<td>...</td><td>is pre-training optimisation-limited? twice th...</td>"
                                      "<td>NaN</td><td>claim cut\u2026</td><td>None</td><td>none</td>")
            .replace('<a href="#fig-a">', '<a href="#nowhere">')
            .replace('<figcaption><p><span class="caption-number">Fig. 1 </span>', "<figcaption><p>")
            .replace('<img src="data', '<img src="missing.png"> <img src="data'))
    (tmp_path / "page.html").write_text(page)
    (tmp_path / "_sources").mkdir()
    (tmp_path / "_sources" / "page.ipynb.txt").write_text('{"input_path": "/work/main/book/page.ipynb"}')
    for f in ("logo.png", "a.png"):
        (tmp_path / f).write_bytes(b"png")
    problems = book.reader_problems(tmp_path, ["/data/build"])
    expected = ["page.html: link #nowhere points to a missing anchor",
                "page.html: image missing.png does not exist",
                "_sources/page.ipynb.txt: absolute path /work/main/book/page.ipynb",
                "page.html: absolute path /tmp/sb/art/world/f20e",
                "page.html: absolute path /data/build",
                "page.html: table cell cut short: '...'",
                "page.html: table cell cut short: 'is pre-training optimisation-limited? twice th...'",
                "page.html: table cell 'NaN' where a number or a dash belongs",
                "page.html: table cell cut short: 'claim cut\u2026'",
                "page.html: table cell 'None' where a number or a dash belongs",
                "page.html: image a.png is not a numbered, captioned figure",
                "page.html: image missing.png is not a numbered, captioned figure",
                "page.html: image data:image/png;base64,AAAA/tmp/BBBB is not a numbered, captioned figure"]
    assert sorted(problems) == sorted(expected)


def test_stage_sources_copies_the_books_css(tmp_path):
    """The book's own CSS (_static/, which Jupyter Book links into every page) goes into the build."""
    for f in ("_config.yml", "_toc.yml", "book/a.ipynb", "_static/lsda.css"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    book.stage_sources(tmp_path, tmp_path / "out" / "src")
    assert (tmp_path / "out" / "src" / "_static" / "lsda.css").read_text() == "x"
    assert (ROOT / "_static" / "lsda.css").is_file()


def test_staged_sources_carry_mathjax_and_the_config_points_at_it(tmp_path):
    """Equations render offline: the staged sources hold MathJax in the folder html_extra_path
    names, and mathjax_path (which Sphinx puts under _static/) reaches that copy, not a CDN."""
    import yaml
    book.stage_sources(ROOT, tmp_path / "src")
    conf = yaml.safe_load((tmp_path / "src" / "_config.yml").read_text())["sphinx"]["config"]
    path = conf["mathjax_path"]
    assert "://" not in path and not path.startswith("//")
    extra, = conf["html_extra_path"]
    served = (tmp_path / "src" / extra).resolve()  # the site's root gets this folder's contents
    entry = (served / "_static" / path).resolve()
    assert entry.is_file() and entry.is_relative_to(served) and entry.name == "tex-svg-full.js"
    assert "MathJax" in entry.read_text() and (entry.parent / "LICENSE").is_file()
    assert not (ROOT / extra).exists()  # never into the repository


def test_missing_mathjax_package_is_named(tmp_path, monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(book.LsdaError, match=r"install the pip package django-static-mathjax"):
        book.stage_mathjax(tmp_path)
