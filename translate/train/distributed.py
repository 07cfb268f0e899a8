"""Training in several processes with PyTorch's own DistributedDataParallel, as started by
``torchrun``: the process group, and the few collective decisions the loop shares.

A run not started by torchrun (no ``WORLD_SIZE`` above 1) is one process with world size 1,
and none of the functions here communicate.
"""

from __future__ import annotations

import datetime
import gc
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import UserError

# generous: rank 0 alone prepares the data and validates while the others wait for it
TIMEOUT = datetime.timedelta(hours=3)
T = TypeVar("T")


@dataclass
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str = ""  # gloo or nccl; empty for a single process
    group: object = None  # the process group gradients are averaged over

    @property
    def main(self) -> bool:
        """Rank 0 alone validates, logs and writes files."""
        return self.rank == 0


def start() -> Ranks:
    """Join the process group when torchrun started this process, else a world of one.

    Every rank first joins over gloo, which works everywhere; only when every rank has a
    GPU of its own do gradients go over NCCL (a CPU machine never meets "NCCL: no GPUs").
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks()
    if not dist.is_available():
        raise UserError("this torch has no torch.distributed; train in one process")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=TIMEOUT)
    has_gpu = torch.cuda.is_available() and local_rank < torch.cuda.device_count()
    every_rank = torch.tensor([int(has_gpu)])
    dist.all_reduce(every_rank, op=dist.ReduceOp.MIN)
    backend, group = "gloo", dist.group.WORLD
    if every_rank.item():
        torch.cuda.set_device(local_rank)
        backend, group = "nccl", dist.new_group(backend="nccl", timeout=TIMEOUT)
    return Ranks(dist.get_rank(), world, local_rank, local_world, backend, group)


def device_of(ranks: Ranks) -> torch.device | None:
    """The device of this rank under torchrun (its own GPU, or the CPU), None alone."""
    if ranks.world == 1:
        return None
    return torch.device(f"cuda:{ranks.local_rank}" if ranks.backend == "nccl" else "cpu")


def barrier(ranks: Ranks) -> None:
    """Wait until every rank is here (over gloo, so it also waits for CPU-only work)."""
    if ranks.world > 1:
        dist.barrier()


def any_rank(ranks: Ranks, *flags: bool) -> list[bool]:
    """Each flag, True when it is True on any rank: one small all-reduce for all of them."""
    if ranks.world == 1:
        return [bool(flag) for flag in flags]
    values = torch.tensor([int(bool(flag)) for flag in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def main_first(ranks: Ranks, work: Callable[[], T]) -> T | None:
    """``work()`` on rank 0 while the others wait (its result there, None elsewhere). When it
    fails, every rank raises: rank 0 its error, the others one pointing to it, so that none
    is left waiting for a partner that has gone."""
    result, error = None, None
    if ranks.main:
        try:
            result = work()
        except Exception as err:  # re-raised below, once the others know
            error = err
    (failed,) = any_rank(ranks, error is not None)
    if error is not None:
        raise error
    if failed:
        raise UserError("rank 0 stopped the run; its message says why")
    return result


def sums(ranks: Ranks, *values: float) -> list[float]:
    """Each value summed over every rank, in one all-reduce (the values as given alone)."""
    if ranks.world == 1:
        return list(values)
    summed = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(summed)
    return summed.tolist()


def from_main(ranks: Ranks, obj):
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    if ranks.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(ranks: Ranks, obj) -> list | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if ranks.world == 1:
        return [obj]
    gathered = [None] * ranks.world if ranks.main else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def finish(ranks: Ranks) -> None:
    """Leave the process group (every rank, at the end of training).

    Whatever still holds the group after ``destroy_process_group`` (``ranks.group`` does, and a
    wrapper left in a reference cycle would) keeps gloo's threads alive; collecting around it
    ends as much as can end now, while the interpreter is whole, rather than at its shutdown,
    where a rank once aborted. Best effort: that abort was not reproduced here.
    """
    if ranks.world > 1 and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()
