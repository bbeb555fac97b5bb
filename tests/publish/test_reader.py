"""The built smoke book read as a reader would (the smoke build: tests/publish/conftest.py):
no absolute path anywhere, tables whole and without NaN, every figure numbered and captioned,
no broken link or image (`book.reader_problems`), code behind a toggle, no parameters cell."""
import re
from pathlib import Path

import nbformat
import pytest

from lsda_core.publish import book

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def problems(smoke_build):
    """Every reader problem of the built site, with the build's own folders named."""
    pages = [str(c.path.with_suffix(".html")) for c in book.chapters(ROOT)]
    return book.reader_problems(smoke_build / "html", [smoke_build, smoke_build.parent / "artifacts", ROOT], pages)


def of_kind(problems: list[str], *words: str) -> list[str]:
    return [p for p in problems if any(w in p for w in words)]


@pytest.mark.slow
def test_no_absolute_path_in_any_page(problems):
    assert of_kind(problems, "absolute path") == []


@pytest.mark.slow
def test_tables_are_whole_and_have_no_nan(problems):
    assert of_kind(problems, "table cell") == []


@pytest.mark.slow
def test_every_figure_is_numbered_and_captioned(problems):
    assert of_kind(problems, "captioned figure") == []


@pytest.mark.slow
def test_no_broken_link_or_image(problems):
    assert of_kind(problems, "missing", "does not exist") == []


@pytest.mark.slow
def test_code_is_behind_a_toggle_and_parameters_are_off_the_page(smoke_build):
    for ch in book.chapters(ROOT):
        if not ch.is_notebook:
            continue
        nb = nbformat.read(smoke_build / "src" / ch.path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        params = [c for c in code if set(c.metadata.get("tags", [])) & set(book.PARAMETER_TAGS)]
        assert params and all("remove-cell" in c.metadata["tags"] for c in params), ch.name
        assert all(any(t.startswith(("hide-", "remove-")) for t in c.metadata.get("tags", []))
                   for c in code), ch.name  # the chapter's own tag, else hide-input
        hidden = [c for c in code if "hide-input" in c.metadata.get("tags", [])]
        page = (smoke_build / "html" / ch.path.with_suffix(".html")).read_text()
        assert "tag_parameters" not in page and "tag_injected-parameters" not in page, ch.name
        assert page.count("tag_hide-input") == len(hidden), ch.name


@pytest.mark.slow
def test_rcnn_table_2_is_compact_with_per_class_detail_collapsed(smoke_build):
    page = (smoke_build / "html" / "book" / "rcnn.html").read_text()
    at = page.index("<th>paper mAP (VOC 2007)</th>")
    table = page[page.rindex("<table", 0, at):page.index("</table>", at)]
    assert re.findall(r"<th>(.*?)</th>", table) == ["detector", "mAP", "\u00b1 (bootstrap std)", "paper mAP (VOC 2007)"]
    after = page[page.index("</table></div>", at) + len("</table></div>"):]
    assert after.lstrip().startswith("<details><summary>Per-class AP (%) of every detector")
