"""``bench status``: where each cell of a study stands, whatever ran it (the local workers' claims,
Slurm's queue), and the one rule for which profile and overrides ``status`` and ``plan`` show."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.results import Run, read_results, require_results
from bench.store import ResultsStore
from bench.study import get_study

# Order of the counts line; 'done' is a finished ok run.
STATES = ("done", "running", "pending", "failed", "stale", "diverged", "oom", "damaged")


def recorded_choice(study: str, store: ResultsStore, profile: str | None,
                    overrides: dict[str, Any] | None) -> tuple[str | None, dict[str, Any]]:
    """The profile and overrides to show: as given, else those of the last ``bench run`` (study.json);
    the overrides of that run too when none are given for its profile. (None, ...) when no profile is
    given and none is recorded. ``bench status`` and ``bench plan`` follow this one rule."""
    recorded = store.read_study(study) or {}
    if profile is None:
        profile = recorded.get("profile")
    if profile is not None and not overrides and recorded.get("profile") == profile:
        overrides = recorded.get("overrides") or {}
    return profile, dict(overrides or {})


def _resolve(study: str, store: ResultsStore, profile: str | None,
             overrides: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    profile, overrides = recorded_choice(study, store, profile, overrides)
    if profile is None:
        require_results(study, store.root)
        raise UserError(f"{store.study_dir(study) / 'study.json'} records no profile "
                        f"(accepted: --profile with one of the study's profiles)")
    return profile, overrides


def _runs(study: str, store: ResultsStore, profile: str, overrides: dict[str, Any]) -> list[Run]:
    """The cells to show: those of the last ``bench run`` when the profile and overrides are its own
    (what ran, as the report shows it, even if the study changed since), else the study expanded
    afresh for the profile and overrides asked."""
    latest = read_results(store.root, study)
    if latest.lists_cells_for(profile, overrides):
        return list(latest.runs)
    cells = [c.identity() for c in get_study(study).cells(profile, overrides)]
    return list(read_results(store.root, study, cells).runs)


def status_frame(study: str, results_dir: str, profile: str | None = None,
                 overrides: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per cell (run_id, arm, seed, state, worker, host, heartbeat_age_s, slurm_job, slurm_state,
    error: the one-line error of a failed, diverged or out-of-memory cell) and a header dict (study, profile,
    counts by state, submitted Slurm arrays, where their states came from). ``slurm_state`` is what squeue (or
    sacct) says of the cell's latest task."""
    from bench.executors.slurm import load_jobs
    from bench.executors.slurm_states import slurm_states

    st = get_study(study)  # unknown study -> UserError with close matches
    store = ResultsStore(results_dir)
    profile, overrides = _resolve(st.name, store, profile, overrides)
    arrays = [e for e in load_jobs(store, st.name) if e.get("cluster") == "slurm"]  # not debug runs
    task_of: dict[str, str] = {}
    for entry in arrays:  # the latest submission of a cell wins
        task_of.update(entry.get("tasks") or {})
    # only the arrays that still hold a cell's latest task
    queue = slurm_states(sorted({str(t).split("_")[0] for t in task_of.values()}, key=str))
    rows = []
    now = time.time()
    for run in _runs(st.name, store, profile, overrides):
        rid, cell, state = run.run_id, run.cell, run.state
        info: dict[str, Any] = run.summary or store.claim_info(st.name, rid) or {}
        if state in ("running", "stale") and not info:
            info = {"worker": "unreadable claim.lock (judged by its age)"}
        if state == "damaged":
            info = {"worker": "summary.json damaged: the next run moves it to damaged/ and reruns the cell"}
        age = None
        if state in ("running", "stale"):
            try:
                age = round(now - (store.run_dir(st.name, rid) / "claim.lock").stat().st_mtime, 1)
            except FileNotFoundError:
                pass
        job = task_of.get(rid) or info.get("slurm_job_id")
        error = info.get("error") if state in ("failed", "oom", "diverged") else None
        if state == "diverged" and not error:
            error = "diverged (loss not finite)"
        rows.append({
            "run_id": rid,
            "arm": cell.get("arm_label"),
            "seed": cell.get("seed"),
            "state": "done" if state == "ok" else state,
            "worker": info.get("worker"),
            "host": info.get("host"),
            "heartbeat_age_s": age,
            "slurm_job": job,
            "slurm_state": queue.states.get(str(job)) if job else None,
            "error": error,
        })
    df = pd.DataFrame(rows, columns=["run_id", "arm", "seed", "state", "worker", "host", "heartbeat_age_s",
                                     "slurm_job", "slurm_state", "error"])
    counts = {s: int((df["state"] == s).sum()) if len(df) else 0 for s in STATES}
    header = {"study": st.name, "profile": profile, "overrides": overrides, "cells": len(df), "counts": counts,
              "slurm_arrays": [e.get("array_id") for e in arrays],
              "slurm_sources": queue.sources, "slurm_notes": queue.notes}
    return df, header


@dataclass(frozen=True)
class Status:
    """Where each cell of a study stands: ``frame`` (one row per cell, see :func:`status_frame`),
    ``header`` (study, profile, counts by state, Slurm arrays) and ``text`` (as ``bench status``)."""

    frame: pd.DataFrame
    header: dict[str, Any]
    text: str

    def __str__(self) -> str:
        return self.text


def study_status(study: str, results_dir: str, profile: str | None = None,
                 overrides: dict[str, Any] | None = None) -> Status:
    """:func:`status_frame` with its text."""
    df, h = status_frame(study, results_dir, profile, overrides)
    return Status(df, h, status_text(df, h, results_dir))


def status_table(study: str, results_dir: str, profile: str | None, overrides: dict[str, Any]) -> str:
    """Text for ``bench status``: a counts line, the per-cell table, and the Slurm job ids if any."""
    df, h = status_frame(study, results_dir, profile, overrides)
    return status_text(df, h, results_dir)


def status_text(df: pd.DataFrame, h: dict[str, Any], results_dir: str) -> str:
    """:func:`status_frame`'s table and header as ``bench status`` prints them."""
    counts = ", ".join(f"{n} {s}" for s, n in h["counts"].items())
    lines = [f"{h['study']} [{h['profile']}]: {h['cells']} cells: {counts}"]
    if h["overrides"]:
        lines.append("  overrides: " + ", ".join(f"{k}={v}" for k, v in h["overrides"].items()))
    show = df.copy()
    for col in ("worker", "host", "heartbeat_age_s", "slurm_job", "slurm_state", "error"):
        if show[col].isna().all():
            show = show.drop(columns=col)  # keep the table narrow when nothing is known
    # object dtype first: fillna("") on float columns warns about silent downcasting in pandas
    show = show.astype(object).where(show.notna(), "")
    lines.append(show.to_string(index=False) if len(show) else "(no cells)")
    if h["slurm_arrays"]:
        ids = ",".join(str(a) for a in h["slurm_arrays"])
        lines.append(f"Slurm job arrays: {ids}   (squeue -j {ids}; logs under {results_dir}/{h['study']}/slurm/)")
        said = ", ".join(h["slurm_sources"]) or "nothing"
        lines.append(f"slurm_state from {said}" + "".join(f"; {n}" for n in h["slurm_notes"]))
    return "\n".join(lines)
