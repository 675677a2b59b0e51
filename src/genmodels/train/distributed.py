"""Training and sampling on several processes launched by ``torchrun`` (see docs/scaling.md); without
torchrun every function here is the one-process identity. Rank 0 alone prints and writes."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TIMEOUT_S", "agree", "barrier", "chunks_of_this_process", "data_parallel", "gather_chunks", "is_main",
           "rank", "rank_label", "session", "shard", "world_size"]  # fmt: skip

# Seconds a collective waits for the other ranks (longer than rank 0's evaluation or checkpoint).
TIMEOUT_S = 600


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process prints and writes the outputs (rank 0, or no torchrun)."""
    return rank() == 0


def rank_label() -> str:
    """``"rank 1: "`` for a message of a process among several, else ``""``."""
    return f"rank {rank()}: " if world_size() > 1 else ""


@contextlib.contextmanager
def session(device: str) -> Iterator[None]:
    """Inside, a member of torchrun's process group (where torchrun started this process)."""
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        yield
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    from genmodels.train.acceleration import resolve_device

    if cuda := (resolve_device(device).type == "cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=TIMEOUT_S))
    if not is_main():  # errors only
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        logging.getLogger().setLevel(logging.ERROR)
        warnings.simplefilter("ignore")
    try:
        yield
        barrier()  # leave together, however long rank 0 writes
    except Exception as error:
        ErrorHandler().record_exception(error)  # torchrun's summary shows it beside the rank
        raise
    finally:
        dist.destroy_process_group()


def shard(n: int) -> slice:
    """This process's rows of a batch of ``n``: contiguous, disjoint, sizes differing by at most 1."""
    r, w = rank(), world_size()
    return slice(n * r // w, n * (r + 1) // w)


class _Loss(nn.Module):
    """``loss_fn`` as the forward of a module holding ``model``'s parameters, for DDP to wrap."""

    def __init__(self, model: nn.Module, loss_fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.loss_fn(*args, **kwargs)


def data_parallel(model: nn.Module, loss_fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``loss_fn`` whose backward averages ``model``'s gradients over all processes (DDP)."""
    if world_size() == 1:
        return loss_fn
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.cuda.current_device()] if next(model.parameters()).is_cuda else None
    # the buffers (standardisation, tables) never change in training: not sent at every step
    parameters = inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
    return DistributedDataParallel(_Loss(model, loss_fn), device_ids=ids, **no_sync)


def agree(losses: torch.Tensor, stop: bool) -> tuple[torch.Tensor, bool]:
    """The sum over processes of ``losses (S,)``, and whether any process asks to ``stop``."""
    if world_size() == 1:
        return losses, stop
    summed = torch.cat([losses.float(), losses.new_tensor([float(stop)])])
    dist.all_reduce(summed)
    return summed[:-1], bool(summed[-1] > 0)


def barrier() -> None:
    """Wait for every process, however long rank 0 takes (e.g. writing a checkpoint). Under gloo, rank 0
    releases the others only after it has heard from all of them, so none can exit and close its
    connection while rank 0 still waits on it (which a plain barrier allows, failing rank 0)."""
    if world_size() == 1:
        return
    if dist.get_backend() == "gloo":
        dist.monitored_barrier(timeout=timedelta(days=1))
    else:
        dist.barrier()


def chunks_of_this_process(n_chunks: int) -> range:
    """The indices of the chunks this process draws, of ``n_chunks``: every world_size-th one."""
    return range(rank(), n_chunks, world_size())


def gather_chunks(chunks: dict[int, Any]) -> list[Any]:
    """Every process's ``{chunk index: chunk}``, in one list in index order, on every process."""
    if world_size() == 1:
        return [chunks[i] for i in sorted(chunks)]
    parts: list[dict[int, Any]] = [{} for _ in range(world_size())]
    dist.all_gather_object(parts, chunks)
    every = {i: chunk for part in parts for i, chunk in part.items()}
    return [every[i] for i in sorted(every)]
