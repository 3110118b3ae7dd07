"""torchrun DDP: process group set-up from the environment, rank-0 helpers, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: `world` processes, this one is `rank`."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but CUDA is not available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise ValueError(f"device={name!r} must be auto, cpu or cuda")
    return torch.device("cpu")


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.
    A plain run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world <= 1:
        return Dist(device=dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world=dist.get_world_size(), device=dev)


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(d: Dist, values: list[float]) -> list[float]:
    """Sum of each value over the processes (the values themselves without DDP)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def broadcast_flag(d: Dist, flag: bool) -> bool:
    """Rank 0's flag on every rank (e.g. "an error was found")."""
    if not d.enabled:
        return flag
    t = torch.tensor([int(flag)], device=d.device)
    dist.broadcast(t, 0)
    return bool(t.item())
