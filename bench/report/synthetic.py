"""Synthetic records for the report's tests and for previewing a report's layout without training
anything (``write_synthetic_study``). They are built as :class:`~bench.record.RunRecord` and
:class:`~bench.record.EpochRow`, summarised by the trainer's own :func:`~bench.train.summary.summarise`
and written by the store, so a schema change reaches them at once.
Numbers are random but plausible: deeper plain nets get worse, errors spread a little over seeds."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import apply_overrides
from bench.data.sources import stored_shape
from bench.files import write_atomic
from bench.record import Cell, EpochRow, Outcome, Placement, RunRecord
from bench.store import ResultsStore
from bench.study import get_study
from bench.train.summary import summarise

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _shape(dataset: str) -> tuple[int, int]:
    """(channels, side) of a data set name, from the data layer's shape lookup."""
    c, h, _ = stored_shape(dataset) or (3, 32, 32)
    return c, h


def _environment(cuda: bool) -> dict[str, Any]:
    return {"python_version": "3.11.2", "torch_version": "2.5.1", "torchvision_version": "0.20.1",
            "cuda_version": "12.4" if cuda else None, "cudnn_version": 90100 if cuda else None,
            "device_name": "NVIDIA H100 80GB HBM3" if cuda else "cpu", "gpu_count": 1 if cuda else 0,
            "driver_version": "550.54" if cuda else None, "cpu_model": "AMD EPYC 7763", "hostname": "node01",
            "git_commit": "0123456789abcdef0123456789abcdef01234567", "git_dirty": True}


def _target_error(cell: Cell, arm_index: int) -> float:
    tags = cell.tags
    if "depth" in tags:  # He et al.: plain nets degrade with depth, residual ones improve
        d = float(tags["depth"])
        return 8.5 + (0.12 * (d - 20) if tags.get("net") == "plain" else -0.04 * (d - 20))
    return 7.0 + 3.0 * ((arm_index * 0.618) % 1.0)


def _history(err: float, epochs: int, steps: int, batch: int, rng: np.random.Generator,
             cuda: bool, stop: int | None = None) -> list[EpochRow]:
    rows, elapsed = [], 0.0
    for e in range(1, (stop or epochs) + 1):
        frac = e / epochs
        test_err = err + (60 - err) * math.exp(-4 * frac) + rng.normal(0, 0.4)
        train_err = max(0.2, test_err - 3 - 4 * frac + rng.normal(0, 0.3))
        t = 10.0 * steps * batch / 50000 * (1 + rng.normal(0, 0.02)) + (2 if e == 1 else 0)
        elapsed += t
        rows.append(EpochRow(
            epoch=e, iteration=e * steps, lr=0.1 if frac <= 0.5 else 0.01,
            train_loss=train_err / 30, train_acc=1 - train_err / 100, val_loss=test_err / 28,
            val_acc=1 - (test_err + rng.normal(0.3, 0.2)) / 100, test_loss=test_err / 28,
            test_acc=1 - test_err / 100, epoch_time_s=t, eval_time_s=0.3,
            epoch_train_samples_per_s=steps * batch / t, elapsed_train_time_s=elapsed,
            peak_allocated_bytes=int(3.1e8 + 2e5 * batch) if cuda else None))
    return rows


def _metrics(cell: Cell, rows: list[EpochRow], status: str, steps: int, classes: list[str],
             sizes: tuple[int, int, int]) -> dict[str, Any]:
    """The trainer's own summary of these rows (so its keys are the real ones), plus the BN gap the
    trainer measures after a finished run."""
    h = [r.to_dict() for r in rows]
    last = h[-1]
    extra = {"final_train_acc_evalmode": last["train_acc"] - 0.01,
             "final_train_acc_trainmode": last["train_acc"] + 0.005,
             "resumed_from_epoch": 0} if status == "ok" else {}
    m = summarise(cell.config, h, extra=extra, iterations_done=last["iteration"], steps_per_epoch=steps,
                  train_time_s=last["elapsed_train_time_s"], precision_used="fp32", classes=classes, sizes=sizes,
                  data_source="synthetic")
    m.update(engine_fallback_reason=None, capture_time_s=0.0)
    if status == "diverged":
        m.update(final_test_acc=0.1, final_val_acc=0.1, final_train_loss=math.nan)
    return m


