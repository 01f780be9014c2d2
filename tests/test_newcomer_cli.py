"""What a newcomer meets on the command line: one data dir for make and the typed commands, plan and
status following the last run's profile, failed cells' errors in status, accuracies in percent in
show, the machine's load recorded with timings, and a model listing that counts each model once."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bench.cli import default_data_dir, main
from bench.measure.env import CpuMark, host_load, under_load
from bench.report.synthetic import write_synthetic_study


def test_one_default_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "checkout"
    repo.mkdir()
    monkeypatch.chdir(repo)
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    assert default_data_dir() == "data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir() == "../shared/data"
    monkeypatch.setenv("BENCH_DATA_DIR", "/elsewhere")
    assert default_data_dir() == "/elsewhere"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("target", ["ablation-residual", "test"])
def test_makefile_leaves_the_data_dir_to_bench(target: str) -> None:
    """make has no data-dir rule of its own and asks nothing of a .venv that a fresh clone lacks:
    without DATA_DIR bench's default applies (no --data-dir, no BENCH_DATA_DIR); with it, it is passed."""
    repo = Path(__file__).resolve().parents[1]

    def dry_run(*extra: str) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "MAKEFLAGS", "MFLAGS")}
        # -o: the .venv stamp counts as made (a dry run must not install anything, nor remake the Makefile)
        out = subprocess.run(["make", "-n", "-C", str(repo), "-o", ".venv/.installed", target, "PY=/no/venv/python",
                              *extra], capture_output=True, text=True, env=env, check=True).stdout
        return "\n".join(ln for ln in out.splitlines() if re.search(r"/no/venv/python -m (bench|pytest)", ln))

    plain = dry_run()
    assert plain and "--data-dir" not in plain and "BENCH_DATA_DIR" not in plain, plain
    given = dry_run("DATA_DIR=/d")
    assert ("--data-dir /d" in given) if target != "test" else given.startswith("BENCH_DATA_DIR=/d "), given


