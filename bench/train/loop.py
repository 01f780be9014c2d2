"""The eager training step loop and its numerics: precision, loss over tuple outputs, divergence.

Nothing here reads a device value inside the step loop: loss and correct counts accumulate in
device tensors that the caller reads once per epoch, and the divergence check reads a flag that was
copied to pinned host memory without blocking (CUDA) or every ``DIVERGENCE_CHECK_EVERY`` steps (CPU).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.models.outputs import split_outputs
from bench.train.optim import Schedule

# Steps between divergence flag reads. On CUDA the read is of a copy made K steps earlier whose
# event has completed, so it never waits on the GPU; a NaN is caught within ~2K steps of appearing.
DIVERGENCE_CHECK_EVERY = 50


@dataclass(frozen=True)
class Precision:
    """How a run computes: the precision actually used and what that means for autocast/scaling."""

    used: str  # fp32 | tf32 | bf16 | fp16
    autocast_dtype: torch.dtype | None
    use_scaler: bool
    tf32: bool


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Map ``cfg.precision`` to what ``device`` can do, falling back honestly (recorded as ``used``).

    CPU: tf32 does not exist (-> fp32) and fp16 autocast has no fast kernels nor GradScaler use there
    (-> bf16). CUDA without bf16 support: bf16 -> fp16 with loss scaling.
    """
    cuda = device.type == "cuda"
    if requested == "tf32" and not cuda:
        requested = "fp32"
    if requested == "fp16" and not cuda:
        requested = "bf16"
    if requested == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        requested = "fp16"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(requested)
    return Precision(used=requested, autocast_dtype=dtype, use_scaler=requested == "fp16", tf32=requested == "tf32")


@contextlib.contextmanager
def numerics(prec: Precision, device: torch.device) -> Iterator[None]:
    """Set TF32 and cuDNN autotuning for the run and restore the previous values afterwards.

    TF32 is on only for ``tf32``: cuDNN enables it for convolutions by default, which would make an
    'fp32' arm silently TF32 on Ampere and later. cuDNN benchmark mode picks the fastest conv
    algorithms (fixed input shapes here), at the cost of bitwise run-to-run determinism on CUDA.
    """
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    try:
        torch.backends.cuda.matmul.allow_tf32 = prec.tf32
        torch.backends.cudnn.allow_tf32 = prec.tf32
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = old


def autocast(prec: Precision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for a forward pass (a no-op for fp32/tf32)."""
    if prec.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=prec.autocast_dtype)


class DivergenceWatch:
    """Detects a non-finite running loss sum without synchronising the host with the device."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._flag = torch.zeros((), dtype=torch.bool, pin_memory=self.cuda)
        self._event: torch.cuda.Event | None = None

    def poll(self, loss_sum: torch.Tensor) -> bool:
        """True once a non-finite sum has been seen; on CUDA, queue the next non-blocking copy."""
        if not self.cuda:
            return not bool(torch.isfinite(loss_sum))
        tripped = False
        if self._event is not None:
            if not self._event.query():  # copy still in flight: check at the next poll
                return False
            tripped = bool(self._flag)  # host memory, already written: no sync
        self._flag.copy_(~torch.isfinite(loss_sum), non_blocking=True)
        self._event = torch.cuda.Event()
        # the stream the copy was queued on: loss_sum's device's, not the current device's (cuda:N)
        self._event.record(torch.cuda.current_stream(loss_sum.device))
        return tripped


@dataclass
class EpochStats:
    """Device-side sums of one training epoch; read them with :meth:`read` (one sync)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    samples: int
    steps: int
    diverged: bool
    last_lr: float

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy) on the host."""
        loss, correct = torch.stack([self.loss_sum, self.correct.to(self.loss_sum.dtype)]).tolist()
        n = max(self.samples, 1)
        return loss / n, correct / n


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    schedule: Schedule,
    base_lr: float,
    criterion: nn.Module,
    aux_weight: float,
    prec: Precision,
    device: torch.device,
    start_iteration: int,
    max_iteration: int,
    channels_last: bool,
) -> EpochStats:
    """One pass over ``batches`` in train mode, stopping at ``max_iteration`` (global step count).

    The lr is set per step from the schedule (a host float: no sync). The loss is ``CE(main) +
    aux_weight * sum(CE(aux))`` for tuple outputs; accuracy counts the main logits only.
    """
    model.train()
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    watch = DivergenceWatch(device)
    it, samples, lr, diverged = start_iteration, 0, float("nan"), False
    # islice: a partial last epoch stops at the budget without preparing one batch too many
    for x, y in itertools.islice(batches, max(max_iteration - start_iteration, 0)):
        lr = base_lr * schedule(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # no-op when the loader already did it
        with autocast(prec, device):
            main, aux = split_outputs(model(x))
            loss = criterion(main, y)
            for a in aux:
                loss = loss + aux_weight * criterion(a, y)
        optimizer.zero_grad(set_to_none=True)
        if prec.use_scaler:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = y.shape[0]
        loss_sum += loss.detach().float() * n
        correct += (main.detach().argmax(1) == y).sum()
        samples += n
        it += 1
        if (it - start_iteration) % DIVERGENCE_CHECK_EVERY == 0 and watch.poll(loss_sum):
            diverged = True
            break
    return EpochStats(loss_sum, correct, samples, it - start_iteration, diverged, lr)
