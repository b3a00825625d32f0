"""The few things a stage needs to know and say to the other processes of a ``torchrun`` job.

Pretraining runs as one process per device under ``torchrun`` (PyTorch DDP through the
Hugging Face ``Trainer``, which sets up the process group: gloo on CPUs, NCCL on GPUs). Every
process runs the same code; this module is where they tell one another what only one of them
may decide or do:

* :func:`world`, :func:`is_main_process`: who this process is (from ``torch.distributed`` once
  the group is up, else from the ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` variables torchrun
  sets, so a stage can ask before it imports torch);
* :func:`barrier`, :func:`broadcast_object`, :func:`broadcast_float`, :func:`all_reduce_sum`,
  :func:`all_reduce_max`, :func:`gather_objects`: the collectives (identities in a single
  process);
* :func:`on_main`: run a step (write the output folder, claim the checkpoints) on rank 0 while
  the others wait, and give every process rank 0's outcome, its one-line error included, so
  no process is left waiting for one that failed;
* :func:`raise_if_any`: a check every process makes for itself, failing on all of them together.
* :func:`shutdown`: after the last message, end the process groups so a finished process exits cleanly.

The messages travel over a gloo group (the default group on CPUs; a second, gloo group beside
NCCL on GPUs), so a per-step message (the time budget's clock) never waits on a GPU's queue.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from scratchbert.errors import RunFailed, ScratchBertError

T = TypeVar("T")

_GROUP: dict[str, Any] = {}  # the gloo group for messages, made on first use (by every process alike)


def _dist():
    """``torch.distributed`` when a process group of more than one process is up, else None."""
    if "torch" not in sys.modules:  # nothing has imported torch, so no group can be up
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist
    return None


def world() -> tuple[int, int, int]:
    """(rank, local rank, world size) of this process: (0, 0, 1) outside torchrun, and in a job of
    one process whatever ``RANK`` says (the Trainer runs it alone too)."""
    dist = _dist()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    if dist is not None:
        return dist.get_rank(), local, dist.get_world_size()
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return 0, 0, 1
    return int(os.environ.get("RANK", "0") or 0), local, size


LAUNCH_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets


def check_launch(command: str, *, processes: bool) -> None:
    """One line, before any work, for a launch ``command`` cannot run as: torchrun's variables half
    set (a stray ``LOCAL_RANK`` in a shell, which the Trainer takes for a process group to join and
    fails deep inside), or several processes for a command that runs in one (``processes``
    False: each would write the same output folder)."""
    processes_here = world()[2]
    if "LOCAL_RANK" in os.environ or processes_here > 1:
        given = [v for v in LAUNCH_VARIABLES if os.environ.get(v)]
        missing = [v for v in LAUNCH_VARIABLES if not os.environ.get(v)]
        if missing:
            raise ScratchBertError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but "
                                   f"{', '.join(missing)} not: run under torchrun, which sets them all, or unset "
                                   f"{' and '.join(given)}")
    if processes_here > 1 and not processes:
        raise ScratchBertError(f"{command} runs in one process, not under torchrun ({processes_here} processes): run it "
                               "on its own; pretrain is the stage that runs one process per device")


def is_main_process() -> bool:
    """True on rank 0 (the only process that writes outputs and checkpoints), and in a single process."""
    return world()[0] == 0


def _group():
    dist = _dist()
    if dist.get_backend() == "gloo":
        return None  # the default group is gloo already
    if "gloo" not in _GROUP:
        _GROUP["gloo"] = dist.new_group(backend="gloo")
    return _GROUP["gloo"]


def barrier() -> None:
    """Wait until every process has come here."""
    dist = _dist()
    if dist is not None:
        dist.barrier(group=_group())


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every process."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_group())
    return box[0]


def broadcast_float(value: float, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every process (one small tensor: cheap enough for every step)."""
    dist = _dist()
    if dist is None:
        return value
    import torch

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.broadcast(t, src=src, group=_group())
    return float(t.item())


def _all_reduce(value, op_name: str):
    dist = _dist()
    if dist is None:
        return value
    import torch

    t = torch.tensor([value], dtype=torch.float64 if isinstance(value, float) else torch.int64)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op_name), group=_group())
    return type(value)(t.item())


def all_reduce_sum(value: int | float) -> int | float:
    """The sum of ``value`` over every process (an int stays an int)."""
    return _all_reduce(value, "SUM")


def all_reduce_max(value: int | float) -> int | float:
    """The largest ``value`` of any process."""
    return _all_reduce(value, "MAX")


def gather_objects(obj: Any) -> list[Any] | None:
    """Every process's ``obj``, in rank order, on rank 0 (None on the others); ``[obj]`` alone."""
    dist = _dist()
    if dist is None:
        return [obj]
    rank = dist.get_rank()
    out = [None] * dist.get_world_size() if rank == 0 else None
    dist.gather_object(obj, out, dst=0, group=_group())
    return out


def on_main(step: Callable[[], T]) -> T | None:
    """Run ``step`` on rank 0 while the other processes wait; return its result there, None elsewhere.

    Whatever happens on rank 0 reaches every process: when ``step`` raises, the others raise
    too (the same one-line :class:`ScratchBertError`, or :class:`RunFailed` naming rank 0's
    error), rather than waiting at the next collective for a process that has gone.
    """
    dist = _dist()
    if dist is None:
        return step()
    if dist.get_rank() == 0:
        try:
            result = step()
        except ScratchBertError as e:
            broadcast_object(("error", type(e).__name__, str(e)))
            raise
        except BaseException as e:
            broadcast_object(("crash", type(e).__name__, str(e)))
            raise
        broadcast_object(("ok", "", ""))
        return result
    status, kind, message = broadcast_object(None)
    if status == "error":
        raise (RunFailed if kind == "RunFailed" else ScratchBertError)(message)
    if status == "crash":
        raise RunFailed(f"rank 0 failed ({kind}: {message}); its log has the details")
    return None


def raise_if_any(problem: str | None) -> None:
    """Every process passes its own check's outcome (None, or a one-line problem); if any process
    has one, every process raises the first such problem (in rank order)."""
    dist = _dist()
    if dist is None:
        if problem:
            raise ScratchBertError(problem)
        return
    found = [None] * dist.get_world_size()
    dist.all_gather_object(found, problem, group=_group())
    first = next((p for p in found if p), None)
    if first:
        raise ScratchBertError(first)


def shutdown() -> None:
    """End this process's part in the job after its last message: destroy the process groups
    (ours and the default one), as PyTorch asks before a process exits.

    A gloo worker thread destroys each finished collective after the waiting thread has moved
    on, and that needs the GIL when the collective's tensors came from Python. Destroying a
    group joins its workers while holding the GIL, and at the interpreter's exit a worker that
    wants the GIL is ended mid-destructor: either way a process whose work was done could hang
    or abort ("terminate called without an active exception", exit -6). So every process first
    meets the others at a barrier (after which no collective is in flight), then sleeps a moment
    with the GIL released, so the workers finish; then the groups are destroyed, while nothing
    else is running in them.
    """
    dist = _dist()
    if dist is None:
        return
    dist.barrier(group=_group())
    time.sleep(0.2)
    if "gloo" in _GROUP:
        dist.destroy_process_group(_GROUP.pop("gloo"))
    dist.destroy_process_group()
