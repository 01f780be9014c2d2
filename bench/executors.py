"""Executors: where a study's cells run (this process for now)."""

from __future__ import annotations

import argparse
from typing import Any

from bench.runner import check_data, prepare, resolve_device, run_cells_inline, status_counts
from bench.store import ResultsStore
from bench.study import Study


def run_with_executor(study: Study, profile: str, args: argparse.Namespace) -> dict[str, int] | None:
    from bench.config import parse_set_args

    overrides = parse_set_args(args.sets)
    store = ResultsStore(args.results_dir)
    device = resolve_device(args.device)
    cells, todo = prepare(study, profile, store, overrides, args.retry_failed)
    check_data(todo, args.data_dir)
    run_cells_inline(todo, store, device=device, data_dir=args.data_dir, progress=True)
    return status_counts(study.name, cells, store)


def status_table(study: str, results_dir: str, profile: str | None, overrides: dict[str, Any]) -> str:
    raise NotImplementedError
