"""``bench perf``: the usual training loop against the engine, in one process on one device.

What is compared (per model, at one batch size, on the same uint8 images):

* ``usual``: the loop lectures and tutorials write, kept honest. A torchvision-style ``DataLoader``
  over PIL images (:class:`~bench.data.torch_loader.TorchLoader`'s ``PilDataset``: the same uint8
  images as the engine's) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, shuffled, ``num_workers=4`` (re-created every epoch, as without
  ``persistent_workers``), ``pin_memory=True``; per batch ``.to(device)``, ``model.train()``,
  ``optimizer.zero_grad()``, forward, cross-entropy, backward, ``optimizer.step()`` (``torch.optim.SGD``
  with torch's default implementation) and ``loss.item()`` for the running loss, as tutorials log it.
  fp32 with torch's default flags (cuDNN autotuning off; ``cudnn.allow_tf32`` at its default, on, so
  its convolutions may use TF32, which favours it). Evaluation: the test set through the same kind
  of loader at the training batch size, under ``torch.no_grad()``, ``.item()`` per batch.
* ``eager_*``, ``graph_*``: the engine itself, :func:`bench.train.train` with ``engine='eager'`` or
  ``'graph'`` (GPU-resident uint8 data, on-device augmentation, fused optimizer, no host syncs within
  an epoch; 'graph' replays the whole captured step, see :mod:`bench.train.graphed`), in fp32 or bf16
  autocast, NCHW or channels_last. Evaluation is the engine's (inference mode, batch 1000).
* ``compile_*`` (CUDA): the engine's eager step loop over a ``torch.compile`` d model
  (``mode='reduce-overhead'`` or ``'max-autotune'``).
* ``graph_compile_*`` (CUDA): the graphed engine's step (:class:`~bench.train.graphed.GraphTrainer`)
  over ``torch.compile(model, dynamic=False)`` (Inductor's fused kernels, no cudagraphs of its own),
  the whole step then captured in one CUDA graph: fewer, fused kernels inside the graph.
  A variant that fails (compile error, capture failure, OOM) is a row with the reason, not an error.

Timing: one warm-up epoch, then ``--epochs`` timed epochs; ``epoch_s`` is their median, each timed
with ``torch.cuda.synchronize()`` before and after (the engine's ``epoch_time_s``). ``eval_s`` is the
median time to evaluate the test set. ``capture_s`` is the graphed engine's warm-up + capture (before
the first epoch, not in any epoch time); for ``compile_*`` it is the warm-up epoch's excess over the
median epoch (compilation and cudagraph recording). Peak memory is reset before each variant
(``empty_cache`` + ``reset_peak_memory_stats``): ``peak_mem_MiB`` is the peak the caching allocator
reserved (CUDA graph pools count there, not in "allocated"), ``peak_alloc_MiB`` the peak allocated.

It measures and reports; it asserts nothing about speed. On a CPU (``--device cpu``, e.g. with
``--dataset synthetic:...``) the CUDA-only variants are skipped with a printed note and the usual
loop runs with ``num_workers=0``. Results: a printed table and ``<results-dir>/perf/perf-<time>.csv``
and ``.json`` (with the environment, date, torch version and GPU name).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import UserError, unknown_value
from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs

LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 5e-4  # the same recipe for every variant (constant lr)
EVAL_BATCH = 1000  # the engine's evaluation batch
USUAL_WORKERS = 4

COLUMNS = (
    "model", "variant", "engine_used", "precision", "channels_last", "epoch_s", "samples_per_s",
    "speedup_vs_usual", "peak_mem_MiB", "peak_alloc_MiB", "eval_s", "capture_s", "final_test_acc",
    "final_train_loss", "epochs_timed", "note",
)


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


VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("usual", "usual", "tutorial loop: DataLoader + PIL transforms, 4 workers, pinned per-batch copy, "
            "fp32, loss.item() per batch"),
    Variant("eager_fp32", "engine", "engine, eager step loop: GPU-resident data + augmentation, fp32"),
    Variant("eager_bf16_cl", "engine", "engine, eager step loop, bf16 autocast + channels_last",
            precision="bf16", channels_last=True),
    Variant("graph_fp32", "engine", "engine, whole step captured in one CUDA graph, fp32", engine="graph",
            needs_cuda=True),
    Variant("graph_fp32_cl", "engine", "engine, CUDA graph, fp32 + channels_last", engine="graph",
            channels_last=True, needs_cuda=True),
    Variant("graph_bf16", "engine", "engine, CUDA graph, bf16 autocast", engine="graph", precision="bf16",
            needs_cuda=True),
    Variant("graph_bf16_cl", "engine", "engine, CUDA graph, bf16 autocast + channels_last", engine="graph",
            precision="bf16", channels_last=True, needs_cuda=True),
    Variant("compile_ro", "compile", "engine's eager loop over torch.compile(mode='reduce-overhead'), fp32",
            compile_mode="reduce-overhead", needs_cuda=True),
    Variant("compile_ma", "compile", "engine's eager loop over torch.compile(mode='max-autotune'), fp32",
            compile_mode="max-autotune", needs_cuda=True),
    Variant("graph_compile_fp32", "compile", "CUDA graph of the whole step over torch.compile(dynamic=False), fp32",
            engine="graph", compile_mode="default", needs_cuda=True),
    Variant("graph_compile_bf16_cl", "compile", "CUDA graph of the whole step over torch.compile(dynamic=False), "
            "bf16 autocast + channels_last", engine="graph", compile_mode="default", precision="bf16",
            channels_last=True, needs_cuda=True),
)}
DEFAULT_VARIANTS = ("usual", "eager_fp32", "eager_bf16_cl", "graph_fp32", "graph_fp32_cl", "graph_bf16",
                    "graph_bf16_cl", "compile_ro", "graph_compile_fp32", "graph_compile_bf16_cl")


def parse_variants(text: str | None) -> list[Variant]:
    """``'usual,graph_fp32'`` -> variants (None: the defaults); unknown names are a UserError."""
    names = DEFAULT_VARIANTS if not text else [n.strip() for n in text.split(",") if n.strip()]
    out = []
    for n in names:
        if n not in VARIANTS:
            raise unknown_value("variant", n, tuple(VARIANTS))
        out.append(VARIANTS[n])
    return out


def _device(text: str) -> torch.device:
    from bench.runner import resolve_device

    dev = torch.device(resolve_device(text))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


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


def _row(model: str, v: Variant, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(model=model, variant=v.name, precision=v.precision, channels_last=v.channels_last, note="")
    row.update(kw)
    return row


# ------------------------------------------------------------------------------ the usual loop


def usual_loop(model_name: str, data: Any, *, batch_size: int, epochs: int, device: torch.device,
               workers: int) -> dict[str, Any]:
    """The tutorial loop (see the module doc): returns the row's measurements."""
    from bench.data.torch_loader import TorchLoader
    from bench.models import create_model

    torch.manual_seed(0)
    net = create_model(model_name, num_classes=len(data.train.classes),
                       in_channels=int(data.train.images.shape[1])).to(device)
    kw = dict(device=device, mean=data.mean, std=data.std, crop_padding=4, hflip=True, augment=True,
              num_workers=workers, persistent_workers=False, seed=0)
    train_set = TorchLoader(data.train, batch_size, train=True, **kw)  # type: ignore[arg-type]
    test_set = TorchLoader(data.test, batch_size, train=False, **kw)  # type: ignore[arg-type]
    trainloader, testloader = train_set.loader, test_set.loader  # the plain torch DataLoaders
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
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
            optimizer.zero_grad()
            outputs, aux = split_outputs(net(inputs))  # GoogLeNet's aux heads, should one ask for it
            loss = criterion(outputs, labels) + sum((AUX_LOSS_WEIGHT * criterion(a, labels) for a in aux), 0.0)
            loss.backward()
            optimizer.step()
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
        note = f"{res.status}: {s.get('error')}"
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
    from bench.train.loop import numerics, resolve_precision, train_epoch
    from bench.train.optim import build_optimizer, build_schedule

    cfg = _engine_cfg(model_name, dataset, v, batch_size, epochs)
    prec = resolve_precision(cfg.precision, device)
    train_loader = make_loader(data.train, data, cfg, train=True, device=device)
    test_loader = make_loader(data.test, data, cfg, train=False, device=device)
    torch.manual_seed(cfg.seed)
    model = create_model(model_name, num_classes=len(data.train.classes),
                         in_channels=int(data.train.images.shape[1])).to(device)
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


