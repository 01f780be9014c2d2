"""Optimisers and learning-rate schedules, both behind registries.

A schedule is a multiplier of ``cfg.lr`` per iteration. Every shape is a pure function of the
iteration index, so the engine can set the lr each step from a Python float (no host sync), and a
CUDA-graph engine can precompute the whole curve once (``bench.train.graphed.lr_table_values``) and
index it on the device. The one exception is ``plateau`` (its own type, :class:`PlateauSchedule`):
its factor changes only between epochs, from a metric the engine reads anyway, via
:meth:`Schedule.step_epoch`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from bench.config import RunConfig
from bench.registry import Registry

OptimizerFactory = Callable[[RunConfig, list[Any], dict[str, bool]], torch.optim.Optimizer]
ShapeFactory = Callable[[RunConfig, int, int], Callable[[int], float]]

OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")
SCHEDULES: Registry[ShapeFactory] = Registry("schedule")

# ReduceLROnPlateau settings (torch defaults; the factor is cfg.gamma). RunConfig has no field for
# them, and a study that needs others can register its own schedule.
PLATEAU_PATIENCE = 10
PLATEAU_THRESHOLD = 1e-4


# --------------------------------------------------------------------------------------- optimisers


@OPTIMIZERS.register("sgd", accel="fused")
def _sgd(cfg: RunConfig, params: list[Any], accel: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
        weight_decay=cfg.weight_decay, **accel,
    )


@OPTIMIZERS.register("adam", accel="fused")
def _adam(cfg: RunConfig, params: list[Any], accel: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **accel)


@OPTIMIZERS.register("adamw", accel="fused")
def _adamw(cfg: RunConfig, params: list[Any], accel: dict[str, bool]) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **accel)


@OPTIMIZERS.register("rmsprop", accel="foreach")
def _rmsprop(cfg: RunConfig, params: list[Any], accel: dict[str, bool]) -> torch.optim.Optimizer:
    # torch's RMSprop has no fused kernel; alpha (the squared-gradient average) is betas[1]'s analogue
    # but RMSprop papers use 0.9-0.99, so keep torch's 0.99 and take momentum from cfg.momentum.
    return torch.optim.RMSprop(
        params, lr=cfg.lr, alpha=0.99, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **accel
    )


def build_optimizer(cfg: RunConfig, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimiser ``cfg.optimizer`` over ``params`` (tensors or param-group dicts).

    Weight decay applies to every parameter (as in He et al.). On CUDA, SGD/Adam/AdamW use the fused
    multi-tensor kernels (``fused=True``; GradScaler supports them) and RMSprop, which has no fused
    kernel, uses ``foreach=True``. On CPU, and for an optimiser registered without ``accel=``, torch's
    defaults are kept.
    """
    factory = OPTIMIZERS.get(cfg.optimizer)
    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
    return factory(cfg, params, accel_kwargs(cfg.optimizer, on_cuda))


def accel_kwargs(name: str, on_cuda: bool) -> dict[str, bool]:
    """``{accel: True}`` for an optimiser registered with ``accel=`` whose parameters are all on CUDA;
    ``{}`` otherwise (on a CPU, or when none was registered: torch's defaults on every device)."""
    flag = OPTIMIZERS.meta(name).get("accel")
    return {flag: True} if on_cuda and flag else {}


# ---------------------------------------------------------------------------------------- schedules


def _unit(cfg: RunConfig, steps_per_epoch: int) -> int:
    """Iterations per schedule unit."""
    return steps_per_epoch if cfg.schedule_unit == "epoch" else 1


@SCHEDULES.register("constant")
def _constant(_cfg: RunConfig, _steps_per_epoch: int, _total_steps: int) -> Callable[[int], float]:
    return lambda _i: 1.0


@SCHEDULES.register("multistep")
def _multistep(cfg: RunConfig, steps_per_epoch: int, _total_steps: int) -> Callable[[int], float]:
    # He et al. (CIFAR): milestones=(32000, 48000), schedule_unit='iter', gamma=0.1, iterations=64000.
    marks = sorted(m * _unit(cfg, steps_per_epoch) for m in cfg.milestones)
    gamma = cfg.gamma
    return lambda i: gamma ** sum(1 for m in marks if i >= m)


