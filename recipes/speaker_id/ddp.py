"""The processes of one training run: a single process, or the N workers of a torchrun job.

Under ``torchrun --nproc_per_node=N`` (``WORLD_SIZE`` > 1) every worker runs the whole recipe;
this module is what makes them one run: the process group (``nccl`` on CUDA, ``gloo`` on the
CPU), the DistributedDataParallel wrapper, and the few collectives the recipe needs. Without
torchrun every method is the identity, so the single-process path runs exactly the code it ran
before data parallelism existed.

Metrics are reduced *exactly*: each process evaluates whole batches of the single-process
evaluation plan, the per-batch sums are gathered into one table in plan order, and every
process adds them up in that order. Together with the buffer broadcast (batch-norm running
statistics differ per process after training, because each process normalised its own slice),
the result is bit-identical to what rank 0 alone would compute over the whole set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from hpopt.process import die_with_parent


class DistributedError(Exception):
    """A process-group setting that cannot work here; the message names the option."""


def launched_processes() -> int:
    """How many processes torchrun started for this run (``WORLD_SIZE``; 1 without torchrun)."""
    raw = os.environ.get("WORLD_SIZE", "").strip()
    return int(raw) if raw else 1


def local_processes() -> int:
    """Processes of this run on this machine (``LOCAL_WORLD_SIZE``), sharing its cores."""
    raw = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(raw) if raw else launched_processes()


def backend_for(device: torch.device, requested: str | None) -> str:
    """``gloo`` for CPU training; on CUDA ``--distributed_backend`` (default ``nccl``).

    The option's default is ``nccl`` whether or not it was given, and NCCL cannot run on the
    CPU, so a CPU run always uses gloo.
    """
    if device.type != "cuda":
        return "gloo"
    backend = requested or "nccl"
    if not dist.is_backend_available(backend):
        raise DistributedError(
            f"--distributed_backend {backend}: this torch build has no {backend} backend; "
            "use nccl (CUDA) or gloo"
        )
    return backend


class Processes:
    """Rank and size of the run, and its collectives (no-ops for a single process)."""

    def __init__(self, rank: int, size: int, device: torch.device) -> None:
        self.rank = rank
        self.size = size
        # Where collective tensors live: NCCL only moves CUDA tensors, gloo takes CPU ones.
        self.device = device

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def start(cls, device: torch.device, requested_backend: str | None) -> Processes:
        """Join torchrun's process group (``env://`` rendezvous), or stand alone."""
        if launched_processes() == 1:
            return cls(0, 1, device)
        backend = backend_for(device, requested_backend)
        # torchrun starts each worker in a session of its own: if torchrun is SIGKILLed (or a
        # trial timeout kills its process group), the workers would train on unsupervised.
        agent = os.getppid()
        die_with_parent()
        if os.getppid() != agent:
            raise DistributedError("torchrun ended before this worker joined the process group")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, device_id=device if backend == "nccl" else None)
        collectives = device if backend == "nccl" else torch.device("cpu")
        return cls(dist.get_rank(), dist.get_world_size(), collectives)

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: DistributedDataParallel around ``model`` when distributed.

        DDP averages gradients over the processes at every backward pass and broadcasts rank
        0's parameters and buffers at construction.
        """
        if not self.distributed:
            return model
        on_cuda = next(model.parameters()).device.type == "cuda"
        device_ids = [torch.cuda.current_device()] if on_cuda else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the processes (float64)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather_rows(
        self, rows: dict[int, Sequence[float]], n_rows: int, width: int
    ) -> list[list[float]]:
        """All processes' rows of an ``n_rows x width`` table, each row given by one process.

        Rows a process does not own are zeros there, so the summing all-reduce returns every
        row bit-exactly (x + 0 == x).
        """
        if not self.distributed:
            return [list(rows[index]) for index in range(n_rows)]
        table = torch.zeros(n_rows, width, dtype=torch.float64)
        for index, row in rows.items():
            table[index] = torch.tensor(row, dtype=torch.float64)
        table = table.to(self.device)
        dist.all_reduce(table)
        return table.cpu().tolist()

    def share_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm running statistics)."""
        if not self.distributed:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        """Wait for every process (e.g. until rank 0 has finished writing a checkpoint)."""
        if self.distributed:
            dist.barrier()
