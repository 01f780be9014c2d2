"""``--executor slurm`` through a real Slurm cluster: sbatch, squeue, scancel and scontrol requeue.

The cluster is the single-node one of ``.ci/slurm-up`` (munged, slurmctld and slurmd on this
machine), or any cluster whose ``sinfo`` answers here and whose nodes see this folder. Without one
every test skips, saying so. Cells are the ``residual`` study's smoke profile (4 cells, synthetic
data) with 10 epochs of a second or more, so that a task can be stopped between two epochs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.cli import main
from bench.commands.status import status_frame
from bench.executors.slurm_states import job_ended, slurm_states
from bench.study import get_study

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

ROOT = Path(__file__).resolve().parents[1]
STUDY, PROFILE, EPOCHS = "residual", "smoke", 10
# a CPU-only cluster: no GPU asked for; one thread per task (the node has few cores)
# no measurements, no end-of-run steps: what is checked here is the scheduling, the resume and the records
RUN = ["run", STUDY, "--profile", PROFILE, "--executor", "slurm", "--gpus-per-task", "0", "--timeout-min", "10",
       "--no-measure", "--no-extras", "--set", f"epochs={EPOCHS}"]
WAIT_S = 240.0
PAUSE_S = 1.0  # after each epoch's checkpoint (see env)
ORDER = {"PENDING": 0, "CONFIGURING": 1, "RUNNING": 2, "COMPLETING": 3, "COMPLETED": 4}  # a task's life


def _cluster_problem() -> str | None:
    """Why no test can run here, or None when a Slurm controller answers with a usable node."""
    for tool in ("sinfo", "sbatch", "squeue", "scancel", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not found: no Slurm here (start a one-node cluster with `sudo bash .ci/slurm-up`)"
    try:
        p = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo gets no answer from slurmctld in 20 s (`sudo bash .ci/slurm-up` starts it)"
    if p.returncode != 0:
        return f"sinfo fails: {(p.stderr.strip().splitlines() or ['no output'])[0]} (`sudo bash .ci/slurm-up`)"
    usable = {"idle", "mixed", "allocated", "completing"}
    if not usable & {s.strip().rstrip("*~#$@") for s in p.stdout.split()}:
        return f"no Slurm node takes jobs (sinfo: {' '.join(p.stdout.split()) or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The tasks inherit the submitter's environment (sbatch --export=ALL): this checkout's bench,
    one intra-op thread each, and a pause after each epoch's checkpoint, so that the nine epochs left
    after the first outlast the grace time a task gets after ``scancel`` or ``scontrol requeue``
    (KillWait, 2 s in .ci/slurm-up; submitit lets the task run on until SIGKILL): on a fast machine
    the epochs alone took less, and a cancelled task finished its cell."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("BENCH_FAULT", f"checkpoint:pause={PAUSE_S}")
    yield


def bench(results: Path, *argv: str) -> str:
    """``bench`` as a user types it, in a fresh process; its stdout (it must succeed)."""
    p = subprocess.run([sys.executable, "-m", "bench", "--results-dir", str(results), *argv],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, f"bench {' '.join(argv)} exited {p.returncode}: {p.stderr[-2000:]}"
    return p.stdout


def squeue(array: str) -> dict[str, str]:
    """task id -> state, straight from squeue (every state the controller still holds)."""
    out = subprocess.run(["squeue", "--array", "--states=all", "--noheader", "--format=%i %T", f"--jobs={array}"],
                         capture_output=True, text=True, timeout=20, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def wait_for(what: str, ok: Callable[[], Any], timeout_s: float = WAIT_S, every_s: float = 0.2) -> Any:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = ok()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; squeue:\n"
                         + subprocess.run(["squeue", "--states=all", "--array"], capture_output=True,
                                          text=True).stdout[-3000:])


def epochs_recorded(run_dir: Path) -> int:
    try:
        return len(pd.read_csv(run_dir / "history.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def jobs_file(results: Path) -> list[dict[str, Any]]:
    return json.loads((results / STUDY / "slurm" / "jobs.json").read_text())


def summary(results: Path, run_id: str) -> dict[str, Any] | None:
    try:
        return json.loads((results / STUDY / "runs" / run_id / "summary.json").read_text())
    except FileNotFoundError:
        return None


def submitted_array(stdout: str, cells: int) -> str:
    line = next(ln for ln in stdout.splitlines() if "submitted" in ln)
    what = "job array" if cells > 1 else "job"  # submitit sends one cell as a plain job, not an array
    assert f"submitted {cells} cells as Slurm {what}" in line, line
    return line.rsplit(" ", 1)[-1]


def test_study_on_a_real_cluster(cluster: None, env: None, tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    """One job array; bench status shows squeue's ids and states; one task scancelled and one
    requeued mid-run; a second submission sends only the cancelled cell; every cell resumes from
    its epoch checkpoint and trains each epoch once; the report builds."""
    res = tmp_path / "results"
    cells = get_study(STUDY).cells(PROFILE, {"epochs": EPOCHS})
    runs = res / STUDY / "runs"

    # 1. one submission = one job array with a task per cell
    array = submitted_array(bench(res, *RUN), len(cells))
    [entry] = jobs_file(res)
    assert entry["array_id"] == array and entry["cluster"] == "slurm"
    assert sorted(entry["tasks"].values()) == [f"{array}_{i}" for i in range(len(cells))]
    task_of = {c.run_id: entry["tasks"][c.run_id] for c in cells}

    # 2. bench status: the real task ids, and the states squeue gives them
    capsys.readouterr()
    before = squeue(array)
    assert main(["--results-dir", str(res), "status", STUDY]) == 0
    text = capsys.readouterr().out
    df, header = status_frame(STUDY, str(res))
    after = squeue(array)
    assert set(before) == set(after) == set(task_of.values())
    for c in cells:
        task = task_of[c.run_id]
        row = df.set_index("run_id").loc[c.run_id]
        assert row["slurm_job"] == task and task in text
        shown = row["slurm_state"].split(" (")[0]  # "PENDING (Resources)": the state, then why
        # asked between the two squeue calls: a state between theirs
        assert ORDER[before[task]] <= ORDER[shown] <= ORDER[after[task]], (task, before[task], shown, after[task])
    assert header["slurm_arrays"] == [array] and header["slurm_sources"][0] == "squeue"
    assert "slurm_state" in text and f"Slurm job arrays: {array}" in text

    # 3. mid-run, once a cell has checkpointed an epoch: scancel one task, scontrol requeue another
    cancelled, requeued = cells[0], cells[1]
    for cell in (cancelled, requeued):
        wait_for(f"{cell.label} to finish an epoch", lambda c=cell: epochs_recorded(runs / c.run_id) >= 1, every_s=0.1)
    assert summary(res, cancelled.run_id) is None and summary(res, requeued.run_id) is None, "cells too short"
    subprocess.run(["scancel", task_of[cancelled.run_id]], check=True, timeout=20)
    subprocess.run(["scontrol", "requeue", task_of[requeued.run_id]], check=True, timeout=20)
    # Slurm holds a requeued job back for two minutes (its begin time): let it go now.
    wait_for("the requeued task to be pending", lambda: squeue(array)[task_of[requeued.run_id]] == "PENDING")
    subprocess.run(["scontrol", "update", f"JobId={task_of[requeued.run_id]}", "StartTime=now"],
                   check=True, timeout=20)
    wait_for("the cancelled task to end", lambda: squeue(array)[task_of[cancelled.run_id]] == "CANCELLED")
    assert job_ended(task_of[cancelled.run_id])

    # the cancelled cell: its task ended, its claim left by a killed process, no record
    df, _ = status_frame(STUDY, str(res))
    row = df.set_index("run_id").loc[cancelled.run_id]
    assert row["slurm_state"] == "CANCELLED" and row["state"] in ("stale", "running")
    assert summary(res, cancelled.run_id) is None

    # 4. submit again while the other cells are queued, running or done: only the cancelled one goes
    capsys.readouterr()
    assert main(["--results-dir", str(res), *RUN]) == 0
    printed = capsys.readouterr()
    second = submitted_array(printed.out, 1)
    assert second != array
    assert jobs_file(res)[-1]["tasks"] == {cancelled.run_id: second}
    assert f"{len(cells) - 1} cells already queued or running, not submitted again" in printed.err
    wait_for("every cell to finish", lambda: all(summary(res, c.run_id) for c in cells), every_s=1.0)

    # 5. every cell trained each epoch once; the stopped ones resumed from their checkpoint
    for c in cells:
        s = summary(res, c.run_id)
        assert s is not None and s["status"] == "ok", (c.label, s and s.get("error"))
        hist = pd.read_csv(runs / c.run_id / "history.csv")
        assert hist["epoch"].tolist() == list(range(1, EPOCHS + 1)), c.label
        assert s["metrics"]["epochs_done"] == EPOCHS
        resumed = s["metrics"]["resumed_from_epoch"]
        if c in (cancelled, requeued):
            assert 1 <= resumed < EPOCHS, (c.label, resumed)
        else:
            assert resumed == 0, (c.label, resumed)
        assert not (runs / c.run_id / "attempts").exists()  # never archived and run again
        assert not list((runs / c.run_id).glob("claim*")) and not (runs / c.run_id / "checkpoint.pt").exists()
    assert all(summary(res, c.run_id)["worker"].startswith("slurm:") for c in cells)

    # the record is written before the task's process ends: Slurm says COMPLETED a moment later
    def all_completed() -> tuple[pd.DataFrame, dict[str, Any]] | None:
        df, header = status_frame(STUDY, str(res))
        return (df, header) if (df["slurm_state"] == "COMPLETED").all() else None

    df, header = wait_for("squeue to report every task COMPLETED", all_completed, every_s=0.5)
    assert (df["state"] == "done").all()
    assert df.set_index("run_id").loc[cancelled.run_id, "slurm_job"] == second
    assert header["slurm_arrays"] == [array, second]

    # 6. the report, whatever ran the cells; a third submission has nothing to send
    assert main(["--results-dir", str(res), "report", STUDY]) == 0
    out = capsys.readouterr().out
    report = Path(next(ln for ln in out.splitlines() if ln.startswith("report:")).split(None, 1)[1])
    assert report.is_file() and report.stat().st_size > 0
    assert main(["--results-dir", str(res), *RUN]) == 0
    assert "nothing to submit, every cell has a record" in capsys.readouterr().err
    assert len(jobs_file(res)) == 2


def test_states_of_plain_jobs(cluster: None, tmp_path: Path) -> None:
    """slurm_states and job_ended on jobs submitted with sbatch directly: running, cancelled, unknown."""
    out = subprocess.run(["sbatch", "--parsable", "--array=0-1", f"--output={tmp_path}/%A_%a.out",
                          "--wrap", "sleep 60"], capture_output=True, text=True, check=True, timeout=20).stdout
    array = out.strip().split(";")[0]
    try:
        wait_for("the array to start", lambda: slurm_states([array]).states.get(f"{array}_0") == "RUNNING")
        assert not job_ended(f"{array}_0")
        subprocess.run(["scancel", f"{array}_0"], check=True, timeout=20)
        wait_for("the cancel", lambda: slurm_states([array]).states.get(f"{array}_0") == "CANCELLED")
        assert job_ended(f"{array}_0") and not job_ended(f"{array}_1")
        got = slurm_states([array, "999999999"])  # a job the controller never had is simply absent
        assert set(got.states) == {f"{array}_0", f"{array}_1"} and "squeue" in got.sources
    finally:
        subprocess.run(["scancel", array], timeout=20)
    assert not job_ended("999999999")
