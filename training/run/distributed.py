"""Processes: the device, the process group under torchrun, and values averaged over ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def placement(local_rank: int, local_world: int, gpus: int) -> tuple[int, str]:
    """A CUDA rank's GPU and the process group's backend.

    Each rank of a node takes GPU ``local_rank`` and the group reduces over NCCL.  With more
    ranks on a node than GPUs (a multi-process run checked on one GPU, say), ranks share GPUs
    round-robin and the group uses gloo: NCCL refuses two ranks on one GPU, and gloo's
    all-reduce and broadcast, all that DistributedDataParallel and this module call, take CUDA
    tensors.
    """
    if gpus < 1:
        raise RuntimeError("a CUDA run under torchrun found no GPU")
    if local_world <= gpus:
        return local_rank, "nccl"
    return local_rank % gpus, "gloo"


def setup(device_name: str) -> torch.device:
    """The run's device (``auto``: CUDA when there is one); under torchrun, also the process group
    (NCCL on CUDA, gloo on the CPU or where ranks share a GPU: :func:`placement`) and this rank's GPU."""
    if device_name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "gloo"
        if device.type == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            index, backend = placement(local, int(os.environ.get("LOCAL_WORLD_SIZE", "1")), torch.cuda.device_count())
            torch.cuda.set_device(index)
            device = torch.device("cuda", index)
        dist.init_process_group(backend)
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def backend() -> str | None:
    """The process group's backend, or None outside torchrun."""
    return dist.get_backend() if dist.is_available() and dist.is_initialized() else None


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def reduce_mean(values: dict[str, float], device) -> dict[str, float]:
    """Average scalars over ranks (a no-op on one process)."""
    rank, size = world()
    if size == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / size for k, v in zip(keys, t.tolist())}


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") else module
