"""The runner: expand a study, skip what is done, claim and run each cell in isolation.

A cell that raises, runs out of memory or diverges is recorded with its status and error, and the study goes
on. Measurements (params, MACs, speed, memory) are taken once per distinct model and input shape and cached
under ``<study>/measurements/`` (:mod:`bench.measure.cache`). :func:`work` is the picklable worker loop that
every executor (in-process, worker processes, Slurm) runs.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench import locks
from bench.config import RunConfig
from bench.data.sources import input_shape
from bench.device import release_cached_memory
from bench.errors import UserError, first_line, reason
from bench.faults import fault_point
from bench.measure.env import CpuMark, cpu_mark, environment
from bench.measure.estimate import train_macs
from bench.files import write_atomic
from bench.record import Cell, EpochRow, Outcome, Placement, RunRecord
from bench.store import ResultsStore, recorded_extra_seeds, recorded_for
from bench.text import human_duration
from bench.study import Selection, Study

RETRYABLE = ("failed", "oom")


_DATA: dict[tuple[str, str], Any] = {}


def load_data(dataset: str, data_dir: str | None) -> Any:
    """Load a data set once per process (studies reuse it across cells)."""
    from bench.data import load_dataset

    key = (dataset, str(data_dir))
    if key not in _DATA:
        _DATA[key] = load_dataset(dataset, data_dir)
    return _DATA[key]


def get_measurements(cfg: RunConfig, data: Any, store: ResultsStore, study: str, device: str) -> dict[str, Any]:
    """Params, MACs/FLOPs, speed and memory for this model and input: the study's measurement cache
    (``<study>/measurements/``, :mod:`bench.measure.cache`), measured on a miss."""
    from bench.measure.cache import cached_measurements

    return cached_measurements(cfg, input_shape(cfg, data.image_shape), data.num_classes,
                               store.study_dir(study) / "measurements", device)


def execute_cell(
    cell: Cell,
    store: ResultsStore,
    *,
    device: str = "cpu",
    data_dir: str | None = None,
    shared_gpu: bool = False,
    progress: bool = False,
    measure: bool = True,
    worker: str | None = None,
    end_steps: Sequence[str] | None = None,
) -> RunRecord | None:
    """Claim and run one cell; returns its record, or None if another worker holds it.

    ``end_steps``: the trainer's end-of-run steps (None: all; ``()`` for tests that read neither the
    BN gap nor the artifacts).

    Every outcome is written as the run's record (``summary.json``): ok, diverged, oom (CUDA out of
    memory) or failed (any other exception, with the traceback in ``log.txt``). Only an interrupt
    (Ctrl-C, a kill) leaves the cell unfinished; its checkpoint lets the next run resume it.
    """
    import torch

    claim = store.claim(cell.study, cell.run_id, worker=worker, slurm_job_id=os.environ.get("SLURM_JOB_ID"))
    if claim is None:
        return None
    with claim:
        claim.start_heartbeat()
        done = store.read_record(cell.study, cell.run_id)
        if done is not None:
            return done  # finished by another worker between our look and our claim
        rd = store.run_dir(cell.study, cell.run_id)
        # We alone write here now: drop what a killed writer left, set a damaged record aside.
        store.clean_temp_files(cell.study, cell.run_id)
        damage = store.unfinished_damage(cell.study, cell.run_id)  # summary, history or checkpoint
        if damage is not None:
            moved = store.set_aside_damaged(cell.study, cell.run_id)
            print(f"bench: {damage}; moved to {moved} and the cell runs again", file=sys.stderr)
        store.write_cell(cell)
        started = time.time()
        # A resumed run continues the recorded history (the checkpoint's epochs come first).
        history: list[EpochRow] = store.history_rows(cell.study, cell.run_id)
        metrics: dict[str, Any] = {}
        measurements: dict[str, Any] = {}
        status, error, used = "ok", None, device  # the trainer's device (cuda:0) once it has run
        trained_from: CpuMark | None = None  # the record's other_cpu_pct covers the training, nothing before
        try:
            data = load_data(cell.config.dataset, data_dir)
            if measure:
                measurements = get_measurements(cell.config, data, store, cell.study, device)

            def on_epoch(row: dict[str, Any]) -> None:
                history[:] = [r for r in history if r.epoch < row["epoch"]] + [EpochRow(**row)]
                store.write_history(cell.study, cell.run_id, history)

            from bench.train import save_artifacts, train

            trained_from = cpu_mark()
            result = train(cell.config, device=device, data_dir=data_dir, run_dir=rd, on_epoch=on_epoch,
                           progress=progress, data=data, drop_checkpoint=False, end_steps=end_steps)
            history = list(result.rows) or history
            status, error, metrics, used = result.status, result.error, dict(result.summary), result.device
            if result.artifacts:
                save_artifacts(rd / "artifacts.npz", result.artifacts)
        except torch.cuda.OutOfMemoryError as exc:
            status, error = "oom", f"CUDA out of memory: {first_line(exc)}"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded for this cell only
            status, error = "failed", reason(exc)
            write_atomic(rd / "log.txt", traceback.format_exc())
        finally:
            released = release_cached_memory(device)  # never raises: the record below must be written
            if released is not None:
                print(f"bench: {released}", file=sys.stderr)
        finished = time.time()
        placement = Placement(started_at=started, finished_at=finished, wall_time_s=finished - started,
                              host=socket.gethostname(), device=used,
                              shared_gpu=shared_gpu, worker=worker, slurm_job_id=os.environ.get("SLURM_JOB_ID"))
        record = RunRecord(cell=cell, outcome=Outcome(status, error), placement=placement, metrics=metrics,
                           measurements=measurements, environment=environment(used, since=trained_from),
                           history=tuple(history))
        fault_point("before-summary")
        store.write_record(record)
        # Only now is the checkpoint redundant: a kill before this line resumes, never retrains.
        from bench.train.checkpoint import CHECKPOINT_NAME

        (rd / CHECKPOINT_NAME).unlink(missing_ok=True)
        return record


def pending_cells(cells: Sequence[Cell], store: ResultsStore, retry_failed: bool = False) -> list[Cell]:
    """Cells without a finished record (or, with ``retry_failed``, whose record failed or OOMed)."""
    out = []
    for c in cells:
        s = store.summary(c.study, c.run_id)
        if s is None or (retry_failed and s.get("status") in RETRYABLE):
            out.append(c)
    return out


@dataclass
class WorkSpec:
    """What a worker process runs: its cells, serialised (:meth:`Cell.to_dict`; picklable, for
    submitit too), and where. Workers never re-expand the study: a job runs the cells it was given
    even when the study's definition has changed since it was submitted."""

    study: str
    cells: list[dict[str, Any]]
    results_dir: str
    data_dir: str | None
    device: str
    shared_gpu: bool = False
    progress: bool = False
    worker: str | None = None
    measure: bool = True
    end_steps: tuple[str, ...] | None = None  # None: every end-of-run step (execute_cell)

    @classmethod
    def of(cls, cells: Sequence[Cell], results_dir: str, data_dir: str | None, device: str, **kw: Any) -> WorkSpec:
        """A spec for ``cells`` (all of one study)."""
        studies = {c.study for c in cells}
        if len(studies) != 1:
            raise ValueError(f"a work spec holds the cells of one study, not {sorted(studies)}")
        return cls(studies.pop(), [c.to_dict() for c in cells], results_dir, data_dir, device, **kw)

    @property
    def run_ids(self) -> list[str]:
        return [str(c["run_id"]) for c in self.cells]

    def to_cells(self) -> list[Cell]:
        """The cells, rebuilt from their serialised form."""
        return [Cell.from_dict(c) for c in self.cells]


