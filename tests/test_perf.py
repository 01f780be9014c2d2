"""Tests of ``bench perf`` (bench.commands.perf) on a CPU with a tiny synthetic data set: records, not speed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from bench.cli import build_parser, main
from bench.commands import perf_runs
from bench.measure import env as env_mod
from bench.commands.perf import COLUMNS, DEFAULT_VARIANTS, STEP_VARIANTS, VARIANTS, parse_variants, run_order, run_perf

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
    memory = ["train_peak_reserved_MiB", "train_peak_alloc_MiB", "capture_peak_reserved_MiB", "run_peak_reserved_MiB"]
    assert df[memory].isna().all().all()  # CPU: no allocator peaks
    assert df["step_ms"].isna().all() and (df["cuda_graphs_used"] == False).all()  # noqa: E712 - elementwise, on a column
    assert df["final_test_acc"].between(0, 1).all()

    rec = json.loads(jsons[0].read_text())
    assert {"date", "torch_version", "gpu_name", "device", "environment", "settings", "notes", "rows"} <= set(rec)
    assert rec["torch_version"] == torch.__version__ and rec["gpu_name"] is None and rec["device"] == "cpu"
    assert {"torch_version", "device_name", "cpu_model", "git_commit"} <= set(rec["environment"])
    if Path("/proc/stat").exists():  # other processes' share over the perf run, from its start
        assert 0.0 <= rec["environment"]["other_cpu_pct"] <= 100.0
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


STEP_SPEC = "synthetic:train=64,test=32,size=28,channels=1"


@pytest.mark.slow
def test_step_variants_smoke_on_cpu(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every CPU step variant runs (torch.compile included) in interleaved rounds; the derived columns
    follow from the measured ones."""
    args = argparse.Namespace(models="mnist_cnn", batch_size=16, epochs=1, device="cpu", dataset=STEP_SPEC,
                              variants="step", results_dir=str(results_dir), rounds=2, steps=1)
    assert run_perf(args) == 0
    out = capsys.readouterr().out
    assert "round 2/2: step_fp32" in out and "1-min load average:" in out
    df = pd.read_csv(next((results_dir / "perf").glob("perf-*.csv")))
    assert list(df["variant"]) == list(STEP_VARIANTS)
    assert df["note"].isna().all(), df["note"].tolist()  # none failed, torch.compile included
    assert (df["step_ms"] > 0).all() and (df["rounds"] == 2).all() and (df["steps_per_round"] == 1).all()
    assert list(df["precision"]) == ["fp32", "fp32", "bf16", "bf16", "fp32"]
    assert df["compile_s"].notna().tolist() == [False, False, False, False, True]
    base = df.loc[0, "step_ms"]
    assert df["speedup_vs_step_fp32"].tolist() == pytest.approx((base / df["step_ms"]).tolist())
    macs = df["macs_per_image_fwd"]
    assert (macs > 0).all() and macs.nunique() == 1
    flops = 2 * 3 * macs * 16 / (df["step_ms"] / 1e3) / 1e9  # 2 x multiply-adds, forward x 3
    assert df["train_GFLOP_per_s_est"].tolist() == pytest.approx(flops.tolist())
    assert df["samples_per_s"].tolist() == pytest.approx((16 / (df["step_ms"] / 1e3)).tolist())
    rec = json.loads(next((results_dir / "perf").glob("perf-*.json")).read_text())
    assert rec["settings"]["step_rounds"] == 2 and "load_1min_before" in rec and "load_1min_after" in rec
    assert rec["cpu_peak"]["cpu_peak_assumption"].startswith("peak = cores used x clock")
    peak = rec["cpu_peak"]["cpu_peak_GFLOP_per_s_est"]
    if peak:  # where this machine's peak could be estimated
        assert df["pct_of_cpu_peak_est"].tolist() == pytest.approx((100 * df["train_GFLOP_per_s_est"] / peak).tolist())


