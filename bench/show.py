"""``bench show <run_id>``: one run's config, summary and history as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.files import read_json
from bench.store import ResultsStore

_KEY_METRICS = (
    "status", "error", "arm_label", "seed", "final_test_acc", "test_acc_at_best_val", "best_val_acc",
    "best_val_epoch", "epochs_done", "iterations_done", "train_time_s", "median_epoch_time_s",
    "epoch_train_samples_per_s", "peak_allocated_bytes", "params_total", "macs_conv_linear", "flops_torch",
    "shared_gpu", "device",
)


def find_run(results_dir: str | Path, run_id: str, study: str | None = None) -> Path:
    """The folder of a run (a unique id prefix is enough); UserError if none or ambiguous."""
    store = ResultsStore(results_dir)
    studies = [study] if study else store.studies()
    hits = [rd for s in studies for rd in store.run_dirs(s) if rd.name.startswith(run_id)]
    if not hits:
        raise UserError(f"no run {run_id!r} under {results_dir} (bench status <study> lists run ids)")
    if len(hits) > 1:
        raise UserError(f"run id prefix {run_id!r} is ambiguous: {', '.join(h.name for h in hits[:5])}")
    return hits[0]


def show_run(results_dir: str | Path, run_id: str, study: str | None = None) -> str:
    """Text view of a run: where it is, key results, config and per-epoch history. A damaged file
    is one line naming it and what to do; the rest of the run is still shown."""
    from bench.record import RecordError, RunRecord

    store = ResultsStore(results_dir)
    rd = find_run(results_dir, run_id, study)
    st = rd.parent.parent.name
    lines = [f"run {rd.name}  ({rd})"]
    damage = store.damage(st, rd.name)
    summary = store.summary(st, rd.name)
    if damage is not None:
        lines.append(f"  {damage}: the next `bench run` moves it to damaged/ and runs the cell again")
    elif summary is not None:
        try:
            row = RunRecord.from_dict(summary).to_row()
        except RecordError as exc:  # a newer schema: a newer bench reads it
            raise RecordError(f"{rd / 'summary.json'}: {exc}") from None
        lines += [f"  {k:<24} {row[k]}" for k in _KEY_METRICS if k in row]
    else:
        lines.append("  not finished (no summary.json yet)")
    cfg = (summary or {}).get("config") or _read(rd / "config.json")
    if isinstance(cfg, str):
        lines.append(f"config: {cfg}")
    elif cfg is not None:
        lines.append("config:")
        lines += [f"  {k:<18} {v}" for k, v in sorted(cfg.items())]
    hist_damage = store.history_damage(st, rd.name)
    if hist_damage is not None:
        lines.append(f"history: {hist_damage}; " + (
            "the summary is intact (move the run folder away to train the cell again)" if summary is not None
            else "the next `bench run` moves it to damaged/ and resumes the cell"))
    elif (rd / "history.csv").exists():
        hist = pd.read_csv(rd / "history.csv")
        cols = [c for c in ("epoch", "iteration", "lr", "train_loss", "train_acc", "val_acc", "test_acc",
                            "epoch_time_s", "epoch_train_samples_per_s", "train_samples_per_s") if c in hist]
        lines.append("history:")
        lines.append(hist[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return "\n".join(lines)


def _read(path: Path) -> dict | str | None:
    """The JSON object at ``path``; None when absent; a line naming the file when it is damaged."""
    try:
        v = read_json(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (ValueError, OSError) as exc:
        return f"{path} is damaged ({type(exc).__name__}); the next `bench run` of the cell writes it again"
    return v if isinstance(v, dict) else f"{path} is damaged (not a JSON object); the next `bench run` writes it again"
