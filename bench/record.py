"""The types that cross the layers: a :class:`Cell` goes in, a :class:`RunRecord` comes out.

A ``Cell`` is one run of a study (its arm labels, tags, seed and full :class:`~bench.config.RunConfig`);
executors hand it, serialised with :meth:`Cell.to_dict`, to workers, which never re-expand the study.
A ``RunRecord`` is everything a finished run produced: the cell, the outcome, where and when it ran,
its per-epoch rows (:class:`EpochRow`), its summary metrics, the model's measurements and the
environment. The store writes ``RunRecord.to_dict()`` as ``summary.json`` (with ``schema_version``)
and the epoch rows as ``history.csv``; the report reads runs only through :meth:`RunRecord.to_row`.

Schema versions: 1 is the layout written before records carried a version (no ``schema_version``
key; it still loads, see :meth:`RunRecord.from_dict`); 2 adds the version and keeps ``status``,
``error`` and ``device`` out of ``metrics``, so no flat column is written twice. A record from a
newer version than this code reads is a one-line :class:`RecordError`.

A new per-epoch metric is one :class:`EpochRow` field (unit in the name, declared with
:func:`epoch_metric`, which also says how the run's summary reads it) and one computation in
:meth:`bench.train.engine._Run._epoch`; ``HISTORY_KEYS``, ``history.csv``, the checkpoint, the
summary metrics, ``to_row`` and the report's history frame follow from the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.config import RunConfig
from bench.errors import UserError

SCHEMA_VERSION = 2
STATUSES = ("ok", "diverged", "oom", "failed")
NAN = float("nan")


class RecordError(UserError):
    """A record that this version cannot read (newer schema, missing or foreign fields)."""


def arm_label(arm: Mapping[str, str]) -> str:
    """Arm labels joined with ', '; a bare number gets its axis name (``{'norm': 'bn', 'batch': '2'}``
    -> ``'bn, batch 2'``), since '2' alone says nothing."""
    return ", ".join(f"{axis} {v}" if _is_number(v) else str(v) for axis, v in arm.items())


def _is_number(v: object) -> bool:
    try:
        float(str(v))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Cell:
    """One run of a study: its arm labels, tags, seed and full config."""

    study: str
    profile: str
    arm: dict[str, str]
    tags: dict[str, Any]
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def label(self) -> str:
        """The arm as people name it, without the seed: ``'plain20'``, ``'bn, batch 2'``."""
        return arm_label(self.arm)

    def identity(self) -> dict[str, Any]:
        """What identifies the cell within its study (``cell.json`` without the config)."""
        return {"run_id": self.run_id, "study": self.study, "profile": self.profile, "arm": dict(self.arm),
                "arm_label": self.label, "tags": dict(self.tags), "seed": self.seed,
                "model": self.config.model, "dataset": self.config.dataset}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready cell, config included: what a worker needs to run it (``cell.json``)."""
        return {**self.identity(), "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Cell:
        """Inverse of :meth:`to_dict` (RecordError when the config is missing or no longer valid)."""
        if not isinstance(d.get("config"), Mapping):
            raise RecordError(f"cell {d.get('run_id', '?')} has no config (accepted: a cell.json written by bench run)")
        try:
            cfg = RunConfig.from_dict(dict(d["config"]))
        except UserError as exc:
            raise RecordError(f"cell {d.get('run_id', '?')}: {exc}") from None
        return cls(str(d.get("study", "")), str(d.get("profile", "")), dict(d.get("arm") or {}),
                   dict(d.get("tags") or {}), int(d.get("seed", cfg.seed)), cfg)


# The keys of Cell.identity(), in its order: what study.json lists per cell.
IDENTITY_KEYS = ("run_id", "study", "profile", "arm", "arm_label", "tags", "seed", "model", "dataset")

SUMMARIES = ("final", "steady", "max")


def epoch_metric(summary: str | None = None, key: str | None = None, **kw: Any) -> Any:
    """An :class:`EpochRow` field and how a run's summary reads it (``summary``):

    * ``"final"``: ``final_<name>``, the last epoch's value;
    * ``"steady"``: ``key`` (default the field's name), the median over the epochs after the first;
    * ``"max"``: ``key`` (default the field's name), the largest value recorded;
    * None: the column stays in the history only.

    ``kw`` goes to :func:`dataclasses.field` (``default=NAN`` for a metric added after schema 2: what
    records written before it, and synthetic records that do not simulate it, read as).
    """
    if summary is not None and summary not in SUMMARIES:
        raise ValueError(f"bad summary {summary!r} (accepted: {', '.join(SUMMARIES)}, None)")
    return field(metadata={"summary": summary, "key": key}, **kw)


@dataclass(frozen=True)
class EpochRow:
    """One epoch of a run (accuracies are fractions; the ``peak_*_bytes`` are None on a CPU).

    ``peak_allocated_bytes`` / ``peak_reserved_bytes``: the CUDA caching allocator's peaks during the
    epoch's training steps only (reset after the previous evaluation and a release of cached blocks;
    evaluation and capture are not in them). A graphed epoch's activations live in its graph's pool,
    allocated at capture: they count in reserved, not in allocated.

    ``epoch_train_samples_per_s`` is the run's own throughput over the epoch, data included; the
    step micro-benchmark's ``train_samples_per_s`` is a measurement, not a history column. Each
    field says how the run's summary reads it (:func:`epoch_metric`).
    """

    epoch: int
    iteration: int
    lr: float
    train_loss: float = epoch_metric("final")
    train_acc: float = epoch_metric("final")
    val_loss: float = epoch_metric("final")
    val_acc: float = epoch_metric("final")
    test_loss: float = epoch_metric("final")
    test_acc: float = epoch_metric("final")
    epoch_time_s: float = epoch_metric("steady", "median_epoch_time_s")
    eval_time_s: float = epoch_metric()
    epoch_train_samples_per_s: float = epoch_metric("steady")
    elapsed_train_time_s: float = epoch_metric()
    peak_allocated_bytes: int | None = epoch_metric("max")
    # reserved = the caching allocator's pool, CUDA graphs' private pools included: the one memory
    # figure that compares graphed with eager epochs (docs/perf.md); None on a CPU and in older records
    peak_reserved_bytes: int | None = epoch_metric("max", default=None)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRow:
        """A row read back (history.csv, a checkpoint): renamed columns of old records are mapped,
        absent ones are NaN (None for the integer and memory columns), unknown ones left out."""
        d = dict(d)
        for old, new in RENAMED_HISTORY.items():
            if old in d and new not in d:
                d[new] = d.pop(old)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                kw[f.name] = None if f.name in _NULLABLE else NAN
                continue
            v = d[f.name]
            if f.name in _NULLABLE and isinstance(v, float):
                v = None if math.isnan(v) else int(v)  # pandas reads integer columns with gaps as floats
            kw[f.name] = v
        return cls(**kw)


HISTORY_KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EpochRow))
RENAMED_HISTORY = {"train_samples_per_s": "epoch_train_samples_per_s"}  # schema 1 -> 2
_NULLABLE = ("epoch", "iteration", "peak_allocated_bytes", "peak_reserved_bytes")


