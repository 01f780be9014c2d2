"""The submitit backends: ``slurm`` (one job array per ``bench run``) and ``debug`` (in process).

Each array task runs :func:`bench.runner.work` for one cell. The task is a submitit
``Checkpointable``: on preemption or timeout submitit calls :meth:`CellTask.checkpoint` and requeues
the same task; the trainer checkpoints every epoch in the run folder, so the cell resumes there.
Logs go to ``results/<study>/slurm/<job>_<task>/``, submissions are recorded in
``results/<study>/slurm/jobs.json`` (read by ``bench status``).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import submitit

from bench import locks
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

    One task per node (``tasks_per_node=1``), so ``gpus_per_node`` is the GPUs of one task; with
    ``gpus_per_task=0`` no GPU is asked for (CPU nodes). ``--requeue``: a preempted or requeued task
    may run again even where the cluster's default is ``JobRequeue=0`` (it resumes from its checkpoint).
    """
    if gpus_per_task < 0 or timeout_min < 1 or (max_parallel is not None and max_parallel < 1):
        raise UserError(f"bad Slurm options: gpus_per_task={gpus_per_task} (>= 0), timeout_min={timeout_min} "
                        f"(>= 1), max_parallel={max_parallel} (>= 1 or unset)")
    params: dict[str, Any] = {
        "name": f"bench-{study}",
        "timeout_min": int(timeout_min),
        "nodes": 1,
        "tasks_per_node": 1,
        "slurm_signal_delay_s": SIGNAL_DELAY_S,
        "slurm_additional_parameters": {"requeue": True},
    }
    if gpus_per_task:
        params["gpus_per_node"] = int(gpus_per_task)
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
            release_ended_jobs_claims(spec, job)
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
    return _release_claims(spec, lambda owner: owner == str(job_id))


def release_ended_jobs_claims(spec: WorkSpec, job_id: str) -> list[str]:
    """Drop claims held by other Slurm jobs that Slurm says have ended (cancelled, failed, timed out,
    node lost): their heartbeat may still look fresh for a while, and on another node the pid test
    cannot tell. A job Slurm no longer knows is left to the heartbeat's age. Returns the run ids."""
    from bench.executors.slurm_states import job_ended

    ended: dict[str, bool] = {}

    def dead(owner: str) -> bool:
        if owner in ("", "None", str(job_id)):
            return False
        if owner not in ended:
            ended[owner] = job_ended(owner)
        return ended[owner]

    return _release_claims(spec, dead)


def _release_claims(spec: WorkSpec, dead: Callable[[str], bool]) -> list[str]:
    """Remove the claim of each of the spec's cells whose ``slurm_job_id`` ``dead`` judges dead,
    without ever removing a claim somebody else took meanwhile."""
    store = ResultsStore(spec.results_dir)
    out = []
    for run_id in spec.run_ids:
        lock = store.run_dir(spec.study, run_id) / "claim.lock"
        info = store.claim_info(spec.study, run_id)
        owner = str((info or {}).get("slurm_job_id"))
        if not info or not dead(owner):
            continue
        grave = lock.with_name(f"claim.requeued.{uuid.uuid4().hex}")
        try:
            os.rename(lock, grave)
        except FileNotFoundError:
            continue
        try:
            mine = str(read_json(grave).get("slurm_job_id")) == owner
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
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):  # submitit prints sbatch's refusal: said once, below
            jobs = executor.map_array(CellTask(), list(specs))
    except submitit.core.utils.FailedJobError as exc:
        said = " ".join(str(exc).split()) or "no reason given"
        raise UserError(f"sbatch refused the job array: {said} (check --slurm-partition and --gpus-per-task: "
                        "0 on a cluster without GPUs; sinfo lists what the cluster has)") from None
    sys.stderr.write(printed.getvalue())
    return jobs


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
        "tasks": {rid: jid for spec, jid in zip(specs, ids, strict=True) for rid in spec.run_ids},
    }
    path = slurm_dir(store, study) / JOBS_FILE
    with locks.hold(path.with_name(JOBS_FILE + ".lock")):
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


