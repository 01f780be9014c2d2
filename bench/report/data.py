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
from bench.files import read_json
from bench.record import RunRecord
from bench.report.palette import Palette
from bench.store import ResultsStore

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
    cells: pd.DataFrame  # every expected or present cell: run_id, arm_label, seed, state, error, arm_*, tag_*
    runs: pd.DataFrame  # finished runs (any status), flattened, plus the explicit columns below
    history: pd.DataFrame  # all epochs, with a 'state' column from ``cells``
    records: dict[str, RunRecord]  # finished runs by run id
    palette: Palette
    published: list[dict[str, Any]] = field(default_factory=list)
    excluded: int = 0  # records under runs/ that belong to another profile or --set overrides

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


def _expected_cells(desc: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells the last ``bench run`` meant to run, as recorded in study.json ([] for a study.json
    written before it listed them: such a report shows only the cells that have a folder)."""
    return [dict(c) for c in desc.get("cells") or [] if isinstance(c, dict) and c.get("run_id")]


def _cell_row(rec: dict[str, Any], state: str, error: Any) -> dict[str, Any]:
    row = {"run_id": rec.get("run_id"), "arm_label": rec.get("arm_label", "?"), "seed": rec.get("seed"),
           "model": rec.get("model"), "state": state, "error": error}
    for k, v in (rec.get("arm") or {}).items():
        row[f"arm_{k}"] = v
    for k, v in (rec.get("tags") or {}).items():
        row[f"tag_{k}"] = v
    return row


def load(study: str, results_dir: str | Path) -> ReportData:
    """Read a study's records from ``results_dir``: study.json, the run records, cells and histories."""
    store = ResultsStore(results_dir)
    desc = store.read_study(study)
    if desc is None:
        desc = {"name": study, "question": "", "notes": "", "axes": {}, "published": [], "figures": []}
    records: dict[str, RunRecord] = {}
    present: dict[str, dict[str, Any]] = {}
    for rd in store.run_dirs(study):
        r = store.read_record(study, rd.name)
        if r is not None:
            records[rd.name] = r
            present[rd.name] = r.cell.identity()
        elif (rd / "cell.json").exists():
            cell = store.read_cell(study, rd.name)  # a damaged one is named once and left out
            if isinstance(cell, dict) and cell.get("run_id", rd.name) == rd.name:
                present[rd.name] = cell
    # study.json lists the cells of the latest `bench run` (profile + overrides); records of earlier
    # runs with another profile share arm labels and must not be averaged in.
    listed = set(desc.get("run_ids") or [])
    excluded = sorted(set(present) - listed) if listed else []
    for rid in excluded:
        present.pop(rid)
        records.pop(rid, None)
    profile = desc.get("profile") or next((s.get("profile") for s in present.values() if s.get("profile")), None)
    expected = _expected_cells(desc)
    order = [c["run_id"] for c in expected] + sorted(set(present) - {c["run_id"] for c in expected})
    by_id = {c["run_id"]: c for c in expected}
    rows = []
    for rid in order:
        rec = present.get(rid) or by_id.get(rid) or {"run_id": rid}
        state = store.state(study, rid)
        error = records[rid].outcome.error if rid in records else None
        rows.append(_cell_row({**by_id.get(rid, {}), **rec}, state, error))
    for rid in desc.get("run_ids") or []:  # listed in study.json without a cell entry: still pending
        if rid not in by_id and rid not in present:
            rows.append(_cell_row({"run_id": rid}, store.state(study, rid), None))
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

    runs = pd.DataFrame([r.to_row() for r in records.values()])
    history = store.load_history(study)
    if not history.empty:
        history = history.merge(cells[["run_id", "state"]], on="run_id", how="inner")
    # Tag and axis values get their own colours (depth, norm, optimizer...), fixed for the report.
    tag_cols = {c: cells[c].dropna().unique().tolist() for c in cells.columns
                if c.startswith("tag_") or (c.startswith("arm_") and c != "arm_label")}
    return ReportData(study=study, root=Path(results_dir), desc=desc, profile=profile, axes=axes,
                      arm_order=arm_order, cells=cells, runs=runs, history=history, records=records,
                      palette=Palette(arm_order, tag_cols), published=list(desc.get("published") or []),
                      excluded=len(excluded))


def config_difference(data: ReportData) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(varied keys per arm, fixed keys with values), comparing the configs of all present cells.

    Configs come from the records, else config.json; seeds are left out (they are listed apart).
    """
    configs: dict[str, dict[str, Any]] = {}
    for rid in data.cells["run_id"]:
        r = data.records.get(rid)
        if r is not None:
            configs[rid] = r.cell.config.to_dict()
        elif (data.run_dir(rid) / "config.json").exists():
            try:
                configs[rid] = read_json(data.run_dir(rid) / "config.json")
            except ValueError:
                pass
    if not configs:
        return pd.DataFrame(), {}
    configs = {rid: _flat(c) for rid, c in configs.items()}
    fixed, varied = split_fixed_varied(list(configs.values()))
    label_of = dict(zip(data.cells["run_id"], data.cells["arm_label"]))
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
