"""``bench perf``: the usual training loop against the engine, in one process on one device.

What is compared (per model, at one batch size, on the same uint8 images):

* ``usual``: the loop lectures and tutorials write, kept honest. A torchvision-style ``DataLoader``
  over PIL images (:class:`~bench.data.torch_loader.TorchLoader`'s ``PilDataset``: the same uint8
  images as the engine's) with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, shuffled, ``num_workers=4`` (re-created every epoch, as without
  ``persistent_workers``), ``pin_memory=True``; per batch ``.to(device)`` and the engine's own
  :class:`~bench.train.step.TrainStep` in fp32 (forward, cross-entropy, ``zero_grad``, backward,
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
  ``compile_*`` and ``graph_compile_*`` run after the others, each in its own process with its own
  timeout (:data:`COMPILE_TIMEOUT_S`); ``cuda_graphs_used`` says whether CUDA graphs actually ran.
* ``step_*`` (any device; made for ``--device cpu``): the training step alone (forward, loss,
  backward, SGD step on one real augmented batch), eager fp32, fp32 + channels_last, bf16 autocast,
  bf16 + channels_last and ``torch.compile`` (Inductor; its compile time is ``compile_s``), timed in
  interleaved rounds (:func:`bench.commands.perf_runs.step_rounds`); ``--variants step`` names all five.
  Their rows add the ratio to ``step_fp32``, the estimated achieved GFLOP/s and, on a CPU, the
  fraction of its estimated peak; the 1-minute load average before and after goes into the records.

Timing and peak memory: see :mod:`bench.commands.perf_runs`. It measures and reports; it asserts nothing about
speed. On a CPU (``--device cpu``, e.g. with ``--dataset synthetic:...``) the CUDA-only variants are skipped
with a printed note and the usual loop runs with ``num_workers=0``. Results: a printed table and
``<results-dir>/perf/perf-<time>.csv`` and ``.json`` (with the environment, date, torch version and GPU name).
"""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.device import auto_device_note, on_device, release_cached_memory, resolve_device
from bench.errors import UserError, reason, unknown_value
# a training step as multiply-adds: forward x 3, the run-cost estimates' one rule
from bench.measure.estimate import TRAIN_MACS_PER_FORWARD as TRAIN_MACS_FACTOR
from bench.files import clean_json, write_atomic
from bench.commands.perf_runs import (
    EVAL_BATCH,
    LR,
    MOMENTUM,
    USUAL_WORKERS,
    WEIGHT_DECAY,
    Variant,
    compiled_run_isolated,
    engine_run,
    load_average,
    run_isolated,
    step_rounds,
    usual_loop,
)

__all__ = ["COLUMNS", "DEFAULT_VARIANTS", "STEP_VARIANTS", "VARIANTS", "Variant", "parse_variants", "run_order",
           "run_perf"]

COLUMNS = (
    "model", "variant", "engine_used", "precision", "channels_last", "cuda_graphs_used",
    # whole epochs
    "epoch_s", "samples_per_s", "speedup_vs_usual", "eval_s", "capture_s", "compile_s",
    "train_peak_reserved_MiB", "train_peak_alloc_MiB", "capture_peak_reserved_MiB", "run_peak_reserved_MiB",
    "final_test_acc", "final_train_loss", "epochs_timed",
    # training steps in interleaved rounds
    "step_ms", "step_ms_iqr", "rounds", "steps_per_round", "speedup_vs_step_fp32",
    "macs_per_image_fwd", "train_GFLOP_per_s_est", "pct_of_cpu_peak_est",
    "load_1min_before", "load_1min_after", "note",
)
COMPILE_TIMEOUT_S = 1200.0  # one compile_* / graph_compile_* variant, in its own process
STEP_ROUNDS, STEP_STEPS = 7, 5  # step variants: rounds, and back-to-back steps per variant per round

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
    Variant("step_fp32", "step", "training step alone, eager, fp32 (the step variants' reference)"),
    Variant("step_fp32_cl", "step", "training step alone, eager, fp32 + channels_last", channels_last=True),
    Variant("step_bf16", "step", "training step alone, eager, bf16 autocast", precision="bf16"),
    Variant("step_bf16_cl", "step", "training step alone, eager, bf16 autocast + channels_last",
            precision="bf16", channels_last=True),
    Variant("step_compile", "step", "training step alone over torch.compile(model) (Inductor), fp32",
            compile_mode="default"),
)}
DEFAULT_VARIANTS = ("usual", "eager_fp32", "eager_bf16_cl", "graph_fp32", "graph_fp32_cl", "graph_bf16",
                    "graph_bf16_cl", "compile_ro", "graph_compile_fp32", "graph_compile_bf16_cl")
