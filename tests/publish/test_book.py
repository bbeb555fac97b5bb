"""The smoke build of the whole book, and the checks its HTML must pass."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lsda_core.core import params as P
from lsda_core.publish import book

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
    a verdict of the stated rule) and premises into findings.json / premises.json, and the intro
    page shows them with links to the sections that test them."""
    from lsda_core.evaluation.stats import VERDICTS
    from lsda_core.publish import paper
    found = json.loads((smoke_build / "findings.json").read_text())
    assert [f["id"] for f in found] == [c.id for c in paper.RCNN_CLAIMS + paper.LSDA_CLAIMS]
    for f in found:
        assert f["verdict"] in VERDICTS and {"claim", "paper", "ours", "ci_low", "ci_high"} <= set(f)
        assert f["ci_low"] is None or f["ci_low"] <= f["ci_high"]
    assert {f["seeds"] for f in found if f["id"] in ("rcnn-ft-fc7", "lsda-transfer")} == {2}  # smoke: 2 seeds
    premises = json.loads((smoke_build / "premises.json").read_text())
    ids = [pr["id"] for pr in premises]
    assert len(ids) == len(set(ids)) and {"recall", "pretrain_val", "rcnn_headroom", "lsda_headroom"} <= set(ids)
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
