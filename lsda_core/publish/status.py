"""The status page's tables: each chapter's parameters, run time and machine, read from the
run log that `lsda book` writes as chapters finish."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from IPython.display import Markdown

from lsda_core.core.params import Params
from lsda_core.publish import book, reference
from lsda_core.publish.tables import Table, readable
from lsda_core.store.cache import human_bytes


def read_run_log(path: str | Path) -> dict[str, Any]:
    """The build's run log (an empty one if no chapter has finished yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {"chapters": {}}


def cold_seconds(log: dict[str, Any]) -> dict[str, float]:
    """Each chapter's run time in the latest cold build (from an empty cache) that recorded them;
    empty when there is none."""
    runs = [b for b in log.get("builds", []) if b["cache"] == "cold" and "chapters" in b]
    return runs[-1]["chapters"] if runs else {}


def chapter_table(log: dict[str, Any], order: Sequence[str] | None = None) -> Table:
    """One row per executed chapter, in book order (`order`; None: `_toc.yml`'s, chapters it
    does not name last): parameters, digest, the latest run's seconds and the latest cold
    build's, when, where."""
    order = list(order) if order is not None else [c.name for c in book.chapters(book.project_root())]
    names = sorted(log["chapters"], key=lambda n: (order.index(n) if n in order else len(order), n))
    cold = cold_seconds(log)
    rows = []
    for name in names:
        c = log["chapters"][name]
        over = ", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "none"
        rows.append({"chapter": name, "parameters": Path(c["params_file"]).name, "overrides": over,
                     "params digest": c["params_digest"], "run time (s)": c["seconds"],
                     "in the latest cold build (s)": cold.get(name, "\u2014"),
                     "finished": c["finished"], "machine": f"{c['machine']['cpu']} ({c['machine']['cores']} cores)"
                     + ("" if c["machine"]["gpu"] == "none" else f", {c['machine']['gpu']}")})
    df = pd.DataFrame(rows)
    if len(df):
        total = {"chapter": "total", "run time (s)": round(df["run time (s)"].sum(), 1),
                 "in the latest cold build (s)": round(sum(cold.values()), 1) if cold else "\u2014"}
        df = pd.concat([df, pd.DataFrame([total])], ignore_index=True).fillna("")
    return readable(df, 1, main=("chapter", "run time (s)", "in the latest cold build (s)", "finished"),
                    detail="Each chapter's parameters and machine", across=False)


def machine_table(log: dict[str, Any]) -> Table:
    """The distinct machines the chapters ran on."""
    seen = {json.dumps(c["machine"], sort_keys=True) for c in log["chapters"].values()}
    return readable(pd.DataFrame([json.loads(s) for s in sorted(seen)]), None)


_RESOLVED_HEAD = re.compile(r"^# resolved parameters, digest \w+: (.+?)(?: with .*)?$")  # book.resolve_params


def preset_of(params_file: str | Path) -> str:
    """The preset a parameter file came from, as a page may show it: for a build's resolved file
    the preset its first line names (`book.resolve_params`), else the file itself."""
    path = Path(params_file)
    first = path.read_text(encoding="utf-8").split("\n", 1)[0] if path.is_file() else ""
    m = _RESOLVED_HEAD.match(first)
    return book.presentable_path(m.group(1) if m else path)


def params_listing(p: Params, params_file: str, overrides: dict[str, Any]) -> Markdown:
    """Where the parameters came from and the keys that differ from the schema's defaults (every
    other key takes its default; the re-run page lists them all), instead of every key."""
    head = f"Preset `{preset_of(params_file)}`" + (f", overrides `{overrides}`" if overrides else "")
    return Markdown(f"{head}, digest `{p.digest()}`. The keys that differ from the schema's defaults:\n\n"
                    + reference.non_default_table(p))


# the book's budgets (DEVELOPERS guide / issue 6): from an empty cache and with a warm one
BUDGET_SECONDS = {"cold": 30 * 60, "warm": 3 * 60}


def restarts_text(build: dict[str, Any]) -> str:
    """Where a build restarted its shared kernel (`book.renew_if_large`) and what it held then."""
    if "kernel_restarts" not in build:
        return "not recorded"
    held = build["kernel_restarts"]
    return ", ".join(f"after {c} ({human_bytes(n)})" for c, n in held.items()) if held else "none"


def build_table(log: dict[str, Any]) -> Table:
    """The latest cold and warm full builds on record (world and chapters, before this page
    and the HTML) against the book's budgets, each with its machine and kernel restarts."""
    rows = []
    for kind in ("cold", "warm"):
        runs = [b for b in log.get("builds", []) if b["cache"] == kind]
        if not runs:
            rows.append({"build": kind, "seconds": None, "budget (s)": BUDGET_SECONDS[kind], "met": "not run yet"})
            continue
        b = runs[-1]
        m = b["machine"]
        rows.append({"build": kind, "seconds": b["seconds"], "budget (s)": BUDGET_SECONDS[kind],
                     "met": "yes" if b["seconds"] <= BUDGET_SECONDS[kind] else "no",
                     "cache entries built / reused": f"{b['entries_built']} / {b['entries_reused']}",
                     "artifacts": human_bytes(b["artifacts_bytes"]) if "artifacts_bytes" in b else "not recorded",
                     "kernel restarts": restarts_text(b),
                     "finished": b["finished"],
                     "machine": f"{m['cpu']} ({m['cores']} cores)" + ("" if m["gpu"] == "none" else f", {m['gpu']}")})
    return readable(pd.DataFrame(rows).set_index("build"), 1)


def stage_table(log: dict[str, Any], kind: str = "cold") -> Table:
    """Where the latest `kind` build's time and space went: per cached stage, the entries it
    built, their own build seconds (without entries built inside them) and share of the
    build, and the stage's bytes when the chapters were done (scratch stages are removed
    after that); longest first. The total's size is what the artifact folder keeps."""
    runs = [b for b in log.get("builds", []) if b["cache"] == kind and "stages" in b]
    if not runs:
        return readable(pd.DataFrame({"stage": [f"no {kind} build with stage times on record yet"]}).set_index("stage"))
    b = runs[-1]
    rows = [{"stage": name, "entries built": st["built"], "seconds": st["seconds"],
             "share of the build": f"{st['seconds'] / b['seconds']:.0%}",
             "size": human_bytes(st["bytes"]) + (" (scratch: removed after the build)" if st.get("removed") else ""),
             "bytes": st["bytes"]} for name, st in b["stages"].items()]
    rows.sort(key=lambda r: (-r["seconds"], -r["bytes"]))
    rest = b["seconds"] - sum(r["seconds"] for r in rows)
    rows.append({"stage": "outside cached stages (loading, evaluation, figures)", "entries built": "",
                 "seconds": round(rest, 1), "share of the build": f"{rest / b['seconds']:.0%}", "size": "", "bytes": 0})
    rows.append({"stage": "total", "entries built": b["entries_built"], "seconds": b["seconds"],
                 "share of the build": "100%", "size": human_bytes(b["artifacts_bytes"]), "bytes": b["artifacts_bytes"]})
    return readable(pd.DataFrame(rows).drop(columns="bytes").set_index("stage"), 1)
