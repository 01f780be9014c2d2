"""Executors: where a study's pending cells run.

``--executor local`` (default) runs them on this machine: inline in this process on a CPU or one GPU,
else in worker processes (one per GPU, ``--parallel`` per GPU). ``slurm`` submits them as one
submitit job array and returns; ``debug`` goes through the same submitit path in this process (for
tests). Every backend ends in :func:`bench.runner.work`, so cells are claimed through the store's
lock files and a cell that two workers or two submissions reach runs once.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench.errors import UserError
from bench.executors.local import auto_parallel, parse_gpus, resolve_slots, run_local
from bench.executors.slurm import build_slurm_parameters, run_submitit
from bench.executors.status import status_frame, status_table
from bench.runner import prepare
from bench.store import ResultsStore
from bench.study import Study

EXECUTORS = ("local", "slurm", "debug")

__all__ = [
    "EXECUTORS",
    "auto_parallel",
    "build_slurm_parameters",
    "parse_executor",
    "parse_gpus",
    "parse_parallel",
    "run_with_executor",
    "status_frame",
    "status_table",
]


def parse_executor(value: str | None) -> str:
    """'local' | 'slurm' | 'debug' (None -> local); anything else is a UserError."""
    value = value or "local"
    if value not in EXECUTORS:
        raise UserError(f"bad --executor {value!r} (accepted: {', '.join(EXECUTORS)})")
    return value


def parse_parallel(value: str | int | None) -> int | None:
    """'auto' (or None) -> None (decided later from the device and model size); else an int >= 1."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(value).strip() != str(n):
        raise UserError(f"bad --parallel {value!r} (accepted: auto, or an integer >= 1)")
    return n


def run_with_executor(study: Study, profile: str, args: argparse.Namespace) -> dict[str, int] | None:
    """Run (or, for Slurm, submit) the study's pending cells; counts by state, or None once submitted.

    ``args`` carries the ``bench run`` options: executor, parallel, gpus, device, slurm_partition,
    gpus_per_task, timeout_min, max_parallel, retry_failed, results_dir, data_dir, sets. A ``measure``
    attribute (not a CLI option; tests set it False) skips the per-model measurements.
    """
    from bench.config import parse_set_args

    executor = parse_executor(getattr(args, "executor", "local"))
    parallel = parse_parallel(getattr(args, "parallel", "auto"))
    overrides = parse_set_args(getattr(args, "sets", None) or [])
    opts: dict[str, Any] = {
        "device": getattr(args, "device", "auto"),
        "data_dir": getattr(args, "data_dir", None),
        "measure": bool(getattr(args, "measure", True)),
    }
    if executor == "local":
        resolve_slots(opts["device"], getattr(args, "gpus", None))  # bad --device/--gpus: before any write
    if executor == "slurm":
        from bench.executors.slurm import require_sbatch

        require_sbatch()  # before anything is written: one clear line on a machine without Slurm
    store = ResultsStore(args.results_dir)
    from bench.study import parse_selection

    selection = parse_selection(getattr(args, "only", None), getattr(args, "seeds", None))
    cells, todo = prepare(study, profile, store, overrides, bool(getattr(args, "retry_failed", False)), selection,
                          data_dir=opts["data_dir"])  # validates and loads the data before any write
    if selection:
        print(f"bench: selection {selection.describe()}: {len(selection.apply(cells))} of {len(cells)} cells, "
              f"{len(todo)} to run", file=sys.stderr)
    if executor == "local":
        return run_local(study, profile, cells, todo, store, overrides=overrides, parallel=parallel,
                         gpus=getattr(args, "gpus", None), **opts)
    params = build_slurm_parameters(
        study.name,
        partition=getattr(args, "slurm_partition", None),
        gpus_per_task=getattr(args, "gpus_per_task", 1),
        timeout_min=getattr(args, "timeout_min", 240),
        max_parallel=getattr(args, "max_parallel", None),
    )
    return run_submitit(study, profile, cells, todo, store, overrides=overrides, cluster=executor,
                        parameters=params, **opts)
