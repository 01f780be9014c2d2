"""Python API for notebooks: run a study (or part of it), read its runs and per-epoch histories as
DataFrames, build its report, measure a model.

Each function goes through the same code as its ``bench`` command (options parsed by
:func:`bench.executors.options.parse_run_options`, tables read by :mod:`bench.results`, the page
written by :func:`bench.report.write_report`, measurements by :func:`bench.zoo.measure_one`), so a
notebook and the command line see the same runs, run ids and records. A user mistake raises
:class:`bench.errors.UserError` with the one line the command would print. The objects returned show
themselves inline in Jupyter (``_repr_html_``, figures as ``_repr_png_``).

    from bench import api
    result = api.run("residual-mnist", profile="smoke")   # or only={"model": "mnist_cnn"}, seeds=[0]
    api.runs("residual-mnist")                            # one row per run
    api.report("residual-mnist")                          # verdicts, tables and figures inline
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

import experiments  # noqa: F401 - registers the studies (the top layer brings the registry in, as the CLI does)
from bench.cli import check_results_dir, default_data_dir, default_results_dir, resolve_profile
from bench.errors import UserError
from bench.results import read_results, require_results

if TYPE_CHECKING:  # the report (and matplotlib) load when a report is built, not at import
    from bench.report import ReportPage
    from bench.report.plotting import Figure
    from bench.report.verdicts import Verdicts

# What the inline views need of the report page's style, scoped so that it leaves the notebook alone.
_STYLE = """<style>
.bench-report table.tbl { border-collapse: collapse; font-size: 12px; margin: 4px 0 10px; }
.bench-report table.tbl th, .bench-report table.tbl td { border: 1px solid #ddd; padding: 2px 6px;
  text-align: left; vertical-align: top; }
