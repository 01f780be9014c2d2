"""HTML reports: ``build_report(study, results_dir)`` writes ``results/<study>/report.html`` (one
self-contained page: figures inline as PNG, no network) plus its tables as CSV; ``build_index``
writes ``results/index.html`` linking every study with its progress.

Figure kinds a study may declare in ``Study.figures`` are the keys of
:data:`bench.report.figures.FIGURES`; unknown kinds are skipped with a note on the page.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import html as _html
from bench.report.analysis import main_metric, metric_label
from bench.report.data import config_difference, from_results, load
from bench.report.detail import details
from bench.report.figures import FIGURES, render_figures
from bench.report.plotting import Figure
from bench.report.tables import (Table, applicable_settings, config_tables, cost_table, failures_table,
                                 progress_table, results_table, selection_table)
from bench.report.verdicts import Verdicts, index_entry, published_protocol, verdicts
from bench.files import write_atomic
from bench.measure.env import UNDER_LOAD_OTHER_CPU_PCT
from bench.frames import write_parquet, write_runs_csv
from bench.results import read_results, studies_with_results
from bench.store import ResultsStore

__all__ = ["FIGURES", "ReportPage", "build_index", "build_report", "write_report"]


@dataclass(frozen=True)
class ReportPage:
    """A written report: its page, and the verdicts, tables and figures drawn on it (for the notebook
    API, which shows them inline without drawing them twice)."""

    path: Path
    verdicts: Verdicts
    tables: dict[str, Table] = field(repr=False)  # by name: results, cost, failures, cells[, selection]
    figures: list[Figure] = field(repr=False)


def build_report(study: str, results_dir: str | Path = "results") -> Path:
    """Write ``<results_dir>/<study>/report.html`` and its CSV tables; returns the HTML path."""
    return write_report(study, results_dir).path


def write_report(study: str, results_dir: str | Path = "results") -> ReportPage:
    """:func:`build_report`, returning what the page shows as well as where it is."""
    res = read_results(results_dir, study)
    d = from_results(res)
    out_dir = Path(results_dir) / study
    out_dir.mkdir(parents=True, exist_ok=True)
    varied, fixed = config_difference(d)
    fixed, left_out = applicable_settings(d, fixed)
    varied_html, fixed_html = config_tables(varied, fixed, left_out)
    comparable, not_comparable_why = published_protocol(d)
    claims = verdicts(d)
    claims_csv = claims.frame()
    tables = [results_table(d, comparable), cost_table(d), failures_table(d), progress_table(d)]
    sel = selection_table(d)
    if sel is not None:
        tables.append(sel)
    by_name = {t.name: t for t in tables}
    csv_files = [t.write_csv(out_dir).name for t in tables]
    write_atomic(out_dir / "claims.csv", claims_csv.to_csv(index=False))  # a reader never sees half a table
    csv_files.insert(0, "claims.csv")
    csv_files += [p.name for p in write_parquet(res)]  # the same records, for queries
    csv_files.append(write_runs_csv(res).name)  # one row per run with its metrics, as text
    figures = render_figures(d, list(d.desc.get("figures") or []))
    counts = _html.state_counts(d.cells)
    n_open = counts["running"] + counts["pending"] + counts["damaged"]
    total = int(len(d.cells))
    prof = (d.desc.get("profiles") or {}).get(d.profile or "", {}) or {}
    seeds = sorted({int(s) for s in d.cells["seed"].dropna()}) if "seed" in d.cells else []
    page = _html.render(
        "report.html.j2",
        study=study,
        question=d.desc.get("question", ""),
        notes=d.desc.get("notes", ""),
        profile=d.profile,
        profile_description=prof.get("description", ""),
        overrides=d.desc.get("overrides") or "",
        seeds=", ".join(map(str, seeds)),
        dataset=_html.dataset_line(d),
        environment=_html.environment_rows(d),
        last_update=_html.when(_html.last_update(d)),
        generated=_html.when(time.time()),
        counts=counts,
        varied_html=varied_html,
        fixed_html=fixed_html,
        n_fixed=len(fixed),
        figures=figures,
        main_metric_label=metric_label(main_metric(d)),
        results_html=by_name["results"].html,
        claims_html=claims.html(),
        claims_headline=claims.headline,
        has_published=bool(d.published),
        comparable=comparable,
        not_comparable_why=not_comparable_why,
        selection_html=sel.html if sel is not None else "",
        cost_html=by_name["cost"].html,
        under_load_pct=UNDER_LOAD_OTHER_CPU_PCT,
        details=details(d),
        n_failures=len(by_name["failures"].csv),
        failures_html=by_name["failures"].html,
        n_open=n_open,
        progress_line=(f"{counts['ok'] + counts['failed']} of {total} cells finished"
                       + (f"; {counts['running']} running, {counts['pending']} pending." if n_open else ".")
                       + (f" {d.excluded} older record(s) of another profile or overrides are not included."
                          if d.excluded else "")),
        progress_html=by_name["cells"].html,
        damaged=ResultsStore(results_dir).damaged_files(study),
        csv_files=csv_files,
    )
    path = out_dir / "report.html"
    _write_page(path, page)
    return ReportPage(path, claims, by_name, figures)


def build_index(results_dir: str | Path = "results") -> Path:
    """Write ``<results_dir>/index.html``: every study with its counts, profile and last update."""
    root = Path(results_dir)
    rows = []
    for name in studies_with_results(root):
        d = load(name, root)
        counts = _html.state_counts(d.cells)
        report = root / name / "report.html"
        rows.append({"name": name, "question": d.desc.get("question", ""), "profile": d.profile,
                     **index_entry(d), **counts, "total": int(len(d.cells)),
                     "last_update": _html.when(_html.last_update(d)),
                     "report": f"{name}/report.html" if report.exists() else None, "not_run": None})
    # the registered studies not run here yet, so the page shows what there is to run
    from bench.study import load_studies

    studies = load_studies()
    for st in (studies.get(n) for n in studies.names()):
        if st.name not in {r["name"] for r in rows}:
            rows.append({"name": st.name, "question": st.question, "profile": None, "claims": "not run yet",
                         "claims_counts": {}, "dataset": "—", "seeds": "—", "ok": 0, "failed": 0, "running": 0,
                         "pending": 0, "total": 0, "last_update": "—", "report": None,
                         "not_run": f"make ablation-{st.name}"})
    root.mkdir(parents=True, exist_ok=True)
    path = root / "index.html"
    _write_page(path, _html.render("index.html.j2", rows=rows, root=str(root), generated=_html.when(time.time())))
    return path


def _write_page(path: Path, text: str) -> None:
    """Atomic write, then the permissions of an ordinary file: write_atomic's temp files are 0600,
    and a report on a shared file system is meant to be read by others."""
    write_atomic(path, text)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)
