"""torchrun's world as the trainer and the cohort mode see it: this process's rank, the number of processes and
its GPU. Outside torchrun (WORLD_SIZE unset or 1) everything is a single process and nothing is initialised."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group if WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def barrier(dist_info: DistInfo) -> None:
    if dist_info.world > 1:
        import torch.distributed as dist

        dist.barrier()


def finish_distributed(dist_info: DistInfo) -> None:
    """Leave the process group (torchrun warns when a process exits inside one)."""
    if dist_info.world > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
