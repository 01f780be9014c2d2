"""Everything a report needs, loaded once: the study's description, every cell with its state,
finished runs as a flat frame, per-epoch history, and the colour mapping shared by all figures."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import split_fixed_varied
from bench.record import RunRecord, identity_row
from bench.report.palette import Palette
from bench.results import StudyResults, read_results

FAILED = ("failed", "diverged", "oom")
# States that produce curves worth drawing (a diverged run would swamp the axis).
CURVE_STATES = ("ok", "running", "stale")


@dataclass
class ReportData:
    """The loaded records of one study."""

    study: str
    root: Path
    desc: dict[str, Any]
    profile: str | None
    axes: list[str]
    arm_order: list[str]
    cells: pd.DataFrame  # every cell of the latest run: identity columns (arm_*, tag_*), state, error
    runs: pd.DataFrame  # finished runs (any status): the runs table (bench.results), 'arm' as 'arm_label'
    history: pd.DataFrame  # all epochs of the runs with a folder: the history table (bench.results)
    records: dict[str, RunRecord]  # finished runs by run id
    palette: Palette
    published: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0  # records under runs/ that belong to another profile or --set overrides
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # of every run with a folder, by run id

    @property
    def ok(self) -> pd.DataFrame:
        """Finished runs with status ok (the only ones that enter statistics)."""
        if self.runs.empty:
            return self.runs
        return self.runs[self.runs["status"] == "ok"]

    def run_dir(self, run_id: str) -> Path:
        return self.root / self.study / "runs" / run_id

    def col(self, df: pd.DataFrame, name: str) -> pd.Series:
        """Numeric column or an all-NaN one when absent (so callers can degrade with one test)."""
        if name in df:
            return pd.to_numeric(df[name], errors="coerce")
        return pd.Series(math.nan, index=df.index, dtype=float)

    def has(self, df: pd.DataFrame, name: str) -> bool:
        """True when the column exists and has at least one finite value."""
        return bool(self.col(df, name).notna().any())

    def published_for(self, arm: dict[str, str]) -> dict[str, Any] | None:
        """The first published entry whose ``match`` patterns all fit the arm's axis labels."""
        for p in self.published:
            match = p.get("match") or {}
            if match and all(k in arm and fnmatch.fnmatchcase(str(arm[k]), str(v)) for k, v in match.items()):
                return p
        return None

    def arm_dict(self, label: str) -> dict[str, str]:
        rows = self.cells[self.cells["arm_label"] == label]
        if rows.empty:
            return {}
        r = rows.iloc[0]
        return {a: str(r[f"arm_{a}"]) for a in self.axes if f"arm_{a}" in r and pd.notna(r[f"arm_{a}"])}

    def arm_tags(self, label: str) -> dict[str, Any]:
        rows = self.cells[self.cells["arm_label"] == label]
        if rows.empty:
            return {}
        r = rows.iloc[0]
        return {c[4:]: r[c] for c in rows.columns if c.startswith("tag_") and pd.notna(r[c])}


def load(study: str, results_dir: str | Path) -> ReportData:
    """Read a study's records from ``results_dir``: the cells of its latest ``bench run`` with their
    states, their records and histories (:func:`bench.results.read_results`)."""
    return from_results(read_results(results_dir, study))


def from_results(res: StudyResults) -> ReportData:
    """The report's view of a study's results, read once."""
    study = res.study
    desc = res.desc or {"name": study, "question": "", "notes": "", "axes": {}, "published": [], "figures": []}
    profile = desc.get("profile") or next((r.cell.get("profile") for r in res.present if r.cell.get("profile")), None)
    rows = []
    for r in res.runs:
        rec = r.record
        rows.append({**identity_row({"arm_label": "?", "seed": None, "model": None, **r.cell}), "state": r.state,
                     "error": rec.outcome.error if rec is not None else None})
    cells = pd.DataFrame(rows)
    if cells.empty:
        cells = pd.DataFrame(columns=["run_id", "arm_label", "seed", "model", "state", "error"])

    axes = list(desc.get("axes") or {})
    prof_axes = ((desc.get("profiles") or {}).get(profile or "", {}) or {}).get("axes")
    if prof_axes:
        axes = list(prof_axes)
    axes = [a for a in axes if f"arm_{a}" in cells] or [c[4:] for c in cells.columns if c.startswith("arm_")
                                                          and c != "arm_label"]
    arm_order = list(dict.fromkeys(cells["arm_label"].tolist()))
    # the runs table's 'arm' is the label: 'arm_label' here, as in the cells
    runs = res.runs_frame(finished_only=True).rename(columns={"arm": "arm_label"})
    # Tag and axis values get their own colours (depth, norm, optimizer...), fixed for the report.
    tag_cols = {c: cells[c].dropna().unique().tolist() for c in cells.columns
                if c.startswith("tag_") or (c.startswith("arm_") and c != "arm_label")}
    return ReportData(study=study, root=res.root, desc=desc, profile=profile, axes=axes,
                      arm_order=arm_order, cells=cells, runs=runs, history=res.history_frame(),
                      records=res.records(), configs={r.run_id: r.config for r in res.present if r.config},
                      palette=Palette(arm_order, tag_cols), published=list(desc.get("published") or []),
                      excluded=len(res.excluded))


def config_difference(data: ReportData) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(varied keys per arm, fixed keys with values), comparing the configs of all present cells.

    Configs are the runs' own (:attr:`bench.results.Run.config`); seeds are left out (they are listed apart).
    """
    configs = dict(data.configs)
    if not configs:
        return pd.DataFrame(), {}
    configs = {rid: _flat(c) for rid, c in configs.items()}
    fixed, varied = split_fixed_varied(list(configs.values()))
    label_of = dict(zip(data.cells["run_id"], data.cells["arm_label"], strict=True))
    rows: dict[str, dict[str, Any]] = {}
    for rid, c in configs.items():
        rows.setdefault(label_of.get(rid, rid), {k: _short(c.get(k)) for k in varied})
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table.reindex([a for a in data.arm_order if a in rows])
    table.index.name = "arm"
    return table, fixed


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (``model_kwargs.norm``), the spelling overrides use."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "—" if v is None else str(v)
