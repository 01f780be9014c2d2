"""``bench export <target> <study>``: a study's records handed to the tools people query them with.

Targets are registered in :data:`EXPORTS` (``parquet``, ``tensorboard``, ``mlflow``). Every
exporter reads the runs of the study's latest ``bench run`` through :func:`bench.results.read_results`,
after training, so exporting costs nothing while cells run and works for runs done on any machine.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.registry import Registry
from bench.results import read_results, require_results

Exporter = Callable[[str, Path, argparse.Namespace], list[str]]
EXPORTS: Registry[Exporter] = Registry("export target")


@EXPORTS.register("parquet")
def export_parquet(study: str, results_dir: Path, _args: argparse.Namespace) -> list[str]:
    """``<study>/runs.parquet`` (one row per run) and ``<study>/history.parquet`` (per run and epoch)."""
    from bench.frames import write_parquet

    return [f"parquet: {p}" for p in write_parquet(read_results(results_dir, study))]


def export(target: str, study: str, results_dir: str | Path, args: argparse.Namespace | None = None) -> list[str]:
    """Run one exporter; returns the lines to print (what was written where)."""
    fn = EXPORTS.get(target)
    require_results(study, results_dir)
    return fn(study, Path(results_dir), args or argparse.Namespace())


def _load_exporters() -> None:
    """Register the tracker exporters (their modules import the trackers only when they run)."""
    from bench.export import mlflow, tensorboard  # noqa: F401


_load_exporters()

__all__ = ["EXPORTS", "export"]