# ------------------------------------------------------------------------------------- driver


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def run_perf(args: argparse.Namespace) -> int:
    """Run the comparison described in the module doc; print the table, write CSV + JSON; return 0."""
    import pandas as pd

    from bench.data import load_dataset
    from bench.measure.env import environment
    from bench.models import model_info

    device = _device(getattr(args, "device", "auto") or "auto")
    models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    if not models:
        raise UserError("--models names no model (e.g. --models resnet20,resnet56,resnet18)")
    for m in models:
        model_info(m)  # a UserError naming the accepted models for an unknown one
    variants = parse_variants(getattr(args, "variants", None))
    if args.batch_size < 1 or args.epochs < 1:
        raise UserError(f"--batch-size and --epochs must be >= 1, got {args.batch_size} and {args.epochs}")
    cuda = device.type == "cuda"
    workers = int(getattr(args, "num_workers", None) or (USUAL_WORKERS if cuda else 0))
    data = load_dataset(args.dataset, getattr(args, "data_dir", None))
    gpu_name = torch.cuda.get_device_name(device) if cuda else None
    print(f"bench perf: {', '.join(models)} on {gpu_name or device} | {args.dataset} "
          f"({len(data.train)} train / {len(data.test)} test) | batch {args.batch_size} | "
          f"1 warm-up + {args.epochs} timed epoch(s) per variant")
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        print(f"  note: {text}")

    if not cuda:
        note(f"usual loop on {device.type}: num_workers={workers} (workers would compete with the model "
             "for the same cores)")
    skipped = [v.name for v in variants if v.needs_cuda and not cuda]
    if skipped:
        note(f"skipped on {device.type} (need a CUDA device): {', '.join(skipped)}")
    runners: dict[str, Callable[..., dict[str, Any]]] = {"engine": engine_run, "compile": compiled_run}
    rows: list[dict[str, Any]] = []
    for m in models:
        for v in variants:
            if v.needs_cuda and not cuda:
                continue
            print(f"  {m:<10} {v.name:<14} ...", end="", flush=True)
            try:
                if v.kind == "usual":
                    got = usual_loop(m, data, batch_size=args.batch_size, epochs=args.epochs, device=device,
                                     workers=workers)
                else:
                    got = runners[v.kind](m, data, v, dataset=args.dataset, batch_size=args.batch_size,
                                          epochs=args.epochs, device=device)
                row = _row(m, v, **got)
                print(f" {row['epoch_s']:.3f} s/epoch")
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - one variant failing (compile, OOM) is a result too
                msg = str(exc).strip().splitlines()
                row = _row(m, v, note=f"failed: {type(exc).__name__}: {msg[0] if msg else ''}"[:300])
                print(f" failed ({type(exc).__name__})")
            finally:
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            rows.append(row)
        base = next((r["epoch_s"] for r in rows if r["model"] == m and r["variant"] == "usual"), None)
        for r in rows:
            if r["model"] == m and base and r["epoch_s"] and math.isfinite(r["epoch_s"]):
                r["speedup_vs_usual"] = base / r["epoch_s"]

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_colwidth", 60,
                           "display.float_format", lambda x: f"{x:.3f}"):
        print(table.drop(columns=["note"]).to_string(index=False))
    for r in rows:
        if r["note"]:
            print(f"  {r['model']} {r['variant']}: {r['note']}")

    now = datetime.now(timezone.utc)
    out_dir = Path(args.results_dir) / "perf"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"perf-{now.strftime('%Y%m%d-%H%M%S')}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    payload = {
        "date": now.isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "gpu_name": gpu_name,
        "device": str(device),
        "environment": environment(),
        "settings": {
            "models": models, "batch_size": args.batch_size, "timed_epochs": args.epochs, "warmup_epochs": 1,
            "dataset": args.dataset, "data_source": str(data.source), "train_size": len(data.train),
            "test_size": len(data.test), "variants": [v.name for v in variants], "lr": LR, "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY, "engine_eval_batch": EVAL_BATCH, "usual_num_workers": workers,
        },
        "variants": {v.name: dataclasses.asdict(v) for v in variants},
        "notes": notes,
        "columns": list(COLUMNS),
        "rows": rows,
    }
    stem.with_suffix(".json").write_text(json.dumps(_jsonable(payload), indent=1, default=str) + "\n")
    print(f"perf: {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return 0
