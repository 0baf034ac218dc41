"""Process-wide settings: device choice, mixed precision, seeding, determinism, threads."""
from __future__ import annotations

import contextlib
import os
import platform
import random

import torch

from trainer.core.display import plural
from trainer.core.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu (the seed's order). Under
    torchrun, `cuda`/`auto` mean this process's own GPU, cuda:LOCAL_RANK."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise UserError("device=mps is not available on this machine; use device=auto or device=cpu")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        number = name.partition(":")[2]
        if name != "cuda" and not number.isdigit():
            raise UserError(f"device={name} is not a device: write cuda:N with N a GPU number from 0, or cuda")
        index = local_rank if name == "cuda" else int(number)
        if index >= count:
            have = f"{count} CUDA device{'s' if count != 1 else ''}"
            raise UserError(f"device={name} is not available: this machine has {have}; use device=auto or device=cpu")
        return torch.device("cuda", index)
    raise UserError(f"device={name} is not a device; use auto, cpu, cuda, cuda:N or mps")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed every RNG; with `deterministic`, also ask for deterministic kernels
    so a CPU run repeats bit for bit."""
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def autocast(device: torch.device, precision: str, cache: bool = True):
    """The one autocast choice for training, evaluation and inference: a run's
    numbers are the same wherever its model runs. `cache=False` inside a CUDA
    graph: cached casts would outlive the capture."""
    dtype = _AMP_DTYPES.get(precision)
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache) if dtype is not None \
        else contextlib.nullcontext()


def grad_scaler(device: torch.device, precision: str):
    """fp16 gradients need loss scaling; bf16 and fp32 do not (None)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or the CPU's model name with torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.processor() or 'CPU'}, {plural(torch.get_num_threads(), 'thread')}"