def work(spec: WorkSpec) -> list[RunRecord]:
    """Worker loop: run every listed cell this worker can claim; returns the records it wrote."""
    store = ResultsStore(spec.results_dir)
    out = []
    for c in spec.to_cells():
        if store.summary(c.study, c.run_id) is not None:
            continue
        r = execute_cell(c, store, device=spec.device, data_dir=spec.data_dir, shared_gpu=spec.shared_gpu,
                         progress=spec.progress, worker=spec.worker, measure=spec.measure,
                         end_steps=spec.end_steps)
        if r is not None:
            out.append(r)
    return out


def run_cells_inline(
    cells: Sequence[Cell],
    store: ResultsStore,
    *,
    device: str,
    data_dir: str | None,
    progress: bool,
    on_done: Callable[[RunRecord], None] | None = None,
    measure: bool = True,
    end_steps: Sequence[str] | None = None,
) -> list[RunRecord]:
    """Run cells one after another in this process (the default on one device)."""
    # the plain bar: it shows on a terminal only, and tqdm.auto warns in a Jupyter kernel without ipywidgets
    from tqdm import tqdm

    out = []
    bar = tqdm(cells, desc="cells", unit="run", disable=not (progress and sys.stderr.isatty()))
    pace = Pace(cells)
    for c in bar:
        bar.set_postfix_str(c.label[:60])
        s = execute_cell(c, store, device=device, data_dir=data_dir, progress=progress, worker="inline",
                         measure=measure, end_steps=end_steps)
        done = pace.finished(c.run_id)
        if s is not None:
            out.append(s)
            if progress:  # one line per cell in any output (a log file shows no bar)
                print(f"bench: {cell_line(s)}; {done}",
                      file=sys.stderr, flush=True)
            if on_done:
                on_done(s)
    return out


def cell_line(r: RunRecord) -> str:
    """'plain56 seed 0: ok, final training error 71.2%, test error 70.1%, 4 min 12 s' (the error
    instead for a failed cell)."""
    head = f"{r.cell.label} seed {r.cell.seed}: {r.status}"
    if r.status != "ok":
        return f"{head} ({r.outcome.error or 'no error recorded'}), {human_duration(r.placement.wall_time_s)}"
    parts = [f"final {name} error {100 * (1 - float(r.metrics[key])):.1f}%"
             for name, key in (("training", "final_train_acc"), ("test", "final_test_acc"))
             if isinstance(r.metrics.get(key), (int, float)) and r.metrics[key] == r.metrics[key]]
    return ", ".join([head, *parts, human_duration(r.placement.wall_time_s)])


