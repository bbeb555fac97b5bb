"""Tables built for reading: every row and column (pandas' notebook display cuts wide and long
tables and long text with "..."), a fixed number of decimals per column, an em dash where there
is no number (never `NaN`), wide per-class columns in a collapsible block under a compact table,
and a frame that scrolls sideways instead of clipping a table wider than the page.

A `Table` is a DataFrame (tests and figures read its values as usual) that shows itself this way
in a notebook and in the book; `readable` makes one from any DataFrame."""
from __future__ import annotations

import html
import numbers
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

DASH = "\u2014"  # where the paper, or this run, has no number


def missing(value: Any) -> bool:
    """True for None and NaN (what a table shows as a dash)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are values, not missing
        return False


def cell(value: Any, digits: int | None = 1) -> str:
    """One value as text: a dash when missing or empty, a float with `digits` decimals (None: as short as
    it is exact), integers and text as they are, a tuple (a row of a multi-level index) joined."""
    if isinstance(value, tuple):
        return ", ".join(cell(v, digits) for v in value)
    if missing(value) or (isinstance(value, str) and not value.strip()):
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):g}" if digits is None else f"{float(value):.{digits}f}"
    return str(value)


class Table(pd.DataFrame):
    """A DataFrame shown whole for reading (see the module): `digits` decimals for float cells,
    `column_digits` per column where they differ; when `main` names columns, only those make the
    table and the others follow in a collapsed block titled `detail`, transposed (one row per
    column: per-class APs) when `across`, else row by row beside the row labels (long text; the
    labels are the index, or the first main column when the index is a plain row count);
    `html_cells` names the columns whose text is HTML already (links); `note` is a line of text
    under the table. When `group` names an index level, each of its values gets its own table
    in a collapsible block (the first one open) titled by the value and the `shared` columns'
    values (the same on every row of the group, so shown once)."""

    _metadata = ["digits", "column_digits", "main", "detail", "across", "html_cells", "note", "group", "shared"]
    digits: int | None = 1
    column_digits: Mapping[Any, int | None] = {}
    main: Sequence[Any] | None = None
    detail: str = "Detail"
    across: bool = True
    html_cells: Sequence[Any] = ()
    note: str = ""
    group: Any = None
    shared: Sequence[Any] = ()

    @property
    def _constructor(self) -> type[Table]:
        return Table

    def text(self) -> pd.DataFrame:
        """Every cell as the text the page shows (a plain DataFrame, same index and columns)."""
        return pd.DataFrame({i: [cell(v, self.column_digits.get(c, self.digits)) for v in self.iloc[:, i]]
                             for i, c in enumerate(self.columns)}, index=self.index).set_axis(self.columns, axis=1)

    def _html(self, shown: pd.DataFrame) -> str:
        """`shown` (cells as text) as an HTML table in a frame that scrolls sideways; a named index
        reads as the first columns, an unnamed one as row headers, a plain row count not at all."""
        def text(v: Any, raw: bool) -> str:
            return cell(v, None) if raw else html.escape(cell(v, None))

        named = any(n is not None for n in shown.index.names)
        keep_index = not named and not isinstance(shown.index, pd.RangeIndex)
        index_raw = "index" in self.html_cells
        if keep_index:
            shown = shown.set_axis(shown.index.map(lambda v: text(v, index_raw)), axis=0)
        levels = [str(n) for n in shown.index.names] if named else []
        shown = (shown.reset_index() if named else shown).astype(object)
        for i, c in enumerate(shown.columns):
            shown.iloc[:, i] = [text(v, index_raw if c in levels else c in self.html_cells) for v in shown.iloc[:, i]]
        shown.columns = shown.columns.map(lambda c: text(c, False))
        body = shown.to_html(escape=False, border=0, classes="lsda-table", max_rows=None, max_cols=None,
                             index=keep_index)
        return f'<div class="lsda-table-frame" style="overflow-x: auto; max-width: 100%;">{body}</div>'

    def to_html(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        """The table as the book shows it (see the class); arguments, if any, are pandas' own."""
        if args or kwargs:
            return pd.DataFrame(self).to_html(*args, **kwargs)
        if not len(self.index):
            return f"<p>{DASH}</p>"
        if self.group is not None:
            return self._groups_html()
        shown = self.text()
        main = [c for c in self.main if c in shown.columns] if self.main is not None else list(shown.columns)
        rest = [c for c in shown.columns if c not in main]
        parts = [self._html(shown[main])] if main or not rest else []
        if self.note:
            parts.append(f"<p><em>{html.escape(self.note)}</em></p>")
        if rest:
            labels = main[:1] if isinstance(self.index, pd.RangeIndex) else []
            block = shown[rest].T.rename_axis(index=None, columns=None) if self.across else shown[labels + rest]
            parts.append(f"<details><summary>{html.escape(self.detail)}</summary>{self._html(block)}</details>")
        return "\n".join(parts)

    def _groups_html(self) -> str:
        """One collapsible table per value of the `group` level (see the class)."""
        blocks = []
        for k, (value, rows) in enumerate(self.groupby(level=self.group, sort=False)):
            title = "; ".join([cell(value, None), *(f"{c}: {cell(rows[c].iloc[0], None)}" for c in self.shared)])
            part = readable(pd.DataFrame(rows).droplevel(self.group).drop(columns=list(self.shared)), self.digits,
                            column_digits=self.column_digits, main=self.main, detail=self.detail, across=self.across,
                            html_cells=self.html_cells)
            blocks.append(f"<details{' open' if k == 0 else ''}><summary>{html.escape(title)}</summary>"
                          f"{part.to_html()}</details>")
        return "\n".join(blocks + ([f"<p><em>{html.escape(self.note)}</em></p>"] if self.note else []))

    def _repr_html_(self) -> str:
        return self.to_html()


def readable(df: pd.DataFrame, digits: int | None = 1, *, column_digits: Mapping[Any, int | None] | None = None,
             main: Sequence[Any] | None = None, detail: str = "Detail", across: bool = True,
             html_cells: Sequence[Any] = (), note: str = "", group: Any = None, shared: Sequence[Any] = ()) -> Table:
    """`df` as a `Table` shown for reading (the arguments are the Table's, see there)."""
    t = Table(df)
    t.digits, t.column_digits, t.main, t.detail, t.across = digits, dict(column_digits or {}), main, detail, across
    t.html_cells, t.note, t.group, t.shared = tuple(html_cells), note, group, tuple(shared)
    return t
