"""Tables for reading: whole, formatted, a dash for no number, wide detail collapsed."""
import numpy as np
import pandas as pd

from lsda_core.publish import tables as T


def cells(page: str) -> list[str]:
    """The text of every <td> of an HTML table, in order."""
    return [c.split("</td>")[0] for c in page.split("<td>")[1:]]


def test_cell_formats_numbers_and_dashes_missing():
    assert T.cell(45.678, 1) == "45.7" and T.cell(45.0, 2) == "45.00" and T.cell(0.0012, None) == "0.0012"
    assert T.cell(7, 3) == "7" and T.cell(np.int64(7), 1) == "7" and T.cell(True) == "yes"
    assert T.cell(np.nan) == T.cell(None) == T.cell(" ") == T.DASH
    assert T.cell("text") == "text" and T.cell(("run", 0.5), None) == "run, 0.5"


def test_table_is_whole_with_fixed_decimals_and_no_nan():
    """60 rows and 30 columns (beyond pandas' display limits) and 200-character text: all shown,
    no "...", NaN as a dash, decimals per column."""
    df = pd.DataFrame(np.arange(1800, dtype=float).reshape(60, 30) / 7, columns=[f"c{i}" for i in range(30)])
    df.iloc[3, 4] = np.nan
    df["claim"] = "x" * 200
    t = T.readable(df, 1, column_digits={"c1": 3})
    page = t.to_html()
    got = cells(page)
    assert len(got) == 60 * 31 and "..." not in page and "NaN" not in page and "\u2026" not in page
    assert got[0] == "0.0" and got[1] == f"{1 / 7:.3f}" and got[3 * 31 + 4] == T.DASH and got[30] == "x" * 200
    assert 'style="overflow-x: auto' in page  # wide tables scroll, not clip
    assert t.loc[0, "c1"] == 1 / 7 and isinstance(t[["c1"]], T.Table)  # the values stay numbers


def test_text_is_escaped_except_html_columns():
    df = pd.DataFrame({"name": ["a<b"], "link": ['<a href="x.html">x</a>']}, index=pd.Index(["r&1"], name="row"))
    page = T.readable(df, html_cells=["link"]).to_html()
    assert "a&lt;b" in page and '<a href="x.html">x</a>' in page and "r&amp;1" in page
    assert "<th>row</th>" in page  # a named index reads as the first column


def test_main_columns_then_the_rest_collapsed_one_row_each():
    df = pd.DataFrame({"aero": [50.0, 60.0], "bike": [40.0, np.nan], "mAP": [45.0, 60.0]},
                      index=pd.Index(["fc6", "fc7"], name="detector"))
    page = T.readable(df, 1, main=["mAP"], detail="Per class").to_html()
    compact, detail = page.split("<details>")
    assert "<th>mAP</th>" in compact and "aero" not in compact
    assert detail.startswith("<summary>Per class</summary>") and detail.endswith("</details>")
    assert "<th>aero</th>" in detail and "<th>fc7</th>" in detail  # classes as rows, detectors as columns
    assert cells(detail) == ["50.0", "60.0", "40.0", T.DASH]


def test_groups_are_collapsible_tables_first_open():
    idx = pd.MultiIndex.from_tuples([("run a", "x"), ("run a", "y"), ("run b", "x")], names=["run", "what"])
    df = pd.DataFrame({"value": [1.5, 2.25, 3.0], "machine": ["m1", "m1", "m2"]}, index=idx)
    page = T.readable(df, None, group="run", shared=["machine"]).to_html()
    first, second = page.split("</details>")[:2]
    assert first.startswith("<details open><summary>run a; machine: m1</summary>")
    assert second.strip().startswith("<details><summary>run b; machine: m2</summary>")
    assert cells(first) == ["x", "1.5", "y", "2.25"] and "m1" not in first.split("</summary>")[1]


def test_empty_and_index_only_tables():
    assert T.readable(pd.DataFrame()).to_html() == f"<p>{T.DASH}</p>"
    only = T.readable(pd.DataFrame({"stage": ["no build on record yet"]}).set_index("stage")).to_html()
    assert "no build on record yet" in only


def test_detail_row_by_row_keeps_the_row_labels():
    """Long text left out of the table follows it row by row (not transposed), in a group's block too."""
    idx = pd.MultiIndex.from_tuples([("run a", "fast"), ("run a", "warp")], names=["run", "figure"])
    df = pd.DataFrame({"value": [1.0, 2.0], "what": ["fast detector, 2000 regions", "warping detector"],
                       "machine": ["m1", "m1"]}, index=idx)
    page = T.readable(df, 1, main=["value"], detail="What each figure measures", across=False, group="run",
                      shared=["machine"]).to_html()
    table, detail = page.split("<details><summary>What each figure measures</summary>")
    assert cells(table) == ["fast", "1.0", "warp", "2.0"] and "2000 regions" not in table
    assert cells(detail) == ["fast", "fast detector, 2000 regions", "warp", "warping detector"]


def test_detail_row_by_row_without_an_index_is_labelled_by_the_first_main_column():
    df = pd.DataFrame({"chapter": ["world", "rcnn"], "seconds": [1.0, 2.0], "machine": ["m1", "m2"]})
    page = T.readable(df, 1, main=["chapter", "seconds"], across=False).to_html()
    table, detail = page.split("<details>")
    assert cells(table) == ["world", "1.0", "rcnn", "2.0"] and cells(detail) == ["world", "m1", "rcnn", "m2"]
