"""End to end through the command line on CPU: run, rerun, failures, kill and resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from bench.cli import main
from bench.config import RunConfig
from bench.models import MODELS, register_model
from bench.results import read_results
from bench.store import ResultsStore
from bench.study import PROFILES, STUDIES, Arm, Profile, Study, register_study

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "epochs=1", "--set", "dataset=synthetic:size=16,train=128,test=64"]
# records, reruns and resumes are checked here, not the measurements or the end-of-run steps
BARE = ["--no-measure", "--no-extras"]


def _bench(*args: str, results: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "bench", "--results-dir", str(results), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.mark.slow
def test_smoke_study_runs_then_rerun_does_nothing(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results-dir", str(results_dir), "run", "residual", "--profile", "smoke", *SMALL, *BARE]) == 0
    store = ResultsStore(results_dir)
    runs = read_results(results_dir, "residual").runs_frame(finished_only=True)
    assert len(runs) == 4 and set(runs["status"]) == {"ok"}
    for rd in store.run_dirs("residual"):
        assert {"config.json", "cell.json", "history.csv", "summary.json"} <= {p.name for p in rd.iterdir()}
        assert not (rd / "claim.lock").exists() and not (rd / "checkpoint.pt").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in results_dir.rglob("summary.json")}
    capsys.readouterr()
    # without --no-measure/--no-extras: the same run ids (neither is part of them), nothing to do
    assert main(["--results-dir", str(results_dir), "run", "residual", "--profile", "smoke", *SMALL]) == 0
    assert "4 ok" in capsys.readouterr().out
    assert mtimes == {p: p.stat().st_mtime_ns for p in results_dir.rglob("summary.json")}, "a finished run was redone"
    hist = read_results(results_dir, "residual").history_frame()
    assert len(hist) == 4 and {"train_loss", "test_acc", "epoch_time_s", "arm_model"} <= set(hist.columns)
    # plan and show read the same records
    assert main(["--results-dir", str(results_dir), "plan", "residual", "--profile", "smoke", *SMALL]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") >= 4 and "est_train_TMACs" in out
    run_id = runs["run_id"].iloc[0]
    assert main(["--results-dir", str(results_dir), "show", run_id[:8]]) == 0
    assert "final_test_acc" in capsys.readouterr().out


class _Boom(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom: this cell always fails")


@pytest.fixture
def failing_study() -> Iterator[str]:
    """A study whose one arm always raises, registered only for the test that uses it."""
    register_model("test_boom", family="test")(lambda num_classes=10, in_channels=3: _Boom(num_classes, in_channels))
    register_study(Study(
        name="test-failing",
        question="Is a failing cell recorded while the others finish?",
        base=RunConfig(model="mnist_cnn", dataset="synthetic:channels=1,size=28,train=128,test=64", epochs=1,
                       val_size=32, batch_size=32, schedule="constant", optimizer="adam", lr=1e-3),
        axes={"model": (Arm("boom", {"model": "test_boom"}), Arm("cnn", {"model": "mnist_cnn"}))},
        profiles={p: Profile(seeds=(0,)) for p in PROFILES},
    ))
    yield "test-failing"
    MODELS.remove("test_boom")
    STUDIES.remove("test-failing")


@pytest.mark.slow
def test_failing_cell_is_recorded_and_study_goes_on(results_dir: Path, failing_study: str) -> None:
    assert main(["--results-dir", str(results_dir), "run", "test-failing", "--profile", "smoke"]) == 0
    runs = read_results(results_dir, "test-failing").runs_frame(finished_only=True).set_index("arm_model")
    assert runs.loc["cnn", "status"] == "ok"
    assert runs.loc["boom", "status"] == "failed"
    assert "boom: this cell always fails" in runs.loc["boom", "error"]
    rd = ResultsStore(results_dir).run_dir("test-failing", runs.loc["boom", "run_id"])
    assert "Traceback" in (rd / "log.txt").read_text()
    # a rerun keeps the failure; --retry-failed runs it again and archives the old record
    assert main(["--results-dir", str(results_dir), "run", "test-failing", "--profile", "smoke"]) == 0
    assert not (rd / "attempts").exists()
    assert main(["--results-dir", str(results_dir), "run", "test-failing", "--profile", "smoke", "--retry-failed"]) == 0
    assert (rd / "attempts" / "1" / "summary.json").exists() and (rd / "summary.json").exists()


@pytest.mark.slow
def test_killed_run_resumes(results_dir: Path) -> None:
    args = ["run", "residual-mnist", "--profile", "smoke", "--set", "epochs=3",
            "--set", "dataset=synthetic:channels=1,size=28,train=1024,test=64", *BARE]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--results-dir", str(results_dir), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    ckpts: list[Path] = []
    while time.time() < deadline and not ckpts:
        ckpts = list(results_dir.rglob("checkpoint.pt"))
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpts, "no checkpoint was written before the deadline"
    rd = ckpts[0].parent
    assert not (rd / "summary.json").exists()
    done_before = len([p for p in results_dir.rglob("summary.json")])
    res = _bench(*args, results=results_dir)
    assert res.returncode == 0, res.stderr
    runs = read_results(results_dir, "residual-mnist").runs_frame(finished_only=True)
    assert len(runs) == 3 and set(runs["status"]) == {"ok"}
    assert done_before < 3
    summary = json.loads((rd / "summary.json").read_text())
    assert summary["metrics"]["epochs_done"] == 3
    assert summary["metrics"].get("resumed_from_epoch", 0) >= 1
    import pandas as pd

    assert list(pd.read_csv(rd / "history.csv")["epoch"]) == [1, 2, 3]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["run", "residul"], "unknown study 'residul'; did you mean residual"),
        (["run", "residual", "--profile", "fast"], "unknown profile 'fast'"),
        (["run", "residual", "--profile", "smoke", "--set", "lrr=1"], "unknown config key 'lrr'"),
        (["run", "residual", "--profile", "smoke", "--set", "precision=fp8"], "bad precision 'fp8'"),
        (["run", "residual", "--profile", "smoke", "--device", "tpu"], "bad device 'tpu'"),
        (["measure", "resnet2O"], "unknown model 'resnet2O'"),
        (["run", "residual", "--profile", "smoke", "--set", "dataset=cifar11"], "unknown data set 'cifar11'"),
        (["show", "ffffffffff"], "no run 'ffffffffff'"),
    ],
)
@pytest.mark.slow
def test_user_errors_are_one_line_exit_2(argv: list[str], fragment: str, tmp_path: Path) -> None:
    res = _bench(*argv, results=tmp_path / "r")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("bench: profile auto")]
    assert len(lines) == 1 and fragment in lines[0], res.stderr


def test_list_names_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--studies", "--names-only"]) == 0
    names = capsys.readouterr().out.split()
    assert sorted(names) == sorted(STUDIES.names()) and "residual" in names