.bench-report table.tbl th { background: #f3f4f6; }
.bench-report .ci { color: #666; font-size: 11px; }
.bench-report td.verdict { font-weight: 600; white-space: nowrap; }
.bench-report td.verdict.reproduced { background: #e6f4ea; }
.bench-report td.verdict.contradicted { background: #fde7e9; }
.bench-report td.verdict.inconclusive { background: #fff4ce; } .bench-report td.verdict.not-tested { background: #eee; }
.bench-report img { max-width: 100%; }
</style>"""


def _text_items(what: str, value: Mapping[str, Any] | Sequence[str] | str | None) -> list[str]:
    """``{"model": ["a", "b"], "epochs": 1}`` or ``["model=a"]`` -> the command line's ``key=value`` items."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        items = []
        for key, v in value.items():
            for one in (v if isinstance(v, (list, tuple, set)) and what == "only" else [v]):
                items.append(f"{key}={one if isinstance(one, str) else json.dumps(one)}")
        return items
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{what} must be a mapping or a list of 'key=value' strings, not {type(value).__name__}")


def _seeds_text(seeds: int | Sequence[int] | str | None) -> str | None:
    if seeds is None or isinstance(seeds, str):
        return seeds
    return str(seeds) if isinstance(seeds, int) else ",".join(str(s) for s in seeds)


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run` did: the study, the profile it ran, its cells by state, where the records are."""

    study: str
    profile: str
    results_dir: Path
    counts: dict[str, int] | None  # by state over the profile's cells; None once submitted to Slurm
    selection: str = "all cells"

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


@dataclass(frozen=True)
class FigureImage:
    """One report figure: shown as a PNG in Jupyter, or its note when it was not drawn."""

    kind: str
    title: str
    png: bytes | None
    note: str = ""

    def _repr_png_(self) -> bytes | None:
        return self.png

    def __repr__(self) -> str:
        return f"<figure {self.kind}: {self.title}" + (f" ({self.note})" if self.note else "") + ">"


@dataclass(frozen=True)
class Report:
    """A built report: ``path`` (the self-contained HTML page), the verdicts and the tables as
    DataFrames; in Jupyter it shows the verdict table, the results and cost tables and the figures."""

    study: str
    path: Path
    verdicts: Verdicts = field(repr=False)
    page: ReportPage = field(repr=False)

    @property
    def headline(self) -> str:
        """'2 of 5 claims reproduced' and the like."""
        return self.verdicts.headline

    @property
    def claims(self) -> pd.DataFrame:
        """The verdict table: one row per claim (as ``bench claims`` and claims.csv)."""
        return self.verdicts.frame()

    def table(self, name: str = "results") -> pd.DataFrame:
        """A report table's numbers (as its CSV): results, cost, failures, cells[, selection]."""
        if name not in self.page.tables:
            raise UserError(f"unknown report table {name!r} (accepted: {', '.join(self.page.tables)})")
        return self.page.tables[name].csv

    @property
    def figures(self) -> list[FigureImage]:
        """Every figure the study declares, drawn (or with the note saying why not)."""
        return [_image(f) for f in self.page.figures]

    def figure(self, kind: str | None = None) -> FigureImage:
        """The figure of that kind (default: the first one drawn)."""
        figs = self.figures
        drawn = [f for f in figs if f.png is not None]
        if kind is None and drawn:
            return drawn[0]
        for f in figs:
            if f.kind == kind:
                return f
        raise UserError(f"no figure {kind!r} in the report of {self.study!r} "
                        f"(accepted: {', '.join(f.kind for f in figs) or 'none declared'})")

    def _repr_html_(self) -> str:
        parts = [_STYLE, '<div class="bench-report">',
                 f"<h3>{html.escape(self.study)}: {html.escape(self.headline)}</h3>",
                 f"<p>page: <code>{html.escape(str(self.path))}</code></p>",
                 "<h4>Claims</h4>", self.verdicts.html()]
        for name, title in (("results", "Results per arm"), ("cost", "Cost per arm")):
            if name in self.page.tables:
                parts += [f"<h4>{title}</h4>", self.page.tables[name].html]
        for f in self.page.figures:
            if f.png:
                parts.append(f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{f.png}">'
                             f"<figcaption>{html.escape(f.title)}</figcaption></figure>")
        parts.append("</div>")
        return "".join(parts)


def _image(f: Figure) -> FigureImage:
    return FigureImage(f.kind, f.title, base64.b64decode(f.png) if f.png else None, f.note)


@dataclass(frozen=True)
class Measurement:
    """One model's measurements (``values``, as ``bench measure`` prints them) and its layer table."""

    model: str
    values: dict[str, Any]
    layers: pd.DataFrame | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def frame(self) -> pd.DataFrame:
        """Two columns, ``quantity`` and ``value`` (the environment left out, as on the terminal)."""
        return pd.DataFrame([(k, v) for k, v in self.values.items() if k != "environment"],
                            columns=["quantity", "value"])

    def _repr_html_(self) -> str:
        from bench.zoo import _fmt

        shown = self.frame().assign(value=lambda df: [_fmt(k, v) for k, v in zip(df["quantity"], df["value"])])
        out = shown.to_html(index=False)
        if self.layers is not None:
            out += "<h4>Layers</h4>" + self.layers.to_html(index=False)
        return f'<div class="bench-report"><h3>{html.escape(self.model)}</h3>{out}</div>'


def _results(results_dir: str | Path | None) -> str:
    return str(results_dir) if results_dir is not None else default_results_dir()


def run(study: str, profile: str = "smoke", *, only: Mapping[str, Any] | Sequence[str] | str | None = None,
        seeds: int | Sequence[int] | str | None = None, sets: Mapping[str, Any] | Sequence[str] | None = None,
        device: str = "auto", executor: str = "local", parallel: str | int = "auto", gpus: str | None = None,
        retry_failed: bool = False, results_dir: str | Path | None = None,
        data_dir: str | Path | None = None, until_decided: bool = False, max_seeds: int | None = None,
        spending: str = "obrien-fleming") -> StudyResult:
    """Run a study's pending cells, as ``bench run``: ``only`` (``{"model": "plain20"}``) and ``seeds``
    select part of it, ``sets`` overrides config fields (``{"epochs": 2}``); finished cells are kept.
    ``results_dir``/``data_dir`` default to $BENCH_RESULTS_DIR (./results) and $BENCH_DATA_DIR.
    ``until_decided``/``max_seeds``/``spending``: as ``bench run --until-decided`` (README "How many seeds")."""
    from bench.executors import run_with_executor
    from bench.executors.options import parse_run_options
    from bench.study import get_study

    root = _results(results_dir)
    data = str(data_dir) if data_dir is not None else default_data_dir()
    check_results_dir(root, write=True)
    st = get_study(study)
    chosen = resolve_profile(profile, st, data)
    opts = parse_run_options(results_dir=root, data_dir=data, sets=_text_items("sets", sets),
                             only=_text_items("only", only), seeds=_seeds_text(seeds), executor=executor,
                             device=device, parallel=parallel, gpus=gpus, retry_failed=retry_failed)
    if until_decided:
        from bench.executors.sequential import run_until_decided

        counts = run_until_decided(st, chosen, opts, max_seeds, spending)["counts"]
    else:
        counts = run_with_executor(st, chosen, opts)
    selected = opts.selection.describe() if opts.selection else "all cells"
    return StudyResult(st.name, chosen, Path(root), counts, selected)


def runs(study: str, *, results_dir: str | Path | None = None, finished_only: bool = False) -> pd.DataFrame:
    """One row per run of the study's latest ``bench run``: identity, ``state``, ``arm_*``, tags,
    ``cfg_*``, metrics and measurements (units in the column names); the runs.parquet table."""
    root = _results(results_dir)
    check_results_dir(root, write=False)
    require_results(study, root)
    return read_results(root, study).runs_frame(finished_only)


def histories(study: str, *, results_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per run and epoch (``epoch``, ``lr``, ``train_loss``, ``test_acc``, ``epoch_time_s``,
    ...) with the run's identity and arm columns; the history.parquet table."""
    root = _results(results_dir)
    check_results_dir(root, write=False)
    require_results(study, root)
    return read_results(root, study).history_frame()


def report(study: str, *, results_dir: str | Path | None = None) -> Report:
    """Build the study's report as ``bench report <study>`` does (report.html, its CSV and Parquet
    tables, and results/index.html) and return it for display."""
    from bench.report import build_index, write_report

    root = _results(results_dir)
    check_results_dir(root, write=True)
    require_results(study, root)
    page = write_report(study, root)
    build_index(root)
    return Report(study, page.path, page.verdicts, page)


def measure(model: str, *, batch_size: int = 128, image_size: int | None = None, in_channels: int | None = None,
            num_classes: int = 10, device: str = "auto", precision: str = "fp32",
            model_kwargs: Mapping[str, Any] | None = None, speed: bool = True, layers: bool = False) -> Measurement:
    """Measure one model as ``bench measure`` does: parameters, MACs, and (``speed``) step times and
    peak memory; ``layers`` adds the per-layer table (output shape, params, MACs)."""
    from bench.zoo import measure_one

    values, table = measure_one(model, batch_size=batch_size, image_size=image_size, in_channels=in_channels,
                                num_classes=num_classes, device=device, precision=precision,
                                model_kwargs=dict(model_kwargs or {}), speed=speed, layers=layers)
    return Measurement(model, values, table)


__all__ = ["FigureImage", "Measurement", "Report", "StudyResult", "histories", "measure", "report", "run", "runs"]
