"""The report's numbers: model selection on validation only, timing honesty, and the
published figures' metric columns."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import RunConfig
from bench.report.analysis import best_runs, select_lr, timing_runs
from bench.report.data import ReportData, load
from bench.report.fig_cost import batch_time
from bench.report.palette import Palette
from bench.report.stats import spread
from bench.report.synthetic import write_synthetic_study
from bench.record import Cell, Outcome, Placement, RunRecord
from bench.study import load_studies
from bench.train.summary import HISTORY_KEYS, summarise


def test_spread_is_sample_std_and_t_interval() -> None:
    vals = [6.2, 6.9, 7.4, 6.6]
    s = spread(vals + [math.nan, None, "x"])  # type: ignore[list-item]
    assert s.n == 4 and s.mean == pytest.approx(np.mean(vals)) and s.std == pytest.approx(np.std(vals, ddof=1))
    half = 3.1824463 * np.std(vals, ddof=1) / 2  # t(0.975, 3 df)
    assert (s.lo, s.hi) == (pytest.approx(s.mean - half), pytest.approx(s.mean + half))
    one = spread([7.0])
    assert one.lo is None and one.hi is None and "nan" not in one.fmt().lower() and one.fmt_ci() == "—"


def _data(rows: list[dict]) -> ReportData:
    runs = pd.DataFrame(rows)
    arms = list(dict.fromkeys(runs["arm_label"]))
    cells = runs[["run_id", "arm_label", "seed", "status"]].rename(columns={"status": "state"})
    return ReportData(study="t", root=Path("."), desc={}, profile=None, axes=[], arm_order=arms, cells=cells,
                      runs=runs, history=pd.DataFrame(), records={}, palette=Palette(arms, {}))


def test_selection_and_best_run_use_validation_only() -> None:
    rows = []
    for opt, lr, val, test in (("sgd", 0.1, 0.90, 0.80), ("sgd", 0.3, 0.85, 0.95), ("adam", 1e-3, 0.88, 0.87)):
        for seed in (1, 0):  # equal validation accuracy over seeds: the tie goes to seed 0
            rows.append({"run_id": f"{opt}{lr}{seed}", "arm_label": f"{opt} lr={lr:g}", "seed": seed,
                         "status": "ok", "tag_optimizer": opt, "tag_lr": lr, "best_val_acc": val,
                         "final_test_acc": test + 0.01 * seed, "test_error_at_best_val_pct": 100 * (1 - test)})
    rows.append({**rows[0], "run_id": "bad", "seed": 2, "status": "diverged", "best_val_acc": 0.99})
    d = _data(rows)
    sel = select_lr(d).set_index("optimizer")
    assert sel.loc["sgd", "chosen lr"] == 0.1  # higher validation, although lr 0.3 has the better test error
    assert sel.loc["sgd", "n seeds"] == 2  # the diverged run is not averaged in
    best = best_runs(d)
    assert best["sgd lr=0.1"]["seed"] == 0 and best["sgd lr=0.1"]["status"] == "ok"


def test_timing_runs_leave_out_shared_gpus() -> None:
    df = pd.DataFrame({"shared_gpu": [False, True, None], "t": [1.0, 9.0, 1.1]})
    kept, note = timing_runs(df)
    assert kept["t"].tolist() == [1.0, 1.1] and "1 run(s) on a shared GPU" in note
    kept, note = timing_runs(df.assign(shared_gpu=True))
    assert len(kept) == 3 and "shared GPU: unreliable" in note
    kept, note = timing_runs(df.assign(shared_gpu=False))
    assert len(kept) == 3 and note == ""


def test_batch_time_uses_exclusive_runs(tmp_path: Path) -> None:
    write_synthetic_study(tmp_path, "batch-size", "smoke", seeds=(0, 1, 2))
    d = load("batch-size", tmp_path)
    assert d.ok["shared_gpu"].astype(bool).any() and not d.ok["shared_gpu"].astype(bool).all()
    fig = batch_time(d)
    assert fig.png and "shared GPU left out" in fig.caption


def test_published_metrics_are_load_runs_columns() -> None:
    cfg = RunConfig(model="resnet20", dataset="cifar10", epochs=2)
    history = [{**{k: math.nan for k in HISTORY_KEYS}, "epoch": e, "val_acc": v, "test_acc": t,
                "peak_allocated_bytes": None, "elapsed_train_time_s": float(e), "epoch_time_s": 1.0}
               for e, v, t in ((1, 0.7, 0.69), (2, 0.6, 0.62))]
    s = summarise(cfg, history, extra={}, iterations_done=2, steps_per_epoch=1,
                  train_time_s=2.0, precision_used="fp32", classes=["a", "b"], sizes=(1, 1, 1),
                  data_source="x")
    record = RunRecord(Cell("x", "smoke", {}, {}, 0, cfg), Outcome("ok"), Placement(0.0, 1.0, 1.0, "h", "cpu"),
                       metrics=s)
    row = record.to_row()
    assert row["final_test_error_pct"] == pytest.approx(38.0)
    assert row["test_error_at_best_val_pct"] == pytest.approx(31.0)  # test at the best-validation epoch
    for study in load_studies().names():
        for p in load_studies().get(study).published:
            assert p.metric in row, (study, p.metric)
