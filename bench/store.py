"""The results store: one folder per run, atomic writes, claims, and pandas views.

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

import json
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import UserError
from bench.files import read_json, write_atomic, write_json
from bench.record import RENAMED_HISTORY, Cell, EpochRow, RecordError, RunRecord, identity_row

__all__ = ["Claim", "ResultsStore", "read_json", "write_atomic", "write_json"]

STALE_AFTER_S = 120.0  # a claim whose heartbeat is older than this is taken to be dead
HEARTBEAT_EVERY_S = 15.0
# A claim is written whole right after its O_EXCL create: one still unreadable after this long was
# left by a process killed in between, and is judged by its age alone.
UNREADABLE_CLAIM_S = 10.0
# Temporary files a kill can leave in a run folder (atomic writes); removed by the next claimant,
# which alone writes there.
TEMP_PATTERNS = (".*.tmp", "checkpoint.pt.tmp*")
RECORD_FILES = ("summary.json", "history.csv", "artifacts.npz", "log.txt")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """A held claim on a run folder; keeps its lock file's mtime fresh from a thread."""

    path: Path
    token: str
    _stop: threading.Event
    _thread: threading.Thread | None = None

    def start_heartbeat(self, every_s: float = HEARTBEAT_EVERY_S) -> None:
        def beat() -> None:
            while not self._stop.wait(every_s):
                if not self.held():
                    return
                try:
                    os.utime(self.path)
                except FileNotFoundError:
                    return

        self._thread = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{self.path.parent.name}")
        self._thread.start()

    def held(self) -> bool:
        """True while the lock file still carries this claim's token."""
        try:
            return read_json(self.path).get("token") == self.token
        except (FileNotFoundError, ValueError):
            return False

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        """The run's summary if it has finished (whatever its status), else None."""
        path = self.run_dir(study, run_id) / "summary.json"
        try:
            s = read_json(path)
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        return s if isinstance(s, dict) and s.get("complete") else None

    def damage(self, study: str, run_id: str) -> str | None:
        """Why the run's summary.json cannot be read (truncated, not JSON), or None if it can or is absent."""
        path = self.run_dir(study, run_id) / "summary.json"
        try:
            s = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (ValueError, OSError) as exc:
            return f"{path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        return None if isinstance(s, dict) else f"{path} is damaged (not a JSON object)"

    def set_aside_damaged(self, study: str, run_id: str) -> Path | None:
        """Move a damaged record into ``damaged/<n>/`` (kept for a look, never overwritten)."""
        if self.damage(study, run_id) is None:
            return None
        return self._move_record(study, run_id, "damaged")

    def clean_temp_files(self, study: str, run_id: str) -> list[Path]:
        """Remove the temporary files a killed writer left in the run folder (call with the claim held)."""
        rd = self.run_dir(study, run_id)
        gone = [p for pat in TEMP_PATTERNS for p in rd.glob(pat) if p.is_file()]
        for p in gone:
            p.unlink(missing_ok=True)
        return gone

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
            return "stale" if self._is_stale(lock) else "running"
        except FileNotFoundError:
            return "pending"

    def claim_info(self, study: str, run_id: str) -> dict[str, Any] | None:
        try:
            return read_json(self.run_dir(study, run_id) / "claim.lock")
        except (FileNotFoundError, ValueError):
            return None

    # -- claims --------------------------------------------------------------------------------
    def claim(self, study: str, run_id: str, **info: Any) -> Claim | None:
        """Take the cell's lock (O_EXCL create); retake it if its heartbeat is stale. None if held."""
        rd = self.run_dir(study, run_id)
        rd.mkdir(parents=True, exist_ok=True)
        lock = rd / "claim.lock"
        token = uuid.uuid4().hex
        body = json.dumps(
            {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "claimed_at": time.time(), **info},
            default=str,
        )
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_stale(lock):
                    return None
                continue
            with os.fdopen(fd, "w") as f:
                f.write(body)
            return Claim(lock, token, threading.Event())
        return None

    def _break_stale(self, lock: Path) -> bool:
        """Remove ``lock`` if its owner is gone; True if removed (or already gone).

        The owner is gone when its heartbeat (the file's mtime) is older than the stale limit, or
        when it ran on this host and its process no longer exists. Two runners may find the same
        stale lock: the rename to a unique name succeeds for only one of them.
        """
        try:
            if not self._is_stale(lock):
                return False
            grave = lock.with_name(f"claim.stale.{uuid.uuid4().hex}")
            os.rename(lock, grave)
        except FileNotFoundError:
            return True  # released meanwhile: try to create it again
        if not self._is_stale(grave):
            # A fresh claim was made between our look and the rename: give it back.
            try:
                os.link(grave, lock)
            except FileExistsError:
                pass
            grave.unlink(missing_ok=True)
            return False
        grave.unlink(missing_ok=True)
        return True

    def _is_stale(self, lock: Path) -> bool:
        if time.time() - lock.stat().st_mtime >= self.stale_after_s:
            return True
        try:
            info = read_json(lock)
        except ValueError:  # being written right now, or left empty by a kill
            return time.time() - lock.stat().st_mtime >= UNREADABLE_CLAIM_S
        return info.get("host") == socket.gethostname() and not _pid_alive(int(info.get("pid", -1)))

    # -- records -------------------------------------------------------------------------------
    def write_study(self, study: str, description: dict[str, Any]) -> None:
        write_json(self.study_dir(study) / "study.json", description)

    def read_study(self, study: str) -> dict[str, Any] | None:
        path = self.study_dir(study) / "study.json"
        try:
            desc = read_json(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError as exc:
            raise UserError(f"{path} is damaged ({exc}); `bench run {study}` writes it again "
                            "(the run records are not affected)") from None
        if not isinstance(desc, dict):
            raise UserError(f"{path} is damaged (not a JSON object); `bench run {study}` writes it again")
        return desc

    def archive_attempt(self, study: str, run_id: str) -> Path | None:
        """Move a finished record into ``attempts/<n>/`` before the cell is run again."""
        if not (self.run_dir(study, run_id) / "summary.json").exists():
            return None
        return self._move_record(study, run_id, "attempts")

    def _move_record(self, study: str, run_id: str, folder: str) -> Path:
        rd = self.run_dir(study, run_id)
        n = 1 + sum(1 for _ in (rd / folder).glob("*")) if (rd / folder).is_dir() else 1
        dest = rd / folder / str(n)
        dest.mkdir(parents=True)
        for name in RECORD_FILES:
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
        s = self.summary(study, run_id)
        if s is None:
            return None
        rows: list[dict[str, Any]] = []
        hist = self.run_dir(study, run_id) / "history.csv"
        if history and hist.exists():
            try:
                rows = pd.read_csv(hist).to_dict("records")
            except (pd.errors.EmptyDataError, ValueError):
                rows = []
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

    def load_runs(self, study: str, include_pending: bool = False) -> pd.DataFrame:
        """One row per finished run (:meth:`RunRecord.to_row`); with ``include_pending`` also the
        identity columns and state of runs that have started but not finished."""
        rows = [r.to_row() for r in self.records(study)]
        if include_pending:
            done = {r["run_id"] for r in rows}
            for rd in self.run_dirs(study):
                if rd.name in done or not (rd / "cell.json").exists():
                    continue
                cell = read_json(rd / "cell.json")
                rows.append({**identity_row(cell), "status": self.state(study, rd.name), "complete": False})
        return pd.DataFrame(rows)

    def load_history(self, study: str) -> pd.DataFrame:
        """All epochs of all runs (finished or in progress), with run id, arm labels and seed."""
        frames = []
        for rd in self.run_dirs(study):
            hist = rd / "history.csv"
            if not hist.exists() or not (rd / "cell.json").exists():
                continue
            try:
                df = pd.read_csv(hist)
            except (pd.errors.EmptyDataError, ValueError):
                continue
            df = df.rename(columns={o: n for o, n in RENAMED_HISTORY.items() if n not in df})  # schema 1
            cell = read_json(rd / "cell.json")
            df.insert(0, "run_id", rd.name)
            df.insert(1, "arm", cell.get("arm_label", ""))
            df.insert(2, "seed", cell.get("seed"))
            for k, v in cell.get("arm", {}).items():
                df[f"arm_{k}"] = v
            for k, v in cell.get("tags", {}).items():
                df[f"tag_{k}"] = v
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
