"""A study's runs and history tables as files: ``runs.parquet`` and ``history.parquet`` (for pandas,
DuckDB, Polars) and ``runs.csv`` (for a spreadsheet), written beside the report and by ``bench export
parquet``. The tables are :meth:`bench.results.StudyResults.runs_frame` and ``history_frame``: the
same runs (the latest ``bench run``'s) and columns as the report and :mod:`bench.api` read.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from bench.files import write_atomic
from bench.results import StudyResults

RUNS_FILE = "runs.parquet"
HISTORY_FILE = "history.parquet"
RUNS_CSV_FILE = "runs.csv"  # the runs table again, for a spreadsheet or a reader without Parquet


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


def write_parquet(res: StudyResults) -> tuple[Path, Path]:
    """Write ``<study>/runs.parquet`` and ``<study>/history.parquet`` (atomically); returns both paths."""
    out_dir = res.root / res.study
    paths = []
    for name, df in ((RUNS_FILE, res.runs_frame()), (HISTORY_FILE, res.history_frame())):
        buf = io.BytesIO()
        _arrow_safe(df).to_parquet(buf, index=False, engine="pyarrow")
        path = out_dir / name
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def write_runs_csv(res: StudyResults) -> Path:
    """Write ``<study>/runs.csv`` (atomically): one row per run with its metrics, the runs table of
    ``runs.parquet`` as text; returns its path."""
    path = res.root / res.study / RUNS_CSV_FILE
    write_atomic(path, res.runs_frame().to_csv(index=False))
    return path


__all__ = ["HISTORY_FILE", "RUNS_CSV_FILE", "RUNS_FILE", "write_parquet", "write_runs_csv"]
