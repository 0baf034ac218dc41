"""The training step over static buffers, captured once as a CUDA graph.

At batch 64 a GPU spends most of an eager step launching kernels. A CUDA
graph launches the whole step (forward, loss, backward, optimizer step and
the epoch's running sums) as one. A graph replays fixed memory addresses, so
the step reads its batch from static buffers, zeroes its gradients in place
instead of dropping them, and its optimizer reads the learning rate from a
tensor the scheduler fills in place. Augmentation is drawn before the batch
is copied in, outside the graph.

The same step runs uncaptured on any device: the tests check on the CPU that
it is the eager step bit for bit, so only capture and replay need a GPU.

    capture, why_eager = plan(...)       # whether a run captures, or why not
    step = StaticStep(...)               # step(x, y) for each full batch
"""
from __future__ import annotations

import time

import torch
from trainer.core.engine import TrainStep
from trainer.core.errors import UserError

CHOICES = ("auto", True, False)

# Optimizers with a fused CUDA kernel that reads the learning rate from a
# tensor, and what else they need to be captured.
FUSED_WITH_TENSOR_LR = {
    "torch.optim.SGD": {},
    "torch.optim.Adam": {"capturable": True},
    "torch.optim.AdamW": {"capturable": True},
}


def why_eager(*, precision: str, nan_policy: str, pipeline: str, world_size: int, compile: bool,
              optimizer: str, changes_momentum: bool = False) -> str:
    """Why a CUDA run cannot capture its step ("" when it can)."""
    if precision == "fp16":
        return "precision=fp16 scales the loss with a GradScaler, which checks for inf on the host every step " \
               "(precision=bf16 needs no scaler)"
    if nan_policy == "skip":
        return "train.nan_policy=skip reads every step's loss on the host (train.nan_policy=stop does not)"
    if pipeline != "device":
        return f"pipeline={pipeline} feeds batches from the host (pipeline=device keeps them on the GPU)"
    if world_size > 1:
        return f"DDP across {world_size} processes all-reduces gradients outside the graph"
    if compile:
        return "compile=true: torch.compile makes its own graphs (compile=false captures the whole step)"
    if optimizer not in FUSED_WITH_TENSOR_LR:
        short = ", ".join(name.rpartition(".")[2].lower() for name in FUSED_WITH_TENSOR_LR)
        return f"optimizer {optimizer} has no fused kernel that reads a tensor learning rate ({short} have)"
    if changes_momentum:
        return "scheduler.cycle_momentum=true sets the momentum every step as a host number, which a graph " \
               "would replay unchanged (scheduler.cycle_momentum=false keeps the optimizer's own)"
    return ""


def plan(requested, device: torch.device, **setting) -> tuple[bool, str]:
    """(capture?, the one line saying why the run trains eagerly, or "").
    `requested` is cuda_graph: auto, True or False; True where capture
    cannot apply is refused, naming why. `setting`: see why_eager."""
    if requested is False:
        return False, ""
    if device.type != "cuda":
        if requested is True:
            raise UserError(f"cuda_graph=true needs a CUDA device, and this run is on {device.type}; "
                            "use cuda_graph=auto (captures wherever it applies) or device=cuda")
        return False, ""  # nothing to say: graphs are a CUDA feature
    reason = why_eager(**setting)
    if reason and requested is True:
        raise UserError(f"cuda_graph=true cannot apply: {reason}; use cuda_graph=auto to train eagerly")
    return not reason, f"Training eagerly (no CUDA graph): {reason}" if reason else ""


def optimizer_arguments(target: str, lr: float, device: torch.device) -> dict:
    """The arguments that make `target` capturable: fused, a tensor lr."""
    return {"lr": torch.tensor(float(lr), device=device), "fused": True, **FUSED_WITH_TENSOR_LR[target]}


class StaticStep:
    """The training step (engine.TrainStep, the one the eager loop runs) over
    static buffers, for full batches. With `capture` (CUDA), the first
    WARMUP_STEPS run eagerly on a side stream, real steps that also allocate
    the lazy state (gradients, optimizer moments, cuDNN plans); the next is
    recorded, and every later one replays."""

    WARMUP_STEPS = 3

    def __init__(self, step: TrainStep, *, batch_size: int, capture: bool = False):
        self.step, self.batch_size, self.capture = step, batch_size, capture
        self.loss = torch.zeros((), device=step.device)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.graph = None
        self.steps = 0
        self.capture_seconds: float | None = None

    def takes(self, y: torch.Tensor) -> bool:
        """A partial batch (the epoch's last) has other shapes: it runs eagerly."""
        return len(y) == self.batch_size

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Train on (x, y); returns the step's loss (a static tensor, read only at logging points)."""
        if self.x is None:
            self.x, self.y = torch.empty_like(x), torch.empty_like(y)
        self.x.copy_(x)
        self.y.copy_(y)
        if self.graph is not None:
            self.graph.replay()
        elif not self.capture:
            self._step()
        elif self.steps < self.WARMUP_STEPS:
            self._warm_up()
        else:
            self._record()
            self.graph.replay()
        self.steps += 1
        return self.loss

    def _step(self) -> None:
        # Autocast's cache of cast weights must not carry casts made outside the graph into it.
        self.loss.copy_(self.step(self.x, self.y, keep_grads=True, autocast_cache=not self.capture))

    def _warm_up(self) -> None:
        device = self.step.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream(device).wait_stream(side)

    def _record(self) -> None:
        """Record one step (recording runs nothing); the caller replays it."""
        device = self.step.device
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        torch.cuda.synchronize(device)
        self.capture_seconds = time.perf_counter() - t0
        self.graph = graph
