"""The figure kinds a study may declare in ``Study.figures``, and drawing them."""

from __future__ import annotations

import logging
from collections.abc import Callable

from bench.errors import reason
from bench.figure_kinds import attach
from bench.report import fig_cost, fig_curves, fig_results
from bench.report.data import ReportData
from bench.report.plotting import Figure

log = logging.getLogger(__name__)

# one drawing per name of bench.figure_kinds (where a study's figure names are checked)
FIGURES: dict[str, Callable[[ReportData], Figure]] = attach({
    "curves_iter": fig_curves.curves_iter,
    "curves_epoch": fig_curves.curves_epoch,
    "curves_time": fig_curves.curves_time,
    "error_vs_depth": fig_results.error_vs_depth,
    "error_by_arm": fig_results.error_by_arm,
    "error_vs_batch": fig_results.error_vs_batch,
    "lr_grid": fig_results.lr_grid,
    "bn_mode_gap": fig_results.bn_mode_gap,
    "batch_accuracy": fig_results.batch_accuracy,
    "bubble": fig_results.bubble,
    "cost_by_arm": fig_cost.cost_by_arm,
    "epoch_time_by_arm": fig_cost.epoch_time_by_arm,
    "batch_time": fig_cost.batch_time,
})


def render_figures(d: ReportData, kinds: list[str]) -> list[Figure]:
    """Draw each declared kind. Unknown kinds and figures that fail become notes, so one bad
    figure never costs the whole report."""
    out = []
    for kind in kinds:
        fn = FIGURES.get(kind)
        if fn is None:
            out.append(Figure(kind, kind, note=f"unknown figure kind {kind!r}: skipped "
                                               f"(known: {', '.join(sorted(FIGURES))})"))
            continue
        try:
            out.append(fn(d))
        except Exception as exc:
            log.exception("figure %s of study %s failed", kind, d.study)
            out.append(Figure(kind, kind, note=f"figure failed: {reason(exc)}"))
    return out