class Pace:
    """The time left of a list of cells, at the pace of those finished so far, weighted by their
    training multiply-adds (:func:`~bench.measure.estimate.train_macs`): the cells of one study
    differ in size, a 56-layer net costs 3x a 20-layer one. Where a cell's size cannot be known
    before it runs, every cell counts the same."""

    def __init__(self, cells: Sequence[Cell]) -> None:
        self.t0 = time.time()
        work = {c.run_id: train_macs(c.config) for c in cells}
        known = all(w > 0 for w in work.values())  # NaN compares False: one unknown, count cells instead
        self.work = work if known else {k: 1.0 for k in work}
        self.done: set[str] = set()

    def finished(self, run_id: str) -> str:
        """Mark a cell finished; '3/8 done, about 9 min left at this pace' (or 'all in 12 min')."""
        self.done.add(run_id)
        return f"{len(self.done)}/{len(self.work)} done, {self.left(time.time() - self.t0)}"

    def left(self, elapsed: float) -> str:
        """'about 9 min left at this pace' after ``elapsed`` seconds; 'all in ...' once all are done."""
        done = sum(w for k, w in self.work.items() if k in self.done)
        rest = sum(w for k, w in self.work.items() if k not in self.done)
        if not rest:
            return f"all in {human_duration(elapsed)}"
        return f"about {human_duration(elapsed / done * rest)} left at this pace"


def prepare(study: Study, profile: str, store: ResultsStore, overrides: dict[str, Any] | None,
            retry_failed: bool = False, selection: Selection | None = None,
            data_dir: str | None = None, extra_seeds: dict[str, tuple[int, ...]] | None = None,
            sequential: dict[str, Any] | None = None) -> tuple[list[Cell], list[Cell]]:
    """Expand (and so validate) the study, load the data its pending cells need, then record its
    description and archive failed attempts that will be retried: a rejected run writes nothing.

    With a ``selection`` only its cells are to do; study.json still lists every cell of the profile
    (the report shows the others as pending). Seeds added beyond the profile's (``extra_seeds``, arm
    label -> seeds) and the group-sequential design they were added under (``sequential``) are kept
    in study.json: a later run of the same profile and overrides lists those cells too (it reuses
    their records) and its report judges them under the same design."""
    try:
        recorded = store.read_study(study.name) or {}
    except UserError:
        recorded = {}  # a damaged study.json: write_study sets it aside below
    same = recorded_for(recorded, profile, overrides)
    extra: dict[str, tuple[int, ...]] = {}
    kept = recorded_extra_seeds(recorded, profile, overrides)
    for label, seeds in [*kept.items(), *(extra_seeds or {}).items()]:
        extra[str(label)] = tuple(dict.fromkeys([*extra.get(str(label), ()), *(int(s) for s in seeds)]))
    design = sequential if sequential is not None else recorded.get("sequential") if same else None
    design = design if isinstance(design, dict) else None
    cells = study.cells(profile, overrides, extra)
    chosen = selection.apply(cells) if selection else cells  # a bad selection: before anything is written
    # Missing data is one clear error here, before anything is written or any worker starts.
    check_data(pending_cells(chosen, store, retry_failed), data_dir)
    # the cells themselves, so that the report and ``bench status`` need not re-expand the study
    store.write_study(study.name, {**study.describe(), "profile": profile, "overrides": overrides or {},
                                   "run_ids": [c.run_id for c in cells],
                                   "cells": [c.identity() for c in cells],
                                   "extra_seeds": {k: list(v) for k, v in extra.items()},
                                   # report-time: the readers recompute time-to-accuracy for these
                                   "acc_thresholds": list(dict.fromkeys(t for c in cells
                                                                        for t in c.config.acc_thresholds)),
                                   **({"sequential": design} if design else {})})
    todo = pending_cells(chosen, store, retry_failed)
    for c in todo:
        if store.summary(c.study, c.run_id) is not None:
            store.archive_attempt(c.study, c.run_id)
    return cells, todo


def check_data(cells: Sequence[Cell], data_dir: str | None) -> None:
    """Load each data set the cells need before starting, so missing data is one clear error."""
    for name in sorted({c.config.dataset for c in cells}):
        load_data(name, data_dir)


def status_counts(study: str, cells: Sequence[Cell], store: ResultsStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in cells:
        st = store.state(study, c.run_id)
        if st in ("running", "stale") and store.claim_unreadable(study, c.run_id):
            # not a worker that can be named: an empty or garbage claim.lock, judged by its age alone
            st = f"{st} (unreadable claim.lock, retaken when {locks.UNREADABLE_CLAIM_S:.0f} s old)"
        counts[st] = counts.get(st, 0) + 1
    return counts
