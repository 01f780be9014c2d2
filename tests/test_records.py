"""The typed records that cross the layers: Cell, EpochRow, RunRecord; their schema versions and
the records written before versions existed."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.config import RunConfig
from bench.files import read_json
from bench.record import (HISTORY_KEYS, SCHEMA_VERSION, Cell, EpochRow, Outcome, Placement, RecordError,
                          RunRecord)
from bench.report import build_report
from bench.report.data import load
from bench.report.synthetic import write_synthetic_study
from bench.results import read_results
from bench.store import ResultsStore

CFG = RunConfig(model="resnet20", dataset="synthetic", epochs=2)
CELL = Cell("residual", "smoke", {"net": "plain"}, {"depth": 20}, 0, CFG)


def _row(e: int) -> EpochRow:
    return EpochRow(epoch=e, iteration=10 * e, lr=0.1, train_loss=1.0 / e, train_acc=0.5, val_loss=1.1, val_acc=0.4,
                    test_loss=1.2, test_acc=0.45, epoch_time_s=2.0, eval_time_s=0.1,
                    epoch_train_samples_per_s=500.0, elapsed_train_time_s=2.0 * e, peak_allocated_bytes=None)


def _record(**kw: object) -> RunRecord:
    base = dict(cell=CELL, outcome=Outcome("ok"), placement=Placement(1.0, 3.0, 2.0, "node", "cuda:0", worker="w"),
                metrics={"final_test_acc": 0.45, "epochs_done": 2, "class_names": ["a", "b"]},
                measurements={"params_total": 269722, "train_samples_per_s": 900.0},
                environment={"torch_version": "2"}, history=(_row(1), _row(2)))
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_history_keys_are_the_epoch_row_fields() -> None:
    assert HISTORY_KEYS == tuple(f.name for f in dataclasses.fields(EpochRow))
    assert "epoch_train_samples_per_s" in HISTORY_KEYS and "train_samples_per_s" not in HISTORY_KEYS


def test_cell_round_trip() -> None:
    back = Cell.from_dict(json.loads(json.dumps(CELL.to_dict())))
    assert back == CELL and back.run_id == CFG.run_id and back.label == "plain"
    with pytest.raises(RecordError, match="no config"):
        Cell.from_dict(CELL.identity())


def test_store_writes_the_record_as_is(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    rec = _record()
    store.write_cell(CELL)
    store.write_record(rec)
    raw = read_json(store.run_dir("residual", CELL.run_id) / "summary.json")
    assert raw["schema_version"] == SCHEMA_VERSION == 2
    assert raw == json.loads(json.dumps(rec.to_dict()))
    back = store.read_record("residual", CELL.run_id, history=True)
    assert back == rec
    row = back.to_row()
    assert row["device"] == "cuda:0" and row["arm_net"] == "plain" and row["tag_depth"] == 20
    assert row["cfg_model"] == "resnet20" and row["env_torch_version"] == "2"
    assert row["train_samples_per_s"] == 900.0 and "class_names" not in row  # the step benchmark's
    assert row["final_test_error_pct"] == pytest.approx(55.0)
    hist = read_results(tmp_path, "residual").history_frame()
    assert list(hist.columns[:5]) == ["study", "run_id", "arm", "seed", "state"]
    assert list(hist.columns[5:5 + len(HISTORY_KEYS)]) == list(HISTORY_KEYS)


def test_a_name_twice_is_an_error_not_an_overwrite() -> None:
    with pytest.raises(RecordError, match="params_total"):
        _record(metrics={"params_total": 1})
    with pytest.raises(RecordError, match="'host'"):
        _record(metrics={"host": "x"}).to_row()
    with pytest.raises(RecordError, match="accepted: ok, diverged, oom, failed"):
        _record(outcome=Outcome("fine"))


def _schema1(tmp_path: Path) -> ResultsStore:
    """A finished run as written before records carried a version (device twice, status in metrics,
    the history's throughput column under its old name)."""
    store = ResultsStore(tmp_path)
    rd = store.run_dir("residual", CELL.run_id)
    rd.mkdir(parents=True)
    ident = CELL.identity()
    (rd / "cell.json").write_text(json.dumps(ident))
    (rd / "config.json").write_text(json.dumps(CFG.to_dict()))
    summary = {**ident, "status": "ok", "error": None, "complete": True, "started_at": 1.0, "finished_at": 3.0,
               "wall_time_s": 2.0, "host": "node", "device": "cuda", "shared_gpu": False, "worker": "w",
               "slurm_job_id": None, "config": CFG.to_dict(), "environment": {"torch_version": "2"},
               "metrics": {"status": "ok", "device": "cuda:0", "final_test_acc": 0.45, "epochs_done": 2},
               "measurements": {"params_total": 269722}}
    (rd / "summary.json").write_text(json.dumps(summary))
    hist = pd.DataFrame([{**{k: v for k, v in _row(e).to_dict().items() if k != "epoch_train_samples_per_s"},
                          "train_samples_per_s": 500.0} for e in (1, 2)])
    (rd / "history.csv").write_text(hist.to_csv(index=False))
    store.write_study("residual", {"name": "residual", "question": "q", "axes": {"net": ["plain"]},
                                   "profile": "smoke", "run_ids": [CELL.run_id], "published": [], "figures": []})
    return store


def test_records_written_before_versions_still_load(tmp_path: Path) -> None:
    store = _schema1(tmp_path)
    rec = store.read_record("residual", CELL.run_id, history=True)
    assert rec is not None and rec.schema_version == 1 and rec.status == "ok"
    assert rec.placement.device == "cuda:0" and "status" not in rec.metrics and "device" not in rec.metrics
    assert [r.epoch_train_samples_per_s for r in rec.history] == [500.0, 500.0]
    runs = read_results(tmp_path, "residual").runs_frame()
    assert runs.loc[0, "final_test_error_pct"] == pytest.approx(55.0) and runs.loc[0, "device"] == "cuda:0"
    hist = read_results(tmp_path, "residual").history_frame()
    assert hist["epoch_train_samples_per_s"].tolist() == [500.0, 500.0]
    d = load("residual", tmp_path)
    assert d.cells["arm_label"].tolist() == ["plain"] and len(d.ok) == 1
    assert build_report("residual", tmp_path).exists()


def test_a_newer_schema_is_one_clear_line(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.write_record(_record())
    path = store.run_dir("residual", CELL.run_id) / "summary.json"
    raw = read_json(path)
    path.write_text(json.dumps({**raw, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(RecordError) as err:
        read_results(tmp_path, "residual").runs_frame()
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and f"schema {SCHEMA_VERSION + 1}" in msg
    assert f"accepted: 1..{SCHEMA_VERSION}" in msg


def test_synthetic_records_are_run_records(tmp_path: Path) -> None:
    cells = write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), artifacts=False)
    store = ResultsStore(tmp_path)
    recs = store.records("residual")
    assert recs and all(r.schema_version == SCHEMA_VERSION for r in recs)
    assert {r.run_id for r in recs} <= {c.run_id for c in cells}
    ok = [store.read_record("residual", r.run_id, history=True) for r in recs if r.status == "ok"]
    assert ok and all(len(r.history) == 6 and math.isfinite(r.history[-1].test_acc) for r in ok if r)
    # the report knows every cell from study.json, pending ones included, without the registry
    assert set(load("residual", tmp_path).cells["run_id"]) == {c.run_id for c in cells}


# The whole change that adds a per-epoch metric: its field and its computation, nothing else.
NEW_FIELD = ("    peak_allocated_bytes: int | None = epoch_metric(\"max\")\n",
             "    weight_norm: float = epoch_metric(\"final\", default=NAN)\n")
NEW_COMPUTATION = ("elapsed_train_time_s=self.train_time, peak_allocated_bytes=peak,",
                   "weight_norm=float(torch.cat([p.detach().flatten() for p in self.model.parameters()]).norm()),")

CHECK_NEW_METRIC = """
import json, sys
from pathlib import Path
import bench, experiments
from bench.config import RunConfig
from bench.record import Cell
from bench.report.data import load
from bench.report.synthetic import write_synthetic_study
from bench.runner import execute_cell
from bench.store import ResultsStore

root = Path(sys.argv[1])
assert Path(bench.__file__).is_relative_to(root.parent), bench.__file__  # the changed copy
cfg = RunConfig(model="mnist_cnn", dataset="synthetic:train=192,test=64,size=28,channels=1", val_size=64,
                epochs=2, batch_size=32, eval_batch_size=64, crop_padding=0, hflip=False)
cell = Cell("metric", "smoke", {"net": "cnn"}, {}, 0, cfg)
store = ResultsStore(root)
store.write_study("metric", {"name": "metric", "run_ids": [cell.run_id], "cells": [cell.identity()]})
rec = execute_cell(cell, store, measure=False, end_steps=())
back = store.read_record("metric", cell.run_id, history=True)
d = load("metric", root)
write_synthetic_study(root, "residual", "smoke", seeds=(0,), artifacts=False)
print(json.dumps({"status": rec.status, "engine": [r.weight_norm for r in rec.history],
                  "read_back": [r.weight_norm for r in back.history],
                  "report_history": d.history["weight_norm"].tolist(),
                  "report_row": float(d.runs.loc[0, "final_weight_norm"]),
                  "synthetic": bool(load("residual", root).history["weight_norm"].isna().all())}))
"""


@pytest.mark.slow
def test_a_new_per_epoch_metric_is_one_field_and_one_computation(tmp_path: Path) -> None:
    """Adding a metric to a copy of the code, as its author would (the EpochRow field, the engine's
    computation), and training a real run: the value reaches the engine's record, history.csv read
    back, the report's history frame and, as the field's summary says, the report's runs row; the
    synthetic report data still builds (NaN, as in records written before the metric)."""
    repo = Path(__file__).resolve().parents[1]
    copy = tmp_path / "src"
    for pkg in ("bench", "experiments"):
        shutil.copytree(repo / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, (anchor, added) in (("bench/record.py", NEW_FIELD), ("bench/train/engine.py", NEW_COMPUTATION)):
        path = copy / rel
        text = path.read_text()
        assert text.count(anchor) == 1, f"{rel}: the place a new metric goes has moved ({anchor.strip()!r})"
        path.write_text(text.replace(anchor, anchor + added if anchor.endswith("\n") else f"{anchor} {added}"))
    env = {**os.environ, "PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHECK_NEW_METRIC, str(copy / "results")], env=env, cwd=copy,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["status"] == "ok" and len(got["engine"]) == 2
    assert all(math.isfinite(v) and v > 0 for v in got["engine"]) and got["engine"][0] != got["engine"][1]
    assert got["read_back"] == pytest.approx(got["engine"]) and got["report_history"] == pytest.approx(got["engine"])
    assert got["report_row"] == pytest.approx(got["engine"][-1])
    assert got["synthetic"] is True


def test_every_epoch_row_field_says_how_it_is_summarised() -> None:
    """The summary's epoch-derived metrics come from the fields' declarations, under the names the
    report reads."""
    from bench.train.summary import epoch_summary

    rows = [_row(1).to_dict(), {**_row(2).to_dict(), "epoch_time_s": 3.0, "peak_allocated_bytes": 7}]
    got = epoch_summary(rows)
    assert set(got) == {"final_train_loss", "final_train_acc", "final_val_loss", "final_val_acc", "final_test_loss",
                        "final_test_acc", "median_epoch_time_s", "epoch_train_samples_per_s", "peak_allocated_bytes",
                        "peak_reserved_bytes"}
    assert got["final_train_loss"] == 0.5 and got["median_epoch_time_s"] == 3.0  # the first epoch is warm-up
    empty = epoch_summary([])["final_test_acc"]
    assert got["peak_allocated_bytes"] == 7 and empty != empty  # NaN


def test_status_and_report_show_the_cells_study_json_lists(tmp_path: Path) -> None:
    """Both read what the last ``bench run`` recorded, even after the study's definition changed
    (here: a cell dropped from study.json stands for an arm removed from the study since)."""
    from bench.commands.status import status_frame

    cells = write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    store = ResultsStore(tmp_path)
    desc = store.read_study("residual")
    assert desc is not None
    kept = desc["cells"][1:]
    store.write_study("residual", {**desc, "cells": kept, "run_ids": [c["run_id"] for c in kept]})
    df, head = status_frame("residual", str(tmp_path))
    assert df["run_id"].tolist() == [c["run_id"] for c in kept] == load("residual", tmp_path).cells["run_id"].tolist()
    assert df["arm"].tolist() == [c.label for c in cells[1:]] and set(df["state"]) == {"done"}
    # another profile is expanded afresh from the study
    other, _ = status_frame("residual", str(tmp_path), "quick")
    assert len(other) and set(other["state"]) == {"pending"}
