"""The training step, built once per run, and what both engines share around it.

:class:`TrainStep` is what the eager engine (:mod:`bench.train.engine`), the CUDA-graph engine
(:mod:`bench.train.graphed`, which captures it), the step micro-benchmark (:mod:`bench.measure.speed`
and ``.memory``) and ``bench perf`` call. It owns the decisions a step makes: the memory format of the
input, the autocast region, the loss over tuple outputs (main head plus weighted auxiliary heads),
gradient zeroing and loss scaling, and, for a run, the lr of every iteration (``base_lr * schedule(i)``).
:meth:`TrainStep.for_run` builds it from a :class:`~bench.config.RunConfig`; sums and counters are
the engines' business.

:class:`Engine` is what the loop asks of an engine: one epoch of steps (:class:`EpochStats`) and the
optimizer state a checkpoint keeps. :class:`PeakWindow` is the memory window around an epoch's steps.

Nothing here reads a device value inside the step loop: loss and correct counts accumulate in
device tensors that the caller reads once per epoch, and the divergence check reads a flag that was
copied to pinned host memory without blocking (CUDA) or every ``DIVERGENCE_CHECK_EVERY`` steps (CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from bench.config import RunConfig
from bench.device import (
    Precision,
    autocast,
    memory_peaks,
    release_cached_memory,
    reset_memory_peaks,
)
from bench.models.outputs import split_outputs
from bench.train.optim import Schedule, build_optimizer

__all__ = ["DIVERGENCE_CHECK_EVERY", "DivergenceWatch", "Engine", "EpochStats", "PeakWindow", "TrainStep", "sync"]

# Steps between divergence flag reads. On CUDA the read is of a copy made K steps earlier whose
# event has completed, so it never waits on the GPU; a NaN is caught within ~2K steps of appearing.
DIVERGENCE_CHECK_EVERY = 50


Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TrainStep:
    """``step(x, y) -> (loss, main_logits)``, both detached; never reads a device value on the host.

    Order: input to channels_last (when asked; a no-op if the loader already did it), forward under
    autocast, ``loss = criterion(main, y) + aux_weight * sum(criterion(aux, y))``,
    ``zero_grad(set_to_none=True)``, backward and ``optimizer.step()`` (through ``scaler`` for fp16).
    ``capturable=True`` (the graphed engine) turns autocast's weight-cast cache off; it also requires
    that no GradScaler is used, whose inf checks run on the host. ``schedule`` and ``base_lr`` give
    the lr of each iteration (:meth:`lr`); without a schedule the optimizer's lr is left alone.
    """

    model: nn.Module
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    prec: Precision
    device: torch.device
    channels_last: bool = False
    aux_weight: float = 0.0
    scaler: torch.amp.GradScaler | None = None
    schedule: Schedule | None = None
    base_lr: float = 0.0
    capturable: bool = False

    def __post_init__(self) -> None:
        if self.scaler is not None and not self.scaler.is_enabled():
            self.scaler = None
        if self.capturable and self.scaler is not None:
            raise ValueError("a capturable step cannot use a GradScaler (its inf checks are host-side)")

    @classmethod
    def for_run(cls, cfg: RunConfig, model: nn.Module, prec: Precision, device: torch.device,
                schedule: Schedule) -> TrainStep:
        """The run's step: ``cfg``'s optimizer over ``model``, ``schedule`` times ``cfg.lr``,
        cross-entropy with its label smoothing, its aux weight and memory format, and a GradScaler
        where ``prec`` needs one (fp16)."""
        return cls(
            model, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
            build_optimizer(cfg, model.parameters()), prec, device,
            channels_last=cfg.channels_last, aux_weight=cfg.aux_loss_weight,
            scaler=torch.amp.GradScaler(device.type, enabled=prec.use_scaler),
            schedule=schedule, base_lr=cfg.lr,
        )

    def lr(self, i: int) -> float:
        """The lr of global iteration ``i``: ``base_lr * schedule(i)`` (a host float: no sync)."""
        if self.schedule is None:
            raise ValueError("this step has no schedule: its optimizer keeps the lr it was built with")
        return self.base_lr * self.schedule(i)

    def set_lr(self, i: int) -> float:
        """Give every param group the lr of iteration ``i``; returns it."""
        lr = self.lr(i)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

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


class Engine(Protocol):
    """What the loop asks of an engine (eager: :class:`bench.train.engine.EagerEngine`; graphed:
    :class:`bench.train.graphed.GraphTrainer`); both drive the run's one :class:`TrainStep`."""

    name: str  # the run's engine_used

    def train_epoch(self, epoch: int, start_iteration: int, max_iteration: int) -> EpochStats:
        """Epoch ``epoch`` from global step ``start_iteration``, stopping at ``max_iteration``."""
        ...

    def optimizer_state_dict(self) -> dict[str, Any]:
        """The optimizer's state as a checkpoint keeps it (a float lr in every group)."""
        ...


class PeakWindow:
    """The allocator's peaks over a window of training work (CUDA; ``(None, None)`` elsewhere).

    :meth:`begin` syncs, releases the cached blocks (the last evaluation's are not the steps';
    ``release=False`` keeps them) and resets the peaks; :meth:`end` syncs and reads them. The
    engine's epochs and capture, and ``bench perf``'s timed epochs, use this one sequence.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def begin(self, release: bool = True) -> None:
        sync(self.device)
        if release:
            release_cached_memory(self.device)
        reset_memory_peaks(self.device)

    def end(self) -> tuple[int | None, int | None]:
        """(peak allocated bytes, peak reserved bytes) since :meth:`begin`."""
        sync(self.device)
        return memory_peaks(self.device)
