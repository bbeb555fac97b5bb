"""Where live progress goes: bars on the terminal the command was started from; plain lines
(one every `LOG_EVERY` seconds of a loop, one per stage) when its output is a log or a pipe;
nothing in CI or in a notebook's own output.

A chapter executed by Papermill runs in a kernel whose stderr would land in the page, so
`lsda book` names its own terminal (`PROGRESS_TTY`) or its own stderr (`PROGRESS_LOG`) in the
kernel's environment (`for_children`), and the kernel's progress goes there. Nothing here
touches torch, so the cache can report its stages cheaply.
"""
from __future__ import annotations

import fcntl
import os
import stat
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterable, Iterator, TextIO, TypeVar

PROGRESS_TTY = "LSDA_PROGRESS_TTY"  # the terminal `lsda book` runs in, for its chapters' kernels
PROGRESS_LOG = "LSDA_PROGRESS_LOG"  # the log or pipe `lsda book` writes to, when it has no terminal
LOG_EVERY = 30.0  # seconds between two plain progress lines

T = TypeVar("T")


def in_ci() -> bool:
    """Whether this runs in CI (`CI` set and not 0 / false), where progress is never shown."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def stream() -> TextIO | None:
    """stderr when it is a terminal, else the terminal named in PROGRESS_TTY, else None."""
    if sys.stderr.isatty():
        return sys.stderr
    path = os.environ.get(PROGRESS_TTY)
    return _open(path) if path else None


def log() -> TextIO | None:
    """Where plain progress lines go when there is no terminal: the log named in PROGRESS_LOG,
    else stderr of a command (never a notebook kernel's, which is the page); None in CI."""
    if stream() is not None or in_ci():
        return None
    path = os.environ.get(PROGRESS_LOG)
    if path:
        return _open(path)
    return None if in_kernel() else sys.stderr


def in_kernel() -> bool:
    """Whether this process is a Jupyter kernel (whose stderr is the notebook's output). Not
    whether ipykernel is imported: `lsda book` imports it too once it has started a kernel
    (jupyter_client looks up the kernel spec there)."""
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and app.IPKernelApp.initialized()


@lru_cache(maxsize=4)
def _open(path: str) -> TextIO | None:
    try:
        return open(path, "a", buffering=1)  # append: a log file shared with the command that named it
    except OSError:
        return None


def status(line: str) -> None:
    """One line of what is happening now (a stage starting or done building)."""
    out = stream()
    if out is not None:
        out.write(f"\r\033[K{line}\n")
        out.flush()
    elif (out := log()) is not None:
        _write(out, line)


_last_line = time.monotonic()  # when this process last wrote a plain progress line


def _write(out: TextIO, line: str) -> None:
    """One plain progress line, stamped with the time of day."""
    global _last_line
    out.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")
    out.flush()
    _last_line = time.monotonic()


def lines(items: Iterable[T], desc: str, total: int | None = None, every: float | None = None) -> Iterator[T]:
    """`items`, writing to `log()` a line "desc: i/total, s elapsed, ~s left" once `every`
    seconds (default `LOG_EVERY`) have passed since this process's last line, and a closing
    line when the loop wrote one. The interval counts across loops, so a run of short loops (the
    epochs of pre-training) still shows a line every `every` seconds."""
    every = LOG_EVERY if every is None else every
    out = log()
    if out is None:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    t0 = time.monotonic()
    done, wrote = 0, False
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - _last_line >= every:
            left = f", ~{(now - t0) / done * (total - done):.0f} s left" if total else ""
            of = f"/{total}" if total else ""
            _write(out, f"  {desc}: {done}{of}, {now - t0:.0f} s{left}")
            wrote = True
    if wrote:
        _write(out, f"  {desc}: {done} done in {time.monotonic() - t0:.0f} s")


def _append_only(fd: int) -> None:
    """Make writes through `fd` (a log file `2>` opened at an offset) land at the file's end,
    so that they and a child's appended lines never overwrite each other."""
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    except OSError:
        pass


@contextmanager
def for_children() -> Iterator[bool]:
    """While open, child processes (a chapter's kernel) send their progress where this
    process's goes: its terminal, or (outside CI) its stderr as plain lines. Yields whether
    they show any, so that Papermill's cell counter can stand down."""
    if sys.stderr.isatty():
        name, value = PROGRESS_TTY, os.ttyname(sys.stderr.fileno())
    elif log() is sys.stderr:
        name, value = PROGRESS_LOG, f"/proc/{os.getpid()}/fd/2"
        _append_only(sys.stderr.fileno())
    else:
        yield False
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield True
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
