"""The results store: one folder per run, atomic writes, claims (bench.locks), and pandas views.

Layout::

    <root>/<study>/study.json                  the study's description (question, axes, published)
    <root>/<study>/runs/<run_id>/config.json   the RunConfig
    <root>/<study>/runs/<run_id>/cell.json     arm labels, tags, seed, profile
    <root>/<study>/runs/<run_id>/history.csv   one row per epoch, rewritten after each epoch
    <root>/<study>/runs/<run_id>/summary.json  written once, last: the run is done only when it exists
    <root>/<study>/runs/<run_id>/claim.lock    held while a worker runs the cell (heartbeat = mtime)
    <root>/<study>/measurements/<key>.json     params/MACs/speed/memory per model and input shape

A summary is never overwritten: rerunning a failed cell moves the old record to ``attempts/<n>/``.
"""

from __future__ import annotations

import shutil
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench import locks
from bench.errors import UserError, first_line, reason
from bench.files import TEMP_GLOB, read_json, temp_writer_here, write_atomic, write_json
from bench.locks import STALE_AFTER_S, Lease
from bench.record import RENAMED_HISTORY, SCHEMA_VERSION, Cell, EpochRow, RecordError, RunRecord

__all__ = ["Lease", "ResultsStore", "read_json", "write_atomic", "write_json"]

# Temporary files a kill can leave in a run folder (atomic writes); removed by the next claimant,
# which alone writes there.
TEMP_PATTERNS = (TEMP_GLOB, "checkpoint.pt.tmp*")
RECORD_FILES = ("summary.json", "history.csv", "artifacts.npz", "log.txt")
MAX_HISTORY_BYTES = 64 << 20  # a history.csv is a row per epoch: kilobytes


_warned: set[str] = set()


def warn_once(path: Path, message: str) -> None:
    """One line on stderr about a damaged file, once per file in this process."""
    if str(path) not in _warned:
        _warned.add(str(path))
        print(f"bench: warning: {message}", file=sys.stderr)


def _cell_problem(cell: Any) -> str | None:
    """Why ``cell`` (a cell.json's JSON) is not a cell's identity (not an object, arm or tags not
    objects, a seed that is not a whole number), or None."""
    if not isinstance(cell, dict):
        return "not a JSON object"
    for key in ("arm", "tags"):
        if not isinstance(cell.get(key, {}), dict):
            return f"{key} is not an object"
    seed = cell.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        return "seed is not a whole number"
    return None


def _study_json_problem(desc: Any, study: str) -> str | None:
    """Why ``desc`` is not the study.json of ``study`` (not an object, another study's, a field of
    the wrong shape), or None."""
    if not isinstance(desc, dict):
        return "not a JSON object"
    if "name" in desc and desc["name"] != study:
        return f"the study.json of study {str(desc['name'])[:80]!r}, not of {study!r}"
    for key, kind in (("run_ids", str), ("cells", dict)):
        value = desc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, kind) for v in value):
            return f"{key} is not a list of {'run ids' if kind is str else 'cells'}"
    if not isinstance(desc.get("overrides", {}), dict):
        return "overrides is not an object"
    return None


def recorded_for(desc: Mapping[str, Any], profile: str | None, overrides: Mapping[str, Any] | None) -> bool:
    """True when the study.json ``desc`` was written by a run of this profile with these overrides: its
    cells, extra seeds and sequential design belong to that run only (the one rule for all readers)."""
    return desc.get("profile") == profile and dict(desc.get("overrides") or {}) == dict(overrides or {})


