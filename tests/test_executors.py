"""Tests of bench.executors: local (inline and worker processes), debug, and Slurm through submitit.

No Slurm runs here: submitit's LocalExecutor stands in for the cluster, and a fake ``sbatch`` on the
PATH checks the job array script. Cells are the ``residual`` study's smoke profile shrunk with
overrides (2 epochs on 64 images) so that every backend trains them in about a second each; torch
uses one thread throughout, so that runs in different processes compute the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import submitit
import torch

from bench.errors import UserError
from bench.executors import RunOptions, parse_executor, parse_parallel, run_with_executor
from bench.executors.local import auto_parallel, parse_gpus
from bench.executors.slurm import build_slurm_parameters
from bench.commands.status import status_frame, status_table
from bench.executors import local as local_mod
from bench.executors import slurm as slurm_mod
from bench.runner import WorkSpec, load_data
from bench.study import get_study

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

STUDY, PROFILE = "residual", "smoke"
SETS = ["epochs=2", "train_subset=64", "test_subset=64"]
OVERRIDES = {"epochs": 2, "train_subset": 64, "test_subset": 64}
ROOT = Path(__file__).resolve().parents[1]


def args(results_dir: Path, **kw: Any) -> RunOptions:
    base: dict[str, Any] = dict(results_dir=str(results_dir), overrides=dict(OVERRIDES), device="cpu",
                                timeout_min=60, measure=False, end_steps=())  # neither is compared here
    return RunOptions(**{**base, **kw})


def records(results_dir: Path) -> dict[str, dict[str, Any]]:
    """run_id -> what must not depend on the backend (status, final accuracy, loss curves)."""
    out = {}
    for rd in sorted((results_dir / STUDY / "runs").iterdir()):
        if not (rd / "summary.json").exists():
            continue  # not finished (e.g. held by another runner)
        s = json.loads((rd / "summary.json").read_text())
        h = pd.read_csv(rd / "history.csv")
        out[rd.name] = {"status": s["status"], "final_test_acc": s["metrics"]["final_test_acc"],
                        "train_loss": h["train_loss"].tolist(), "test_loss": h["test_loss"].tolist(),
                        "worker": s["worker"], "shared_gpu": s["shared_gpu"]}
    return out


def assert_same_records(got: dict[str, dict[str, Any]], ref: dict[str, dict[str, Any]]) -> None:
    assert got and set(got) <= set(ref)
    for rid, g in got.items():
        r = ref[rid]
        assert g["status"] == r["status"] == "ok"
        assert g["final_test_acc"] == pytest.approx(r["final_test_acc"], abs=1e-6)
        assert g["train_loss"] == pytest.approx(r["train_loss"], abs=1e-6)
        assert g["test_loss"] == pytest.approx(r["test_loss"], abs=1e-6)


def no_leftovers(results_dir: Path) -> None:
    for rd in (results_dir / STUDY / "runs").iterdir():
        assert not (rd / "attempts").exists(), rd  # nothing was run twice
        assert not list(rd.glob("claim*")), rd  # every claim was released


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """The plain inline local run every backend must reproduce."""
    d = tmp_path_factory.mktemp("inline")
    counts = run_with_executor(get_study(STUDY), PROFILE, args(d, parallel=1))
    assert counts == {"ok": 4}
    ref = records(d)
    assert {r["worker"] for r in ref.values()} == {"inline"}
    return d, ref


# -------------------------------------------------------------------------------------- options


def test_option_parsing(tmp_path: Path) -> None:
    assert parse_parallel("auto") is None and parse_parallel("3") == 3 and parse_parallel(2) == 2
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(UserError, match="accepted: auto"):
            parse_parallel(bad)
    assert parse_executor("debug") == "debug"
    with pytest.raises(UserError, match="local, slurm, debug"):
        parse_executor("kubernetes")
    assert parse_gpus("0,2", 4) == [0, 2] and parse_gpus(None, 4) is None
    with pytest.raises(UserError, match="no GPU 5"):
        parse_gpus("0,5", 4)
    with pytest.raises(UserError, match="no CUDA GPU"):
        parse_gpus("0", 0)
    with pytest.raises(UserError, match="--device cpu"):
        run_with_executor(get_study(STUDY), PROFILE, args(tmp_path / "r", gpus="0"))
    assert not (tmp_path / "r").exists()  # refused before writing anything


def test_gpu_slots_and_pinning(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GPU selection and CUDA_VISIBLE_DEVICES pinning of a spawned worker, without a GPU."""
    import multiprocessing as mp

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert local_mod.resolve_slots("auto", None) == ("cuda", [0, 1, 2, 3])
    assert local_mod.resolve_slots("cuda", "0,2") == ("cuda", [0, 2])
    assert local_mod.resolve_slots("cuda:1", None) == ("cuda:1", [1])
    with pytest.raises(UserError, match="disagree"):
        local_mod.resolve_slots("cuda:1", "2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")  # our own restriction is respected
    assert local_mod._physical_gpu(1) == "5"
    out = tmp_path / "env.txt"
    p = mp.get_context("spawn").Process(target=os.system, args=(f"echo $CUDA_VISIBLE_DEVICES > {out}",))
    local_mod._start_pinned(p, "5")
    p.join()
    assert out.read_text().strip() == "5" and os.environ["CUDA_VISIBLE_DEVICES"] == "3,5,7"


