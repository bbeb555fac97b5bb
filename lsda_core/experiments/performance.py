"""The performance chapter's measurement: `lsda bench` (reduced) on the R-CNN benchmark's test
images, kept in the results file beside the runs of other machines (`perf.bench`).

The run is a cached stage (`perf`; `bench/` is the results file's folder) keyed on its code, the
parameters, the paper preset, the images, the machine and torch's threads: a warm book shows the
run its cold build made instead of measuring again (half a minute of a 3-minute budget); any
change to those measures anew, and `lsda bench` measures now whatever the cache holds."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lsda_core.core.params import Params
from lsda_core.experiments.rcnn import bench_images
from lsda_core.perf import bench
from lsda_core.store.cache import Cache
from lsda_core.store.files import atomic_write_text
from lsda_core.store.identity import images_identity
from lsda_core.store.runtime import machine

RUN = "run.json"


@dataclass
class Measured:
    """This build's run, the results file with it merged in, the run's key in that file, and
    whether the run was measured by this build (False: kept from the build that measured it)."""

    run: dict[str, Any]
    doc: dict[str, Any]
    key: str
    now: bool


def measure(p: Params, cache: Cache) -> Measured:
    """The reduced benchmark of this code, parameters and machine (measured when the cache has no
    run for them), merged into `perf.bench.default_path(p)`."""
    images = bench_images(p, cache)
    sections = [s for s in p.to_dict() if s != "runtime"]
    config = {"params": p.digest(*sections), "device": p.runtime.device, "seed": p.runtime.seed,
              "paper": bench.paper_params(p).digest(), "machine": machine(), "threads": torch.get_num_threads(),
              "images": images_identity(images)}
    now = False

    def build(folder: Path) -> None:
        nonlocal now
        now = True
        atomic_write_text(folder / RUN, json.dumps(bench.run(p, images), indent=1, sort_keys=True))

    run = json.loads((cache.entry("perf", config, build) / RUN).read_text())
    return Measured(run, bench.save(run, bench.default_path(p)), bench.run_key(run), now)
