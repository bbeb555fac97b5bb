"""What every chapter does first: its parameters, its cache, and seeded random generators."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lsda_core.core import params as P
from lsda_core.store.cache import Cache
from lsda_core.store.runtime import seed_everything, thread_policy


def open_chapter(params_file: str | Path | None, overrides: dict[str, Any]) -> tuple[P.Params, Cache]:
    """The chapter's validated parameters (`params_file` with `overrides`) and the cache they name,
    with Python, NumPy and torch seeded from `runtime.seed`, so no result depends on what ran before,
    under the study's thread-pool policy (`runtime.thread_policy`)."""
    p = P.load(params_file, overrides)
    thread_policy()
    seed_everything(p.runtime.seed)
    return p, Cache(p.runtime.artifacts)
