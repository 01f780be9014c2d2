"""The three ways ``bench perf`` trains (:mod:`bench.perf` compares them): the usual loop, the engine,
a compiled model; each returns one row's measurements.

Timing: one warm-up epoch, then ``--epochs`` timed epochs; ``epoch_s`` is their median, each timed
with ``torch.cuda.synchronize()`` before and after (the engine's ``epoch_time_s``). ``eval_s`` is the
median time to evaluate the test set. ``capture_s`` is the graphed engine's warm-up + capture (before
the first epoch, not in any epoch time); for ``compile_*`` it is the warm-up epoch's excess over the
median epoch (compilation and cudagraph recording). Peak memory is reset before each variant
(``empty_cache`` + ``reset_peak_memory_stats``): ``peak_mem_MiB`` is the peak the caching allocator
reserved (CUDA graph pools count there, not in "allocated"), ``peak_alloc_MiB`` the peak allocated.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.device import resolve_precision
from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs
from bench.train.loop import TrainStep

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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peaks(device: torch.device) -> tuple[float | None, float | None]:
    """(peak reserved MiB, peak allocated MiB) since the last reset; (None, None) on a CPU."""
    if device.type != "cuda":
        return None, None
    mib = 2.0**20
    return torch.cuda.max_memory_reserved(device) / mib, torch.cuda.max_memory_allocated(device) / mib


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
    train_set = TorchLoader(data.train, batch_size, train=True, **kw)  # type: ignore[arg-type]
    test_set = TorchLoader(data.test, batch_size, train=False, **kw)  # type: ignore[arg-type]
    trainloader, testloader = train_set.loader, test_set.loader  # the plain torch DataLoaders
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # the engine's step, in fp32 and without its numerics (torch's default flags, as tutorials run);
    # aux_weight: GoogLeNet's aux heads, should one ask for it
    step = TrainStep(net, criterion, optimizer, resolve_precision("fp32", device), device,
                     aux_weight=AUX_LOSS_WEIGHT)
    _reset_memory(device)
    times, eval_times, acc, loss_mean = [], [], math.nan, math.nan
    n_train = len(data.train)
    for epoch in range(1 + epochs):
        train_set.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        _sync(device)
        t0 = time.perf_counter()
        net.train()
        running_loss = 0.0
        for inputs, labels in trainloader:
            inputs, labels = inputs.to(device), labels.to(device)
            loss, _ = step(inputs, labels)
            running_loss += loss.item()
        _sync(device)
        times.append(time.perf_counter() - t0)
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
    reserved, allocated = _peaks(device)
    epoch_s = _median(times[1:])
    return dict(engine_used="usual", epoch_s=epoch_s, samples_per_s=n_train / epoch_s, peak_mem_MiB=reserved,
                peak_alloc_MiB=allocated, eval_s=_median(eval_times[1:]), capture_s=0.0, final_test_acc=acc,
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
    reserved, _ = _peaks(device)
    s, timed = res.summary, res.history[1:]
    allocs = [r["peak_allocated_bytes"] for r in res.history if r["peak_allocated_bytes"] is not None]
    epoch_s = _median([r["epoch_time_s"] for r in timed])
    note = s.get("engine_fallback_reason") or ""
    if res.status != "ok":
        note = f"{res.status}: {res.error}"
    return dict(engine_used=s.get("engine_used"), precision=s["precision_used"], epoch_s=epoch_s,
                samples_per_s=s["train_size"] / epoch_s, peak_mem_MiB=reserved,
                peak_alloc_MiB=max(allocs) / 2.0**20 if allocs else None,
                eval_s=_median([r["eval_time_s"] for r in timed]), capture_s=s.get("capture_time_s", 0.0),
                final_test_acc=s["final_test_acc"], final_train_loss=s["final_train_loss"],
                epochs_timed=len(timed), note=note)


def compiled_run(model_name: str, data: Any, v: Variant, *, dataset: str, batch_size: int, epochs: int,
                 device: torch.device) -> dict[str, Any]:
    """``torch.compile(model, mode=...)`` under the engine's eager step loop and evaluation, or (with
    ``v.engine == 'graph'``) ``torch.compile(model, dynamic=False)`` inside the graphed step, evaluated
    with the uncompiled model (the engine's evaluation)."""
    from bench.data import make_loader
    from bench.models import create_model
    from bench.train.evaluate import evaluate
    from bench.train.graphed import GraphTrainer
    from bench.device import numerics
    from bench.train.loop import train_epoch
    from bench.train.optim import build_optimizer, build_schedule

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
        compiled = torch.compile(model, dynamic=False)  # one static specialisation per batch size
    else:
        compiled = torch.compile(model, mode=v.compile_mode)
    optimizer = build_optimizer(cfg, model.parameters())
    spe = len(train_loader)
    total = (1 + epochs) * spe
    schedule = build_schedule(cfg, spe, total)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
    criterion = nn.CrossEntropyLoss()
    _reset_memory(device)
    times, eval_times, it, loss, acc, setup_s = [], [], 0, math.nan, math.nan, 0.0
    try:
        with numerics(prec, device):
            trainer = None
            if graphed:  # compilation happens in the warm-up steps, before capture
                _sync(device)
                t0 = time.perf_counter()
                trainer = GraphTrainer(compiled, train_loader, optimizer=optimizer, schedule=schedule,
                                       base_lr=cfg.lr, total_steps=total, criterion=criterion,
                                       aux_weight=AUX_LOSS_WEIGHT, prec=prec, device=device,
                                       channels_last=cfg.channels_last)
                trainer.setup(0)
                _sync(device)
                setup_s = time.perf_counter() - t0
            for epoch in range(1 + epochs):
                train_loader.set_epoch(epoch)
                _sync(device)
                t0 = time.perf_counter()
                if trainer is not None:
                    stats = trainer.train_epoch(epoch, it, total)
                else:
                    stats = train_epoch(compiled, train_loader, optimizer=optimizer, scaler=scaler,
                                        schedule=schedule, base_lr=cfg.lr, criterion=criterion,
                                        aux_weight=AUX_LOSS_WEIGHT, prec=prec, device=device, start_iteration=it,
                                        max_iteration=total, channels_last=cfg.channels_last)
                _sync(device)
                times.append(time.perf_counter() - t0)
                it += stats.steps
                loss, _ = stats.read()
                t1 = time.perf_counter()
                _, acc, _ = evaluate(model if graphed else compiled, test_loader, prec=prec, device=device)
                eval_times.append(time.perf_counter() - t1)
    finally:
        import torch._dynamo

        torch._dynamo.reset()
    reserved, allocated = _peaks(device)
    epoch_s = _median(times[1:])
    if graphed:
        capture_s, engine, note = setup_s, "graph+compile", "capture_s = compile + warm-up + capture"
    else:
        capture_s, engine = max(times[0] - epoch_s, 0.0), f"compile:{v.compile_mode}"
        note = "capture_s = warm-up epoch minus median epoch (compile + cudagraph recording)"
    return dict(engine_used=engine, precision=prec.used, epoch_s=epoch_s,
                samples_per_s=len(data.train) / epoch_s, peak_mem_MiB=reserved, peak_alloc_MiB=allocated,
                eval_s=_median(eval_times[1:]), capture_s=capture_s, final_test_acc=acc,
                final_train_loss=loss, epochs_timed=len(times) - 1, note=note)


