"""torch.distributed, only as much as the Trainer needs.

Launched by torchrun, every process reads RANK / LOCAL_RANK / WORLD_SIZE
from the environment; launched plainly, everything here is a no-op, so the
single-process path has no distributed code in it.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from trainer.core.display import plural


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """This process writes the outputs: rank 0 of a process group, or, before
    one is joined, the process torchrun started as RANK 0 (or a plain one)."""
    if dist.is_available() and dist.is_initialized():
        return rank() == 0
    return os.environ.get("RANK", "0") == "0"


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_processes() -> int:
    """How many processes torchrun started on this machine (1 when launched plainly)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def cpu_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def oversubscribed(device_type: str, processes: int, threads: int, cores: int) -> str | None:
    """The line a DDP run on the CPU starts with when its processes' threads
    outnumber the cores (torchrun --nproc_per_node=4 on 2 cores): they take
    turns, so each step waits; None when they fit, or on a GPU."""
    if device_type != "cpu" or processes < 2 or processes * threads <= cores:
        return None
    fit = max(1, cores // max(threads, 1))
    return (f"{plural(processes, 'process', 'processes')} of {plural(threads, 'thread')} each share "
            f"{plural(cores, 'CPU core')}: they take turns, which is slower than fewer processes; "
            f"start at most {fit} (torchrun --nproc_per_node={fit}) or train on GPUs")


def setup(device: torch.device) -> None:
    """Join the process group: nccl for CUDA, gloo otherwise."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)


def teardown() -> None:
    """Leave the process group, every rank together: a rank that destroyed
    it and exited while rank 0 still wrote the run's record was seen to abort
    ("terminate called without an active exception"), failing the run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (identity in a single process)."""
    if world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over ranks (identity in a single process): "did any rank ...?"."""
    if world_size() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_object(obj):
    """Rank 0's value of a picklable object, on every rank."""
    if world_size() == 1:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def job_gpu(job_num: int) -> str:
    """`device=${trainer_gpu:}`: one GPU per parallel sweep job, cuda:(job
    number % visible GPUs). With no GPU visible it names cuda:0, which
    pick_device then refuses with its usual one-line error."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return f"cuda:{int(job_num or 0) % max(count, 1)}"