def test_step_rounds_interleave_and_rotate(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.data import load_dataset

    order: list[str] = []
    monkeypatch.setattr(perf_runs._StepVariant, "run", lambda self, n: order.append(self.v.name) or 0.01 * n)
    vs = [VARIANTS[n] for n in ("step_fp32", "step_bf16", "step_fp32_cl")]
    got = perf_runs.step_rounds("mnist_cnn", load_dataset(STEP_SPEC), vs, batch_size=8, rounds=3, steps=2,
                                device=torch.device("cpu"), log=lambda text: None)
    warm = order[:2 * len(vs)]  # two warm-up calls each (the first, then the rest)
    assert warm == ["step_fp32", "step_fp32", "step_bf16", "step_bf16", "step_fp32_cl", "step_fp32_cl"]
    assert order[len(warm):] == ["step_fp32", "step_bf16", "step_fp32_cl",
                                 "step_bf16", "step_fp32_cl", "step_fp32",
                                 "step_fp32_cl", "step_fp32", "step_bf16"]
    assert [g["step_ms"] for g in got] == pytest.approx([10.0] * 3) and all(g["rounds"] == 3 for g in got)


def test_variant_groups_and_run_order() -> None:
    names = [v.name for v in parse_variants("step,step_fp32,usual")]
    assert names == [*STEP_VARIANTS, "usual"]
    mixed = parse_variants("compile_ro,graph_compile_fp32,usual,step_bf16,graph_fp32,eager_fp32")
    epoch_vs, step_vs = run_order(mixed, cuda=True)
    assert [v.name for v in epoch_vs] == ["usual", "graph_fp32", "eager_fp32", "compile_ro", "graph_compile_fp32"]
    assert [v.name for v in step_vs] == ["step_bf16"]
    epoch_vs, _ = run_order(mixed, cuda=False)
    assert [v.name for v in epoch_vs] == ["usual", "eager_fp32"]


def _returns(x: int) -> dict[str, Any]:
    return {"x": x, "pid_differs": True}


def _raises() -> dict[str, Any]:
    raise ValueError("compile error: no C++ compiler\nsecond line")


def _hangs() -> dict[str, Any]:
    time.sleep(60)
    return {}


@pytest.mark.slow
def test_run_isolated_result_failure_and_timeout() -> None:
    assert perf_runs.run_isolated(_returns, {"x": 3}, 60) == {"x": 3, "pid_differs": True}
    with pytest.raises(RuntimeError, match=r"^ValueError: compile error: no C\+\+ compiler$"):
        perf_runs.run_isolated(_raises, {}, 60)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 3 s in its own process"):
        perf_runs.run_isolated(_hangs, {}, 3)
    assert time.monotonic() - t0 < 30


def test_cpu_peak_estimate_from_flags_clock_and_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env_mod, "_lscpu", lambda: {"Flags": "sse avx2 fma avx512f", "CPU max MHz": "3000.0",
                                                    "Core(s) per socket": "8", "Socket(s)": "2"})
    got = env_mod.cpu_peak_estimate(threads=4)
    assert got["cpu_cores_used"] == 4 and got["cpu_fp32_flop_per_cycle_per_core"] == 32
    assert got["cpu_peak_GFLOP_per_s_est"] == pytest.approx(4 * 3.0 * 32)
    assert env_mod.cpu_peak_estimate(threads=64)["cpu_cores_used"] == 16  # physical cores at most
    monkeypatch.setattr(env_mod, "_lscpu", lambda: {"Flags": "sse sse2", "CPU max MHz": "3000.0"})
    assert env_mod.cpu_peak_estimate(threads=1)["cpu_peak_GFLOP_per_s_est"] is None  # no FMA: not estimated


@pytest.mark.cuda
def test_cuda_perf_memory_columns_and_compiled_variant_in_its_own_process(results_dir: Path) -> None:
    args = argparse.Namespace(models="resnet20", batch_size=64, epochs=1, device="cuda",
                              dataset="synthetic:train=512,test=128,size=32",
                              variants="eager_fp32,graph_fp32,compile_ro",
                              results_dir=str(results_dir))
    assert run_perf(args) == 0
    df = pd.read_csv(next((results_dir / "perf").glob("perf-*.csv"))).set_index("variant")
    assert list(df.index) == ["eager_fp32", "graph_fp32", "compile_ro"]
    assert df.loc["graph_fp32", "cuda_graphs_used"] and not df.loc["eager_fp32", "cuda_graphs_used"]
    for v in df.index:
        assert df.loc[v, "train_peak_reserved_MiB"] >= df.loc[v, "train_peak_alloc_MiB"] > 0
        assert df.loc[v, "run_peak_reserved_MiB"] >= df.loc[v, "train_peak_reserved_MiB"]
    assert df.loc["graph_fp32", "capture_peak_reserved_MiB"] > 0 and df.loc["compile_ro", "compile_s"] >= 0


def test_compiled_run_makes_the_runs_gpu_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:N must be the current device while compiling and recording (the stand-ins record the order)."""
    log: list[str] = []

    class Current:
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def __enter__(self) -> None:
            log.append(f"enter {self.device}")

        def __exit__(self, *exc: Any) -> None:
            log.append("exit")

    monkeypatch.setattr(perf_runs, "on_device", Current)
    monkeypatch.setattr(perf_runs, "_compiled_run", lambda *a, **k: log.append("run") or {"ok": True})
    got = perf_runs.compiled_run("resnet20", None, VARIANTS["compile_ro"], dataset="x", batch_size=8, epochs=1,
                                 device=torch.device("cuda", 3))
    assert got == {"ok": True} and log == ["enter cuda:3", "run", "exit"]


def test_environment_names_the_runs_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    env_mod.environment()  # probed and cached before torch.cuda is faked
    names = {0: "GPU zero", 1: "GPU one"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: names[int(i)])
    assert env_mod.device_name("cuda:1") == "GPU one" and env_mod.device_name("cuda") == "GPU zero"
    assert env_mod.environment("cuda:1")["device_name"] == "GPU one"
    assert env_mod.environment(torch.device("cpu"))["device_name"] == env_mod.cpu_model()
