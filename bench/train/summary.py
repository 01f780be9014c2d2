"""The run's flat summary, derived from the per-epoch history."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.config import RunConfig

from bench.record import HISTORY_KEYS  # the fields of bench.record.EpochRow, the rows summarised here

__all__ = ["HISTORY_KEYS", "summarise", "threshold_key", "time_to_accuracy"]

NAN = float("nan")


def threshold_key(t: float) -> int:
    """Percent used in the time-to-accuracy key names (0.9 -> 90; rounded, so 0.29 -> 29)."""
    return int(round(t * 100))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _steady(history: list[dict[str, Any]], key: str) -> float:
    """Median of ``key`` over epochs, leaving out the first (warm-up: cuDNN autotuning, allocator)."""
    rows = history[1:] if len(history) >= 2 else history
    vals = [r[key] for r in rows if _finite(r[key])]
    return statistics.median(vals) if vals else NAN


def time_to_accuracy(history: list[dict[str, Any]], thresholds: tuple[float, ...]) -> dict[str, Any]:
    """For each threshold: cumulative training seconds and epoch count when val_acc first reached it.

    ``time_to_val_acc_<pct>_s`` is NaN and ``epochs_to_val_acc_<pct>`` None when it never did (always
    so without a validation split).
    """
    out: dict[str, Any] = {}
    for t in thresholds:
        hit = next((r for r in history if _finite(r["val_acc"]) and r["val_acc"] >= t), None)
        k = threshold_key(t)
        out[f"time_to_val_acc_{k}_s"] = hit["elapsed_train_time_s"] if hit else NAN
        out[f"epochs_to_val_acc_{k}"] = hit["epoch"] if hit else None
    return out


def summarise(
    cfg: RunConfig,
    history: list[dict[str, Any]],
    *,
    status: str,
    error: str | None,
    extra: dict[str, Any],
    iterations_done: int,
    steps_per_epoch: int,
    train_time_s: float,
    precision_used: str,
    device: str,
    classes: list[str],
    sizes: tuple[int, int, int],
    data_source: str,
) -> dict[str, Any]:
    """The flat summary dict of a run (see the keys below; accuracies are fractions).

    Epoch numbers count completed epochs (history's ``epoch`` is 1 after the first epoch), so
    ``best_val_epoch`` and ``epochs_to_val_acc_<pct>`` are row ``epoch`` values.
    """
    last = history[-1] if history else {}
    vals = [(r["val_acc"], i) for i, r in enumerate(history) if _finite(r["val_acc"])]
    best = history[max(vals, key=lambda v: (v[0], -v[1]))[1]] if vals else None  # earliest best epoch
    peaks = [r["peak_allocated_bytes"] for r in history if r["peak_allocated_bytes"] is not None]
    summary: dict[str, Any] = {
        "status": status,
        "error": error,
        "epochs_done": len(history),
        "iterations_done": iterations_done,
        "steps_per_epoch": steps_per_epoch,
        "final_train_loss": last.get("train_loss", NAN),
        "final_train_acc": last.get("train_acc", NAN),
        "final_val_acc": last.get("val_acc", NAN),
        "final_val_loss": last.get("val_loss", NAN),
        "final_test_acc": last.get("test_acc", NAN),
        "final_test_loss": last.get("test_loss", NAN),
        "best_val_acc": best["val_acc"] if best else NAN,
        "best_val_epoch": best["epoch"] if best else None,
        "test_acc_at_best_val": best["test_acc"] if best else NAN,
        "train_time_s": train_time_s,
        "median_epoch_time_s": _steady(history, "epoch_time_s"),
        "epoch_train_samples_per_s": _steady(history, "epoch_train_samples_per_s"),
        "peak_allocated_bytes": max(peaks) if peaks else None,
        "final_train_acc_evalmode": NAN,
        "final_train_acc_trainmode": NAN,
        "precision_used": precision_used,
        "engine_used": "eager",
        "device": device,
        "num_classes": len(classes),
        "class_names": list(classes),
        "train_size": sizes[0],
        "val_size": sizes[1],
        "test_size": sizes[2],
        "data_source": data_source,
    }
    summary.update(time_to_accuracy(history, cfg.acc_thresholds))
    summary.update(extra)
    return summary
