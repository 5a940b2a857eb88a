"""Where this process sits in a ``torchrun`` job: rank, world size, device, and the process group.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the default process
group is initialised here (NCCL on CUDA, gloo on CPU) unless the caller already did so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """This process's place in the job; ``owns_group`` says whether :func:`setup` created the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            if self.device.type == "cuda":
                dist.barrier(device_ids=[self.device.index])
            else:
                dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device: str | None = None) -> DistContext:
    """Read the torchrun environment, pick the device, and join the process group when there is more than one
    process. ``device`` overrides the default (``cuda:LOCAL_RANK`` when CUDA is present, else ``cpu``)."""
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    else:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        chosen = torch.device(device)
    elif torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if chosen.type == "cuda":
        if chosen.index is None:
            chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError(
                f"WORLD_SIZE={world_size} but torch.distributed is not available in this build"
            )
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=chosen if chosen.type == "cuda" else None)
        owns = True
    return DistContext(
        rank=rank, world_size=world_size, local_rank=local_rank, device=chosen, owns_group=owns
    )
