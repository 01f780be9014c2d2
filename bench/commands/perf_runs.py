"""The ways ``bench perf`` trains (:mod:`bench.commands.perf` compares them): the usual loop, the engine, a
compiled model, each for whole epochs; and the step variants, training steps timed in interleaved
rounds. Each returns one row's measurements; docs/perf.md says what every column measures.

Epochs: one warm-up epoch, then ``--epochs`` timed epochs; ``epoch_s`` is their median, each timed
with ``torch.cuda.synchronize()`` before and after (the engine's ``epoch_time_s``). ``eval_s`` is the
median time to evaluate the test set. ``capture_s`` is the graphed engine's warm-up + capture (before
the first epoch, not in any epoch time; for ``graph_compile_*`` compilation included); ``compile_s``
for ``compile_*`` is the warm-up epoch's excess over the median epoch. Memory (CUDA): the caching
allocator's peaks over the timed epochs' training steps only (cached blocks released and peaks reset
before each, read before its evaluation): ``train_peak_reserved_MiB`` (a CUDA graph's private pool
counts here: the figure that compares engines) and ``train_peak_alloc_MiB``; the warm-up + capture
window's reserved peak ``capture_peak_reserved_MiB``; ``run_peak_reserved_MiB`` is the whole
variant's (evaluation at batch 1000, the BN-gap pass and capture included).

Steps (:func:`step_rounds`): for each variant its own model, optimizer and one real training batch;
warm-up steps (``torch.compile`` compiles in the first, timed apart as ``compile_s``), then rounds in
which every variant in turn times ``steps`` back-to-back steps (the starting variant rotates each
round), so a drift in machine load hits every variant alike; ``step_ms`` is the median over rounds.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from bench.errors import reason
from bench.device import (
    memory_peaks,
    numerics,
    on_device,
    release_cached_memory,
    reset_memory_peaks,
    resolve_precision,
)
from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs
from bench.train.step import PeakWindow, TrainStep

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # the same recipe for every variant (constant lr)
EVAL_BATCH = 1000  # the engine's evaluation batch
USUAL_WORKERS = 4

@dataclass(frozen=True)
class Variant:
    """One way of training: the usual loop, the engine with some settings, or a compiled model."""

    name: str
    kind: str  # usual | engine | compile
    description: str
    engine: str = "eager"
    precision: str = "fp32"
    channels_last: bool = False
    compile_mode: str | None = None
    needs_cuda: bool = False


def _compile(model: nn.Module, **kw: Any) -> nn.Module:
    """``torch.compile`` of a module: an ``OptimizedModule``, itself a module (the stub says a callable)."""
    return cast(nn.Module, torch.compile(model, **kw))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MIB = 2.0**20


def _mib(x: int | None) -> float | None:
    return None if x is None else x / MIB


def _reset_memory(device: torch.device) -> None:
    """Start a variant's memory window (its run_peak_reserved_MiB)."""
    _sync(device)
    release_cached_memory(device)
    reset_memory_peaks(device)