def test_auto_parallel_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    study = get_study(STUDY)
    cells = study.cells(PROFILE, OVERRIDES)
    load_data(cells[0].config.dataset, None)
    assert auto_parallel(study, cells, None, on_gpu=False)[0] == 1
    n, why = auto_parallel(study, cells, None, on_gpu=True)  # resnet32 on 16 px: 0.5M params
    assert n == 4 and "16px" in why
    timing = get_study("batch-size")
    assert timing.timing_critical and auto_parallel(timing, [], None, on_gpu=True)[0] == 1
    monkeypatch.setattr(local_mod, "_largest_model", lambda cells, data_dir: (11_000_000, 224))
    assert auto_parallel(study, cells, None, on_gpu=True)[0] == 2
    monkeypatch.setattr(local_mod, "_largest_model", lambda cells, data_dir: (1_000_000, 224))
    assert auto_parallel(study, cells, None, on_gpu=True)[0] == 2
    monkeypatch.setattr(local_mod, "_largest_model", lambda cells, data_dir: (138_000_000, 224))
    assert auto_parallel(study, cells, None, on_gpu=True)[0] == 1


def test_slurm_parameters_and_missing_sbatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    p = build_slurm_parameters("residual", partition="gpu", gpus_per_task=2, timeout_min=30, max_parallel=8)
    assert p["slurm_partition"] == "gpu" and p["gpus_per_node"] == 2 and p["tasks_per_node"] == 1
    assert p["timeout_min"] == 30 and p["slurm_array_parallelism"] == 8
    assert "slurm_partition" not in build_slurm_parameters("residual")  # cluster default
    assert "gpus_per_node" not in build_slurm_parameters("residual", gpus_per_task=0)  # a CPU node
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    with pytest.raises(UserError, match="sbatch is not found.*--executor local"):
        run_with_executor(get_study(STUDY), PROFILE, args(tmp_path / "r", executor="slurm"))
    assert not (tmp_path / "r").exists()  # refused before writing anything


# ------------------------------------------------------------------------------ backends end to end


def test_inline_reference_and_status(reference: tuple[Path, dict[str, Any]], capsys: pytest.CaptureFixture) -> None:
    d, ref = reference
    no_leftovers(d)
    from bench.cli import main

    assert main(["--results-dir", str(d), "status", STUDY]) == 0  # profile and --set from study.json
    out = capsys.readouterr().out
    assert out.startswith("residual [smoke]: 4 cells: 4 done, 0 running, 0 pending, 0 failed")
    assert "inline" in out and "train_subset=64" in out


