"""Distributed data parallel set-up (``torchrun --nproc_per_node N -m equipot.cli train ...``)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group torchrun describes (env WORLD_SIZE > 1); otherwise single process.

    The backend is NCCL for CUDA devices and gloo for the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local, initialized_here=True)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over ranks (in place; a no-op for a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def rank_agreement(model: torch.nn.Module, info: DistInfo) -> float:
    """Largest parameter difference between rank 0 and any rank (0.0 for one process)."""
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().double().reshape(-1).cpu() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = torch.tensor([float((flat - ref).abs().max())], dtype=torch.float64)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff[0])


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; under DDP on CUDA each rank takes ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device is {name!r} but CUDA is not available (use train.device=cpu)")
        if info is not None and info.enabled and name == "cuda":
            name = f"cuda:{info.local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"train.device: {name!r} is not a torch device (cpu, cuda, cuda:N, auto)") from None