def recorded_extra_seeds(desc: dict[str, Any], profile: str,
                         overrides: dict[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """Seeds added beyond the profile's (by ``bench run --until-decided``) that a study.json ``desc``
    records, when it was written for this profile and these overrides; else {}."""
    if not recorded_for(desc, profile, overrides):
        return {}
    extra = desc.get("extra_seeds")
    return {str(k): tuple(int(s) for s in v) for k, v in extra.items()} if isinstance(extra, dict) else {}


class ResultsStore:
    """Reads and writes ``results/``; safe for several runners on one (shared) file system."""

    def __init__(self, root: str | Path, stale_after_s: float = STALE_AFTER_S) -> None:
        self.root = Path(root)
        self.stale_after_s = stale_after_s

    # -- paths -------------------------------------------------------------------------------
    def study_dir(self, study: str) -> Path:
        return self.root / study

    def run_dir(self, study: str, run_id: str) -> Path:
        return self.root / study / "runs" / run_id

    def run_dirs(self, study: str) -> Iterator[Path]:
        runs = self.study_dir(study) / "runs"
        if runs.is_dir():
            yield from sorted(p for p in runs.iterdir() if p.is_dir())

    def studies(self) -> list[str]:
        """Study folders present under the root."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "runs").is_dir() or (p / "study.json").exists())

    # -- state ---------------------------------------------------------------------------------
    def summary(self, study: str, run_id: str) -> dict[str, Any] | None:
        """The run's summary if it has finished (whatever its status), else None (also when damaged)."""
        s, damage = self._read_summary(study, run_id)
        return s if damage is None and isinstance(s, dict) and s.get("complete") else None

    def damage(self, study: str, run_id: str) -> str | None:
        """Why the run's summary.json cannot be read (truncated, not JSON, not a run record this
        version can read as such), or None if it can or is absent. A record of a newer schema is not
        damaged: reading it is a one-line error that asks for a newer bench."""
        return self._read_summary(study, run_id)[1]

    def _read_summary(self, study: str, run_id: str) -> tuple[Any, str | None]:
        path = self.run_dir(study, run_id) / "summary.json"
        try:
            s = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        except (ValueError, OSError) as exc:
            return None, f"{path} is damaged ({reason(exc)})"
        if not isinstance(s, dict):
            return None, f"{path} is damaged (not a JSON object)"
        version = s.get("schema_version", 1)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            return s, None
        try:
            RunRecord.from_dict(s)
        except RecordError as exc:
            return None, f"{path} is damaged (not a run record: {first_line(exc)})"
        return s, None

    def read_history(self, study: str, run_id: str) -> pd.DataFrame | None:
        """The run's history.csv as a frame (columns of older schemas renamed); None when absent.

        A damaged file (truncated, garbage) is an empty frame and one line on stderr naming it and
        what to do, once per file in a process: curves and exports go on without that run's epochs.
        """
        path = self.run_dir(study, run_id) / "history.csv"
        if not path.is_file():
            return None
        damage = self.history_damage(study, run_id)
        if damage is not None:
            finished = self.summary(study, run_id) is not None
            warn_once(path, f"{damage}; this run's epochs are left out " + (
                "(its summary is intact; move the run folder away to train the cell again)" if finished
                else "until the next `bench run` sets the file aside and resumes the cell"))
            return pd.DataFrame()
        df = pd.read_csv(path)
        return df.rename(columns={o: n for o, n in RENAMED_HISTORY.items() if n not in df})  # schema 1

    def history_rows(self, study: str, run_id: str) -> list[EpochRow]:
        """The run's history.csv as :class:`EpochRow` s (:meth:`read_history`, then
        :meth:`EpochRow.from_dict`: columns of older records read as their defaults); [] when absent
        or damaged."""
        df = self.read_history(study, run_id)
        return [] if df is None else [EpochRow.from_dict(r) for r in df.to_dict("records")]

    def read_cell(self, study: str, run_id: str) -> dict[str, Any] | None:
        """The run's cell.json (arm labels, tags, seed), else the same fields of its summary; None
        when neither can be read. A damaged cell.json is named on stderr (once per file)."""
        path = self.run_dir(study, run_id) / "cell.json"
        try:
            cell = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return self.summary(study, run_id)
        except (ValueError, OSError) as exc:
            cell = exc
        why = first_line(cell) if isinstance(cell, Exception) else _cell_problem(cell)
        if why is None:
            return cell
        summary = self.summary(study, run_id)
        warn_once(path, f"{path} is damaged ({why}); " + (
            "its summary.json says the same, nothing is lost" if summary is not None
            else "the run is left out until its next `bench run` writes the file again"))
        return summary

    def set_aside_damaged(self, study: str, run_id: str) -> Path | None:
        """Move a damaged record (an unreadable summary.json, the unreadable history.csv of an
        unfinished run, which the resumed run would overwrite, or an unreadable checkpoint.pt, with
        the history it belongs to) into ``damaged/<n>/``: kept for a look, never overwritten."""
        from bench.train.checkpoint import CHECKPOINT_NAME

        bad_checkpoint = self.checkpoint_damage(study, run_id) is not None
        if self.damage(study, run_id) is None and self.history_damage(study, run_id) is None and not bad_checkpoint:
            return None
        return self._move_record(study, run_id, "damaged", extra=(CHECKPOINT_NAME,) if bad_checkpoint else ())

    def unfinished_damage(self, study: str, run_id: str) -> str | None:
        """What the next run of the cell must set aside before it starts (summary, history or
        checkpoint damage, in that order), or None."""
        return (self.damage(study, run_id) or self.history_damage(study, run_id)
                or self.checkpoint_damage(study, run_id))

    def history_damage(self, study: str, run_id: str) -> str | None:
        """Why the run's history.csv cannot be read, or None if it can or is absent."""
        path = self.run_dir(study, run_id) / "history.csv"
        if not path.is_file():
            return None
        try:
            if path.stat().st_size > MAX_HISTORY_BYTES:
                return f"{path} is damaged (larger than {MAX_HISTORY_BYTES} bytes)"
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, ValueError, OSError) as exc:
            return f"{path} is damaged ({reason(exc)})"
        if not len(df.columns):
            return None
        if "epoch" not in df.columns:
            return f"{path} is damaged (no epoch column)"
        epochs = pd.to_numeric(df["epoch"], errors="coerce")
        if epochs.isna().any() or (epochs < 1).any() or (epochs != epochs.round()).any():
            return f"{path} is damaged (an epoch that is not a whole number >= 1)"
        if not epochs.is_monotonic_increasing or epochs.duplicated().any():
            first = int(epochs[epochs.duplicated()].iloc[0]) if epochs.duplicated().any() else None
            return f"{path} is damaged (" + (f"epoch {first} recorded twice" if first is not None
                                             else "epochs out of order") + ")"
        return None

    def checkpoint_damage(self, study: str, run_id: str) -> str | None:
        """Why the run's checkpoint.pt cannot be resumed from (empty, cut short, not the zip file
        ``torch.save`` writes, a member failing its CRC), or None if it is whole or absent. Read as a
        zip only: nothing in it is unpickled here."""
        from bench.train.checkpoint import CHECKPOINT_NAME  # late: torch, for the runner only

        path = self.run_dir(study, run_id) / CHECKPOINT_NAME
        try:
            if path.stat().st_size == 0:
                return f"{path} is damaged (empty)"
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            return f"{path} is damaged ({reason(exc)})"
        return None if bad is None else f"{path} is damaged ({bad} fails its CRC check)"

    def clean_temp_files(self, study: str, run_id: str) -> list[Path]:
        """Remove the temporary files a killed writer left in the run folder (call with the claim
        held), and claim-break markers older than :data:`bench.locks.BREAK_MARKER_S`."""
        rd = self.run_dir(study, run_id)
        gone = [p for pat in TEMP_PATTERNS for p in rd.glob(pat) if p.is_file()]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone + locks.remove_old_break_markers(rd)

    def damaged_files(self, study: str) -> list[str]:
        """One line per damaged file of the study's runs (summary, history, cell), for the report."""
        out = []
        for rd in self.run_dirs(study):
            finished = self.summary(study, rd.name) is not None
            for why in (self.damage(study, rd.name), self.history_damage(study, rd.name)):
                if why is not None:
                    out.append(why)
            cell = rd / "cell.json"
            if cell.is_file():
                try:
                    ok = _cell_problem(read_json(cell)) is None
                except (ValueError, OSError):
                    ok = False
                if not ok:
                    out.append(f"{cell} is damaged" + ("" if finished else "; the run is left out until "
                                                       "its next `bench run` writes it again"))
        return out

    def state(self, study: str, run_id: str) -> str:
        """'ok' | 'diverged' | 'oom' | 'failed' (finished), 'running' (fresh claim), 'stale', 'pending',
        'damaged' (a summary.json that cannot be read: the next run sets it aside and runs the cell)."""
        s = self.summary(study, run_id)
        if s is not None:
            return str(s.get("status", "failed"))
        if self.damage(study, run_id) is not None:
            return "damaged"
        lock = self.run_dir(study, run_id) / "claim.lock"
        try:
            # Stale by heartbeat age, or at once when its process (on this host) is gone.
            return "stale" if locks.is_stale(lock, self.stale_after_s) else "running"
        except (FileNotFoundError, NotADirectoryError):
            return "pending"

    def claim_info(self, study: str, run_id: str) -> dict[str, Any] | None:
        """The cell's claim (token, host, pid, worker); None when there is none or it cannot be read."""
        return locks.read_claim(self.run_dir(study, run_id) / "claim.lock")

    def claim_unreadable(self, study: str, run_id: str) -> bool:
        """True when the cell has a claim.lock that cannot be read (empty, garbage): left by a
        process killed while it claimed, or being written this instant; judged by its age alone."""
        return (self.run_dir(study, run_id) / "claim.lock").is_file() and self.claim_info(study, run_id) is None

    # -- claims (bench.locks) -----------------------------------------------------------------
    def claim(self, study: str, run_id: str, **info: Any) -> Lease | None:
        """Take the cell's lock (O_EXCL create); retake it if its heartbeat is stale. None if held."""
        rd = self.run_dir(study, run_id)
        rd.mkdir(parents=True, exist_ok=True)
        return locks.take(rd / "claim.lock", self.stale_after_s, **info)

    # -- records -------------------------------------------------------------------------------
    def write_study(self, study: str, description: dict[str, Any]) -> None:
        """Write ``study.json``; a damaged one is first moved to ``damaged/<n>/`` (never overwritten),
        and temp files a killed writer left in the study and measurement folders are removed (of a
        process gone on this host, or older than a write could take)."""
        path = self.study_dir(study) / "study.json"
        try:
            self.read_study(study)
        except UserError as exc:
            dest = self._next_slot(self.study_dir(study) / "damaged")
            shutil.move(str(path), str(dest / "study.json"))
            print(f"bench: {str(exc).split(';')[0]}; moved to {dest} and written again", file=sys.stderr)
        self.clean_old_temp_files(study)
        write_json(path, description)

    def clean_old_temp_files(self, study: str, older_than_s: float = STALE_AFTER_S) -> list[Path]:
        """Remove temp files of atomic writes (``.<name>~<host>~<pid>~*.tmp``) in the study's own folder and
        its measurement cache whose writer is gone (its pid no longer exists here) or that are older
        than ``older_than_s``: a write takes milliseconds, so one that old was left by a kill; any
        other may be another runner's write in progress (on another host, pids say nothing)."""
        now = time.time()
        gone = []
        for folder in (self.study_dir(study), self.study_dir(study) / "measurements"):
            for p in folder.glob(TEMP_GLOB) if folder.is_dir() else ():
                writer = temp_writer_here(p.name)
                try:
                    if p.is_file() and (now - p.stat().st_mtime >= older_than_s
                                        or (writer is not None and not locks.pid_alive(writer))):
                        p.unlink()
                        gone.append(p)
                except FileNotFoundError:
                    pass
        return gone

    def read_study(self, study: str) -> dict[str, Any] | None:
        path = self.study_dir(study) / "study.json"
        try:
            desc = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError as exc:
            raise UserError(f"{path} is damaged ({exc}); `bench run {study}` keeps it in damaged/ and writes "
                            "it again (the run records are not affected)") from None
        why = _study_json_problem(desc, study)
        if why is not None:
            raise UserError(f"{path} is damaged ({why}); `bench run {study}` keeps it in damaged/ "
                            "and writes it again")
        return desc

    def archive_attempt(self, study: str, run_id: str) -> Path | None:
        """Move a finished record into ``attempts/<n>/`` before the cell is run again."""
        if not (self.run_dir(study, run_id) / "summary.json").exists():
            return None
        return self._move_record(study, run_id, "attempts")

    @staticmethod
    def _next_slot(folder: Path) -> Path:
        """A new numbered folder ``folder/<n>/`` (1, 2, ...), made here."""
        n = 1 + sum(1 for _ in folder.glob("*")) if folder.is_dir() else 1
        while True:
            try:
                (folder / str(n)).mkdir(parents=True)
                return folder / str(n)
            except FileExistsError:
                n += 1

    def _move_record(self, study: str, run_id: str, folder: str, extra: tuple[str, ...] = ()) -> Path:
        rd = self.run_dir(study, run_id)
        dest = self._next_slot(rd / folder)
        for name in RECORD_FILES + extra:
            if (rd / name).exists():
                shutil.move(str(rd / name), str(dest / name))
        return dest

    def write_cell(self, cell: Cell) -> None:
        """``config.json`` and ``cell.json`` (the serialised cell) of a run about to start."""
        rd = self.run_dir(cell.study, cell.run_id)
        write_json(rd / "config.json", cell.config.to_dict())
        write_json(rd / "cell.json", cell.to_dict())

    def write_history(self, study: str, run_id: str, rows: Sequence[EpochRow | dict[str, Any]]) -> None:
        """``history.csv``: one row per epoch, columns in :data:`bench.record.HISTORY_KEYS` order."""
        dicts = [r.to_dict() if isinstance(r, EpochRow) else dict(r) for r in rows]
        write_atomic(self.run_dir(study, run_id) / "history.csv", pd.DataFrame(dicts).to_csv(index=False))

    def write_record(self, record: RunRecord) -> None:
        """Write a finished run as it is: its history (when it has one), then ``summary.json``, last,
        since a summary marks the run finished."""
        c = record.cell
        if record.history:
            self.write_history(c.study, record.run_id, record.history)
        write_json(self.run_dir(c.study, record.run_id) / "summary.json", record.to_dict())

    def read_record(self, study: str, run_id: str, history: bool = False) -> RunRecord | None:
        """The finished run as a :class:`RunRecord` (None if unfinished); RecordError, one line naming
        the file, when its schema is not readable."""
        return self.record_from_summary(study, run_id, self.summary(study, run_id), history)

    def record_from_summary(self, study: str, run_id: str, s: dict[str, Any] | None,
                            history: bool = False) -> RunRecord | None:
        """:meth:`read_record` from a summary already read (:meth:`summary`), without reading it again."""
        if s is None:
            return None
        rows: list[dict[str, Any]] = []
        if history:
            df = self.read_history(study, run_id)
            rows = df.to_dict("records") if df is not None else []
        try:
            return RunRecord.from_dict(s, rows)
        except RecordError as exc:
            raise RecordError(f"{self.run_dir(study, run_id) / 'summary.json'}: {exc}") from None

    def records(self, study: str) -> list[RunRecord]:
        """Every finished run of ``study`` (any status), in run-id order."""
        out = []
        for rd in self.run_dirs(study):
            r = self.read_record(study, rd.name)
            if r is not None:
                out.append(r)
        return out