def test_workers_stale_claims_then_debug(reference: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Two CPU worker processes retake stale claims and leave a live one alone; then the debug
    executor (submitit in this process) finishes that last cell. Same numbers as inline."""
    _, ref = reference
    cells = get_study(STUDY).cells(PROFILE, OVERRIDES)
    dead = subprocess.Popen(["true"])
    dead.wait()
    locks = {
        0: {"host": socket.gethostname(), "pid": dead.pid},  # fresh heartbeat, but its process is gone
        1: {"host": "elsewhere", "pid": 1},  # another host, heartbeat an hour old
        2: {"host": "elsewhere", "pid": 1, "worker": "other-runner"},  # alive: must be left alone
    }
    for i, info in locks.items():
        lock = tmp_path / STUDY / "runs" / cells[i].run_id / "claim.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"token": f"t{i}", "claimed_at": 0, **info}))
        if i == 1:
            os.utime(lock, (time.time() - 3600, time.time() - 3600))
    df, h = status_frame(STUDY, str(tmp_path), PROFILE, OVERRIDES)
    assert df["state"].tolist() == ["stale", "stale", "running", "pending"]
    assert h["counts"]["stale"] == 2 and df["worker"][2] == "other-runner"

    counts = run_with_executor(get_study(STUDY), PROFILE, args(tmp_path, parallel=2))
    assert counts == {"ok": 3, "running": 1}
    got = records(tmp_path)
    assert_same_records(got, ref)
    assert {g["worker"].rsplit("/", 1)[1] for g in got.values()} <= {"w0", "w1"}
    assert not any(g["shared_gpu"] for g in got.values())  # CPU workers share no GPU

    (tmp_path / STUDY / "runs" / cells[2].run_id / "claim.lock").unlink()  # the other runner went away
    counts = run_with_executor(get_study(STUDY), PROFILE, args(tmp_path, executor="debug"))
    assert counts == {"ok": 4}
    got = records(tmp_path)
    assert_same_records(got, ref)
    assert set(got) == set(ref)
    assert got[cells[2].run_id]["worker"].startswith("submitit:")
    no_leftovers(tmp_path)
    jobs = json.loads((tmp_path / STUDY / "slurm" / "jobs.json").read_text())
    assert [list(j["tasks"]) for j in jobs] == [[cells[2].run_id]] and jobs[0]["cluster"] == "debug"


RUNNER = textwrap.dedent('''
    """bench CLI with train() counted (and one worker killed once); spawned workers re-run this top."""
    import multiprocessing, os, signal, sys
    import bench.runner
    import bench.train.engine as engine

    _train = engine.train

    def counted(cfg, **kw):
        marker = os.environ["MARKER"]
        if cfg.run_id == os.environ["CRASH"] and multiprocessing.current_process().name != "MainProcess":
            try:
                os.close(os.open(marker + ".crashed", os.O_CREAT | os.O_EXCL))
                os.kill(os.getpid(), signal.SIGKILL)  # a worker dies mid-cell, holding its claim
            except FileExistsError:
                pass
        result = _train(cfg, **kw)
        with open(marker, "a") as f:
            f.write(cfg.run_id + "\\n")
        return result

    engine.train = counted
    if __name__ == "__main__":
        from bench.cli import main
        raise SystemExit(main(sys.argv[1:]))
''')


def test_two_runners_run_each_cell_once(reference: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """Two `bench run` processes with two workers each on one folder; one worker is SIGKILLed
    mid-cell. Every cell is trained to the end exactly once and matches the inline run."""
    _, ref = reference
    cells = get_study(STUDY).cells(PROFILE, OVERRIDES)
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    marker = tmp_path / "trained.txt"
    env = {**os.environ, "MARKER": str(marker), "CRASH": cells[1].run_id, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(script), "--results-dir", str(tmp_path / "results"), "run", STUDY, "--profile",
           PROFILE, "--device", "cpu", "--parallel", "2", *(f"--set={s}" for s in SETS),
           "--no-measure", "--no-extras"]  # neither is what is tested
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert (tmp_path / "trained.txt.crashed").exists()
    assert "exited with code -9" in "".join(outs)
    trained = marker.read_text().split()
    assert sorted(trained) == sorted(c.run_id for c in cells)  # each cell trained to the end once
    got = records(tmp_path / "results")
    assert set(got) == set(ref)
    assert_same_records(got, ref)
    no_leftovers(tmp_path / "results")


class SpyExecutor(submitit.AutoExecutor):
    """submitit's own executor, recording what it was asked."""

    parameters_seen: dict[str, Any] = {}
    jobs: list[Any] = []

    def update_parameters(self, **kwargs: Any) -> None:
        SpyExecutor.parameters_seen = dict(kwargs)
        super().update_parameters(**kwargs)

    def map_array(self, fn: Any, *iterables: Any) -> list[Any]:
        jobs = super().map_array(fn, *iterables)
        SpyExecutor.jobs = list(jobs)
        return jobs


def test_slurm_backend_on_submitit_local_executor(reference: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """--executor slurm with submitit's LocalExecutor standing in for the cluster: the parameters,
    one array over the pending cells only, the requeue hook, the job record and the results."""
    ref_dir, ref = reference
    cells = get_study(STUDY).cells(PROFILE, OVERRIDES)
    for c in cells[:2]:  # two cells already done: only the other two are submitted
        shutil.copytree(ref_dir / STUDY / "runs" / c.run_id, tmp_path / STUDY / "runs" / c.run_id)
    monkeypatch.setattr(slurm_mod, "require_sbatch", lambda: None)
    monkeypatch.setattr(slurm_mod, "make_executor",
                        lambda cluster, folder: SpyExecutor(folder=str(folder / "%j"), cluster="local"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = run_with_executor(get_study(STUDY), PROFILE, args(
        tmp_path, executor="slurm", slurm_partition="gpu", gpus_per_task=1, timeout_min=30, max_parallel=3))
    assert out is None  # returns once submitted
    printed = capsys.readouterr().out
    assert "submitted 2 cells" in printed and "squeue -j" in printed and "bench" in printed

    assert SpyExecutor.parameters_seen == {
        "name": "bench-residual", "timeout_min": 30, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 1,
        "slurm_partition": "gpu", "slurm_array_parallelism": 3, "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"requeue": True}}
    jobs = SpyExecutor.jobs
    assert len(jobs) == 2
    task = jobs[0].submission().function
    assert isinstance(task, submitit.helpers.Checkpointable)
    spec = jobs[0].submission().args[0]
    again = task.checkpoint(spec)  # what submitit requeues on preemption / timeout
    assert again.function is task and again.args == (spec,)
    for j in jobs:
        j.result()
    got = records(tmp_path)
    assert_same_records(got, ref)
    assert set(got) == set(ref)
    assert sum(g["worker"].startswith("submitit:") for g in got.values()) == 2
    no_leftovers(tmp_path)
    df, h = status_frame(STUDY, str(tmp_path))
    assert h["counts"]["done"] == 4
    assert set(df["slurm_job"].dropna()) == {str(j.job_id) for j in jobs}
    assert (tmp_path / STUDY / "slurm").is_dir()


def test_slurm_submission_script_with_fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    """The real SlurmExecutor, with fake sbatch/srun: the job array script and the job record."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.txt"
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ -f "$a" ] && cat "$a" >> {log}; done\necho "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    res = tmp_path / "results"
    out = run_with_executor(get_study(STUDY), PROFILE, args(
        res, executor="slurm", slurm_partition="a100", gpus_per_task=1, timeout_min=45, max_parallel=2))
    assert out is None
    assert "Slurm job array 4242" in capsys.readouterr().out
    script = log.read_text()
    for line in ("#SBATCH --partition=a100", "#SBATCH --gpus-per-node=1", "#SBATCH --time=45",
                 "#SBATCH --array=0-3%2", "#SBATCH --signal=USR2@120", "#SBATCH --job-name=bench-residual",
                 "#SBATCH --requeue"):
        assert line in script
    assert str(res.resolve() / STUDY / "slurm") in script  # logs under results/<study>/slurm/
    text = status_table(STUDY, str(res), None, {})
    assert "4 pending" in text and "4242_3" in text and "Slurm job arrays: 4242" in text


def test_requeued_task_drops_its_own_old_claim(tmp_path: Path) -> None:
    cells = get_study(STUDY).cells(PROFILE, OVERRIDES)
    for c, job in zip(cells[:2], ("77", "78"), strict=True):
        lock = tmp_path / STUDY / "runs" / c.run_id / "claim.lock"
        lock.parent.mkdir(parents=True)
        lock.write_text(json.dumps({"token": "x", "host": "node9", "pid": 5, "slurm_job_id": job}))
    spec = WorkSpec.of(cells[:2], str(tmp_path), None, "cpu")
    assert slurm_mod.release_own_claims(spec, "77") == [cells[0].run_id]
    assert not (tmp_path / STUDY / "runs" / cells[0].run_id / "claim.lock").exists()
    assert (tmp_path / STUDY / "runs" / cells[1].run_id / "claim.lock").exists()


def test_workers_run_the_cells_they_were_given(tmp_path: Path) -> None:
    """A worker gets its cells, not run ids to look up in the registry: a cell the study no longer
    produces (its file changed after a Slurm submission) still runs, from the pickled spec."""
    import pickle

    from bench.config import apply_overrides
    from bench.runner import work
    from bench.store import ResultsStore

    now = get_study(STUDY).cells(PROFILE, OVERRIDES)
    changed = dataclasses.replace(now[0], config=apply_overrides(now[0].config, {"epochs": 1}))
    assert changed.run_id not in {c.run_id for c in now}
    spec = pickle.loads(pickle.dumps(WorkSpec.of([changed], str(tmp_path), None, "cpu", measure=False)))
    out = work(spec)
    assert [(r.run_id, r.status) for r in out] == [(changed.run_id, "ok")]
    rec = ResultsStore(tmp_path).read_record(STUDY, changed.run_id, history=True)
    assert rec is not None and rec.cell == changed and len(rec.history) == 1 == rec.metrics["epochs_done"]


def test_run_options_are_checked_when_built() -> None:
    with pytest.raises(UserError, match="accepted: local, slurm, debug"):
        RunOptions(executor="cluster")
    with pytest.raises(UserError, match="accepted: auto, or an integer >= 1"):
        RunOptions(parallel=0)
    opts = RunOptions(overrides={"epochs": 2})
    assert opts.replace(device="cpu").device == "cpu" and opts.device == "auto"
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.device = "cpu"  # type: ignore[misc]
