"""The graphed training engine: the whole training step captured once in a CUDA graph, replayed per batch.

At batch 128 a CIFAR ResNet's step is well under 1 ms of GPU work behind ~9 ms of Python and kernel
launches (an H100 probe quoted in docs/perf.md); replaying one CUDA graph per step removes the
launches. What one replay does (:class:`StaticStep`
after the feed):

1. the batch: with a :class:`~bench.data.gpu_loader.GpuLoader` (:class:`DeviceFeed`) the indices
   ``order[pos*B : pos*B + b]`` of the epoch's permutation (``pos`` a device counter), the uint8
   gather and the loader's own vectorised augmentation, drawing from a generator registered with the
   graph; with any other loader (:class:`CopyFeed`) the batch is copied into static input buffers
   before the replay;
2. the lr: ``lr_table[step]``, a float32 device table of ``cfg.lr * schedule(i)`` for every
   iteration of the run, indexed by a device step counter and copied into the 0-dim tensor that is
   every param group's ``lr`` (fused SGD / fused Adam(W) / capturable RMSprop read it on the device);
3. forward (autocast with ``cache_enabled=False``), loss over tuple outputs, ``zero_grad(set_to_none)``,
   backward, ``optimizer.step()``; loss and correct-count sums accumulate in static device tensors.

Nothing in an epoch reads a device value (the divergence check is the eager loop's non-blocking
one); the sums are read once at the epoch's end.

Warm-up and state. Capture needs the optimizer state to exist (SGD momentum buffers, Adam moments,
step counts), cuDNN autotuning done and lazy CUDA initialisation over, so three steps per captured
batch size run first on a side stream, as the PyTorch docs require. They train the real model, so
every parameter, buffer (BatchNorm running stats, ``num_batches_tracked``), optimizer state entry and
the default RNGs are snapshot before and restored in place after capture (the graph holds their
addresses): state that existed before (a resumed run) gets its saved values back; state the warm-up
created is zeroed, which is exactly a fresh state for Adam/AdamW/RMSprop and, for SGD with
``dampening=0``, gives the first update ``buf = 0*momentum + g = g`` like eager's ``buf = clone(g)``.
The graphed run therefore follows the eager trajectory from the same initialisation (not bitwise:
fused kernels and cuDNN algorithm choice differ).

Partial batches. Eager keeps the last partial batch (``drop_last=False``); so does this engine: the tail size
gets its own captured graph (allocating from the full batches' graph's memory pool: they never replay
concurrently) over the same parameters, optimizer state and counters, so both engines take the same steps with
the same batch-mean losses. (With ``capture=False`` every step calls the same step function eagerly.)

Fallbacks (:func:`graph_decision`, :class:`GraphUnsupported`): no CUDA device, fp16 (GradScaler's dynamic
scale and inf checks are host-side and not capturable), an optimizer without a tensor-lr capturable
implementation, a step that synchronises with the host (``.item()`` or control flow on device values in a
forward: the last warm-up step runs under ``set_sync_debug_mode('error')``, so such a step is rejected before
capture begins, which on torch < 2.12 would leave the allocator broken for the rest of the process), or any
other failure in warm-up or capture -> the eager loop, with the reason recorded in the run's summary. Not
detectable: host-side state a forward reads without syncing (Python ``random``, a counter in a Python
attribute) is frozen at capture; the zoo's models have none.

The seam. The loop (:mod:`bench.train.engine`) knows this engine by :func:`graph_decision` (whether
to try it), :func:`start_graph` (warm-up and capture, once; :class:`GraphUnsupported` with the reason
when it cannot) and the :class:`~bench.train.step.Engine` protocol the returned
:class:`GraphTrainer` shares with the eager engine. It hands over the run's one
:class:`~bench.train.step.TrainStep`; this engine captures a ``capturable`` copy of it.

CPU verification. ``GraphTrainer(capture=False)`` runs the same feed and :class:`StaticStep` calls
directly, without a graph; on the CPU that is bitwise the eager loop for SGD. The warm-up / capture /
restore / replay logic runs on the CPU with a stand-in for :class:`CudaGraphOps` (tests/test_graphed.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from bench.config import RunConfig
from bench.data.gpu_loader import GpuLoader
from bench.device import Precision
from bench.errors import reason
from bench.train.capture import CudaGraphOps, GraphUnsupported, HostSync, Snapshot
from bench.train.feeds import CopyFeed, DeviceFeed
from bench.train.optim import Schedule
from bench.train.step import (
    DIVERGENCE_CHECK_EVERY,
    DivergenceWatch,
    EpochStats,
    TrainStep,
)

__all__ = [
    "GRAPH_OPTIMIZERS",
    "WARMUP_STEPS",
    "CopyFeed",
    "CudaGraphOps",
    "DeviceFeed",
    "GraphTrainer",
    "GraphUnsupported",
    "StaticStep",
    "graph_decision",
    "lr_table_values",
    "start_graph",
]

# Optimisers with a tensor-lr, sync-free step on CUDA as build_optimizer makes them there: SGD and
# Adam/AdamW fused (the fused kernels read a device lr), RMSprop foreach with capturable=True.
GRAPH_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
# What engine='auto' means on CUDA. The graphed engine has been checked on CPU against the eager loop
# (same step function, stand-in capture) but not yet on a GPU; until a GPU run confirms that its
# trajectories match eager's (tests/test_graphed.py's CUDA tests), 'auto' stays eager and the graph
# is opt-in with engine='graph'.
AUTO_USES_GRAPH = False
WARMUP_STEPS = 3  # per captured batch size, on a side stream (PyTorch's CUDA-graph notes use 3)


def graph_decision(cfg: RunConfig, device: torch.device, prec: Precision) -> tuple[bool, str | None]:
    """``(try the graphed engine, reason it is not tried)`` for ``cfg.engine`` on ``device``.

    'eager' (and 'auto' while :data:`AUTO_USES_GRAPH` is False) -> (False, None). 'graph' (and 'auto'
    once enabled) -> (True, None) when nothing known in advance rules a graph out; otherwise
    (False, reason). Capture itself may still fail (see :class:`GraphTrainer`).
    """
    if cfg.engine == "eager" or (cfg.engine == "auto" and not AUTO_USES_GRAPH):
        return False, None
    if device.type != "cuda":
        return False, f"CUDA graphs need a CUDA device (device is {device.type}); trained with the eager loop"
    if prec.use_scaler:
        return False, ("fp16 needs GradScaler, whose dynamic loss scale and inf checks run on the host "
                       "and cannot be captured; trained with the eager loop")
    if cfg.optimizer not in GRAPH_OPTIMIZERS:
        return False, (f"optimizer {cfg.optimizer!r} has no capturable tensor-lr step here "
                       f"(graphed: {', '.join(GRAPH_OPTIMIZERS)}); trained with the eager loop")
    if not hasattr(torch.cuda, "CUDAGraph"):
        return False, "this torch build has no torch.cuda.CUDAGraph; trained with the eager loop"
    return True, None


def lr_table_values(schedule: Schedule, base_lr: float, n: int) -> list[float]:
    """``base_lr * schedule(i)`` for ``i < n``, computed in double like the eager loop's per-step lr.

    Stored as float32 these are exactly the values eager's kernels use (they cast the double lr to
    the float32 math type), so a tensor-lr step matches a float-lr one.
    """
    return [base_lr * schedule(i) for i in range(max(n, 1))]


class StaticStep:
    """One training step as a function of static device state: the body a CUDA graph captures.

    The step itself is the run's :class:`~bench.train.step.TrainStep`, copied ``capturable`` (no autocast
    weight cache, no GradScaler); around it, the 0-dim device tensors it reads and writes: ``lr`` (every param
    group's lr), ``step`` (global iteration, int64), ``loss_sum`` (sum of batch-mean loss x batch size) and
    ``correct`` (main-head argmax hits). Called directly it is an ordinary eager step, on any device and any
    batch size: the same code path as the captured one, minus the capture.
    """

    def __init__(self, step: TrainStep, lr_table: torch.Tensor) -> None:
        self.model, self.optimizer = step.model, step.optimizer
        self.train_step = dataclasses.replace(step, capturable=True)
        self.lr_table = lr_table
        device, optimizer = step.device, step.optimizer
        self.lr = torch.zeros((), dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        for group in optimizer.param_groups:
            group["lr"] = self.lr

    def reset(self, start_iteration: int) -> None:
        """Zero the sums and set the step counter (device fills, no sync)."""
        self.loss_sum.zero_()
        self.correct.zero_()
        self.step.fill_(start_iteration)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        last = self.lr_table.shape[0] - 1
        self.lr.copy_(self.lr_table.index_select(0, self.step.clamp(max=last).view(1)).squeeze(0))
        loss, main = self.train_step(x, y)
        n = y.shape[0]
        self.loss_sum += loss.float() * n
        self.correct += (main.argmax(1) == y).sum()
        self.step += 1


class GraphTrainer:
    """Trains epochs by replaying captured steps (``capture=True``, CUDA) or calling them (``False``).

    Use: ``setup(first_epoch)`` once (warm-up + capture; raises :class:`GraphUnsupported` after putting
    the model and optimizer back as they were), then ``train_epoch`` like the eager engine's, with the
    same :class:`~bench.train.step.EpochStats` (the :class:`~bench.train.step.Engine` protocol).
    ``step`` is the run's step with its schedule; ``total_steps`` the run's length in iterations.
    """

    name = "graph"

    def __init__(
        self,
        step: TrainStep,
        loader: Any,
        *,
        total_steps: int,
        capture: bool = True,
        device_feed: bool | None = None,
        ops: Any = None,
    ) -> None:
        if step.schedule is None:
            raise ValueError("the graphed engine needs a step with a schedule (its lr table)")
        schedule, optimizer, device = step.schedule, step.optimizer, step.device
        self.model, self.loader, self.optimizer, self.schedule = step.model, loader, optimizer, schedule
        self.base_lr, self.total_steps, self.device, self.capture = step.base_lr, total_steps, device, capture
        self.ops = ops if ops is not None or not capture else CudaGraphOps(device)
        if device_feed is None:
            device_feed = isinstance(loader, GpuLoader) and loader.train
            if capture and not self.ops.can_capture_generator:
                device_feed = False  # augmentation RNG cannot be captured: keep it eager (CopyFeed)
        self.device_feed = bool(device_feed)
        self.feed: DeviceFeed | CopyFeed = DeviceFeed(loader) if self.device_feed else CopyFeed(loader)
        self.steps_per_epoch = len(loader)
        self._groups_before = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        self._table_factor = schedule.plateau_factor
        self.lr_table = torch.tensor(lr_table_values(schedule, self.base_lr, total_steps), dtype=torch.float32,
                                     device=device)
        self.step = StaticStep(step, self.lr_table)
        self.graphs: dict[int, Any] = {}  # batch size -> captured graph (has .replay())
        self._ready = False

    # --------------------------------------------------------------------------------- setup

    def _batch_sizes(self) -> list[int]:
        if isinstance(self.feed, DeviceFeed):
            return self.feed.sizes()
        n, b = int(self.loader.num_samples), int(self.loader.batch_size)
        return [min(b, n - lo) for lo in range(0, n, b)][: self.steps_per_epoch]

    def _body(self, size: int) -> Callable[[], None]:
        """What one captured replay of a ``size`` batch runs (static inputs already in place)."""
        if isinstance(self.feed, DeviceFeed):
            feed = self.feed
            return lambda: self.step(*feed.batch(size))
        xs, ys = self.feed.static[size]
        return lambda: self.step(xs, ys)

    def setup(self, epoch: int) -> None:
        """Prepare the feed; with ``capture``, warm up and capture one graph per batch size."""
        if self._ready:
            return
        sizes = sorted(set(self._batch_sizes()), reverse=True)
        if not sizes:
            raise GraphUnsupported("the training loader yields no batches")
        if isinstance(self.feed, DeviceFeed):
            for s in sizes:
                self.feed.prepare(s)
        else:
            self.loader.set_epoch(epoch)
            self.feed.prepare_from(*self.feed.example(), sizes)
        if self.capture:
            self._capture(epoch, sizes)
        self._ready = True

    def _prepare_optimizer_for_capture(self) -> None:
        opt = self.optimizer
        if self.device.type != "cuda":  # (CPU tests with a stand-in for CUDA: capturable is CUDA-only)
            return
        for group in opt.param_groups:
            if "capturable" in group:
                group["capturable"] = True  # Adam(W)/RMSprop: device step counts, no .item() on the lr
        opt._warned_capturable_if_run_uncaptured = True  # warm-up and tail steps run uncaptured on purpose
        for p, state in opt.state.items():  # a resumed non-capturable state keeps 'step' on the CPU
            st = state.get("step")
            if torch.is_tensor(st) and st.device != p.device:
                state["step"] = st.to(device=p.device, dtype=torch.float32)

    def _capture(self, epoch: int, sizes: list[int]) -> None:
        ops = self.ops
        snap = Snapshot(self.model, self.optimizer, ops)
        try:
            self._prepare_optimizer_for_capture()
            self.model.train()
            ops.synchronize()
            with ops.side_stream():  # warm-up: optimizer state, cuDNN autotuning, lazy inits
                for s in sizes:
                    body = self._body(s)
                    for k in range(WARMUP_STEPS):
                        self._begin(epoch, 0)
                        if k < WARMUP_STEPS - 1:
                            body()
                            continue
                        ops.synchronize()  # earlier work done: only this step's syncs count
                        try:
                            with ops.forbid_sync():  # a syncing step never reaches capture
                                body()
                        except RuntimeError as exc:
                            if "synchroniz" not in str(exc):  # torch: "called a synchronizing CUDA operation"
                                raise
                            raise HostSync(f"the training step synchronises with the host ({reason(exc)}); "
                                           "rejected before capture, trained with the eager loop") from exc
            ops.synchronize()
            gen = self.feed.gen if isinstance(self.feed, DeviceFeed) else None
            pool = None
            for s in sizes:  # largest first; the tail graph allocates from the full batches' pool
                self.graphs[s] = ops.capture(self._body(s), gen, pool=pool)
                if pool is None:
                    pool = self.graphs[s].pool()
            ops.synchronize()
            snap.restore_in_place(self.optimizer)  # the graphed run starts from the eager starting point
            ops.synchronize()
        except Exception as exc:  # any failure means: train this run eagerly
            self.graphs.clear()
            with contextlib.suppress(Exception):
                ops.synchronize()
            snap.restore_all(self.optimizer)
            self.restore_eager_optimizer()
            if isinstance(exc, HostSync):
                raise
            raise GraphUnsupported(f"capture failed ({reason(exc)}); trained with the eager loop") from exc

    def restore_eager_optimizer(self) -> None:
        """Give the optimizer its float lr and flags back (after a failed setup, or to hand it over)."""
        for group, saved in zip(self.optimizer.param_groups, self._groups_before, strict=True):
            group.update(saved)

    def optimizer_state_dict(self) -> dict[str, Any]:
        """``optimizer.state_dict()`` with the param groups as the eager engine would save them."""
        sd = self.optimizer.state_dict()
        for group, saved in zip(sd["param_groups"], self._groups_before, strict=True):
            group.update({k: v for k, v in saved.items() if k in ("lr", "capturable")})
        return sd

    # ---------------------------------------------------------------------------------- epochs

    def _refresh_table(self) -> None:
        """Rebuild the lr table in place when the plateau factor changed (between epochs only)."""
        if self.schedule.plateau_factor != self._table_factor:
            values = torch.tensor(lr_table_values(self.schedule, self.base_lr, self.total_steps),
                                  dtype=torch.float32)
            cuda = self.lr_table.device.type == "cuda"
            # pinned + non_blocking: a copy from pageable memory would block the host inside the epoch
            # (the caching host allocator keeps the pinned block until the copy has run)
            self.lr_table.copy_(values.pin_memory() if cuda else values, non_blocking=cuda)
            self._table_factor = self.schedule.plateau_factor

    def _begin(self, epoch: int, start_iteration: int) -> None:
        self.step.reset(start_iteration)
        if isinstance(self.feed, DeviceFeed):
            self.feed.begin_epoch(epoch)

    def _run(self, size: int, batch: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        graph = self.graphs.get(size)
        if isinstance(self.feed, DeviceFeed):
            if graph is not None:
                graph.replay()
            else:
                self.step(*self.feed.batch(size))
            return
        assert batch is not None
        if graph is not None:
            self.feed.load(*batch)
            graph.replay()
        elif size in self.feed.static:
            self.step(*self.feed.load(*batch))
        else:
            self.step(*batch)

    def train_epoch(self, epoch: int, start_iteration: int, max_iteration: int) -> EpochStats:
        """Epoch ``epoch`` from global step ``start_iteration``, stopping at ``max_iteration``."""
        self.setup(epoch)
        self.model.train()
        self._refresh_table()
        self._begin(epoch, start_iteration)
        n_steps = max(min(self.steps_per_epoch, max_iteration - start_iteration), 0)
        watch = DivergenceWatch(self.device)
        done, samples, diverged = 0, 0, False
        if isinstance(self.feed, DeviceFeed):
            steps: Iterable[tuple[int, Any]] = ((s, None) for s in self.feed.sizes()[:n_steps])
        else:
            self.loader.set_epoch(epoch)
            steps = ((int(y.shape[0]), (x, y)) for x, y in itertools.islice(self.loader, n_steps))
        for size, batch in steps:
            self._run(size, batch)
            done += 1
            samples += size
            if done % DIVERGENCE_CHECK_EVERY == 0 and watch.poll(self.step.loss_sum):
                diverged = True
                break
        last_lr = self.step.train_step.lr(start_iteration + done - 1) if done else math.nan
        # clones: the static sums are zeroed by the next epoch, the stats may be read later
        return EpochStats(self.step.loss_sum.clone(), self.step.correct.clone(), samples, done, diverged, last_lr)


def start_graph(step: TrainStep, loader: Any, *, total_steps: int, first_epoch: int) -> GraphTrainer:
    """The graphed engine for ``step`` over ``loader``, warmed up and captured before ``first_epoch``.

    Raises :class:`GraphUnsupported` (its text is the run's ``engine_fallback_reason``) with the
    model, optimizer and RNGs as they were, so the run goes on with the eager engine.
    """
    trainer = GraphTrainer(step, loader, total_steps=total_steps)
    try:
        trainer.setup(first_epoch)
    except GraphUnsupported:
        trainer.restore_eager_optimizer()
        raise
    return trainer
