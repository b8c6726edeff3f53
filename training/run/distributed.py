"""Processes: the device, the process group under torchrun, and values averaged over ranks."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn


def setup(device_name: str) -> torch.device:
    """The run's device (``auto``: CUDA when there is one); under torchrun, also the process group
    (NCCL on CUDA, gloo on the CPU) and this rank's GPU."""
    if device_name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device.type == "cuda":
            torch.cuda.set_device(local)
            device = torch.device("cuda", local)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


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