STEP_VARIANTS = ("step_fp32", "step_fp32_cl", "step_bf16", "step_bf16_cl", "step_compile")
GROUPS = {"step": STEP_VARIANTS}  # --variants step: all five step variants


def parse_variants(text: str | None) -> list[Variant]:
    """``'usual,graph_fp32'`` -> variants (None: the defaults; ``step``: the step variants); unknown
    names are a UserError."""
    names = DEFAULT_VARIANTS if not text else [n.strip() for n in text.split(",") if n.strip()]
    out: list[Variant] = []
    for n in names:
        for name in GROUPS.get(n, (n,)):
            if name not in VARIANTS:
                raise unknown_value("variant", name, (*VARIANTS, *GROUPS))
            if VARIANTS[name] not in out:
                out.append(VARIANTS[name])
    return out


def run_order(variants: list[Variant], cuda: bool) -> tuple[list[Variant], list[Variant]]:
    """(epoch variants in the order they run, step variants) of those ``variants`` this device runs:
    the usual loop and the engine first, compile variants last (each in its own process: a hang or a
    broken CUDA state costs that row only)."""
    runnable = [v for v in variants if cuda or not v.needs_cuda]
    first = [v for v in runnable if v.kind in ("usual", "engine")]
    return first + [v for v in runnable if v.kind == "compile"], [v for v in runnable if v.kind == "step"]


def _row(model: str, v: Variant, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in COLUMNS}
    row.update(model=model, variant=v.name, precision=v.precision, channels_last=v.channels_last, note="")
    row.update(kw)
    return row


