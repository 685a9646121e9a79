"""Where a run computes: the device, CPU threads, the torchrun process group and mixed precision.

Runs go through torchrun for several GPUs or nodes; WORLD_SIZE, RANK and LOCAL_RANK come from the
environment (nccl on CUDA, gloo on CPU). Without torchrun a process is rank 0 of 1.
"""

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from epam_data.errors import EpamError
from epam_data.threads import usable_cores

__all__ = [
    "DistEnv",
    "resolve_device",
    "set_cpu_threads",
    "init_distributed",
    "autocast_context",
    "unwrap",
]


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """ "auto" is this process's GPU (cuda:LOCAL_RANK) when there is one, else the CPU; "cuda" means
    cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EpamError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise EpamError(
                f"--device {name}: this torch build or machine has no CUDA; use --device cpu"
            )
        index = device.index if device.index is not None else local_rank
        if index >= torch.cuda.device_count():
            raise EpamError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise EpamError(f"--device {name!r}: use auto, cpu, cuda or cuda:N")
    return device


def loader_workers(requested: int) -> int:
    """Loader processes actually started: at most the cores this process may use. More only
    contend for those cores (and torch warns about it at every epoch)."""
    return min(requested, usable_cores())


def set_cpu_threads(device: torch.device, threads: int | None, workers: int) -> int:
    """Torch compute threads of this process on the CPU: `threads`, or the cores left to it (returns
    the count).

    "Left" = the cores this process may use (its affinity), shared with the other torchrun processes
    of the node, minus one per loader worker. More threads than free cores is not a little slower
    but many times slower: OpenMP workers spin at every barrier while another process holds their
    core (measured here on 2 shared cores: a training step of 4 small clips took 0.6 s with 1 thread
    and 5-25 s with 2). On a GPU it is left as is.
    """
    if device.type != "cpu":
        return torch.get_num_threads()
    if threads is None:
        per_process = usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        threads = max(1, per_process - loader_workers(workers))
    torch.set_num_threads(threads)
    return threads


BACKEND_ENV = "EPAM_DIST_BACKEND"


def process_group_backend(device: torch.device) -> str:
    """nccl on CUDA, gloo on the CPU; `$EPAM_DIST_BACKEND` overrides (gloo on CUDA runs several
    processes on one GPU, which nccl refuses: a rehearsal of a multi-GPU job on one card)."""
    return os.environ.get(BACKEND_ENV) or ("nccl" if device.type == "cuda" else "gloo")


def init_distributed(device_name: str) -> tuple[DistEnv, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (`process_group_backend`), once per
    process.

    The group lives until the process exits (destroyed at exit): `train` then `evaluate` in one
    process reuse it, because a second init_process_group after a destroy can deadlock on the stale
    keys of torchrun's store.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    env = DistEnv(
        int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))
    )
    device = resolve_device(device_name, env.local_rank)
    if not env.distributed or dist.is_initialized():
        return env, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(process_group_backend(device))
    atexit.register(_destroy_group)
    return env, device


def _destroy_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def autocast_context(amp: str, device: torch.device) -> tuple[Any, bool, str]:
    """(autocast context, whether a GradScaler is needed, a note for the log or "").

    CUDA: bf16 or fp16 autocast, fp16 with loss scaling. CPU: bf16 autocast works (slower than fp32
    on CPUs without bf16 instructions); fp16 is not offered there and falls back to fp32 with a
    note.
    """
    if amp == "off":
        return contextlib.nullcontext(), False, ""
    if device.type == "cpu" and amp == "fp16":
        return (
            contextlib.nullcontext(),
            False,
            "--amp fp16 is for CUDA; training in fp32 on the CPU (bf16 works there)",
        )
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), amp == "fp16", ""


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
