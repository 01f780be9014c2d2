"""The submitit backends: ``slurm`` (one job array per ``bench run``) and ``debug`` (in process).

Each array task runs :func:`bench.runner.work` for one cell. The task is a submitit
``Checkpointable``: on preemption or timeout submitit calls :meth:`CellTask.checkpoint` and requeues
the same task; the trainer checkpoints every epoch in the run folder, so the cell resumes there.
Logs go to ``results/<study>/slurm/<job>_<task>/``, submissions are recorded in
``results/<study>/slurm/jobs.json`` (read by ``bench status``).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit

from bench.errors import UserError
from bench.device import parse_device
from bench.files import read_json, write_json
from bench.record import RunRecord
from bench.runner import WorkSpec, status_counts, work
from bench.store import ResultsStore
from bench.study import Cell, Study

SIGNAL_DELAY_S = 120  # warning before the kill: time to finish the epoch's checkpoint write
JOBS_FILE = "jobs.json"


def require_sbatch() -> None:
    """UserError when Slurm's ``sbatch`` is not on this machine's PATH."""
    if shutil.which("sbatch") is None:
        raise UserError("--executor slurm needs Slurm, but sbatch is not found on this machine "
                        "(run from a Slurm login node, or use --executor local)")


def build_slurm_parameters(
    study: str,
    *,
    partition: str | None = None,
    gpus_per_task: int = 1,
    timeout_min: int = 240,
    max_parallel: int | None = None,
) -> dict[str, Any]:
    """The ``update_parameters`` dict of an AutoExecutor for one array task per cell.

    One task per node (``tasks_per_node=1``), so ``gpus_per_node`` is the GPUs of one task.
    """
    if gpus_per_task < 0 or timeout_min < 1 or (max_parallel is not None and max_parallel < 1):
        raise UserError(f"bad Slurm options: gpus_per_task={gpus_per_task} (>= 0), timeout_min={timeout_min} "
                        f"(>= 1), max_parallel={max_parallel} (>= 1 or unset)")
    params: dict[str, Any] = {
        "name": f"bench-{study}",
        "timeout_min": int(timeout_min),
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": int(gpus_per_task),
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
    }
    if partition:
        params["slurm_partition"] = partition
    if max_parallel is not None:
        params["slurm_array_parallelism"] = int(max_parallel)
    return params


class CellTask(submitit.helpers.Checkpointable):
    """The callable submitted per array task: ``work(spec)`` for its cell(s)."""

    def __call__(self, spec: WorkSpec) -> list[RunRecord]:
        job = os.environ.get("SLURM_JOB_ID")
        if job:
            release_own_claims(spec, job)
        worker = f"slurm:{job}@{socket.gethostname()}" if job else f"submitit:{os.getpid()}@{socket.gethostname()}"
        return work(replace(spec, device=parse_device(spec.device), worker=spec.worker or worker))

    def checkpoint(self, spec: WorkSpec) -> submitit.helpers.DelayedSubmission:
        """Requeue this same task: the run folder's checkpoint carries the training state."""
        return submitit.helpers.DelayedSubmission(self, spec)


def release_own_claims(spec: WorkSpec, job_id: str) -> list[str]:
    """Drop claims left by an earlier life of this very job (requeued after preemption or timeout).

    Slurm runs one instance of a job id at a time, so such a claim is dead even when its heartbeat
    still looks fresh (another node: the pid test does not apply). Returns the run ids released.
    """
    store = ResultsStore(spec.results_dir)
    out = []
    for run_id in spec.run_ids:
        lock = store.run_dir(spec.study, run_id) / "claim.lock"
        info = store.claim_info(spec.study, run_id)
        if not info or str(info.get("slurm_job_id")) != str(job_id):
            continue
        grave = lock.with_name(f"claim.requeued.{uuid.uuid4().hex}")
        try:
            os.rename(lock, grave)
        except FileNotFoundError:
            continue
        try:
            mine = str(read_json(grave).get("slurm_job_id")) == str(job_id)
        except (FileNotFoundError, ValueError):
            mine = False
        if not mine:  # somebody else claimed it between our look and the rename: give it back
            try:
                os.link(grave, lock)
            except FileExistsError:
                pass
        grave.unlink(missing_ok=True)
        if mine:
            out.append(run_id)
    return out


