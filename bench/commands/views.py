"""What :mod:`bench.api` returns for a notebook to show: a built report (its verdicts, tables and
figures), one figure, one model's measurements; each shows itself inline in Jupyter
(``_repr_html_``, figures as ``_repr_png_``)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.errors import UserError

if TYPE_CHECKING:  # the report (and matplotlib) load when a report is built, not at import
    from bench.report import ReportPage
    from bench.report.plotting import Figure
    from bench.report.verdicts import Verdicts

# What the inline views need of the report page's style, scoped so that it leaves the notebook alone.
STYLE = """<style>
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
    finished_runs: int = 0  # runs with a record; 0: the page shows the cells and their progress only

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
        parts = [STYLE, '<div class="bench-report">',
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

    def text(self) -> str:
        """The table ``bench measure`` prints."""
        from bench.commands.zoo import measurement_text

        return measurement_text(self.values, self.layers)

    def frame(self) -> pd.DataFrame:
        """Two columns, ``quantity`` and ``value`` (the environment left out, as on the terminal)."""
        return pd.DataFrame([(k, v) for k, v in self.values.items() if k != "environment"],
                            columns=["quantity", "value"])

    def _repr_html_(self) -> str:
        from bench.commands.zoo import fmt_value

        shown = self.frame().assign(
            value=lambda df: [fmt_value(k, v) for k, v in zip(df["quantity"], df["value"], strict=True)])
        out = shown.to_html(index=False)
        if self.layers is not None:
            out += "<h4>Layers</h4>" + self.layers.to_html(index=False)
        return f'<div class="bench-report"><h3>{html.escape(self.model)}</h3>{out}</div>'


__all__ = ["STYLE", "FigureImage", "Measurement", "Report"]
