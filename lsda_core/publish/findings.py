"""Findings and premises as data: each chapter judges the papers' claims (`paper.Claim`) with
the verdict rules (`stats.VERDICT_RULE`) and writes them, with its premises, to the build
folder; the build merges them into `findings.json` and `premises.json` (so two builds can be
diffed) and the intro page summarises them."""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lsda_core.evaluation import stats
from lsda_core.experiments.premises import PREMISES
from lsda_core.publish import paper
from lsda_core.publish.tables import DASH, Table, missing, readable
from lsda_core.store.files import atomic_write_text

FINDINGS_FILE = "findings.json"
PREMISES_FILE = "premises.json"
PARTS = "findings"  # subfolder of the build folder: one file per chapter


def judge(claims: Sequence[paper.Claim], points: dict[str, np.ndarray], samples: dict[str, np.ndarray],
          chapter: str, ours: dict[str, str] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """One finding per claim whose rows we have (an optimum: its chosen value and at least one
    other value of the paper's grid): the paper's effect, ours with its 95 % interval
    over training seeds and test images (`stats.effect`), the number of seeds, and the verdict.
    `points[row]`: mAP per seed, (S,); `samples[row]`: per seed and resample, (S, B), the same
    resamples for every row. `ours` maps a paper row to our detector's name."""
    ours = ours or {}
    rows = []
    for c in claims:
        name = {r: ours.get(r, r) for r in c.rows}
        needed = [r for r, _ in c.terms]
        if any(name[r] not in points for r in needed):
            continue
        if c.kind == "optimum":  # against the values of the paper's grid that our grid has
            alts = [a for a in c.alternatives if name[a] in points]
            if not alts:
                continue
            leads = [stats.effect([(name[needed[0]], 1.0), (name[alt], -1.0)], points, samples, seed)
                     for alt in alts]
            eff = min(leads, key=lambda e: e.point)  # the lead over the runner-up
            verdict = stats.optimum_verdict(leads)
        else:
            eff = stats.effect([(name[r], w) for r, w in c.terms], points, samples, seed)
            verdict = stats.verdict(c.kind, eff, c.paper, c.margin)
        lo, hi = (eff.lo90, eff.hi90) if c.kind == "no difference" else (eff.lo, eff.hi)
        rows.append({"id": c.id, "chapter": chapter, "claim": c.text, "kind": c.kind, "source": c.source,
                     "paper": c.paper, "ours": _num(eff.point), "ci_low": _num(lo), "ci_high": _num(hi),
                     "ci_level": 0.90 if c.kind == "no difference" else stats.LEVEL, "margin": c.margin,
                     "seeds": eff.seeds, "resamples": eff.resamples, "verdict": verdict, "section": c.section})
    return rows


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 3)


NBSP = "\u00a0"  # an interval breaks between its bounds and its level only


def table(rows: list[dict[str, Any]]) -> Table:
    """The findings as the chapters show them, claims in full: claim, kind, paper, ours
    [interval], seeds, verdict (numbers in points; an em dash where the paper gives no number)."""
    def fmt(x: float | None, digits: int = 1) -> str:
        return DASH if missing(x) else f"{x:+.{digits}f}"

    out = [{"finding": r["claim"], "kind": r["kind"] + (f" (margin {r['margin']:g})" if r["margin"] else ""),
            "paper": fmt(r["paper"], 2), "ours": fmt(r["ours"]),
            "interval": f"[{fmt(r['ci_low'])},{NBSP}{fmt(r['ci_high'])}] ({100 * r['ci_level']:.0f}{NBSP}%)",
            "seeds": r["seeds"], "verdict": r["verdict"]} for r in rows]
    return readable(pd.DataFrame(out).set_index("finding") if out else pd.DataFrame())


def rule_text(kinds: Sequence[str] | None = None) -> str:
    """The verdict rules of the given kinds (all when None), as a Markdown list for the page."""
    kinds = list(stats.VERDICT_RULE) if kinds is None else list(dict.fromkeys(kinds))
    return "\n".join(f"* **{k}**: {stats.VERDICT_RULE[k]}" for k in kinds)