@dataclass(frozen=True)
class Outcome:
    """How the run ended: ``status`` in :data:`STATUSES`, ``error`` one line (None when ok)."""

    status: str
    error: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where and when the run ran. ``device`` is the one the trainer used (e.g. ``cuda:0``)."""

    started_at: float
    finished_at: float
    wall_time_s: float
    host: str
    device: str
    shared_gpu: bool = False
    worker: str | None = None
    slurm_job_id: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """A finished run. ``metrics``: the trainer's summary (units in the names, see
    :func:`bench.train.summary.summarise`); ``measurements``: params, MACs, speed and memory of the
    model (:func:`bench.measure.measure_model`); ``environment``: :func:`bench.measure.environment`."""

    cell: Cell
    outcome: Outcome
    placement: Placement
    metrics: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    history: tuple[EpochRow, ...] = ()
    schema_version: int = SCHEMA_VERSION
    run_id: str = ""  # as recorded; equals cell.run_id unless the config schema has moved since

    def __post_init__(self) -> None:
        if self.outcome.status not in STATUSES:
            raise RecordError(f"bad run status {self.outcome.status!r} (accepted: {', '.join(STATUSES)})")
        if not self.run_id:
            object.__setattr__(self, "run_id", self.cell.run_id)
        clash = sorted(set(self.metrics) & set(self.measurements))
        if clash:  # a flat row would silently keep one of them
            raise RecordError(f"run {self.run_id}: {', '.join(clash)} both in metrics and measurements")

    @property
    def status(self) -> str:
        return self.outcome.status

    def to_dict(self) -> dict[str, Any]:
        """The ``summary.json`` layout (history apart, in ``history.csv``)."""
        return {"schema_version": self.schema_version, **self.cell.identity(), "run_id": self.run_id,
                "status": self.outcome.status, "error": self.outcome.error, "complete": True,
                **dataclasses.asdict(self.placement), "config": self.cell.config.to_dict(),
                "environment": dict(self.environment), "metrics": dict(self.metrics),
                "measurements": dict(self.measurements)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()) -> RunRecord:
        """Read a ``summary.json`` of schema 1 or 2 (and its history rows, when given)."""
        if not isinstance(d, Mapping):
            raise RecordError(f"a run record is a JSON object, not {type(d).__name__}")
        version = d.get("schema_version", 1)
        rid = str(d.get("run_id", "?"))
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise RecordError(f"run {rid}: record schema {version!r} is not readable by this version "
                              f"(accepted: 1..{SCHEMA_VERSION}; update bench to read it)")
        metrics = dict(d.get("metrics") or {})
        # schema 1 repeated these in metrics (the trainer's device there: cuda:0 where the top said cuda)
        metrics.pop("status", None)
        error = metrics.pop("error", None)
        device = metrics.pop("device", None) or d.get("device") or "?"
        placement = Placement(
            started_at=float(d.get("started_at") or NAN), finished_at=float(d.get("finished_at") or NAN),
            wall_time_s=float(d.get("wall_time_s") or NAN), host=str(d.get("host") or "?"), device=str(device),
            shared_gpu=bool(d.get("shared_gpu", False)), worker=d.get("worker"), slurm_job_id=d.get("slurm_job_id"))
        return cls(cell=Cell.from_dict(d), outcome=Outcome(str(d.get("status", "failed")), d.get("error", error)),
                   placement=placement, metrics=metrics, measurements=dict(d.get("measurements") or {}),
                   environment=dict(d.get("environment") or {}),
                   history=tuple(EpochRow.from_dict(r) for r in history), schema_version=version, run_id=rid)

    def to_row(self) -> dict[str, Any]:
        """One flat row: ids and placement, ``arm_<axis>``, ``tag_<name>``, ``cfg_<field>``,
        ``env_<key>``, then metrics and measurements as they are (their names carry units), and the
        error percentages derived from the accuracies. Raises RecordError on a name given twice."""
        row = identity_row(self.cell.identity())
        row.update(run_id=self.run_id, status=self.outcome.status, error=self.outcome.error, complete=True,
                   schema_version=self.schema_version, **dataclasses.asdict(self.placement))
        row.update(config_columns(self.cell.config.to_dict()))
        row.update({f"env_{k}": v for k, v in self.environment.items()})
        for part in (self.metrics, self.measurements):
            for k, v in part.items():
                if k == "class_names":
                    continue  # a list, read from the record by the detail section
                if k in row:
                    raise RecordError(f"run {self.run_id}: column {k!r} would be written twice")
                row[k] = v
        for k in ("test_acc", "val_acc", "train_acc"):
            for prefix in ("final_", "best_"):
                key = f"{prefix}{k}"
                if isinstance(row.get(key), (int, float)):
                    row[f"{prefix}{k.replace('_acc', '_error')}_pct"] = 100.0 * (1.0 - float(row[key]))
        if isinstance(row.get("test_acc_at_best_val"), (int, float)):
            row["test_error_at_best_val_pct"] = 100.0 * (1.0 - float(row["test_acc_at_best_val"]))
        return row


def identity_row(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The flat identity columns of a cell's identity (:meth:`Cell.identity`, a ``cell.json`` or a
    summary of any version; keys not in :data:`IDENTITY_KEYS` are left out): axis values as
    ``arm_<axis>``, tags as ``tag_<name>``. The one flattening of a cell every table uses."""
    row = {k: cell[k] for k in IDENTITY_KEYS if k in cell and k not in ("arm", "tags")}
    row.update({f"arm_{k}": v for k, v in (cell.get("arm") or {}).items()})
    row.update({f"tag_{k}": v for k, v in (cell.get("tags") or {}).items()})
    return row


def config_columns(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config as ``cfg_<field>`` columns; nested values (model arguments) as canonical JSON text."""
    return {f"cfg_{k}": json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v
            for k, v in config.items()}
