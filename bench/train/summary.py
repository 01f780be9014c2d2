"""The run's flat summary, derived from the per-epoch history."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.config import RunConfig
from bench.record import HISTORY_KEYS, EpochRow  # the rows summarised here

__all__ = ["HISTORY_KEYS", "epoch_summary", "summarise", "threshold_key", "time_to_accuracy"]

NAN = float("nan")


def threshold_key(t: float) -> int:
    """Percent used in the time-to-accuracy key names (0.9 -> 90; rounded, so 0.29 -> 29)."""
    return int(round(t * 100))


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _steady(history: Sequence[Mapping[str, Any]], key: str) -> float:
    """Median of ``key`` over epochs, leaving out the first (warm-up: cuDNN autotuning, allocator)."""
    rows = history[1:] if len(history) >= 2 else history
    vals = [r[key] for r in rows if _finite(r[key])]
    return statistics.median(vals) if vals else NAN


def time_to_accuracy(history: Sequence[Mapping[str, Any]], thresholds: tuple[float, ...]) -> dict[str, Any]:
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


def epoch_summary(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What each :class:`~bench.record.EpochRow` field gives the summary, as its field declares
    (:func:`bench.record.epoch_metric`): ``final_<name>``, a steady-state median or the maximum."""
    last = history[-1] if history else {}
    out: dict[str, Any] = {}
    for f in dataclasses.fields(EpochRow):
        how, key = f.metadata.get("summary"), f.metadata.get("key") or f.name
        if how == "final":
            out[f"final_{f.name}"] = last.get(f.name, NAN)
        elif how == "steady":
            out[key] = _steady(history, f.name)
        elif how == "max":
            seen = [r[f.name] for r in history if r.get(f.name) is not None and _finite(r[f.name])]
            out[key] = max(seen) if seen else None
    return out


def summarise(
    cfg: RunConfig,
    history: Sequence[Mapping[str, Any]],
    *,
    extra: dict[str, Any],
    iterations_done: int,
    steps_per_epoch: int,
    train_time_s: float,
    precision_used: str,
    classes: list[str],
    sizes: tuple[int, int, int],
    data_source: str,
) -> dict[str, Any]:
    """The run's summary metrics (the record's ``metrics``; accuracies are fractions). How the run
    ended and where it ran are the record's ``outcome`` and ``placement``, not metrics.

    Epoch numbers count completed epochs (history's ``epoch`` is 1 after the first epoch), so
    ``best_val_epoch`` and ``epochs_to_val_acc_<pct>`` are row ``epoch`` values.
    """
    vals = [(r["val_acc"], i) for i, r in enumerate(history) if _finite(r["val_acc"])]
    best = history[max(vals, key=lambda v: (v[0], -v[1]))[1]] if vals else None  # earliest best epoch
    summary: dict[str, Any] = {
        "epochs_done": len(history),
        "iterations_done": iterations_done,
        "steps_per_epoch": steps_per_epoch,
        **epoch_summary(history),
        "best_val_acc": best["val_acc"] if best else NAN,
        "best_val_epoch": best["epoch"] if best else None,
        "test_acc_at_best_val": best["test_acc"] if best else NAN,
        "train_time_s": train_time_s,
        "final_train_acc_evalmode": NAN,
        "final_train_acc_trainmode": NAN,
        "precision_used": precision_used,
        "engine_used": "eager",
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
