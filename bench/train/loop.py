"""The training step and the eager loop: :class:`TrainStep`, the per-step lr, device-side sums, divergence.

:class:`TrainStep` is what the eager loop, the CUDA-graph engine (:mod:`bench.train.graphed`, which
captures it), the step micro-benchmark (:mod:`bench.measure.speed` and ``.memory``) and ``bench perf``
call. It owns the decisions a step makes: the memory format of the input, the autocast region, the
loss over tuple outputs (main head plus weighted auxiliary heads), gradient zeroing and loss
scaling. The lr, sums and counters are the callers' business.

Nothing here reads a device value inside the step loop: loss and correct counts accumulate in
device tensors that the caller reads once per epoch, and the divergence check reads a flag that was
copied to pinned host memory without blocking (CUDA) or every ``DIVERGENCE_CHECK_EVERY`` steps (CPU).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from bench.device import Precision, autocast
from bench.models.outputs import split_outputs
from bench.train.optim import Schedule


# Steps between divergence flag reads. On CUDA the read is of a copy made K steps earlier whose
# event has completed, so it never waits on the GPU; a NaN is caught within ~2K steps of appearing.
DIVERGENCE_CHECK_EVERY = 50


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainStep:
    """``step(x, y) -> (loss, main_logits)``, both detached; never reads a device value on the host.

    Order: input to channels_last (when asked; a no-op if the loader already did it), forward under
    autocast, ``loss = criterion(main, y) + aux_weight * sum(criterion(aux, y))``,
    ``zero_grad(set_to_none=True)``, backward and ``optimizer.step()`` (through ``scaler`` for fp16).
    ``capturable=True`` (the graphed engine) turns autocast's weight-cast cache off; it also requires
    that no GradScaler is used, whose inf checks run on the host.
    """

    model: nn.Module
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    prec: Precision
    device: torch.device
    channels_last: bool = False
    aux_weight: float = 0.0
    scaler: torch.amp.GradScaler | None = None
    capturable: bool = False

    def __post_init__(self) -> None:
        if self.scaler is not None and not self.scaler.is_enabled():
            self.scaler = None
        if self.capturable and self.scaler is not None:
            raise ValueError("a capturable step cannot use a GradScaler (its inf checks are host-side)")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and loss only: ``(loss, main logits)`` with the graph kept for backward."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.prec, self.device, cache=not self.capturable):
            main, aux = split_outputs(self.model(x))
            loss = self.criterion(main, y)
            for a in aux:
                loss = loss + self.aux_weight * self.criterion(a, y)
        return loss, main

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, main = self.loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss.detach(), main.detach()


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
    step = TrainStep(model, criterion, optimizer, prec, device, channels_last=channels_last,
                     aux_weight=aux_weight, scaler=scaler)
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    watch = DivergenceWatch(device)
    it, samples, lr, diverged = start_iteration, 0, float("nan"), False
    # islice: a partial last epoch stops at the budget without preparing one batch too many
    for x, y in itertools.islice(batches, max(max_iteration - start_iteration, 0)):
        lr = base_lr * schedule(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, main = step(x, y)
        n = y.shape[0]
        loss_sum += loss.float() * n
        correct += (main.argmax(1) == y).sum()
        samples += n
        it += 1
        if (it - start_iteration) % DIVERGENCE_CHECK_EVERY == 0 and watch.poll(loss_sum):
            diverged = True
            break
    return EpochStats(loss_sum, correct, samples, it - start_iteration, diverged, lr)
