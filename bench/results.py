"""A study's results as every reader sees them: the one place that decides which runs belong to the
study's latest ``bench run``, reads each one's record, state and history, and flattens them into the
runs and history tables.

The report (:func:`bench.report.data.load`), ``bench status``, the Parquet and CSV tables, the
tracker exports and :mod:`bench.api` all read through :func:`read_results`; :func:`require_results`
is the one "does this study have results" rule of every command that reads them.

The latest run's cells are those ``study.json`` lists (``cells``, then any ``run_ids`` without a cell
entry); run folders of another profile or other overrides are left out (counted as ``excluded``): they
share arm labels and must not be averaged in. A ``study.json`` written before it listed its run ids
stands for every run folder.

Tables (units in the column names, as everywhere in the records):

* runs: one row per run with a folder: ``study``, ``run_id``, ``arm`` (its label), ``seed``,
  ``state``, then :meth:`RunRecord.to_row` (``arm_<axis>``, ``tag_<name>``, ``cfg_<field>``,
  ``env_<key>``, metrics and measurements); an unfinished run has its identity, ``status`` None and
  its config;
* history: one row per run and epoch: ``study``, ``run_id``, ``arm``, ``seed``, ``state``, the
  epoch's columns (``epoch``, ``lr``, ``train_loss``, ``epoch_time_s``, ...), ``arm_*`` and ``tag_*``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.files import read_json
from bench.record import IDENTITY_KEYS, RecordError, RunRecord, config_columns, identity_row
from bench.store import ResultsStore, recorded_for

__all__ = ["Run", "StudyResults", "has_results", "read_results", "require_results", "studies_with_results"]


def has_results(results_dir: str | Path, study: str) -> bool:
    """True when ``study`` has results under ``results_dir``: its ``study.json``, which every
    ``bench run`` writes before its first cell (damaged or not: reading it names the damage)."""
    return (ResultsStore(results_dir).study_dir(study) / "study.json").is_file()


def studies_with_results(results_dir: str | Path) -> list[str]:
    """The studies that have results under ``results_dir`` (:func:`has_results`), sorted."""
    root = Path(results_dir)
    return sorted(p.name for p in root.iterdir() if has_results(root, p.name)) if root.is_dir() else []


def require_results(study: str, results_dir: str | Path) -> None:
    """A UserError (one line) unless ``study`` is registered and has results under ``results_dir``."""
    from bench.study import get_study

    get_study(study)  # an unknown name: close matches
    if not has_results(results_dir, study):
        raise UserError(f"no results of study {study!r} under {results_dir}/ "
                        f"(accepted: a study with records; `bench run {study}` makes them)")


@dataclass(frozen=True, eq=False)
class Run:
    """One cell of a study as recorded: its identity, state, record and history, read when asked."""

    store: ResultsStore = field(repr=False, compare=False)
    study: str
    run_id: str
    listed: Mapping[str, Any] = field(default_factory=dict, repr=False)  # study.json's entry, if any
    # the latest run's time-to-accuracy thresholds (study.json; None: as the run recorded them)
    acc_thresholds: tuple[float, ...] | None = None

    @property
    def path(self) -> Path:
        return self.store.run_dir(self.study, self.run_id)

    @cached_property
    def summary(self) -> dict[str, Any] | None:
        """The finished run's summary.json (of any schema, a newer one included); None until then."""
        return self.store.summary(self.study, self.run_id)

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def state(self) -> str:
        """ok | diverged | oom | failed | running | stale | pending | damaged (:meth:`ResultsStore.state`)."""
        s = self.summary
        return str(s.get("status", "failed")) if s is not None else self.store.state(self.study, self.run_id)

    @cached_property
    def record(self) -> RunRecord | None:
        """The finished run's :class:`RunRecord` (None until it finishes); RecordError naming the file
        for a record this version cannot read."""
        return self.store.record_from_summary(self.study, self.run_id, self.summary)  # read once, above

    @cached_property
    def own(self) -> dict[str, Any] | None:
        """The identity the run folder records (the record's, else cell.json's); None when it has
        none that can be read (a damaged cell.json is named once on stderr) or one of another run."""
        cell = self.store.read_cell(self.study, self.run_id)  # read even when finished: damage is said
        if self.finished:
            try:
                rec = self.record
            except RecordError:
                rec = None  # a newer schema: its own fields as written
            if rec is not None:
                return {**rec.cell.identity(), "run_id": rec.run_id}
        if not isinstance(cell, dict) or cell.get("run_id", self.run_id) != self.run_id:
            return None
        return {k: cell[k] for k in IDENTITY_KEYS if k in cell}

    @property
    def present(self) -> bool:
        """True when the run has a folder with its identity (started or finished)."""
        return self.own is not None

    @cached_property
    def cell(self) -> dict[str, Any]:
        """The cell's identity (:data:`bench.record.IDENTITY_KEYS`): the folder's over study.json's."""
        return {"run_id": self.run_id, **self.listed, **(self.own or {})}

    @cached_property
    def config(self) -> dict[str, Any] | None:
        """The run's config: its record's, else config.json's; None when neither can be read."""
        if self.finished:
            rec = self.record
            return rec.cell.config.to_dict() if rec is not None else None
        try:
            cfg = read_json(self.path / "config.json")
        except (FileNotFoundError, NotADirectoryError, ValueError, OSError):
            return None
        return cfg if isinstance(cfg, dict) else None

    @cached_property
    def history(self) -> pd.DataFrame:
        """One row per recorded epoch (:meth:`ResultsStore.read_history`; empty when none or damaged)."""
        df = self.store.read_history(self.study, self.run_id)
        return pd.DataFrame() if df is None else df

    def row(self) -> dict[str, Any]:
        """The run's row of the runs table."""
        rec = self.record
        if rec is not None:
            row = rec.to_row()
            # recomputed only where the latest run asks for other thresholds than the run was trained
            # with: the summary's own columns are those, and reading history.csv per run is the cost
            if self.acc_thresholds is not None and self.acc_thresholds != tuple(rec.cell.config.acc_thresholds):
                row = self._time_to_accuracy(row)
        else:
            row = {**identity_row(self.cell), "status": None, **config_columns(self.config or {})}
        return {"study": self.study, "run_id": self.run_id, "arm": row.pop("arm_label", None),
                "seed": row.pop("seed", None), "state": self.state,
                **{k: v for k, v in row.items() if k not in ("study", "run_id")}}

    def _time_to_accuracy(self, row: dict[str, Any]) -> dict[str, Any]:
        """``row`` with its time-to-accuracy columns for the latest run's thresholds, from the run's
        history: a report-time setting (``config.REPORT_ONLY``), so a changed one retrains nothing."""
        from bench.train.summary import time_to_accuracy

        if self.history.empty or not {"val_acc", "elapsed_train_time_s", "epoch"} <= set(self.history.columns):
            return row  # nothing to recompute from: as recorded
        kept = {k: v for k, v in row.items() if not k.startswith(("time_to_val_acc_", "epochs_to_val_acc_"))}
        return {**kept, **time_to_accuracy(self.history.to_dict("records"), tuple(self.acc_thresholds or ()))}

    def history_table(self) -> pd.DataFrame:
        """The run's rows of the history table (empty when it has recorded no epoch)."""
        if self.history.empty:
            return self.history
        df = self.history.copy()
        ident = {"study": self.study, "run_id": self.run_id, "arm": self.cell.get("arm_label", ""),
                 "seed": self.cell.get("seed"), "state": self.state}
        for i, (k, v) in enumerate(ident.items()):
            df.insert(i, k, v)
        for k, v in identity_row(self.cell).items():
            if k.startswith(("arm_", "tag_")) and k != "arm_label":
                df[k] = v
        return df


