"""Several processes launched by torchrun: the process group and the few helpers the cached
stages use to split their work (proposals and features by image, fine-tuning by batch).

A process is distributed only after `init()` joined a group of more than one process; a
single process (including `torchrun --nproc-per-node 1`) has no group and every helper
here is then the identity or a no-op, so single-process runs behave exactly as without
this module. Backend: NCCL when the processes run on CUDA (one GPU each, the one of
`LOCAL_RANK`), gloo on the CPU.

torch is imported only where a group can exist: the cache, which asks `active()` on every
entry, stays light for commands that never touch torch (`lsda cache ls`, the world).
"""
from __future__ import annotations

import contextlib
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterator, Sequence, TypeVar

from lsda_core.core.errors import LsdaError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# How long a collective waits: while rank 0 builds a stage alone (pre-training, say) the
# other ranks wait in a barrier, so this is hours, not torch's default of minutes.
TIMEOUT = timedelta(hours=24)
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

_alone = False  # set while rank 0 builds a stage by itself (see `alone`)


def launched() -> bool:
    """Whether a launcher (torchrun) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> bool:
    """Join the process group of a torchrun launch of more than one process; returns whether
    this process is now distributed. `device` is `runtime.device`: with CUDA (auto on a GPU
    machine, or cuda) each process takes GPU `LOCAL_RANK` and NCCL; else gloo on the CPU."""
    import torch
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        return dist.is_initialized()
    missing = [v for v in LAUNCH_VARS if v not in os.environ]
    if missing:
        raise LsdaError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} not set: "
                        "launch with torchrun (e.g. torchrun --nproc-per-node 2 -m lsda_core.cli prepare ...)")
    if device.startswith("cuda:"):
        raise LsdaError(f"runtime.device {device!r} under torchrun: use auto or cuda (each process takes the GPU "
                        "of its LOCAL_RANK)")
    local = int(os.environ["LOCAL_RANK"])
    cuda = device != "cpu" and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise LsdaError("runtime.device is 'cuda' but this machine has no CUDA device; use auto or cpu")
    if cuda:
        if local >= torch.cuda.device_count():
            raise LsdaError(f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} GPU(s): start at most "
                            "that many processes per node (torchrun --nproc-per-node)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return True


def _dist() -> ModuleType | None:
    """torch.distributed if this process imported it (no group can exist otherwise), else None."""
    return sys.modules.get("torch.distributed")


def cleanup() -> None:
    """Leave the process group, if any (no barrier: a rank that failed must exit at once, so
    that torchrun stops the others)."""
    dist = _dist()
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """Whether this process works together with others right now."""
    dist = _dist()
    return not _alone and dist is not None and dist.is_available() and dist.is_initialized()


def rank() -> int:
    return _dist().get_rank() if active() else 0


def world() -> int:
    return _dist().get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: every `world()`-th one from position `rank()`. Shard
    the full, sorted list (not what is left of it) so that every rank computes the same split."""
    return list(items[rank()::world()])


def barrier() -> None:
    """Wait until every rank is here."""
    if active():
        import torch
        dist = _dist()
        dist.barrier(device_ids=[torch.cuda.current_device()] if dist.get_backend() == "nccl" else None)


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (a picklable object), so all ranks take the same branch."""
    if not active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: T) -> list[T]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[T] = [obj] * world()
    _dist().all_gather_object(out, obj)
    return out


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `x` over the ranks (in place, and returned); under NCCL `x`
    must be on this process's GPU."""
    if active():
        _dist().all_reduce(x)
    return x


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within this block the process behaves as a single one (rank 0 building a stage while
    the others wait: stages it needs in turn must not wait for them)."""
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def check_shared(folder: Path) -> None:
    """Raise unless every rank sees the same `folder` (the artifact cache must be on a file
    system shared by all nodes: ranks write their shares of one entry into it)."""
    if not active():
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".shared-{broadcast(uuid.uuid4().hex)}"
    if is_main():
        probe.write_text("")
    barrier()
    blind = sum(gather(not probe.is_file()))
    barrier()
    if is_main():
        probe.unlink()
    if blind:
        raise LsdaError(f"{folder}: {blind} of {world()} processes do not see this folder's files; "
                        "runtime.artifacts must be on a file system shared by every node")
