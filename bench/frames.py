"""A study's records as tidy tables: the one reader behind Parquet, the tracker exports and bench.api.

:func:`read_runs` walks ``results/<study>/runs/`` once and yields a :class:`RunView` per run folder
(identity, config, summary when finished, per-epoch history). Everything that leaves the harness
(Parquet tables, TensorBoard and MLflow exports, the notebook API's DataFrames) goes through it, so
all of them see the same runs with the same columns.

Tables (units in the column names, as everywhere in the records):

* runs: one row per run: ``study``, ``run_id``, ``arm`` (its label), ``seed``, ``state``, axis values (``arm_<axis>``), tags,
  config (``cfg_<field>``), environment (``env_<key>``), metrics and measurements;
* history: one row per run and epoch: ``study``, ``run_id``, ``arm``, ``seed``, ``state`` and the
  epoch's columns (``epoch``, ``lr``, ``train_loss``, ``epoch_time_s``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.files import read_json, write_atomic
from bench.record import RunRecord, identity_row
from bench.store import ResultsStore

RUNS_FILE = "runs.parquet"
HISTORY_FILE = "history.parquet"
RUNS_CSV_FILE = "runs.csv"  # the runs table again, for a spreadsheet or a reader without Parquet


@dataclass(frozen=True)
class RunView:
    """One run folder as read from the store."""

    study: str
    run_id: str
    path: Path
    state: str  # ok | diverged | oom | failed | running | stale | pending
    cell: dict[str, Any]  # run_id, study, profile, arm, arm_label, tags, seed, model, dataset
    config: dict[str, Any]
    summary: dict[str, Any] | None  # None until the run has finished
    history: pd.DataFrame = field(repr=False)  # one row per completed epoch (may be empty)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    def row(self) -> dict[str, Any]:
        """The run's flat row (summary flattened; for an unfinished run its identity and state)."""
        if self.summary is not None:
            row = RunRecord.from_dict(self.summary).to_row()
        else:
            row = {**identity_row(self.cell), "status": None}
            row.update({f"cfg_{k}": json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
                        for k, v in self.config.items()})
        return {"study": self.study, "run_id": self.run_id, "arm": row.pop("arm_label", None),
                "seed": row.pop("seed", None), "state": self.state,
                **{k: v for k, v in row.items() if k not in ("study", "run_id")}}


def _read_json_or(path: Path, default: Any) -> Any:
    try:
        value = read_json(path)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


def read_runs(results_dir: str | Path, study: str, *, finished_only: bool = False,
              listed_only: bool = True) -> Iterator[RunView]:
    """Every run folder of ``study`` under ``results_dir`` (sorted by run id).

    ``listed_only``: only the cells of the latest ``bench run`` (the run ids in ``study.json``), as
    the report counts them; records of another profile or other overrides are left out.
    """
    store = ResultsStore(results_dir)
    desc = store.read_study(study) or {}
    listed = set(desc.get("run_ids") or []) if listed_only else set()
    for rd in store.run_dirs(study):
        if listed and rd.name not in listed:
            continue
        summary = store.summary(study, rd.name)
        if finished_only and summary is None:
            continue
        cell = store.read_cell(study, rd.name)  # a damaged one is named on stderr
        if cell is None:
            continue  # a folder without any readable record yet
        cell = {k: cell.get(k) for k in ("run_id", "study", "profile", "arm", "arm_label", "tags", "seed", "model",
                                         "dataset")} if cell is summary else cell
        config = (summary or {}).get("config") or _read_json_or(rd / "config.json", {})
        history = store.read_history(study, rd.name)
        if history is None:
            history = pd.DataFrame()
        yield RunView(study=study, run_id=rd.name, path=rd, state=store.state(study, rd.name), cell=cell,
                      config=config, summary=summary, history=history)


def runs_frame(views: list[RunView] | Iterator[RunView]) -> pd.DataFrame:
    """The runs table: one row per run."""
    return pd.DataFrame([v.row() for v in views])


def history_frame(views: list[RunView] | Iterator[RunView]) -> pd.DataFrame:
    """The history table: one row per run and epoch."""
    frames = []
    for v in views:
        if v.history.empty:
            continue
        df = v.history.copy()
        ident = {"study": v.study, "run_id": v.run_id, "arm": v.cell.get("arm_label", ""),
                 "seed": v.cell.get("seed"), "state": v.state}
        for i, (k, val) in enumerate(ident.items()):
            df.insert(i, k, val)
        for k, val in (v.cell.get("arm") or {}).items():
            df[f"arm_{k}"] = val
        for k, val in (v.cell.get("tags") or {}).items():
            df[f"tag_{k}"] = val
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def study_tables(results_dir: str | Path, study: str, **kw: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, history) of one study, read once."""
    views = list(read_runs(results_dir, study, **kw))
    return runs_frame(views), history_frame(views)


def _arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns Parquet can hold: an object column mixing types (e.g. numbers and strings, or
    lists) becomes JSON text, so one odd record cannot stop the table from being written."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype != object:
            continue
        kinds = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and v != v)}
        if len(kinds) > 1 or kinds & {list, dict, tuple}:
            out[col] = [None if v is None or (isinstance(v, float) and v != v) else
                        v if isinstance(v, str) else json.dumps(v, default=str) for v in out[col]]
    return out


def write_parquet(results_dir: str | Path, study: str) -> tuple[Path, Path]:
    """Write ``<study>/runs.parquet`` and ``<study>/history.parquet`` (atomically); returns both paths."""
    import io

    runs, history = study_tables(results_dir, study)
    out_dir = Path(results_dir) / study
    paths = []
    for name, df in ((RUNS_FILE, runs), (HISTORY_FILE, history)):
        buf = io.BytesIO()
        _arrow_safe(df).to_parquet(buf, index=False, engine="pyarrow")
        path = out_dir / name
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def write_runs_csv(results_dir: str | Path, study: str) -> Path:
    """Write ``<study>/runs.csv`` (atomically): one row per run with its metrics, the runs table of
    ``runs.parquet`` as text; returns its path."""
    runs, _ = study_tables(results_dir, study)
    path = Path(results_dir) / study / RUNS_CSV_FILE
    write_atomic(path, runs.to_csv(index=False))
    return path


__all__ = ["HISTORY_FILE", "RUNS_CSV_FILE", "RUNS_FILE", "RunView", "history_frame", "read_runs", "runs_frame", "study_tables",
           "write_parquet", "write_runs_csv"]