def write_part(folder: str | Path | None, chapter: str, findings: list[dict[str, Any]],
               premises: list[dict[str, Any]]) -> Path | None:
    """Write one chapter's findings and premises to `folder/<chapter>.json` (the book injects
    `folder`; a chapter opened by hand, with None, writes nothing)."""
    if folder is None:
        return None
    path = Path(folder) / f"{chapter}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"chapter": chapter, "findings": findings, "premises": premises}, indent=1))
    return path


def merge(out: Path, order: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Gather the chapters' parts (in book `order`) into `out/findings.json` and `out/premises.json`
    and return both lists. A premise measured by several chapters is kept once (the first)."""
    parts = out / PARTS
    findings: list[dict[str, Any]] = []
    premises: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name in order:
        path = parts / f"{name}.json"
        if not path.is_file():
            continue
        part = json.loads(path.read_text())
        findings += part["findings"]
        for pr in part["premises"]:
            if pr["id"] not in seen:
                seen.add(pr["id"])
                premises.append({**pr, "chapter": name})
    atomic_write_text(out / FINDINGS_FILE, json.dumps(findings, indent=1))
    atomic_write_text(out / PREMISES_FILE, json.dumps(premises, indent=1))
    return findings, premises


def premise_rows(measured: dict[str, float | None]) -> list[dict[str, Any]]:
    """One row per premise a chapter measured, in `PREMISES` order: the premise, the paper's value
    and its source (`paper.PREMISES`), ours, the target, whether it is met, and what an unmet
    premise does to the findings (the chapters' premises tables and `premises.json`)."""
    rows = []
    for pr in PREMISES:
        if pr.id not in measured:
            continue
        ours = measured[pr.id]
        value, note = paper.PREMISES[pr.id]
        rows.append({"premise": pr.text, "id": pr.id, "paper": value, "paper_note": note,
                     "ours": None if ours is None else float(ours), "target": pr.target, "met": pr.met(ours),
                     "if_unmet": pr.if_unmet})
    return rows


def unmet_note(rows: list[dict[str, Any]]) -> str:
    """Markdown: each unmet premise and what it does to the findings (empty when all are met)."""
    bad = [r for r in rows if r["met"] is False]
    return "\n".join(f"* **Not met: {r['premise']}** ({r['ours']:.3g}, target {r['target']}): {r['if_unmet']}."
                     for r in bad)


def premises_table(rows: list[dict[str, Any]]) -> Table:
    """Premises as the pages show them: premise, paper, ours, target, met."""
    def fmt(x: float | None) -> str:
        return DASH if missing(x) else f"{x:.3g}"

    out = [{"premise": r["premise"], "paper": fmt(r["paper"]), "ours": fmt(r["ours"]), "target": r["target"],
            "met": {True: "yes", False: "NO", None: "\u2014"}[r["met"]]} for r in rows]
    return readable(pd.DataFrame(out).set_index("premise") if out else pd.DataFrame())


CHAPTER_TITLES = {"rcnn": "R-CNN", "segmentation": "R-CNN segmentation", "lsda": "LSDA"}


def summary(build_dir: str | Path | None) -> tuple[Any, Any]:
    """The intro page's summary from a build folder's merged files: every finding with a link to
    the chapter section that tests it, and every premise. Without a build folder (the page
    opened by hand), a note saying how to get them."""
    from IPython.display import Markdown
    if build_dir is None:
        note = Markdown("*Build the book (`make book`) to see this build's findings and premises here.*")
        return note, note
    out = Path(build_dir)
    f = json.loads((out / FINDINGS_FILE).read_text()) if (out / FINDINGS_FILE).is_file() else []
    p = json.loads((out / PREMISES_FILE).read_text()) if (out / PREMISES_FILE).is_file() else []
    t = table(f)
    if len(t):
        t.insert(0, "chapter", [f'<a href="{html.escape(r["chapter"])}.html#{html.escape(r["section"])}">'
                                f'{html.escape(CHAPTER_TITLES.get(r["chapter"], r["chapter"]))}</a>' for r in f])
        t.html_cells = ("chapter",)
    return t, premises_table(p)