def in_flight(study: str, cells: Sequence[Cell], store: ResultsStore) -> dict[str, str]:
    """run_id -> what holds it, for the cells that a live Slurm task will run or runs: the cell's
    latest submitted task is queued or running (squeue), or a worker holds its claim and that
    worker's Slurm job, if any, has not ended (a cancelled task's claim looks fresh for a while)."""
    from bench.executors.slurm_states import ENDED, job_ended, slurm_states

    task_of: dict[str, str] = {}
    for entry in load_jobs(store, study):
        if entry.get("cluster") == "slurm":
            task_of.update(entry.get("tasks") or {})
    mine = {c.run_id: task_of[c.run_id] for c in cells if c.run_id in task_of}
    states = slurm_states(sorted({t.split("_")[0] for t in mine.values()})).states
    out = {}
    for c in cells:
        task = mine.get(c.run_id)
        state = states.get(task or "", "").split(" (")[0]
        if state and state not in ENDED:
            out[c.run_id] = f"{task} {state}"
        elif store.state(study, c.run_id) == "running":
            owner = (store.claim_info(study, c.run_id) or {}).get("slurm_job_id")
            if not owner or not job_ended(str(owner)):
                out[c.run_id] = f"claimed by {(store.claim_info(study, c.run_id) or {}).get('worker') or 'a worker'}"
    return out


def run_submitit(
    study: Study,
    profile: str,
    cells: Sequence[Cell],
    todo: Sequence[Cell],
    store: ResultsStore,
    *,
    cluster: str,
    parameters: dict[str, Any],
    device: str,
    data_dir: str | None,
    measure: bool = True,
    end_steps: tuple[str, ...] | None = None,
    executor: submitit.Executor | None = None,
) -> dict[str, int] | None:
    """Submit ``todo`` as one array. Slurm: returns None once queued (prints how to watch);
    debug (and any other in-process or local executor): waits and returns counts by state.
    Slurm: cells whose task is still queued or running are not submitted again."""
    busy = in_flight(study.name, todo, store) if cluster == "slurm" else {}
    if busy:
        held = sorted(set(busy.values()))
        print(f"{study.name} [{profile}]: {len(busy)} cells already queued or running, not submitted again: "
              + ", ".join(held[:5]) + (", ..." if len(held) > 5 else ""), file=sys.stderr)
        todo = [c for c in todo if c.run_id not in busy]
    if not todo:
        why = "the others are queued or running" if busy else "every cell has a record"
        print(f"{study.name} [{profile}]: nothing to submit, {why}", file=sys.stderr)
        return status_counts(study.name, cells, store) if not busy else None
    folder = slurm_dir(store, study.name)
    executor = executor or make_executor(cluster, folder)
    if cluster == "debug":
        parameters = {}  # the debug executor runs in this process: no resources to ask for
        device = parse_device(device)  # here, where it runs
    # Tasks may start in another working directory: give them absolute paths.
    results_dir = str(Path(store.root).resolve())
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    # one task per cell, the cell itself in the task: a changed study file cannot change what runs
    specs = [WorkSpec.of([c], results_dir, data_dir, device, measure=measure, end_steps=end_steps) for c in todo]
    jobs = submit_cells(executor, specs, parameters)
    entry = record_jobs(store, study.name, profile, jobs, specs, cluster, parameters)
    if cluster == "slurm":
        what = "job array" if len(jobs) > 1 else "job"  # submitit sends a single cell as a plain job
        print(f"{study.name} [{profile}]: submitted {len(jobs)} cells as Slurm {what} {entry['array_id']}\n"
              f"  watch: bench --results-dir {store.root} status {study.name}    squeue -j {entry['array_id']}\n"
              f"  logs:  {folder}/")
        return None
    for job in jobs:
        job.result()  # the debug executor runs the task now, in this process
    return status_counts(study.name, cells, store)
