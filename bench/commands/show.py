"""``bench show <run_id>``: one run's config, summary and history as text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.errors import UserError
from bench.files import read_json
from bench.store import ResultsStore

_KEY_METRICS = (
    "status", "error", "arm_label", "seed", "final_train_acc", "final_train_error_pct", "final_test_acc",
    "final_test_error_pct", "test_acc_at_best_val", "test_error_at_best_val_pct", "best_val_acc",
    "best_val_error_pct", "best_val_epoch", "epochs_done", "iterations_done", "train_time_s", "median_epoch_time_s",
    "epoch_train_samples_per_s", "peak_allocated_bytes", "params_total", "macs_conv_linear", "flops_torch",
    "shared_gpu", "device", "env_load_avg_1min", "env_other_cpu_pct",
)
# Accuracies are stored as fractions; shown in percent, like the errors beside them.
_ACC_COLUMNS = ("train_acc", "val_acc", "test_acc")


def _shown_key(key: str) -> str:
    """The name a key is shown under: an accuracy (a fraction in the record) gets ``_pct``."""
    return f"{key}_pct" if key.endswith("_acc") or key == "test_acc_at_best_val" else key


def _shown_value(key: str, v: object) -> str:
    """An accuracy as a percentage with two decimals (like the errors), other floats to four significant
    digits, a missing value as a dash."""
    if isinstance(v, float) and (key.endswith("_acc") or key == "test_acc_at_best_val"):
        return "—" if v != v else f"{100 * v:.2f}"
    if isinstance(v, float) and key.endswith("_pct"):
        return "—" if v != v else f"{v:.2f}"
    if v is None or (isinstance(v, float) and v != v):
        return "—"  # not recorded (e.g. GPU memory on a CPU run)
    if isinstance(v, float):
        return f"{v:.4g}"  # timings and rates: four significant digits, not the float's seventeen
    return str(v)


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
        lines += [f"  {_shown_key(k):<28} {_shown_value(k, row[k])}" for k in _KEY_METRICS if k in row]
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
    elif (hist := store.read_history(st, rd.name)) is not None:
        for c in _ACC_COLUMNS:
            if c in hist:
                hist[f"{c}_pct"] = 100 * pd.to_numeric(hist[c], errors="coerce")
        cols = [c for c in ("epoch", "iteration", "lr", "train_loss", "train_acc_pct", "val_acc_pct", "test_acc_pct",
                            "epoch_time_s", "epoch_train_samples_per_s") if c in hist]
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
