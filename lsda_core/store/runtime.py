"""Run-time choices that do not change results: device selection, seeding, the thread-pool
policy, progress bars."""
from __future__ import annotations

import os
import platform
import random
from typing import Iterable, TypeVar

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from lsda_core.core.errors import LsdaError
from lsda_core.store import distributed as D
from lsda_core.store import terminal

T = TypeVar("T")


def pick_device(choice: str = "auto") -> torch.device:
    """CUDA when present (or asked for), else CPU; a clear error if CUDA is asked for but absent."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise LsdaError(f"runtime.device is {choice!r} but this machine has no CUDA device; use auto or cpu")
    if choice.startswith("cuda:") and int(choice[5:]) >= torch.cuda.device_count():
        raise LsdaError(f"runtime.device is {choice!r} but this machine has {torch.cuda.device_count()} CUDA "
                        f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) from one number."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


BLAS_THREADS = 1  # the BLAS under NumPy / SciPy (`thread_policy`)


def thread_policy() -> None:
    """The process's one thread-pool policy, set by every entry point (the CLI, a chapter):
    torch's OpenMP pool has the cores; the BLAS under NumPy and SciPy runs on `BLAS_THREADS`,
    those loaded now (threadpoolctl) and those loaded later (`OPENBLAS_NUM_THREADS`, inherited
    by worker processes); OpenCV's pool is set where it is used (one thread per proposal worker).
    NumPy's products here are small and come between torch's (score one image's regions, then
    the next image's features): a second pool's threads, still spinning after their call, hold
    the cores that torch's threads then wait for. `lsda bench`'s `threads.*` rows measure it:
    such a loop ran several times slower with NumPy's BLAS on every core."""
    os.environ["OPENBLAS_NUM_THREADS"] = str(BLAS_THREADS)
    threadpool_limits(BLAS_THREADS, user_api="blas")


def machine() -> dict[str, str | int]:
    """What this code runs on, named in every timing the study reports."""
    info: dict[str, str | int] = {
        "host": platform.node(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count() or 1,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def progress(items: Iterable[T], desc: str, enabled: bool = True, total: int | None = None) -> Iterable[T]:
    """A progress bar over `items` on the terminal (`terminal.stream`: stderr, or the terminal of
    the `lsda book` that runs this chapter), plain lines when the output is a log
    (`terminal.lines`); nothing when disabled, in CI, or on torchrun ranks other than 0 (rank
    0's shows its share)."""
    if not (enabled and D.is_main()):
        return items
    out = terminal.stream()
    if out is not None:
        return tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, file=out)
    return terminal.lines(items, desc, total)
