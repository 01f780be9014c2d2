"""Python API for notebooks: run a study (or part of it), read its runs and per-epoch histories as
DataFrames, build its report, measure a model.

This is the core of every ``bench`` command: each function takes typed values (a mapping of
``--set`` overrides, a :class:`~bench.study.Selection` or a mapping for ``--only``, seeds as ints)
and returns typed ones; the command line (:mod:`bench.cli`) parses its arguments, calls these and
prints what they return, so a notebook and the command line see the same runs, run ids and records.
Where a value arrives as the command line's text (``["epochs=2"]``, ``"0,1"``) it is parsed here,
once, as the command line's is. A user mistake raises
:class:`bench.errors.UserError` with the one line the command would print. The objects returned show
themselves inline in Jupyter (``_repr_html_``, figures as ``_repr_png_``).

    from bench import api
    result = api.run("residual-mnist", profile="smoke")   # or only={"model": "mnist_cnn"}, seeds=[0]
    api.runs("residual-mnist")                            # one row per run
    api.report("residual-mnist")                          # verdicts, tables and figures inline
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import experiments  # noqa: F401 - registers the studies (the top layer brings the registry in, as the CLI does)
from bench.commands.defaults import (DEFAULT_PROFILE, check_results_dir, default_data_dir, default_results_dir,
                                     recorded_or_auto, resolve_profile)
from bench.commands.views import FigureImage, Measurement, Report
from bench.errors import UserError
from bench.results import read_results, require_results
from bench.executors.options import RunOptions
from bench.study import Selection

if TYPE_CHECKING:
    from bench.commands.plan import Plan
    from bench.commands.status import Status
    from bench.report.verdicts import Verdicts

Items = Mapping[str, Any] | Sequence[str] | str | None  # typed key -> value(s), or the command line's key=value items


def overrides_of(sets: Items) -> dict[str, Any]:
    """``--set`` overrides: a mapping as it is (``{"epochs": 2}``), or ``key=value`` items parsed as
    the command line parses them."""
    from bench.config import parse_set_args

    if sets is None:
        return {}
    if isinstance(sets, Mapping):
        return {str(k): v for k, v in sets.items()}
    return parse_set_args(_items("sets", sets))


def selection_of(only: Items, seeds: int | Sequence[int] | str | None) -> Selection:
    """The cells picked: ``only`` as a mapping (``{"model": ["a", "b"]}``: any of a key's values) or
    ``key=value`` items; ``seeds`` as ints or the command line's ``"0,1"``."""
    from bench.study import parse_selection

    text_seeds = seeds if seeds is None or isinstance(seeds, str) else None
    picked = parse_selection([] if isinstance(only, Mapping) else _items("only", only), text_seeds)
    sel = dict(picked.only)
    if isinstance(only, Mapping):
        for key, v in only.items():
            values = v if isinstance(v, (list, tuple, set)) else [v]
            sel[str(key)] = tuple(one if isinstance(one, str) else json.dumps(one) for one in values)
    if seeds is None or isinstance(seeds, str):
        return Selection(sel, picked.seeds)
    if isinstance(seeds, int):
        return Selection(sel, (seeds,))
    chosen = tuple(dict.fromkeys(int(s) for s in seeds))
    if not chosen:
        raise UserError(f"--seeds expects comma-separated integers (e.g. 0,1), got {list(seeds)!r}")
    return Selection(sel, chosen)


def _items(what: str, value: Items) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{what} must be a mapping or a list of 'key=value' strings, not {type(value).__name__}")


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run` did: the study, the profile it ran, its cells by state, where the records are."""

    study: str
    profile: str
    results_dir: Path
    counts: dict[str, int] | None  # by state over the profile's cells; None once submitted to Slurm
    selection: str = "all cells"
    looks: int | None = None  # --until-decided: rounds judged
    design: str | None = None  # --until-decided: the group-sequential design followed

    def runs(self) -> pd.DataFrame:
        """The study's runs (see :func:`runs`)."""
        return runs(self.study, results_dir=self.results_dir)

    def histories(self) -> pd.DataFrame:
        """The study's per-epoch history (see :func:`histories`)."""
        return histories(self.study, results_dir=self.results_dir)

    def report(self) -> Report:
        """Build the study's report (see :func:`report`)."""
        return report(self.study, results_dir=self.results_dir)

    def _repr_html_(self) -> str:
        done = ", ".join(f"{n} {state}" for state, n in sorted((self.counts or {}).items())) or "submitted"
        return (f'<div class="bench-report"><b>{html.escape(self.study)}</b> [{html.escape(self.profile)}]: '
                f"{html.escape(done)} ({html.escape(self.selection)}) &rarr; "
                f"<code>{html.escape(str(self.results_dir / self.study))}/</code></div>")


def _results(results_dir: str | Path | None, write: bool = False) -> str:
    root = str(results_dir) if results_dir is not None else default_results_dir()
    check_results_dir(root, write=write)
    return root


def _data(data_dir: str | Path | None) -> str:
    return str(data_dir) if data_dir is not None else default_data_dir()


def run(study: str, profile: str = DEFAULT_PROFILE, *, only: Items = None,
        seeds: int | Sequence[int] | str | None = None, sets: Items = None, device: str = RunOptions.device,
        executor: str = RunOptions.executor, parallel: str | int = "auto", gpus: str | None = None,
        retry_failed: bool = False, results_dir: str | Path | None = None, data_dir: str | Path | None = None,
        until_decided: bool = False, max_seeds: int | None = None, spending: str | None = None,
        slurm_partition: str | None = None, gpus_per_task: int = RunOptions.gpus_per_task,
        timeout_min: int = RunOptions.timeout_min, max_parallel: int | None = None, measure: bool = True,
        extras: bool = True) -> StudyResult:
    """Run a study's pending cells, as ``bench run``: ``only`` (``{"model": "plain20"}``) and ``seeds``
    select part of it, ``sets`` overrides config fields (``{"epochs": 2}``); finished cells are kept.
    ``results_dir``/``data_dir`` default to $BENCH_RESULTS_DIR (./results) and $BENCH_DATA_DIR.
    ``until_decided``/``max_seeds``/``spending``: as ``bench run --until-decided`` (README "How many seeds";
    None: the recorded design's, else the defaults);
    the ``slurm_*``/``gpus_per_task``/``timeout_min``/``max_parallel`` values: the Slurm job array.
    ``measure=False``/``extras=False``: as ``--no-measure``/``--no-extras``, the cells skip the model
    measurements / the end-of-run steps (BN gap, artifacts); the run ids stay the same."""
    from bench.executors import run_with_executor
    from bench.executors.options import parse_executor, parse_parallel
    from bench.study import get_study

    root = _results(results_dir, write=True)
    data = _data(data_dir)
    st = get_study(study)
    chosen = resolve_profile(profile, st, data)
    if max_seeds is not None and not until_decided:
        raise UserError(f"--max-seeds {max_seeds} without --until-decided (accepted: with --until-decided)")
    opts = RunOptions(results_dir=root, data_dir=data, overrides=overrides_of(sets),
                      executor=parse_executor(executor), device=device, parallel=parse_parallel(parallel),
                      gpus=gpus, retry_failed=bool(retry_failed), selection=selection_of(only, seeds),
                      slurm_partition=slurm_partition, gpus_per_task=gpus_per_task, timeout_min=timeout_min,
                      max_parallel=max_parallel, measure=bool(measure), end_steps=None if extras else ())
    selected = opts.selection.describe() if opts.selection else "all cells"
    if until_decided:
        from bench.executors.sequential import run_until_decided

        done = run_until_decided(st, chosen, opts, max_seeds, spending)
        return StudyResult(st.name, chosen, Path(root), done["counts"], selected, done["looks"], done["design"])
    return StudyResult(st.name, chosen, Path(root), run_with_executor(st, chosen, opts), selected)


def plan(study: str, profile: str | None = None, *, only: Items = None,
         seeds: int | Sequence[int] | str | None = None, sets: Items = None, prior_sd: float | None = None,
         results_dir: str | Path | None = None, data_dir: str | Path | None = None) -> Plan:
    """The cells of a study with their status and estimated cost, and the seeds each claim needs, as
    ``bench plan``: no ``profile`` is the last run's (and its overrides, without ``sets``), else auto."""
    from bench.commands.plan import make_plan
    from bench.study import get_study

    root = _results(results_dir)
    st = get_study(study)
    chosen, overrides = recorded_or_auto(st, profile, overrides_of(sets), root, _data(data_dir))
    return make_plan(st, chosen, root, overrides, selection_of(only, seeds), prior_sd)


def status(study: str, *, profile: str | None = None, sets: Items = None,
           results_dir: str | Path | None = None) -> Status:
    """Where each cell of the study stands (done, running, pending, failed, ...), as ``bench status``."""
    from bench.commands.status import study_status

    root = _results(results_dir)
    return study_status(study, root, profile, overrides_of(sets))


def show(run_id: str, *, study: str | None = None, results_dir: str | Path | None = None) -> str:
    """One run's config, summary and history as text, as ``bench show``."""
    from bench.commands.show import show_run

    return show_run(_results(results_dir), run_id, study)


def runs(study: str, *, results_dir: str | Path | None = None, finished_only: bool = False) -> pd.DataFrame:
    """One row per run of the study's latest ``bench run``: identity, ``state``, ``arm_*``, tags,
    ``cfg_*``, metrics and measurements (units in the column names); the runs.parquet table."""
    root = _results(results_dir)
    require_results(study, root)
    return read_results(root, study).runs_frame(finished_only)


def histories(study: str, *, results_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per run and epoch (``epoch``, ``lr``, ``train_loss``, ``test_acc``, ``epoch_time_s``,
    ...) with the run's identity and arm columns; the history.parquet table."""
    root = _results(results_dir)
    require_results(study, root)
    return read_results(root, study).history_frame()


def claims(study: str, *, results_dir: str | Path | None = None) -> Verdicts:
    """The verdicts of the study's claims on its recorded runs, as ``bench claims``."""
    from bench.report.data import load
    from bench.report.verdicts import verdicts
    from bench.study import get_study

    root = _results(results_dir)
    name = get_study(study).name
    require_results(name, root)
    return verdicts(load(name, root))


def report(study: str, *, results_dir: str | Path | None = None, index: bool = True) -> Report:
    """Build the study's report as ``bench report <study>`` does (report.html, its CSV and Parquet
    tables, and, with ``index``, results/index.html) and return it for display."""
    from bench.report import build_index, write_report

    root = _results(results_dir, write=True)
    require_results(study, root)
    page = write_report(study, root)
    if index:
        build_index(root)
    finished = sum(r.finished for r in read_results(root, study).runs)
    return Report(study, page.path, page.verdicts, page, finished)


def report_index(*, results_dir: str | Path | None = None) -> Path:
    """Write results/index.html (every study's report) and return its path."""
    from bench.report import build_index

    return Path(build_index(_results(results_dir, write=True)))


def studies_with_results(*, results_dir: str | Path | None = None) -> list[str]:
    """The studies that have results under the results folder."""
    from bench.results import studies_with_results as with_results

    return list(with_results(_results(results_dir)))


def export(target: str, study: str, *, results_dir: str | Path | None = None, logdir: str | None = None,
           tracking_uri: str | None = None) -> list[str]:
    """Export the study's records (parquet | tensorboard | mlflow), as ``bench export``; the lines it says."""
    from bench.export import export as export_to

    return export_to(target, study, _results(results_dir),
                     argparse.Namespace(logdir=logdir, tracking_uri=tracking_uri))


def models(pattern: str = "*") -> pd.DataFrame:
    """Every registered model matching ``pattern`` with its parameters and MACs, as ``bench models``."""
    from bench.commands.zoo import zoo_table

    return zoo_table(pattern)


def measure(model: str, *, batch_size: int = 128, image_size: int | None = None, in_channels: int | None = None,
            num_classes: int = 10, device: str = "auto", precision: str = "fp32",
            model_kwargs: Mapping[str, Any] | None = None, speed: bool = True, layers: bool = False) -> Measurement:
    """Measure one model as ``bench measure`` does: parameters, MACs, and (``speed``) step times and
    peak memory; ``layers`` adds the per-layer table (output shape, params, MACs)."""
    from bench.commands.zoo import measure_one

    values, table = measure_one(model, batch_size=batch_size, image_size=image_size, in_channels=in_channels,
                                num_classes=num_classes, device=device, precision=precision,
                                model_kwargs=dict(model_kwargs or {}), speed=speed, layers=layers)
    return Measurement(model, values, table)


def perf(models: str = "resnet20,resnet56,resnet18", *, batch_size: int = 128, epochs: int = 2,
         device: str = "auto", dataset: str = "cifar10", variants: str | None = None, rounds: int | None = None,
         steps: int | None = None, results_dir: str | Path | None = None,
         data_dir: str | Path | None = None) -> int:
    """The usual training loop against the engine on one device, as ``bench perf`` (prints its table,
    writes ``<results>/perf/``); returns 0."""
    from bench.commands.perf import PerfOptions, run_perf

    return run_perf(PerfOptions(models=models, batch_size=batch_size, epochs=epochs, device=device, dataset=dataset,
                                variants=variants, rounds=rounds, steps=steps, results_dir=_results(results_dir),
                                data_dir=_data(data_dir)))


__all__ = ["FigureImage", "Measurement", "Report", "StudyResult", "claims", "export", "histories", "measure",
           "models", "overrides_of", "perf", "plan", "report", "report_index", "run", "runs", "selection_of",
           "show", "status", "studies_with_results"]