def test_plan_and_status_follow_the_last_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0,), failed=1, diverged=0, artifacts=False)
    assert main(["--results-dir", str(tmp_path), "plan", "residual"]) == 0
    out, err = capsys.readouterr()
    assert "bench: profile quick (the last run's" in err and "profile auto" not in err
    assert out.startswith("residual [quick]:")
    assert main(["--results-dir", str(tmp_path), "plan", "residual", "--profile", "smoke"]) == 0
    assert capsys.readouterr().out.startswith("residual [smoke]:")
    assert main(["--results-dir", str(tmp_path), "status", "residual"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("residual [quick]:")
    failed = [ln for ln in out.splitlines() if " failed " in f" {ln} "]
    assert failed and "RuntimeError: synthetic failure in cell setup" in failed[0]  # the failed cell's error


def test_plan_without_a_recorded_run_resolves_auto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results-dir", str(tmp_path), "plan", "residual-mnist"]) == 0
    assert "bench: profile auto -> " in capsys.readouterr().err


def test_show_prints_accuracies_in_percent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    rd = next((tmp_path / "residual" / "runs").iterdir())
    metrics = json.loads((rd / "summary.json").read_text())["metrics"]
    assert main(["--results-dir", str(tmp_path), "show", rd.name]) == 0
    out = capsys.readouterr().out
    for key in ("final_train_acc", "final_test_acc"):
        m = re.search(rf"^  {key}_pct +([\d.]+)$", out, re.M)
        assert m, out
        assert float(m.group(1)) == pytest.approx(100 * metrics[key], abs=0.006)
    m = re.search(r"^  final_train_error_pct +([\d.]+)$", out, re.M)
    assert m and float(m.group(1)) == pytest.approx(100 * (1 - metrics["final_train_acc"]), abs=0.006)
    assert re.search(r"^ *epoch .*train_acc_pct", out, re.M)  # the history in percent too
    assert not re.search(r"^  final_test_acc +0\.\d+$", out, re.M)
    # other floats to four significant digits, not the float's seventeen
    m = re.search(r"^  train_time_s +(\S+)$", out, re.M)
    assert m and m.group(1) == f"{metrics['train_time_s']:.4g}", out


def test_host_load_share_of_other_processes() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    start = CpuMark(busy_ticks=0, total_ticks=0, own_cpu_s=0.0)
    # 4 CPU-seconds passed (2 s on 2 CPUs), 1 s of them busy, 0.25 s of that ours: others took 0.75 of 4
    end = CpuMark(busy_ticks=1 * hz, total_ticks=4 * hz, own_cpu_s=0.25)
    load = host_load(start, end)
    assert load["other_cpu_pct"] == pytest.approx(100 * 0.75 / 4, abs=0.1)
    assert host_load(None, end)["other_cpu_pct"] is None  # no start: unknown, not zero
    assert host_load(CpuMark(None, None, 0.0), end)["other_cpu_pct"] is None  # no /proc/stat
    assert under_load(45.0) is True and under_load(2.0) is False
    assert under_load(None, 3.5, 2) is True and under_load(None, 0.5, 2) is False
    assert under_load(None) is None and under_load(float("nan"), None, None) is None


def test_speed_measurement_records_the_load() -> None:
    import torch

    from bench.measure import measure_speed

    class Slow(torch.nn.Module):
        """20 ms a forward pass: the timed blocks span several of the kernel's clock ticks, which the
        CPU share needs (a block shorter than one tick has no share to report, and says None)."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3 * 8 * 8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.02)
            return self.fc(x.flatten(1))

    out = measure_speed(Slow(), (3, 8, 8), 2, "cpu", mode="infer", warmup=0, repeats=2)
    assert out["infer_repeats"] == 2
    assert "infer_load_avg_1min" in out and "infer_other_cpu_pct" in out
    if Path("/proc/stat").exists():
        assert 0.0 <= out["infer_other_cpu_pct"] <= 100.0


def test_models_listing_counts_each_model_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from bench.commands import zoo

    first = zoo.zoo_table("resnet2*", cache_dir=str(tmp_path))
    err = capsys.readouterr().err
    assert "counting parameters and MACs of" in err
    # a log shows no bar: one line per model counted, with how far it is
    for i, name in enumerate(first["model"], 1):
        assert f"bench: counted {name} ({i}/{len(first)}) in " in err, err
    cache = json.loads((tmp_path / zoo.COUNTS_FILE).read_text())
    assert len(cache) == len(first)

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("counted again")

    import bench.measure as measure

    monkeypatch.setattr(measure, "count_compute", boom)
    again = zoo.zoo_table("resnet2*", cache_dir=str(tmp_path))  # read from the cache: nothing counted
    assert again.equals(first)
    assert "counting" not in capsys.readouterr().err
    monkeypatch.setattr(zoo, "COUNTS_SCHEMA", zoo.COUNTS_SCHEMA + 1)  # a changed schema: counted again
    with pytest.raises(AssertionError, match="counted again"):
        zoo.zoo_table("resnet2*", cache_dir=str(tmp_path))


def test_models_listing_survives_a_damaged_cache(tmp_path: Path) -> None:
    from bench.commands import zoo

    (tmp_path / zoo.COUNTS_FILE).write_text("{not json")
    df = zoo.zoo_table("resnet20", cache_dir=str(tmp_path))
    assert list(df["model"]) == ["resnet20"]
    assert json.loads((tmp_path / zoo.COUNTS_FILE).read_text())  # rewritten


def test_an_interrupted_models_listing_keeps_what_it_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.commands import zoo
    import bench.measure as measure

    real, calls = measure.count_compute, []

    def second_fails(*a: object, **k: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(measure, "count_compute", second_fails)
    with pytest.raises(KeyboardInterrupt):
        zoo.zoo_table("plain[23]*", cache_dir=str(tmp_path))  # plain20, plain32: the second is cut short
    assert len(json.loads((tmp_path / zoo.COUNTS_FILE).read_text())) == 1