def _load_text(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def _failed(exc: BaseException) -> str:
    return "failed: " + reason(exc, 292)


def _train_macs_per_image(model_name: str, data: Any) -> int | None:
    """fvcore's forward multiply-adds of one image (conv + linear), or None if it cannot count them."""
    from bench.measure.compute import count_compute
    from bench.models import create_model

    try:
        model = create_model(model_name, num_classes=data.num_classes, in_channels=data.in_channels)
        return int(count_compute(model, tuple(data.image_shape))["macs_conv_linear"])
    except Exception:  # noqa: BLE001 - the FLOP columns are then empty, the timings stand
        return None


def _finish_step_rows(rows: list[dict[str, Any]], macs: int | None, batch_size: int,
                      peak_gflops: float | None) -> None:
    """Ratios to step_fp32, achieved GFLOP/s (2 x multiply-adds / s) and the fraction of the peak."""
    base = next((r["step_ms"] for r in rows if r["variant"] == "step_fp32" and r["step_ms"]), None)
    for r in rows:
        ms = r["step_ms"]
        if not ms or not math.isfinite(ms):
            continue
        r["macs_per_image_fwd"] = macs
        if base:
            r["speedup_vs_step_fp32"] = base / ms
        if macs:
            r["train_GFLOP_per_s_est"] = 2 * TRAIN_MACS_FACTOR * macs * batch_size / (ms / 1e3) / 1e9
            if peak_gflops:
                r["pct_of_cpu_peak_est"] = 100 * r["train_GFLOP_per_s_est"] / peak_gflops


# ------------------------------------------------------------------------------------- driver


@dataclasses.dataclass(frozen=True)
class PerfOptions:
    """What ``bench perf`` compares: the models (comma-separated), batch size, timed epochs, device,
    data set, variants (None: the defaults; 'step': the five step variants), the step variants'
    rounds and steps (None: their defaults), workers of the usual loop (None: its default), and where
    results and data are."""

    models: str = "resnet20,resnet56,resnet18"
    batch_size: int = 128
    epochs: int = 2
    device: str = "auto"
    dataset: str = "cifar10"
    variants: str | None = None
    rounds: int | None = None
    steps: int | None = None
    num_workers: int | None = None
    results_dir: str = "results"
    data_dir: str | None = None


def run_perf(args: PerfOptions) -> int:
    """Run the comparison described in the module doc; print the table, write CSV + JSON; return 0."""
    import pandas as pd

    from bench.data import load_dataset
    from bench.measure.env import cpu_mark, cpu_peak_estimate, environment
    from bench.models import model_info

    asked = getattr(args, "device", "auto") or "auto"
    device = resolve_device(asked)
    models = [m.strip() for m in str(args.models).split(",") if m.strip()]
    if not models:
        raise UserError("--models names no model (e.g. --models resnet20,resnet56,resnet18)")
    for m in models:
        model_info(m)  # a UserError naming the accepted models for an unknown one
    variants = parse_variants(getattr(args, "variants", None))
    if args.batch_size < 1 or args.epochs < 1:
        raise UserError(f"--batch-size and --epochs must be >= 1, got {args.batch_size} and {args.epochs}")
    given_rounds, given_steps = getattr(args, "rounds", None), getattr(args, "steps", None)
    rounds = STEP_ROUNDS if given_rounds is None else int(given_rounds)
    steps = STEP_STEPS if given_steps is None else int(given_steps)
    if rounds < 1 or steps < 1:
        raise UserError(f"bad --rounds {rounds} or --steps {steps} (accepted: integers >= 1)")
    cuda = device.type == "cuda"
    workers = int(getattr(args, "num_workers", None) or (USUAL_WORKERS if cuda else 0))
    data_dir = getattr(args, "data_dir", None)
    data = load_dataset(args.dataset, data_dir)
    gpu_name = torch.cuda.get_device_name(device) if cuda else None
    auto_note = auto_device_note(asked)
    if auto_note:
        print(f"bench perf: {auto_note}")
    load_before = load_average()
    started = cpu_mark()  # the record's other_cpu_pct: other processes' share over the whole perf run
    print(f"bench perf: {', '.join(models)} on {gpu_name or device} | {args.dataset} "
          f"({len(data.train)} train / {len(data.test)} test) | batch {args.batch_size} | "
          f"1 warm-up + {args.epochs} timed epoch(s) per epoch variant | 1-min load average {_load_text(load_before)}")
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        print(f"  note: {text}")

    if not cuda and any(v.kind == "usual" for v in variants):
        note(f"usual loop on {device.type}: num_workers={workers} (workers would compete with the model "
             "for the same cores)")
    skipped = [v.name for v in variants if v.needs_cuda and not cuda]
    if skipped:
        note(f"skipped on {device.type} (need a CUDA device): {', '.join(skipped)}")
    epoch_vs, step_vs = run_order(variants, cuda)
    peak = cpu_peak_estimate() if not cuda else {}
    rows: list[dict[str, Any]] = []
    for m in models:
        for v in epoch_vs:
            print(f"  {m:<10} {v.name:<14} ...", end="", flush=True)
            try:
                with on_device(device):
                    if v.kind == "usual":
                        got = usual_loop(m, data, batch_size=args.batch_size, epochs=args.epochs, device=device,
                                         workers=workers)
                    elif v.kind == "engine":
                        got = engine_run(m, data, v, dataset=args.dataset, batch_size=args.batch_size,
                                         epochs=args.epochs, device=device)
                    else:
                        got = run_isolated(compiled_run_isolated, dict(
                            model_name=m, v=v, dataset=args.dataset, data_dir=data_dir,
                            batch_size=args.batch_size, epochs=args.epochs, device=str(device)),
                            COMPILE_TIMEOUT_S)
                row = _row(m, v, **got)
                print(f" {row['epoch_s']:.3f} s/epoch")
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - one variant failing (compile, OOM) is a result too
                row = _row(m, v, note=_failed(exc))
                print(f" failed ({type(exc).__name__})")
            finally:
                release_cached_memory(device)
            rows.append(row)
        base = next((r["epoch_s"] for r in rows if r["model"] == m and r["variant"] == "usual"), None)
        for r in rows:
            if r["model"] == m and base and r["epoch_s"] and math.isfinite(r["epoch_s"]):
                r["speedup_vs_usual"] = base / r["epoch_s"]
        if step_vs:
            with on_device(device):
                got_steps = step_rounds(m, data, step_vs, batch_size=args.batch_size, rounds=rounds, steps=steps,
                                        device=device)
            step_rows = [_row(m, v, **g) for v, g in zip(step_vs, got_steps, strict=True)]
            _finish_step_rows(step_rows, _train_macs_per_image(m, data), args.batch_size,
                              peak.get("cpu_peak_GFLOP_per_s_est"))
            rows.extend(step_rows)
            release_cached_memory(device)
    load_after = load_average()
    for r in rows:
        r.update(load_1min_before=load_before, load_1min_after=load_after)
    print(f"  1-min load average: {_load_text(load_before)} before, {_load_text(load_after)} after")

    table = pd.DataFrame(rows, columns=list(COLUMNS))
    shown = table.drop(columns=["note", "load_1min_before", "load_1min_after"]).dropna(axis=1, how="all")
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 60,
                           "display.float_format", lambda x: f"{x:.3f}"):
        print(shown.to_string(index=False))
    for r in rows:
        if r["note"]:
            print(f"  {r['model']} {r['variant']}: {r['note']}")
    if step_vs and peak:
        print(f"  {peak['cpu_peak_assumption']}: {peak['cpu_peak_GFLOP_per_s_est']} GFLOP/s "
              f"({peak['cpu_cores_used']} cores x {peak['cpu_clock_GHz']} GHz x "
              f"{peak['cpu_fp32_flop_per_cycle_per_core']})")

    now = datetime.now(UTC)
    out_dir = Path(args.results_dir) / "perf"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"perf-{now.strftime('%Y%m%d-%H%M%S')}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    payload = {
        "date": now.isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
        "gpu_name": gpu_name,
        "device": str(device),
        "environment": environment(device, since=started),
        "load_1min_before": load_before,
        "load_1min_after": load_after,
        "torch_threads": torch.get_num_threads(),
        "cpu_peak": peak,
        "settings": {
            "models": models, "batch_size": args.batch_size, "timed_epochs": args.epochs, "warmup_epochs": 1,
            "dataset": args.dataset, "data_source": str(data.source), "train_size": len(data.train),
            "test_size": len(data.test), "variants": [v.name for v in variants], "lr": LR, "momentum": MOMENTUM,
            "weight_decay": WEIGHT_DECAY, "engine_eval_batch": EVAL_BATCH, "usual_num_workers": workers,
            "step_rounds": rounds, "step_steps_per_round": steps, "compile_timeout_s": COMPILE_TIMEOUT_S,
            "train_macs_factor": TRAIN_MACS_FACTOR,
        },
        "variants": {v.name: dataclasses.asdict(v) for v in variants},
        "notes": notes,
        "columns": list(COLUMNS),
        "rows": rows,
    }
    write_atomic(stem.with_suffix(".json"), json.dumps(clean_json(payload), indent=1, default=str) + "\n")
    print(f"perf: {stem.with_suffix('.csv')} and {stem.with_suffix('.json')}")
    return 0