@dataclass(frozen=True, eq=False)
class StudyResults:
    """The runs of one study's latest ``bench run`` (or of the cells asked for), in study.json's order."""

    study: str
    root: Path
    desc: dict[str, Any]  # study.json ({} when there is none)
    runs: tuple[Run, ...]
    excluded: tuple[str, ...] = ()  # run folders of another profile or overrides

    @property
    def present(self) -> list[Run]:
        """The runs that have a folder (started or finished)."""
        return [r for r in self.runs if r.present]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.present and r.finished]

    def records(self) -> dict[str, RunRecord]:
        """The finished runs' records by run id."""
        return {r.run_id: r.record for r in self.finished if r.record is not None}

    def lists_cells_for(self, profile: str | None, overrides: Mapping[str, Any] | None) -> bool:
        """True when study.json lists the cells of a run with this profile and these overrides."""
        return (any(isinstance(c, dict) and c.get("run_id") for c in self.desc.get("cells") or [])
                and recorded_for(self.desc, profile, overrides))

    def runs_frame(self, finished_only: bool = False) -> pd.DataFrame:
        """The runs table: one row per run with a folder (finished ones only, if asked)."""
        return pd.DataFrame([r.row() for r in (self.finished if finished_only else self.present)])

    def history_frame(self) -> pd.DataFrame:
        """The history table: one row per run and recorded epoch."""
        frames = [df for df in (r.history_table() for r in self.present) if not df.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _latest_ids(desc: Mapping[str, Any], folders: Sequence[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(run ids of the latest run, in order; study.json's cell entries by run id). Listed cells first,
    then listed run ids without a cell entry (those with a folder sorted, then the rest as listed);
    every folder when study.json lists nothing (written before it did)."""
    entries = {str(c["run_id"]): dict(c) for c in desc.get("cells") or [] if isinstance(c, dict) and c.get("run_id")}
    run_ids = [str(r) for r in desc.get("run_ids") or []]
    if not entries and not run_ids:
        return list(folders), {}
    rest = [r for r in dict.fromkeys(run_ids) if r not in entries]
    have = set(folders)
    return list(entries) + sorted(r for r in rest if r in have) + [r for r in rest if r not in have], entries


def read_results(results_dir: str | Path, study: str,
                 cells: Sequence[Mapping[str, Any]] | None = None) -> StudyResults:
    """The runs of ``study``'s latest ``bench run`` under ``results_dir``, from its study.json (a
    damaged one is a UserError naming it); ``cells``: these cell identities instead (``bench status``
    of another profile)."""
    store = ResultsStore(results_dir)
    desc = store.read_study(study) or {}
    folders = [rd.name for rd in store.run_dirs(study)]
    if cells is not None:
        entries = {str(c["run_id"]): dict(c) for c in cells}
        ids: list[str] = list(entries)
    else:
        ids, entries = _latest_ids(desc, folders)
    chosen = set(ids)
    excluded = tuple(f for f in folders if f not in chosen and cells is None and any(
        (store.run_dir(study, f) / name).is_file() for name in ("summary.json", "cell.json")))
    raw = desc.get("acc_thresholds")
    thresholds = (tuple(float(t) for t in raw) if isinstance(raw, list)
                  and all(isinstance(t, (int, float)) and 0 < t <= 1 for t in raw) else None)
    runs = tuple(Run(store, study, rid, entries.get(rid, {}), thresholds) for rid in ids)
    return StudyResults(study, Path(results_dir), desc, runs, excluded)