def slurm_dir(store: ResultsStore, study: str) -> Path:
    return store.study_dir(study) / "slurm"


def make_executor(cluster: str, folder: Path) -> submitit.Executor:
    """An AutoExecutor for ``cluster`` ('slurm', 'debug' or 'local') logging under ``folder``."""
    return submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster)


def submit_cells(
    executor: submitit.Executor,
    specs: Sequence[WorkSpec],
    parameters: dict[str, Any],
) -> list[submitit.Job[Any]]:
    """Submit one task per spec as ONE job array (``map_array``) with ``parameters``."""
    if parameters:
        executor.update_parameters(**parameters)
    return executor.map_array(CellTask(), list(specs))


def record_jobs(store: ResultsStore, study: str, profile: str, jobs: Sequence[submitit.Job[Any]],
                specs: Sequence[WorkSpec], cluster: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Append this submission to ``slurm/jobs.json`` (read-modify-write under a lock file)."""
    ids = [str(j.job_id) for j in jobs]
    entry = {
        "array_id": ids[0].split("_")[0] if ids else None,
        "cluster": cluster,
        "profile": profile,
        "submitted_at": time.time(),
        "host": socket.gethostname(),
        "parameters": parameters,
        "tasks": {rid: jid for spec, jid in zip(specs, ids) for rid in spec.run_ids},
    }
    path = slurm_dir(store, study) / JOBS_FILE
    with _file_lock(path.with_name(JOBS_FILE + ".lock")):
        try:
            entries = read_json(path)
        except (FileNotFoundError, ValueError):
            entries = []
        write_json(path, [*entries, entry])
    return entry


def load_jobs(store: ResultsStore, study: str) -> list[dict[str, Any]]:
    """The submissions recorded for ``study`` (oldest first)."""
    try:
        return list(read_json(slurm_dir(store, study) / JOBS_FILE))
    except (FileNotFoundError, ValueError):
        return []


class _file_lock:
    """O_EXCL lock file (works on shared file systems); a lock older than a minute is broken."""

    def __init__(self, path: Path, wait_s: float = 60.0) -> None:
        self.path, self.wait_s = path, wait_s

    def __enter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.time() + self.wait_s
        while True:
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > 60:
                        self.path.unlink(missing_ok=True)  # its holder died mid-write
                        continue
                except FileNotFoundError:
                    continue
                if time.time() > deadline:
                    raise UserError(f"{self.path} is held; remove it if no bench run is submitting") from None
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def run_submitit(
    study: Study,
    profile: str,
    cells: Sequence[Cell],
    todo: Sequence[Cell],
    store: ResultsStore,
    *,
    overrides: dict[str, Any],
    cluster: str,
    parameters: dict[str, Any],
    device: str,
    data_dir: str | None,
    measure: bool = True,
    executor: submitit.Executor | None = None,
) -> dict[str, int] | None:
    """Submit ``todo`` as one array. Slurm: returns None once queued (prints how to watch);
    debug (and any other in-process or local executor): waits and returns counts by state."""
    if not todo:
        print(f"{study.name} [{profile}]: nothing to submit, every cell has a record", file=sys.stderr)
        return status_counts(study.name, cells, store)
    folder = slurm_dir(store, study.name)
    executor = executor or make_executor(cluster, folder)
    if cluster == "debug":
        parameters = {}  # the debug executor runs in this process: no resources to ask for
        device = parse_device(device)  # here, where it runs
    # Tasks may start in another working directory: give them absolute paths.
    results_dir = str(Path(store.root).resolve())
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    # one task per cell, the cell itself in the task: a changed study file cannot change what runs
    specs = [WorkSpec.of([c], results_dir, data_dir, device, measure=measure) for c in todo]
    jobs = submit_cells(executor, specs, parameters)
    entry = record_jobs(store, study.name, profile, jobs, specs, cluster, parameters)
    if cluster == "slurm":
        print(f"{study.name} [{profile}]: submitted {len(jobs)} cells as Slurm job array {entry['array_id']}\n"
              f"  watch: bench --results-dir {store.root} status {study.name}    squeue -j {entry['array_id']}\n"
              f"  logs:  {folder}/")
        return None
    for job in jobs:
        job.result()  # the debug executor runs the task now, in this process
    return status_counts(study.name, cells, store)
