"""Process groups under torchrun: NCCL for GPUs, gloo for CPUs; one process needs none."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: list[float] | torch.Tensor) -> torch.Tensor:
        """Sum over ranks (float64, on this rank's device), or the values themselves alone."""
        t = torch.as_tensor(values, dtype=torch.float64, device=self.device).clone()
        if self.enabled:
            dist.all_reduce(t)
        return t

    def per_rank(self, value: float) -> list[float]:
        """Every rank's value, in rank order (one all-reduce of a one-hot vector)."""
        t = torch.zeros(self.world_size, dtype=torch.float64, device=self.device)
        t[self.rank] = value
        return self.all_sum(t).tolist()

    def broadcast(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def pick_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("job.device=cuda but no GPU is visible")
        return torch.device("cuda", local_rank)
    if spec == "cpu":
        return torch.device("cpu")
    raise ValueError(f"job.device must be cpu, cuda or auto; got {spec!r}")


def init(device_spec: str) -> Dist:
    """Join the torchrun job (WORLD_SIZE > 1), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_spec, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return Dist(rank, world, local, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
