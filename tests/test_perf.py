"""Tests of ``bench perf`` (bench.perf) on a CPU with a tiny synthetic data set: records, not speed."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cli import build_parser, main
from bench.perf import COLUMNS, DEFAULT_VARIANTS, VARIANTS, parse_variants, run_perf

SPEC = "synthetic:train=96,test=32,size=32"


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_run_perf_on_cpu_writes_csv_and_json(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["--results-dir", str(results_dir), "perf", "--models", "resnet20",
                                      "--batch-size", "32", "--epochs", "1", "--device", "cpu", "--dataset", SPEC])
    assert run_perf(args) == 0
    out = capsys.readouterr().out
    assert "skipped on cpu (need a CUDA device): graph_fp32" in out and "compile_ro" in out
    csvs = list((results_dir / "perf").glob("perf-*.csv"))
    jsons = list((results_dir / "perf").glob("perf-*.json"))
    assert len(csvs) == 1 and len(jsons) == 1 and csvs[0].stem == jsons[0].stem

    df = pd.read_csv(csvs[0])
    assert tuple(df.columns) == COLUMNS
    assert list(df["variant"]) == ["usual", "eager_fp32", "eager_bf16_cl"]  # CPU-runnable defaults, in order
    assert (df["model"] == "resnet20").all() and (df["epochs_timed"] == 1).all()
    assert (df["epoch_s"] > 0).all() and (df["samples_per_s"] > 0).all() and (df["eval_s"] > 0).all()
    assert df.loc[0, "speedup_vs_usual"] == pytest.approx(1.0)
    assert list(df["engine_used"]) == ["usual", "eager", "eager"]
    assert list(df["precision"]) == ["fp32", "fp32", "bf16"] and list(df["channels_last"]) == [False, False, True]
    assert df["peak_mem_MiB"].isna().all()  # CPU: no allocator peaks
    assert df["final_test_acc"].between(0, 1).all()

    rec = json.loads(jsons[0].read_text())
    assert {"date", "torch_version", "gpu_name", "device", "environment", "settings", "notes", "rows"} <= set(rec)
    assert rec["torch_version"] == torch.__version__ and rec["gpu_name"] is None and rec["device"] == "cpu"
    assert {"torch_version", "device_name", "cpu_model", "git_commit"} <= set(rec["environment"])
    assert rec["settings"]["train_size"] == 96 and rec["settings"]["batch_size"] == 32
    assert [r["variant"] for r in rec["rows"]] == list(df["variant"])
    assert set(rec["rows"][0]) == set(COLUMNS)
    assert any("need a CUDA device" in n for n in rec["notes"])


def test_variants_and_bad_arguments(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert [v.name for v in parse_variants(None)] == list(DEFAULT_VARIANTS)
    assert [v.name for v in parse_variants("usual, graph_bf16_cl")] == ["usual", "graph_bf16_cl"]
    assert all(VARIANTS[n].needs_cuda for n in DEFAULT_VARIANTS if n.startswith(("graph", "compile")))
    base = ["--results-dir", str(results_dir), "perf", "--device", "cpu", "--dataset", SPEC, "--epochs", "1"]
    assert main([*base, "--variants", "usual,graph_fp33"]) == 2
    assert "did you mean graph_fp32" in capsys.readouterr().err
    assert main([*base, "--models", "resnet21"]) == 2
    assert main([*base, "--models", "resnet20", "--epochs", "0"]) == 2
    assert not (results_dir / "perf").exists()
