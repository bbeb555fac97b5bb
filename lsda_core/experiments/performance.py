"""The performance chapter's measurement: `lsda bench` (reduced) on the R-CNN benchmark's test
images, kept in the results file beside the runs of other machines (`perf.bench`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsda_core.core.params import Params
from lsda_core.experiments.rcnn import bench_images
from lsda_core.perf import bench
from lsda_core.store.cache import Cache


@dataclass
class Measured:
    """This build's run, the results file with it merged in, and the run's key in that file."""

    run: dict[str, Any]
    doc: dict[str, Any]
    key: str


def measure(p: Params, cache: Cache) -> Measured:
    """Run the reduced benchmark now and merge it into `perf.bench.default_path(p)`."""
    run = bench.run(p, bench_images(p, cache))
    return Measured(run, bench.save(run, bench.default_path(p)), bench.run_key(run))
