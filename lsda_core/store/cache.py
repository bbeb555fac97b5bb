"""The artifact cache: every expensive stage stored under one folder, keyed by a digest of its
name, version, code state (`store.stages`) and the parameters and upstream entries it is given
(its `config`, built from content digests, `store.identity`, never paths), and written
atomically (work folder, then rename), so nothing half-written is ever reused, an interrupted
run resumes where it stopped, and a cache copied to another folder stays warm.

Layout: `<root>/<stage>/<key>/` holding the stage's files and a `meta.json` that records what
made the key (`lsda cache explain` prints it).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from lsda_core.core.errors import LsdaError
from lsda_core.store import distributed as D
from lsda_core.store import terminal
from lsda_core.store.files import TMP_MARK, atomic_write_text
from lsda_core.store.identity import META
from lsda_core.store.stages import SCRATCH, code_state, stage_of

PARTIAL = ".partial"
# seconds spent in entries built inside each build now running in this process (innermost last):
# an entry's own build time excludes those of the entries it built on the way
_NESTED: list[list[float]] = []


def key_inputs(stage: str, config: dict[str, Any]) -> dict[str, Any]:
    """Everything a stage's key is made of: stage name, its version and code state, its config."""
    version, code = code_state(stage_of(stage).name)
    return {"stage": stage, "version": version, "code": code, "config": config}


