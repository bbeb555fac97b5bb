"""Where live progress goes: the terminal the command was started from, never a file or a CI log.

A chapter executed by Papermill runs in a kernel without a terminal of its own, so `lsda book`
names its terminal in the environment (`PROGRESS_TTY`) and the kernel's progress bars and stage
lines go there. Nothing here touches torch, so the cache can report its stages cheaply.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TextIO

PROGRESS_TTY = "LSDA_PROGRESS_TTY"  # the terminal `lsda book` runs in, for its chapters' kernels


def stream() -> TextIO | None:
    """stderr when it is a terminal, else the terminal named in PROGRESS_TTY, else None (quiet)."""
    if sys.stderr.isatty():
        return sys.stderr
    path = os.environ.get(PROGRESS_TTY)
    return _open(path) if path else None


@lru_cache(maxsize=4)
def _open(path: str) -> TextIO | None:
    try:
        return open(path, "w", buffering=1)
    except OSError:
        return None


def status(line: str) -> None:
    """One line of what is happening now (a stage starting to build), on the terminal only."""
    out = stream()
    if out is not None:
        out.write(f"\r\033[K{line}\n")
        out.flush()


def name_for_children() -> bool:
    """Let child processes (a chapter's kernel) write progress to this terminal, when it is one;
    returns whether it is."""
    if not sys.stderr.isatty():
        return False
    os.environ[PROGRESS_TTY] = os.ttyname(sys.stderr.fileno())
    return True