class EpochPeaks:
    """Peaks over the training steps of the timed epochs only, in the engine's window
    (:class:`~bench.train.step.PeakWindow`): :meth:`begin` before an epoch's first step (releases
    cached blocks, resets), :meth:`end` after its last (reads). The run's overall peak is kept aside:
    resetting the allocator's peaks would lose it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.window = PeakWindow(device)
        self.alloc: list[int] = []
        self.reserved: list[int] = []
        self.run_reserved = 0

    def _keep_run_peak(self) -> None:
        _, r = memory_peaks(self.device)
        self.run_reserved = max(self.run_reserved, r or 0)

    def begin(self) -> None:
        self._keep_run_peak()  # (the allocator's counters are host-side: no sync needed to read them)
        self.window.begin()

    def end(self, timed: bool) -> None:
        a, r = self.window.end()
        if timed and a is not None and r is not None:
            self.alloc.append(a)
            self.reserved.append(r)

    def columns(self) -> dict[str, float | None]:
        self._keep_run_peak()
        cuda = self.device.type == "cuda"
        return dict(train_peak_reserved_MiB=_mib(max(self.reserved)) if self.reserved else None,
                    train_peak_alloc_MiB=_mib(max(self.alloc)) if self.alloc else None,
                    run_peak_reserved_MiB=_mib(self.run_reserved) if cuda else None)


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


# ------------------------------------------------------------------------------ the usual loop


def usual_loop(model_name: str, data: Any, *, batch_size: int, epochs: int, device: torch.device,
               workers: int) -> dict[str, Any]:
    """The tutorial loop (see the module doc): returns the row's measurements."""
    from bench.data.torch_loader import TorchLoader
    from bench.models import create_model

    torch.manual_seed(0)
    net = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
    kw = dict(device=device, mean=data.mean, std=data.std, crop_padding=4, hflip=True, augment=True,
              num_workers=workers, persistent_workers=False, seed=0)
    train_set = TorchLoader(data.train, batch_size, train=True, **kw)
    test_set = TorchLoader(data.test, batch_size, train=False, **kw)
    trainloader, testloader = train_set.loader, test_set.loader  # the plain torch DataLoaders
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # the engine's step, in fp32 and without its numerics (torch's default flags, as tutorials run);
    # aux_weight: GoogLeNet's aux heads, should one ask for it
    step = TrainStep(net, criterion, optimizer, resolve_precision("fp32", device), device,
                     aux_weight=AUX_LOSS_WEIGHT)
    _reset_memory(device)
    peaks = EpochPeaks(device)
    times, eval_times, acc, loss_mean = [], [], math.nan, math.nan
    n_train = len(data.train)
    for epoch in range(1 + epochs):
        train_set.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        peaks.begin()
        t0 = time.perf_counter()
        net.train()
        running_loss = 0.0
        for inputs, labels in trainloader:
            inputs, labels = inputs.to(device), labels.to(device)
            loss, _ = step(inputs, labels)
            running_loss += loss.item()
        _sync(device)
        times.append(time.perf_counter() - t0)
        peaks.end(timed=epoch > 0)
        loss_mean = running_loss / max(len(trainloader), 1)
        t1 = time.perf_counter()
        net.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, labels in testloader:
                inputs, labels = inputs.to(device), labels.to(device)
                outputs, _ = split_outputs(net(inputs))
                _, predicted = torch.max(outputs, 1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
        eval_times.append(time.perf_counter() - t1)
        acc = correct / max(total, 1)
    epoch_s = _median(times[1:])
    return dict(engine_used="usual", epoch_s=epoch_s, samples_per_s=n_train / epoch_s, **peaks.columns(),
                eval_s=_median(eval_times[1:]), final_test_acc=acc, cuda_graphs_used=False,
                final_train_loss=loss_mean, epochs_timed=len(times) - 1,
                note=f"num_workers={workers}, persistent_workers=False")


# ------------------------------------------------------------------------------------ engine


def _engine_cfg(model_name: str, dataset: str, v: Variant, batch_size: int, epochs: int) -> Any:
    from bench.config import RunConfig

    return RunConfig(
        model=model_name, dataset=dataset, val_size=0, epochs=1 + epochs, batch_size=batch_size,
        eval_batch_size=EVAL_BATCH, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, schedule="constant",
        precision=v.precision, channels_last=v.channels_last, engine=v.engine, loader="gpu", seed=0,
        acc_thresholds=(),
    )


def engine_run(model_name: str, data: Any, v: Variant, *, dataset: str, batch_size: int, epochs: int,
               device: torch.device) -> dict[str, Any]:
    """The engine (:func:`bench.train.train`) for 1 + ``epochs`` epochs; the first is the warm-up."""
    from bench.train import train

    cfg = _engine_cfg(model_name, dataset, v, batch_size, epochs)
    _reset_memory(device)
    res = train(cfg, device=device, data=data)
    _, run_reserved = memory_peaks(device)
    s, timed = res.summary, res.history[1:]

    def peak(key: str) -> float | None:  # the engine's per-epoch peaks: training steps only
        vals = [r.get(key) for r in timed if r.get(key) is not None]
        return _mib(max(vals)) if vals else None

    epoch_s = _median([r["epoch_time_s"] for r in timed])
    note = s.get("engine_fallback_reason") or ""
    if res.status != "ok":
        note = f"{res.status}: {res.error}"
    return dict(engine_used=s.get("engine_used"), precision=s["precision_used"], epoch_s=epoch_s,
                samples_per_s=s["train_size"] / epoch_s, train_peak_reserved_MiB=peak("peak_reserved_bytes"),
                train_peak_alloc_MiB=peak("peak_allocated_bytes"),
                capture_peak_reserved_MiB=_mib(s.get("capture_peak_reserved_bytes")),
                run_peak_reserved_MiB=_mib(run_reserved),
                eval_s=_median([r["eval_time_s"] for r in timed]), capture_s=s.get("capture_time_s", 0.0),
                cuda_graphs_used=s.get("engine_used") == "graph",
                final_test_acc=s["final_test_acc"], final_train_loss=s["final_train_loss"],
                epochs_timed=len(timed), note=note)


def compiled_run(model_name: str, data: Any, v: Variant, *, dataset: str, batch_size: int, epochs: int,
                 device: torch.device) -> dict[str, Any]:
    """``torch.compile(model, mode=...)`` under the engine's eager step loop and evaluation, or (with
    ``v.engine == 'graph'``) ``torch.compile(model, dynamic=False)`` inside the graphed step, evaluated
    with the uncompiled model (the engine's evaluation)."""
    with on_device(device):  # cuda:N the current device for compilation, cudagraphs and capture
        return _compiled_run(model_name, data, v, dataset=dataset, batch_size=batch_size, epochs=epochs,
                             device=device)


def _compiled_run(model_name: str, data: Any, v: Variant, *, dataset: str, batch_size: int, epochs: int,
                  device: torch.device) -> dict[str, Any]:
    import torch._dynamo
    from torch._dynamo.utils import counters

    from bench.data import make_loader
    from bench.models import create_model
    from bench.train.engine import EagerEngine
    from bench.train.evaluate import evaluate
    from bench.train.graphed import GraphTrainer
    from bench.train.optim import build_optimizer, build_schedule
    from bench.train.step import Engine

    cfg = _engine_cfg(model_name, dataset, v, batch_size, epochs)
    prec = resolve_precision(cfg.precision, device)
    train_loader = make_loader(data.train, data, cfg, train=True, device=device)
    test_loader = make_loader(data.test, data, cfg, train=False, device=device)
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    graphed = v.engine == "graph"
    if graphed:
        compiled = _compile(model, dynamic=False)  # one static specialisation per batch size
    else:
        compiled = _compile(model, mode=v.compile_mode)
    spe = len(train_loader)
    total = (1 + epochs) * spe
    # the engine's step around the compiled model (plain cross-entropy, GoogLeNet's aux heads weighted)
    step = TrainStep(compiled, nn.CrossEntropyLoss(), build_optimizer(cfg, model.parameters()), prec, device,
                     channels_last=cfg.channels_last, aux_weight=AUX_LOSS_WEIGHT,
                     scaler=torch.amp.GradScaler(device.type, enabled=prec.use_scaler),
                     schedule=build_schedule(cfg, spe, total), base_lr=cfg.lr)
    _reset_memory(device)
    peaks = EpochPeaks(device)
    skips_before = counters["inductor"]["cudagraph_skips"]
    times, eval_times, it, loss, acc, setup_s = [], [], 0, math.nan, math.nan, 0.0
    capture_reserved: int | None = None
    trainer: GraphTrainer | None = None
    loop: Engine = EagerEngine(step, train_loader)
    try:
        with numerics(prec, device):
            if graphed:  # compilation happens in the warm-up steps, before capture
                _sync(device)
                reset_memory_peaks(device)
                t0 = time.perf_counter()
                trainer = GraphTrainer(step, train_loader, total_steps=total)
                trainer.setup(0)
                loop = trainer
                _sync(device)
                setup_s = time.perf_counter() - t0
                _, capture_reserved = memory_peaks(device)
            for epoch in range(1 + epochs):
                train_loader.set_epoch(epoch)
                peaks.begin()
                t0 = time.perf_counter()
                stats = loop.train_epoch(epoch, it, total)
                _sync(device)
                times.append(time.perf_counter() - t0)
                peaks.end(timed=epoch > 0)
                if epoch == 0 and not graphed:  # compilation and cudagraph recording: the warm-up epoch
                    _, capture_reserved = memory_peaks(device)
                it += stats.steps
                loss, _ = stats.read()
                t1 = time.perf_counter()
                _, acc, _ = evaluate(model if graphed else compiled, test_loader, prec=prec, device=device)
                eval_times.append(time.perf_counter() - t1)
    finally:
        torch._dynamo.reset()
    epoch_s = _median(times[1:])
    skipped = counters["inductor"]["cudagraph_skips"] - skips_before
    if graphed:
        engine, compile_s = "graph+compile", None
        graphs_used = bool(trainer is not None and trainer.graphs)
        note = "capture_s = compile + warm-up + capture"
    else:
        engine, compile_s = f"compile:{v.compile_mode}", max(times[0] - epoch_s, 0.0)
        # Inductor records its own CUDA graphs in these modes unless it skips them (counted)
        graphs_used = device.type == "cuda" and v.compile_mode in ("reduce-overhead", "max-autotune") and not skipped
        note = "compile_s = warm-up epoch minus median epoch (compile + cudagraph recording)"
        if skipped:
            note += f"; Inductor skipped its CUDA graphs {skipped} time(s)"
    return dict(engine_used=engine, precision=prec.used, epoch_s=epoch_s,
                samples_per_s=len(data.train) / epoch_s, **peaks.columns(),
                capture_peak_reserved_MiB=_mib(capture_reserved), cuda_graphs_used=graphs_used,
                eval_s=_median(eval_times[1:]), capture_s=setup_s if graphed else None, compile_s=compile_s,
                final_test_acc=acc, final_train_loss=loss, epochs_timed=len(times) - 1, note=note)




# ------------------------------------------------------------------------------ in a process


def _child(target: Callable[..., dict[str, Any]], kwargs: dict[str, Any], out: Any) -> None:
    try:
        out.put(("ok", target(**kwargs)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as the row's note
        out.put(("failed", reason(exc)))


def run_isolated(target: Callable[..., dict[str, Any]], kwargs: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """``target(**kwargs)`` in a fresh (spawned) process, killed after ``timeout_s`` seconds.

    A compile or a capture that hangs, crashes the process or leaves CUDA state behind costs that
    variant only. Returns the target's dict, or raises RuntimeError with the reason (the caller makes
    it the row's note). ``target`` must be importable by name (a module-level function).
    """
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, out), daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout_s
    result: tuple[str, Any] | None = None
    while result is None and time.monotonic() < deadline:
        try:  # read before join: a large result would block the child's exit until it is read
            result = out.get(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            if not proc.is_alive():
                try:
                    result = out.get(timeout=1.0)
                except queue.Empty:
                    break
    if result is None and proc.is_alive():
        proc.kill()
        proc.join(5)
        raise RuntimeError(f"timed out after {timeout_s:g} s in its own process (killed)")
    proc.join(5)
    if result is None:
        raise RuntimeError(f"its process died (exit code {proc.exitcode})")
    status, value = result
    if status != "ok":
        raise RuntimeError(value)
    return value


def compiled_run_isolated(model_name: str, v: Variant, *, dataset: str, data_dir: str | None, batch_size: int,
                          epochs: int, device: str) -> dict[str, Any]:
    """:func:`compiled_run` as the child process runs it: the data set loaded there (from the cache)."""
    from bench.data import load_dataset
    from bench.device import resolve_device

    data = load_dataset(dataset, data_dir)
    return compiled_run(model_name, data, v, dataset=dataset, batch_size=batch_size, epochs=epochs,
                        device=resolve_device(device))


# ------------------------------------------------------------------------- training steps

STEP_WARMUP = 2  # untimed steps per step variant before the rounds (the first compiles)


def _step_batch(data: Any, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One real augmented training batch (the engine's loader, epoch 0), made once: data loading is
    not in the step times."""
    from bench.config import RunConfig
    from bench.data import make_loader
    from bench.errors import UserError

    if batch_size > len(data.train):
        raise UserError(f"--batch-size {batch_size} is larger than the training set ({len(data.train)} images)")
    cfg = RunConfig(batch_size=batch_size, loader="gpu", seed=0)
    loader = make_loader(data.train, data, cfg, train=True, device=device)
    loader.set_epoch(0)
    return next(iter(loader))


class _StepVariant:
    """One step variant's model, optimizer and step, ready to be timed."""

    def __init__(self, model_name: str, data: Any, v: Variant, batch: tuple[torch.Tensor, torch.Tensor],
                 device: torch.device) -> None:
        from bench.config import RunConfig
        from bench.models import create_model
        from bench.train.optim import build_optimizer

        self.v, self.device = v, device
        self.prec = resolve_precision(v.precision, device)
        torch.manual_seed(0)
        model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels).to(device)
        if v.channels_last:
            model = model.to(memory_format=torch.channels_last)
        cfg = RunConfig(lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
        optimizer = build_optimizer(cfg, model.parameters())
        net = _compile(model, mode=v.compile_mode) if v.compile_mode else model
        self.step = TrainStep(net, nn.CrossEntropyLoss(), optimizer, self.prec, device,
                              channels_last=v.channels_last, aux_weight=AUX_LOSS_WEIGHT)
        x, y = batch
        self.x = x.contiguous(memory_format=torch.channels_last) if v.channels_last else x.contiguous()
        self.y = y
        self.first_step_s = math.nan

    def run(self, n: int) -> float:
        """Seconds for ``n`` back-to-back steps (synchronised before and after on CUDA)."""
        with numerics(self.prec, self.device):
            _sync(self.device)
            t0 = time.perf_counter()
            for _ in range(n):
                self.step(self.x, self.y)
            _sync(self.device)
            return time.perf_counter() - t0

    def warm_up(self, n: int) -> None:
        self.first_step_s = self.run(1)  # torch.compile compiles forward and backward here
        if n > 1:
            self.run(n - 1)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    import os

    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def step_rounds(model_name: str, data: Any, variants: list[Variant], *, batch_size: int, rounds: int, steps: int,
                device: torch.device, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Time ``variants``' training steps in ``rounds`` interleaved rounds of ``steps`` steps each; one
    result dict per variant (a variant that fails to build or warm up is a dict with its note)."""
    batch = _step_batch(data, batch_size, device)
    ready: list[_StepVariant] = []
    results: dict[str, dict[str, Any]] = {}
    for v in variants:
        try:
            sv = _StepVariant(model_name, data, v, batch, device)
            sv.warm_up(STEP_WARMUP)
            ready.append(sv)
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run (compile error) is a row
            results[v.name] = {"note": "failed: " + reason(exc, 292)}
            log(f"  {model_name:<10} {v.name:<14} failed ({type(exc).__name__})")
    times: dict[str, list[float]] = {sv.v.name: [] for sv in ready}
    for r in range(rounds):
        k = r % max(len(ready), 1)
        for sv in ready[k:] + ready[:k]:  # rotate the starting variant: no variant always runs first
            times[sv.v.name].append(sv.run(steps) / steps * 1e3)
        log(f"  {model_name:<10} round {r + 1}/{rounds}: " +
            ", ".join(f"{sv.v.name} {times[sv.v.name][-1]:.1f} ms" for sv in ready))
    for sv in ready:
        ms = times[sv.v.name]
        q1, med, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else (ms[0],) * 3
        compile_s = max(sv.first_step_s - med / 1e3, 0.0) if sv.v.compile_mode else None
        results[sv.v.name] = dict(engine_used=f"compile:{sv.v.compile_mode}" if sv.v.compile_mode else "eager",
                                  precision=sv.prec.used, step_ms=med, step_ms_iqr=q3 - q1,
                                  samples_per_s=batch_size / (med / 1e3), compile_s=compile_s, rounds=len(ms),
                                  steps_per_round=steps, cuda_graphs_used=False, note="")
    return [results[v.name] for v in variants]
