"""Executors: where a study's pending cells run.

``--executor local`` (default) runs them on this machine: inline in this process on a CPU or one GPU,
else in worker processes (one per GPU, ``--parallel`` per GPU). ``slurm`` submits them as one
submitit job array and returns; ``debug`` goes through the same submitit path in this process (for
tests). Every backend ends in :func:`bench.runner.work`, so cells are claimed through the store's
lock files and a cell that two workers or two submissions reach runs once.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from bench.executors.options import EXECUTORS, RunOptions, parse_executor, parse_parallel

if TYPE_CHECKING:
    from bench.study import Study

# The backends (torch, pandas, submitit) are imported when a run starts: `bench` reads RunOptions'
# defaults for its command line, and its start-up must not wait for them.
__all__ = ["EXECUTORS", "RunOptions", "parse_executor", "parse_parallel", "run_with_executor"]


def run_with_executor(study: Study, profile: str, opts: RunOptions) -> dict[str, int] | None:
    """Run (or, for Slurm, submit) the study's pending cells; counts by state, or None once submitted."""
    from bench.device import auto_device_note
    from bench.executors.local import resolve_slots, run_local
    from bench.executors.slurm import build_slurm_parameters, run_submitit
    from bench.runner import prepare
    from bench.store import ResultsStore

    if opts.executor == "local":
        resolve_slots(opts.device, opts.gpus)  # bad --device/--gpus: before any write
    if opts.executor == "slurm":
        from bench.executors.slurm import require_sbatch

        # the user's values first (a bad --set or --only names itself even where Slurm is missing),
        # then Slurm's presence, both before anything is written
        expanded = study.cells(profile, opts.overrides, opts.extra_seeds)
        if opts.selection:
            opts.selection.apply(expanded)
        require_sbatch()
    store = ResultsStore(opts.results_dir)
    selection = opts.selection
    cells, todo = prepare(study, profile, store, opts.overrides, opts.retry_failed, selection,
                          data_dir=opts.data_dir, extra_seeds=opts.extra_seeds,
                          sequential=opts.sequential)  # validates and loads the data before any write
    note = auto_device_note(opts.device) if opts.executor == "local" else None
    if note and todo:  # the record says so too, but a user who expected a GPU should hear it at once
        print(f"bench: {note}", file=sys.stderr)
    if selection:
        print(f"bench: selection {selection.describe()}: {len(selection.apply(cells))} of {len(cells)} cells, "
              f"{len(todo)} to run", file=sys.stderr)
    common: dict[str, Any] = {"device": opts.device, "data_dir": opts.data_dir, "measure": opts.measure,
                              "end_steps": opts.end_steps}
    if opts.executor == "local":
        return run_local(study, cells, todo, store, parallel=opts.parallel, gpus=opts.gpus, **common)
    params = build_slurm_parameters(study.name, partition=opts.slurm_partition, gpus_per_task=opts.gpus_per_task,
                                    timeout_min=opts.timeout_min, max_parallel=opts.max_parallel)
    return run_submitit(study, profile, cells, todo, store, cluster=opts.executor, parameters=params, **common)