@SCHEDULES.register("cosine")
def _cosine(cfg: RunConfig, steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    # The cosine spans the steps after the warm-up, reaching 0 at the last step of the run.
    start = min(cfg.warmup * _unit(cfg, steps_per_epoch), total_steps - 1)
    span = max(total_steps - 1 - start, 1)
    return lambda i: 0.5 * (1.0 + math.cos(math.pi * min(max(i - start, 0) / span, 1.0)))


@SCHEDULES.register("onecycle")
def _onecycle(_cfg: RunConfig, _steps_per_epoch: int, total_steps: int) -> Callable[[int], float]:
    # torch.optim.lr_scheduler.OneCycleLR's default two-phase cosine shape, with max_lr = cfg.lr.
    pct_start, div, final_div = 0.3, 25.0, 1e4
    initial = 1.0 / div
    final = initial / final_div
    up_end = float(pct_start * total_steps) - 1
    down_end = float(total_steps - 1)

    def anneal(a: float, b: float, pct: float) -> float:
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    def f(i: int) -> float:
        if i <= up_end:
            return anneal(initial, 1.0, i / up_end) if up_end > 0 else 1.0
        return anneal(1.0, final, min((i - up_end) / max(down_end - up_end, 1e-12), 1.0))

    return f


@dataclass
class Schedule:
    """lr multiplier per iteration: ``warmup(i) * shape(i) * plateau_factor``.

    ``__call__`` is a pure function of ``i`` (plus the plateau factor, constant within an epoch;
    1 except for a :class:`PlateauSchedule`). Warm-up (Goyal et al.) is linear, ``(i + 1) / W`` for
    the first ``W`` iterations, so it starts near 0 and reaches 1 at iteration ``W - 1``; it
    multiplies any shape.
    """

    name: str
    shape: Callable[[int], float]
    warmup_steps: int = 0
    plateau_factor: float = 1.0

    def __call__(self, i: int) -> float:
        w = min(1.0, (i + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        return w * self.shape(i) * self.plateau_factor

    def step_epoch(self, metric: float) -> None:
        """End-of-epoch hook; a schedule that is a pure function of the iteration ignores it."""

    def state_dict(self) -> dict[str, Any]:
        """The mutable state, for checkpoints."""
        return {"plateau_factor": self.plateau_factor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (older checkpoints also carry the plateau keys: ignored)."""
        self.plateau_factor = float(state["plateau_factor"])


@dataclass
class PlateauSchedule(Schedule):
    """ReduceLROnPlateau (mode min, relative threshold): the factor drops by ``gamma`` between epochs
    once the metric has not improved for more than :data:`PLATEAU_PATIENCE` epochs."""

    gamma: float = 0.1
    _best: float = math.inf
    _bad_epochs: int = 0

    def step_epoch(self, metric: float) -> None:
        if not math.isfinite(metric):
            return
        if metric < self._best * (1 - PLATEAU_THRESHOLD):
            self._best, self._bad_epochs = metric, 0
        else:
            self._bad_epochs += 1
            if self._bad_epochs > PLATEAU_PATIENCE:
                self.plateau_factor *= self.gamma
                self._bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {"plateau_factor": self.plateau_factor, "best": self._best, "bad_epochs": self._bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self._best = float(state["best"])
        self._bad_epochs = int(state["bad_epochs"])


@SCHEDULES.register("plateau", schedule_type=PlateauSchedule)
def _plateau(_cfg: RunConfig, _steps_per_epoch: int, _total_steps: int) -> Callable[[int], float]:
    # The per-iteration shape is flat; PlateauSchedule.step_epoch applies the reductions.
    return lambda _i: 1.0


def build_schedule(cfg: RunConfig, steps_per_epoch: int, total_steps: int) -> Schedule:
    """The schedule ``cfg.schedule`` with ``cfg.warmup`` linear warm-up, in iterations.

    Milestones and warm-up count in ``cfg.schedule_unit``; ``total_steps`` is the run's length in
    iterations. A schedule registered with ``schedule_type=`` (``plateau``) is built as that type.
    Unknown names raise :class:`~bench.errors.UserError`.
    """
    shape = SCHEDULES.get(cfg.schedule)(cfg, steps_per_epoch, max(total_steps, 1))
    warmup_steps = cfg.warmup * _unit(cfg, steps_per_epoch)
    kind = SCHEDULES.meta(cfg.schedule).get("schedule_type", Schedule)
    if kind is PlateauSchedule:
        return PlateauSchedule(name=cfg.schedule, shape=shape, warmup_steps=warmup_steps, gamma=cfg.gamma)
    return kind(name=cfg.schedule, shape=shape, warmup_steps=warmup_steps)