def _measurements(cell: Cell, cuda: bool) -> dict[str, Any]:
    p = 2.7e5 * (1 + len(cell.config.model) % 5)
    step = 20.0 + 0.1 * cell.config.batch_size
    return {"params_total": p, "params_trainable": p, "macs_conv_linear": 4.1e7 * (1 + len(cell.config.model) % 4),
            "macs_fvcore_total": 4.2e7 * (1 + len(cell.config.model) % 4),
            "flops_torch": 8.4e7 * (1 + len(cell.config.model) % 4),
            "infer_samples_per_s": 3 * 1000 * cell.config.batch_size / step, "infer_step_time_ms": step / 3,
            "infer_step_time_ms_iqr": 0.1, "train_samples_per_s": 1000 * cell.config.batch_size / step,
            "train_step_time_ms": step, "train_step_time_ms_iqr": 0.3,
            "train_peak_allocated_bytes": 3e8 if cuda else None, "train_peak_reserved_bytes": 4e8 if cuda else None,
            "infer_peak_allocated_bytes": 1e8 if cuda else None, "memory_measured": cuda}


def _artifacts(path: Path, rng: np.random.Generator, classes: list[str], ch: int, side: int, test_size: int,
               err: float) -> None:
    true = rng.integers(0, len(classes), test_size)
    pred = np.where(rng.random(test_size) < err / 100 + 0.1, rng.integers(0, len(classes), test_size), true)
    wrong = np.flatnonzero(pred != true)[:16]
    np.savez(path, test_pred=pred, test_true=true,
             misclassified_images=rng.integers(0, 256, (len(wrong), ch, side, side), dtype=np.uint8),
             misclassified_true=true[wrong], misclassified_pred=pred[wrong],
             filters_init=rng.normal(0, 0.1, (16, ch, 3, 3)).astype(np.float32),
             filters_final=rng.normal(0, 0.3, (16, ch, 3, 3)).astype(np.float32))


def write_synthetic_study(root: str | Path, study: str, profile: str = "smoke", *, seeds: tuple[int, ...] = (0, 1),
                          failed: int = 1, diverged: int = 1, running: int = 0, pending: int = 0,
                          cuda: bool = True, artifacts: bool = True, epochs: int = 6) -> list[Cell]:
    """Write records for every cell of ``study`` (its profile's arms, with ``seeds``) under ``root``.

    The first ``failed`` cells fail, the next ``diverged`` diverge, the last ``pending`` have no
    folder and the ``running`` before them have a history and a fresh claim but no summary.
    """
    st = get_study(study)
    base = st.cells(profile)
    cells = [dataclasses.replace(c, seed=s, config=apply_overrides(c.config, {"seed": s}))
             for s in seeds for c in base if c.seed == base[0].seed]
    store = ResultsStore(root)
    store.write_study(study, {**st.describe(), "profile": profile, "overrides": {},
                              "run_ids": [c.run_id for c in cells], "cells": [c.identity() for c in cells]})
    rng = np.random.default_rng(abs(hash(study)) % 2**32)
    arms = list(dict.fromkeys(c.label for c in cells))
    n = len(cells)
    for i, cell in enumerate(cells):
        if i >= n - pending:
            continue
        rd = store.run_dir(study, cell.run_id)
        store.write_cell(cell)
        ch, side = _shape(cell.config.dataset)
        classes = CIFAR_CLASSES if ch == 3 else [str(k) for k in range(10)]
        bs = cell.config.batch_size
        steps = math.ceil(384 / bs)
        err = _target_error(cell, arms.index(cell.label)) + rng.normal(0, 0.3)
        if i >= n - pending - running:
            store.write_history(study, cell.run_id, _history(err, epochs, steps, bs, rng, cuda, stop=epochs // 2))
            write_atomic(rd / "claim.lock", json.dumps({"token": "x", "host": "elsewhere", "pid": 1,
                                                         "claimed_at": time.time()}))
            os.utime(rd / "claim.lock")
            continue
        status = "failed" if i < failed else "diverged" if i < failed + diverged else "ok"
        now = time.time()
        placement = Placement(started_at=now - 100, finished_at=now - 50 + i, wall_time_s=50.0, host="node01",
                              device="cuda" if cuda else "cpu", shared_gpu=i % 3 == 2, worker="w0")
        if status == "failed":
            record = RunRecord(cell, Outcome("failed", "RuntimeError: synthetic failure in cell setup"), placement,
                               environment=_environment(cuda))
            write_atomic(rd / "log.txt", "Traceback (most recent call last):\nRuntimeError: synthetic failure\n")
        else:
            h = _history(err, epochs, steps, bs, rng, cuda, stop=2 if status == "diverged" else None)
            error = "loss became non-finite at iteration 13" if status == "diverged" else None
            record = RunRecord(cell, Outcome(status, error), placement,
                               metrics=_metrics(cell, h, status, steps, classes, (320, 64, 128)),
                               measurements=_measurements(cell, cuda), environment=_environment(cuda),
                               history=tuple(h))
            if artifacts and status == "ok":
                _artifacts(rd / "artifacts.npz", rng, classes, ch, side, 128, err)
        store.write_record(record)
    return cells
