"""``bench export <target> <study>``: a study's records handed to the tools people query them with.

Targets are registered in :data:`EXPORTS` (``parquet``, ``tensorboard``, ``mlflow``). Every
exporter reads the records through :func:`bench.frames.read_runs`, after training, so exporting
costs nothing while cells run and works for runs done on any machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.errors import UserError
from bench.registry import Registry
from bench.store import ResultsStore

Exporter = Callable[[str, Path, argparse.Namespace], list[str]]
EXPORTS: Registry[Exporter] = Registry("export target")


def require_records(study: str, results_dir: str | Path) -> None:
    """UserError unless ``study`` is registered and has a recorded run under ``results_dir``."""
    from bench.study import get_study

    get_study(study)  # unknown name -> close matches
    if ResultsStore(results_dir).read_study(study) is None:
        raise UserError(f"no run of study {study!r} recorded under {results_dir}/ (run `bench run {study}` first)")


@EXPORTS.register("parquet")
def export_parquet(study: str, results_dir: Path, args: argparse.Namespace) -> list[str]:
    """``<study>/runs.parquet`` (one row per run) and ``<study>/history.parquet`` (per run and epoch)."""
    from bench.frames import write_parquet

    return [f"parquet: {p}" for p in write_parquet(results_dir, study)]


def export(target: str, study: str, results_dir: str | Path, args: argparse.Namespace | None = None) -> list[str]:
    """Run one exporter; returns the lines to print (what was written where)."""
    fn = EXPORTS.get(target)
    require_records(study, results_dir)
    return fn(study, Path(results_dir), args or argparse.Namespace())


def _load_exporters() -> None:
    """Register the tracker exporters (their modules import the trackers only when they run)."""
    from bench.export import mlflow, tensorboard  # noqa: F401


_load_exporters()

__all__ = ["EXPORTS", "export", "require_records"]
