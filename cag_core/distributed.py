"""One process per device through PyTorch's own launcher (`torchrun`), or a single process.

torchrun starts one process per GPU (or per CPU core) on every machine and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment; `start` reads them, joins
the process group (nccl on CUDA, gloo on CPUs) and picks this rank's device. Without torchrun
(no WORLD_SIZE) it is a world of one and nothing is initialized.

Failures end the job, never hang it: torchrun stops the other local processes when one exits
with an error, and a rank on another machine waiting for a dead peer gets an error from the
process group (gloo: at once, the connection closes; nccl: after `timeout`).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import CaGError


@dataclass(frozen=True)
class Rank:
    rank: int  # 0 .. world-1 over all machines
    world: int  # number of processes
    local_rank: int  # 0 .. processes on this machine - 1
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CaGError(f"The environment variable {name}={value!r} is not an integer (torchrun sets it).") from None


def start(device_choice: str = "auto", timeout_minutes: float = 30.0) -> Rank:
    """This process's rank and device; joins the process group when started by torchrun.

    device_choice: "auto" (this rank's GPU when CUDA is available, else the CPU), "cpu", or "cuda"
    (each rank takes cuda:LOCAL_RANK). An explicit "cuda:N" is refused with several processes on a
    machine, since they would all share one GPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = _device(device_choice, local_rank, _env_int("LOCAL_WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return Rank(rank, world, local_rank, device)


def _device(choice: str, local_rank: int, local_world: int) -> torch.device:
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cpu":
        return torch.device("cpu")
    device = torch.device(choice)
    if device.type != "cuda":
        raise CaGError(f"--device {choice}: use auto, cpu or cuda (each process takes its own GPU).")
    if not torch.cuda.is_available():
        raise CaGError(f"--device {choice} was asked for, but torch sees no CUDA device: use --device cpu.")
    if device.index is not None:
        if local_world > 1:
            raise CaGError(f"--device {choice} with {local_world} processes per machine would put them all on one "
                           "GPU: use --device cuda (rank r takes cuda:LOCAL_RANK).")
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise CaGError(f"Local rank {local_rank} has no GPU: this machine has {count}; start at most {count} "
                       "processes per machine (torchrun --nproc-per-node).")
    return torch.device("cuda", local_rank)


def broadcast(obj, rank: Rank):
    """Rank 0's `obj` on every rank (picklable Python objects; a no-op in a world of one)."""
    if rank.world == 1:
        return obj
    box = [obj if rank.is_main else None]
    dist.broadcast_object_list(box, src=0, device=rank.device if rank.device.type == "cuda" else None)
    return box[0]


def barrier(rank: Rank) -> None:
    if rank.world > 1:
        dist.barrier()


def finish(rank: Rank) -> None:
    if rank.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
