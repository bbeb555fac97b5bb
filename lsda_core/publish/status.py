"""The status page's tables: each chapter's parameters, run time and machine, read from the
run log that `lsda book` writes as chapters finish."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from IPython.display import Markdown

from lsda_core.core.params import Params
from lsda_core.store.cache import human_bytes


def read_run_log(path: str | Path) -> dict[str, Any]:
    """The build's run log (an empty one if no chapter has finished yet)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {"chapters": {}}


def chapter_table(log: dict[str, Any]) -> pd.DataFrame:
    """One row per executed chapter: parameters, digest, seconds, when, where."""
    rows = []
    for name, c in log["chapters"].items():
        over = ", ".join(f"{k}={v}" for k, v in c["overrides"].items()) or "none"
        rows.append({"chapter": name, "parameters": Path(c["params_file"]).name, "overrides": over,
                     "params digest": c["params_digest"], "run time (s)": c["seconds"],
                     "finished": c["finished"], "machine": f"{c['machine']['cpu']} ({c['machine']['cores']} cores)"
                     + ("" if c["machine"]["gpu"] == "none" else f", {c['machine']['gpu']}")})
    df = pd.DataFrame(rows)
    if len(df):
        total = {"chapter": "total", "run time (s)": round(df["run time (s)"].sum(), 1)}
        df = pd.concat([df, pd.DataFrame([total])], ignore_index=True).fillna("")
    return df


def machine_table(log: dict[str, Any]) -> pd.DataFrame:
    """The distinct machines the chapters ran on."""
    seen = {json.dumps(c["machine"], sort_keys=True) for c in log["chapters"].values()}
    return pd.DataFrame([json.loads(s) for s in sorted(seen)])


def params_listing(p: Params, params_file: str, overrides: dict[str, Any]) -> Markdown:
    """The validated parameters as a YAML block, with where they came from."""
    head = f"Preset `{Path(params_file).name}`" + (f", overrides `{overrides}`" if overrides else "")
    return Markdown(f"{head}, digest `{p.digest()}`:\n\n```yaml\n{yaml.safe_dump(p.to_dict(), sort_keys=False)}```")


# the book's budgets (DEVELOPERS guide / issue 6): from an empty cache and with a warm one
BUDGET_SECONDS = {"cold": 30 * 60, "warm": 3 * 60}


def build_table(log: dict[str, Any]) -> pd.DataFrame:
    """The latest cold and warm full builds on record (world and chapters, before this page
    and the HTML) against the book's budgets, each with its machine."""
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
                     "finished": b["finished"],
                     "machine": f"{m['cpu']} ({m['cores']} cores)" + ("" if m["gpu"] == "none" else f", {m['gpu']}")})
    return pd.DataFrame(rows).set_index("build")


def stage_table(log: dict[str, Any], kind: str = "cold") -> pd.DataFrame:
    """Where the latest `kind` build's time and space went: per cached stage, the entries it
    built, their own build seconds (without entries built inside them) and share of the
    build, and the stage's bytes when the chapters were done (scratch stages are removed
    after that); longest first. The total's size is what the artifact folder keeps."""
    runs = [b for b in log.get("builds", []) if b["cache"] == kind and "stages" in b]
    if not runs:
        return pd.DataFrame({"stage": [f"no {kind} build with stage times on record yet"]}).set_index("stage")
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
    return pd.DataFrame(rows).drop(columns="bytes").set_index("stage")
