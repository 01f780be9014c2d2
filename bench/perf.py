"""``bench perf``: the usual training loop against the engine, in one process on one device.

What is compared (per model, at one batch size, on the same uint8 images):

* ``usual``: the loop lectures and tutorials write, kept honest. A torchvision-style ``DataLoader``
  over PIL images (:class:`~bench.data.torch_loader.TorchLoader`'s ``PilDataset``: the same uint8
  images as the engine's) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, shuffled, ``num_workers=4`` (re-created every epoch, as without
  ``persistent_workers``), ``pin_memory=True``; per batch ``.to(device)`` and the engine's own
  :class:`~bench.train.loop.TrainStep` in fp32 (forward, cross-entropy, ``zero_grad``, backward,
  ``optimizer.step()`` with ``torch.optim.SGD``'s default implementation), ``model.train()`` once per
  epoch, and ``loss.item()`` for the running loss, as tutorials log it.
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

Timing and peak memory: see :mod:`bench.perf_runs`. It measures and reports; it asserts nothing about speed. On a CPU (``--device cpu``, e.g. with
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
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from bench.device import resolve_device
from bench.errors import UserError, unknown_value
from bench.perf_runs import (
    EVAL_BATCH,
    LR,
    MOMENTUM,
    USUAL_WORKERS,
    WEIGHT_DECAY,
    Variant,
    compiled_run,
    engine_run,
    usual_loop,
)
from bench.files import clean_json, write_atomic

__all__ = ["COLUMNS", "DEFAULT_VARIANTS", "VARIANTS", "Variant", "parse_variants", "run_perf"]

COLUMNS = (
    "model", "variant", "engine_used", "precision", "channels_last", "epoch_s", "samples_per_s",
    "speedup_vs_usual", "peak_mem_MiB", "peak_alloc_MiB", "eval_s", "capture_s", "final_test_acc",
    "final_train_loss", "epochs_timed", "note",
)


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


def _row(model: str, v: Variant, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(model=model, variant=v.name, precision=v.precision, channels_last=v.channels_last, note="")
    row.update(kw)
    return row


# ------------------------------------------------------------------------------------- driver


def run_perf(args: argparse.Namespace) -> int:
    """Run the comparison described in the module doc; print the table, write CSV + JSON; return 0."""
    import pandas as pd

    from bench.data import load_dataset
    from bench.measure.env import environment
    from bench.models import model_info

    device = resolve_device(getattr(args, "device", "auto") or "auto")
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
    write_atomic(stem.with_suffix(".json"), json.dumps(clean_json(payload), indent=1, default=str) + "\n")
    print(f"perf: {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return 0
