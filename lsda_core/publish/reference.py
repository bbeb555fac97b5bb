"""The re-run page's reference: every parameter of the schema grouped by section (default,
allowed values, meaning), the presets in `params/` and what each is for, and the keys of a
parameter set that differ from the schema's defaults (the status page's compact listing).
Generated from `lsda_core.core.params`, so the page cannot drift from the schema."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from IPython.display import Markdown

from lsda_core.core import params as P
from lsda_core.core.errors import LsdaError
from lsda_core.publish import book

PRESETS_DIR = "params"
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def value_text(value: Any) -> str:
    """A parameter value as it is written in a preset (YAML flow style: `null`, `true`, `[22, 27]`)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown (GFM) table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows])


def parameter_reference() -> Markdown:
    """Every key of the schema, one table per section (led by what the section is for): the key
    as `-p` and `overrides` name it, its default, the values it allows and its meaning."""
    fields = P.schema_fields()
    parts = []
    for section, about in P.schema_sections().items():
        rows = [[f"`{f.section}.{f.key}`", f"`{value_text(f.default)}`", f.allowed or f"any {f.type}", f.help]
                for f in fields if f.section == section]
        parts.append(f"**{section}**: {about}\n\n" + _table(["key", "default", "allowed", "meaning"], rows))
    return Markdown("\n\n".join(parts))


def _purpose(text: str) -> str:
    """The first sentence of a preset's leading comment block (what the preset is for)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    comment = " ".join(lines)
    end = _SENTENCE_END.search(comment)
    return comment[:end.start() + 1] if end else comment


def _leaf_count(data: dict[str, Any]) -> int:
    """Keys a preset sets itself (sections' keys, not counting `base`)."""
    return sum(len(v) if isinstance(v, dict) else 1 for k, v in data.items() if k != "base")


def presets(folder: str | Path | None = None) -> Markdown:
    """The presets in `folder` (None: the project's `params/`): what each is for (its leading
    comment), the preset it builds on and how many keys it sets itself."""
    folder = Path(folder) if folder is not None else book.project_root() / PRESETS_DIR
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise LsdaError(f"{folder}: no parameter presets (*.yaml) found")
    rows = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
        base = f"`{data['base']}`" if "base" in data else "schema defaults"
        rows.append([f"`{f.name}`", _purpose(text) or "(no comment)", base, str(_leaf_count(data))])
    return Markdown(_table(["preset", "what it is for", "builds on", "keys it sets"], rows))


def non_defaults(p: P.Params) -> list[tuple[str, Any, Any]]:
    """(dotted key, value, schema default) of every key whose value differs from the schema's
    default, in schema order."""
    values, defaults = p.to_dict(), P.Params().to_dict()
    return [(f"{s}.{k}", v, defaults[s][k]) for s, keys in values.items() for k, v in keys.items()
            if v != defaults[s][k]]


def non_default_table(p: P.Params) -> str:
    """The keys of `p` that differ from the schema's defaults as a Markdown table (value, default);
    a path is shown as `book.presentable_path` shows it, never as a folder of the machine."""
    paths = {f"{f.section}.{f.key}" for f in P.schema_fields() if f.path}
    rows = [[f"`{k}`", f"`{book.presentable_path(v) if k in paths and isinstance(v, str) else value_text(v)}`",
             f"`{value_text(d)}`"] for k, v, d in non_defaults(p)]
    if not rows:
        return "Every key takes the schema's default."
    return _table(["key", "value", "schema default"], rows)