def stage_key(stage: str, config: dict[str, Any]) -> str:
    """The cache key of `stage` for `config` (`key_inputs`, digested)."""
    blob = json.dumps(key_inputs(stage, config), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class CacheError(LsdaError):
    """A cache folder or entry that cannot be used as asked."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; nothing elsewhere).
    glibc keeps what a build's large arrays freed: the R-CNN chapter run cold in one process
    held 7.9 GiB after its seeds cell, 3.3 GiB of it live; trimmed after every build, 5.7 GiB
    (its peak, 8.9 GiB, is live memory inside that cell, and stays)."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class Cache:
    """An artifact folder; `entry()` builds a stage once and returns its folder."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()

    def check_root(self) -> None:
        """Make the cache folder if needed; CacheError (one line) if it cannot be one."""
        if self.root.exists() and not self.root.is_dir():
            raise CacheError(f"runtime.artifacts: {self.root} is a file, not a cache folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"runtime.artifacts: cannot make the cache folder {self.root} ({e.strerror})") from None

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def entry(self, stage: str, config: dict[str, Any], build: Callable[[Path], None], resumable: bool = False,
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
        key = stage_key(stage, config)
        self.check_root()
        final = self.path(stage, key)
        if D.broadcast(read_meta(final).get("key") == key):  # rank 0's view: every rank takes the same branch
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

    def lazy(self, stage: str, config: dict[str, Any], build: Callable[[Path], None], **options: Any) -> Lazy:
        """`entry(stage, config, build, **options)`, deferred until its folder is asked for."""
        return Lazy(self, stage, config, build, options)

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
            if finish:
                terminal.status(f"{stage}: building {key[:12]}")
            _NESTED.append([0.0])
            try:
                build(work)
            finally:
                release_freed_memory()  # the build's own arrays are gone now
                nested = _NESTED.pop()[0]
                seconds = time.time() - t0
                if _NESTED:
                    _NESTED[-1][0] += seconds
            D.barrier()
            if finish:
                meta = {**key_inputs(stage, config), "key": key, "seconds": round(seconds, 3),
                        "own_seconds": round(seconds - nested, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
                atomic_write_text(work / META, json.dumps(meta, indent=1, sort_keys=True, default=str))
                if final.exists():  # an entry whose meta.json is missing or damaged: replace it
                    shutil.rmtree(final)
                os.replace(work, final)
                terminal.status(f"{stage}: built {key[:12]} in {seconds:.0f} s")
            elif not resumable:  # another rank's copy of a collective build
                shutil.rmtree(work)
            D.barrier()
        except BaseException:
            if not resumable:
                shutil.rmtree(work, ignore_errors=True)
            raise

    def entries(self) -> list[dict[str, Any]]:
        """Every complete entry with its stage, key, size, creation time and build seconds (all,
        and its own: without the entries built inside it) (an entry whose meta.json cannot be
        read is not complete: it is rebuilt when next needed)."""
        out = []
        if not self.root.is_dir():
            return out
        for meta in sorted(self.root.glob(f"*/*/{META}")):
            info = read_meta(meta.parent)
            if not info:
                continue
            size = folder_bytes(meta.parent)
            out.append({"stage": info["stage"], "key": info["key"], "bytes": size,
                        "created": info.get("created", ""), "seconds": info.get("seconds", 0.0),
                        "own_seconds": info.get("own_seconds", info.get("seconds", 0.0))})
        return out

    def stage_folders(self) -> list[Path]:
        """The cache's stage folders: its direct subfolders named after a stage of the study."""
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            try:
                stage_of(d.name)
            except LsdaError:
                continue
            if d.is_dir() and not d.is_symlink():
                out.append(d)
        return out

    def clean(self, stage: str | None = None) -> int:
        """Remove the entries of one stage folder (every stage folder when None), work folders
        included; returns how many folders were removed. Only stage folders directly under the
        cache root are ever removed: `stage` must be the name of one (as `lsda cache ls` shows)."""
        folders = self.stage_folders()
        if stage is not None:
            names = {d.name: d for d in folders}
            if stage not in names:
                known = ", ".join(sorted(names)) or "none"
                raise CacheError(f"--stage {stage!r}: not a stage folder of the cache {self.root} "
                                 f"(its stage folders: {known})")
            folders = [names[stage]]
        for d in folders:
            shutil.rmtree(d)
        return len(folders)

    def clean_scratch(self) -> int:
        """Remove every scratch stage folder (`stages.SCRATCH`: features and decoded images, read
        only while what is made from them is built); returns the bytes freed."""
        freed = 0
        for d in self.stage_folders():
            if stage_of(d.name).name in SCRATCH:
                freed += folder_bytes(d)
                shutil.rmtree(d)
        return freed

    def find(self, name: str) -> Path:
        """An entry by 'stage/key' (or a key prefix, or the entry's folder path)."""
        path = Path(name)
        if path.is_absolute() or name.startswith("."):
            path = path.resolve()
            if path.parent.parent != self.root:
                raise CacheError(f"{name}: not an entry of the cache {self.root}")
            name = f"{path.parent.name}/{path.name}"
        stage, _, key = name.partition("/")
        stage_of(stage)
        found = [e for e in self.entries() if e["stage"] == stage and e["key"].startswith(key)] if key else []
        if len(found) != 1:
            raise CacheError(f"{name}: {'no' if not found else 'more than one'} entry of the cache {self.root} "
                             "matches (give stage/key as `lsda cache ls` shows)")
        return self.path(stage, found[0]["key"])

    def explain(self, name: str) -> list[str]:
        """What made an entry's key, whether the code would give the same key now, and how its
        config differs from the stage's other entries (why something rebuilt)."""
        folder = self.find(name)
        info = read_meta(folder)
        stage = info["stage"]
        version, code = code_state(stage_of(stage).name)
        now = "the same" if (version, code) == (info.get("version"), info.get("code")) else \
            f"v{version}, code {code}: this entry is no longer used"
        lines = [f"entry {stage}/{info['key']} ({stage_of(stage).what})",
                 f"  built {info.get('created', '?')} in {info.get('seconds', '?')} s",
                 f"  version {info.get('version')}, code {info.get('code')} (now: {now})", "  config:"]
        flat = _flatten(info.get("config", {}))
        lines += [f"    {k} = {v}" for k, v in flat.items()]
        for other in self.entries():
            if other["stage"] != stage or other["key"] == info["key"]:
                continue
            o = read_meta(self.path(stage, other["key"]))
            of = _flatten(o.get("config", {}))
            diff = sorted(k for k in set(flat) | set(of) if flat.get(k) != of.get(k))
            if (o.get("version"), o.get("code")) != (info.get("version"), info.get("code")):
                diff.insert(0, "version/code")
            lines.append(f"  differs from {stage}/{other['key']} in: {', '.join(diff) if diff else 'nothing'}")
        return lines


@dataclass
class Lazy:
    """A cache entry named before it is needed: `ref` ("stage/key", what the keys of entries
    made from it record, the same as for its folder) is known at once, the entry is built or
    found only when `folder()` is first called. A warm chapter whose results are all cached
    never asks for its features, so they need not be kept (`lsda book` removes them)."""

    cache: Cache
    stage: str
    config: dict[str, Any]
    build: Callable[[Path], None]
    options: dict[str, Any]
    _folder: Path | None = field(default=None, init=False, repr=False)

    @property
    def key(self) -> str:
        """The entry's key: its folder's name."""
        return stage_key(self.stage, self.config)

    @property
    def ref(self) -> str:
        return f"{self.stage}/{self.key}"

    def folder(self) -> Path:
        if self._folder is None:
            self._folder = self.cache.entry(self.stage, self.config, self.build, **self.options)
        return self._folder


def folder_bytes(folder: Path) -> int:
    """Bytes of every file below `folder`."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def entry_ref(entry: Path | Lazy) -> str:
    """"stage/key" of an entry given as its folder or as a `Lazy`."""
    return entry.ref if isinstance(entry, Lazy) else f"{entry.parent.name}/{entry.name}"


def entry_folder(entry: Path | Lazy) -> Path:
    """The folder of an entry given as its folder or as a `Lazy` (built now if needed)."""
    return entry.folder() if isinstance(entry, Lazy) else Path(entry)


def read_meta(folder: Path) -> dict[str, Any]:
    """An entry's meta.json ({} when it is missing or cannot be read: the entry is incomplete)."""
    try:
        info = json.loads((Path(folder) / META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) and "stage" in info and "key" in info else {}


def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config as dotted keys with JSON values."""
    if isinstance(d, dict) and d:
        out: dict[str, str] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: json.dumps(d, sort_keys=True, default=str)}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
