"""``bench export tensorboard <study>``: one TensorBoard run (event files) per finished run.

Scalars per epoch (step = epoch): losses, accuracies, learning rate, epoch and eval time, samples/s;
the config as hparams with the run's final metrics; the run id as the run's folder name. A run whose
folder already holds event files is left as it is, so a second export adds only new runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.export import EXPORTS
from bench.results import Run, read_results

# history column -> TensorBoard tag (grouped by what it measures)
SCALARS = {
    "train_loss": "loss/train", "val_loss": "loss/val", "test_loss": "loss/test",
    "train_acc": "accuracy/train", "val_acc": "accuracy/val", "test_acc": "accuracy/test",
    "lr": "lr", "epoch_time_s": "time/epoch_time_s", "eval_time_s": "time/eval_time_s",
    "epoch_train_samples_per_s": "speed/epoch_train_samples_per_s",
}
HPARAM_METRICS = ("final_test_acc", "best_val_acc", "test_acc_at_best_val", "final_train_loss", "median_epoch_time_s")
INSTALL = "pip install -e '.[track]'  (or: pip install tensorboard)"


def _summary_writer() -> Any:
    try:
        import tensorboard  # noqa: F401 - torch's writer needs it
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"bench export tensorboard needs the tensorboard package: {INSTALL}") from None
    return SummaryWriter


def hparams(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams (numbers, strings and booleans; the rest as JSON text)."""
    out: dict[str, Any] = {}
    for k, v in sorted(config.items()):
        if isinstance(v, bool) or isinstance(v, (int, float, str)):
            out[k] = v
        elif v is None:
            out[k] = "None"
        else:
            out[k] = json.dumps(v, sort_keys=True)
    return out


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def write_run(run: Run, logdir: Path) -> Path:
    """Event files for one finished run under ``logdir/<run_id>/``."""
    writer_cls = _summary_writer()
    out = logdir / run.run_id
    rec = run.record
    metrics = rec.metrics if rec is not None else {}
    status = rec.status if rec is not None else ""
    with writer_cls(log_dir=str(out)) as w:
        for _, row in run.history.iterrows():
            step = int(row["epoch"]) if "epoch" in row and _finite(row["epoch"]) else None
            for col, tag in SCALARS.items():
                if col in row and _finite(row[col]):
                    w.add_scalar(tag, float(row[col]), global_step=step)
        final = {f"hparam/{k}": float(metrics[k]) for k in HPARAM_METRICS if _finite(metrics.get(k))}
        w.add_hparams({**hparams(run.config or {}), "arm": run.cell.get("arm_label", ""), "status": status},
                      final, run_name=".")
        w.add_text("run", f"study {run.study}, run {run.run_id}, arm {run.cell.get('arm_label', '')}, "
                          f"seed {run.cell.get('seed')}, status {status}")
    return out


@EXPORTS.register("tensorboard")
def export_tensorboard(study: str, results_dir: Path, args: argparse.Namespace) -> list[str]:
    """Event files under ``--logdir`` (default ``<results>/<study>/tensorboard``); returns report lines."""
    _summary_writer()  # the install hint before anything else
    logdir = Path(getattr(args, "logdir", None) or results_dir / study / "tensorboard")
    written, kept = 0, 0
    for run in read_results(results_dir, study).finished:
        if any((logdir / run.run_id).glob("events.out.tfevents.*")):
            kept += 1
            continue
        write_run(run, logdir)
        written += 1
    return [f"tensorboard: {written} run(s) written, {kept} already there -> {logdir}",
            f"  view: tensorboard --logdir {logdir}"]
