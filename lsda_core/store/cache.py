"""The artifact cache: every expensive stage stored under one folder, keyed by a hash of
exactly the parameters and code it depends on, and written atomically (temp, then rename),
so nothing half-written is ever reused and an interrupted run resumes where it stopped.

Layout: `<root>/<stage>/<key>/` holding the stage's files and a `meta.json`.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable, Literal

from lsda_core.store import distributed as D

META = "meta.json"
TMP_MARK = ".tmp-"
PARTIAL = ".partial"


def code_digest(modules: Iterable[ModuleType]) -> str:
    """Hash of the source of the given modules: a stage's key changes when its code does."""
    h = hashlib.sha256()
    for m in sorted(modules, key=lambda m: m.__name__):
        h.update(m.__name__.encode())
        h.update(inspect.getsource(m).encode())
    return h.hexdigest()[:16]


def stage_key(config: dict[str, Any], modules: Iterable[ModuleType] = ()) -> str:
    """The cache key of a stage: its exact parameters plus the source of its code."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256((blob + code_digest(modules)).encode()).hexdigest()[:20]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old version or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + TMP_MARK, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_save_npy(path: Path, array: Any) -> None:
    """Save one array as .npy atomically (no pickles)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class Cache:
    """An artifact folder; `entry()` builds a stage once and returns its folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def entry(self, stage: str, config: dict[str, Any], build: Callable[[Path], None],
              modules: Iterable[ModuleType] = (), resumable: bool = False,
              ranks: Literal["main", "shard", "all"] = "main") -> Path:
        """Folder of `stage` for `config`; if absent, `build(work_dir)` fills a work folder
        that is then renamed into place, so no half-built entry is ever returned.

        Not resumable: the work folder is a fresh temp folder, removed on failure.
        Resumable: it is `<key>.partial`, kept on failure, so a builder that writes its
        items atomically and skips those already there resumes where it stopped.

        `ranks` says who builds when several processes run together (`distributed`; one
        process builds alone whatever it says): "main", rank 0 while the others wait;
        "shard", every rank into the shared `<key>.partial` (resumable only), each writing
        only its share (`distributed.shard`); "all", every rank runs `build` together
        (collectives inside, e.g. DDP training) and rank 0's work folder becomes the entry.
        Every rank returns the complete entry."""
        if ranks not in ("main", "shard", "all"):
            raise ValueError(f"{stage}: ranks must be main, shard or all, got {ranks!r}")
        key = stage_key(config, modules)
        final = self.path(stage, key)
        if D.broadcast((final / META).is_file()):  # rank 0's view: every rank takes the same branch
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        if D.world() > 1 and ranks == "main":
            if D.is_main():
                with D.alone():
                    self._build(stage, key, config, build, resumable)
            D.barrier()
            return final
        if D.world() > 1 and ranks == "shard" and not resumable:
            raise ValueError(f"{stage}: a sharded build writes into the shared resumable work folder; "
                             "pass resumable=True")
        self._build(stage, key, config, build, resumable, finish=D.is_main())
        return final

    def _build(self, stage: str, key: str, config: dict[str, Any], build: Callable[[Path], None],
               resumable: bool, finish: bool = True) -> None:
        """Run `build` in a work folder; with `finish` (rank 0), once every rank is done,
        write meta.json and rename the folder into place."""
        final = self.path(stage, key)
        if resumable:
            work = final.with_name(key + PARTIAL)
            work.mkdir(exist_ok=True)
        else:
            work = Path(tempfile.mkdtemp(prefix=key + TMP_MARK, dir=final.parent))
        try:
            t0 = time.time()
            build(work)
            D.barrier()
            if finish:
                meta = {"stage": stage, "key": key, "config": config, "seconds": round(time.time() - t0, 3),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                atomic_write_text(work / META, json.dumps(meta, indent=1, sort_keys=True, default=str))
                if final.exists():  # a stale entry without meta.json: replace it
                    shutil.rmtree(final)
                os.replace(work, final)
            elif not resumable:  # another rank's copy of a collective build
                shutil.rmtree(work)
            D.barrier()
        except BaseException:
            if not resumable:
                shutil.rmtree(work, ignore_errors=True)
            raise

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry with its stage, key, size and creation time."""
        out = []
        if not self.root.is_dir():
            return out
        for meta in sorted(self.root.glob(f"*/*/{META}")):
            info = json.loads(meta.read_text())
            size = sum(p.stat().st_size for p in meta.parent.rglob("*") if p.is_file())
            out.append({"stage": info["stage"], "key": info["key"], "bytes": size,
                        "created": info.get("created", ""), "seconds": info.get("seconds", 0.0)})
        return out

    def clean(self, stage: str | None = None) -> int:
        """Remove the entries of one stage (all stages when None) and any leftover temp
        folders; returns how many folders were removed."""
        if not self.root.is_dir():
            return 0
        removed = 0
        stages = [self.root / stage] if stage else [p for p in self.root.iterdir() if p.is_dir()]
        for s in stages:
            if s.is_dir():
                shutil.rmtree(s)
                removed += 1
        return removed


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
