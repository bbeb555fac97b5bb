"""`lsda sweep`: one named measurement over a grid of parameter values, every point cached.

A point is the preset with the base overrides and the point's values on top, loaded and
validated like any run; the measurement reads cached stages, so a point seen before costs
nothing. Rows can be appended to a record file (JSON lines), the calibration log the book's
appendix publishes: every run is kept, none is overwritten.
"""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable

from lsda_core.core import params as P
from lsda_core.core import yamltext
from lsda_core.core.errors import LsdaError
from lsda_core.experiments import lsda as L
from lsda_core.experiments import premises as PR
from lsda_core.experiments import rcnn as R
from lsda_core.experiments import segmentation as SG
from lsda_core.experiments.rcnn import pretrained_network
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_write_text
from lsda_core.store.runtime import seed_everything


MEASUREMENTS: dict[str, Callable[[P.Params, Cache], dict[str, Any]]] = {
    "pretrain": lambda p, cache: PR.pretrain_quality(p, cache, *pretrained_network(p, cache)),
    "proposals": PR.proposal_quality,
    "finetune": lambda p, cache: PR.finetune_quality(p, cache, pretrained_network(p, cache)[0]),
    "lsda_headroom": L.headroom,
    "rcnn_layers": R.layer_gains,
    "seg_proposals": SG.proposal_premise,
}  # the premises `lsda sweep` measures by name (`premises.py`, `lsda.headroom`), and "what it takes" (`rcnn.layer_gains`)


class SweepError(LsdaError, ValueError):
    """A sweep that cannot run as asked (unknown experiment, malformed grid)."""


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """`KEY=V1,V2,...` strings -> {key: [values]} (values parsed as YAML scalars; a list value
    is written in brackets: `net.conv_channels=[16,32,48,48,32];[32,64,96,96,64]`, `;` then
    separating the values)."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, eq, values = spec.partition("=")
        key = key.strip()
        if not eq or not key or not values.strip():
            raise SweepError(f"--grid {spec!r}: expected KEY=V1,V2,... (e.g. pretrain.epochs=24,48)")
        if key in grid:
            raise SweepError(f"--grid {key}: given twice")
        parts = values.split(";") if values.strip().startswith("[") else values.split(",")
        out = []
        for v in parts:
            try:
                out.append(yamltext.load(v.strip()))
            except yamltext.YAMLError as e:
                raise SweepError(f"--grid {key}: {v.strip()!r} is not a YAML value ({yamltext.problem(e)})") from None
        P.parse_overrides({key: out[0]})  # the key's form (section.key); run_sweep checks it is a parameter
        grid[key] = out
    return grid


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


Measure = Callable[[P.Params, Cache], dict[str, Any]]


def run_sweep(experiment: str, params_file: str | Path | None, base: dict[str, Any], grid: dict[str, list[Any]],
              record: Path | None = None, note: str = "", measure: Measure | None = None) -> list[dict[str, Any]]:
    """Measure `experiment` (a name of `MEASUREMENTS`, or any `measure` given, such as a chapter
    run through Papermill: `publish.book.chapter_metrics`) at every grid point; returns one row
    per point (its values, then the measurement). With `record`, each row is appended to that
    JSON-lines file as it finishes (experiment, preset, overrides, metrics, seconds, date,
    note), so an interrupted sweep keeps the points it measured."""
    if measure is None:
        if experiment not in MEASUREMENTS:
            raise SweepError(f"unknown experiment {experiment!r}; known: {', '.join(sorted(MEASUREMENTS))}")
        measure = MEASUREMENTS[experiment]
    points = grid_points(grid)
    overs = [{**base, **point} for point in points]
    loaded = [P.load(params_file, over) for over in overs]  # every point valid before any work
    rows = []
    for point, over, p in zip(points, overs, loaded):
        seed_everything(p.runtime.seed)
        cache = Cache(p.runtime.artifacts)
        cache.check_root()
        t0 = time.time()
        metrics = measure(p, cache)
        seconds = round(time.time() - t0, 1)
        rows.append({**point, **metrics})
        if record is not None:
            entry = {"experiment": experiment, "params": str(params_file) if params_file else None,
                     "overrides": over, "metrics": metrics, "seconds": seconds,
                     "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "note": note}
            _append(record, json.dumps(entry, sort_keys=False))
    return rows


def _append(path: Path, line: str) -> None:
    """Append one line atomically (the whole file rewritten through a temp file)."""
    old = path.read_text() if path.is_file() else ""
    atomic_write_text(path, old + line + "\n")


def read_record(path: Path) -> list[dict[str, Any]]:
    """The entries of a record file, in order; a malformed line is a one-line error naming it."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise SweepError(f"{path}:{n}: not a JSON record ({e.msg})") from None
    return out

