"""Leases on lock files: a lock file taken with O_EXCL (so it works on shared file systems) and,
while held, kept fresh by a heartbeat.

A cell's claim is a lease on ``claim.lock`` in its run folder: several runners (processes, hosts on one shared
file system, Slurm tasks) may try a cell at once; the one that creates it runs it. A short read-modify-write
(the Slurm submissions file) waits for its lease with :func:`hold`. The lock holds JSON (token, host, pid,
claimed_at and what the caller adds) and its mtime is the heartbeat. A lock is stale, and may be broken, when
its heartbeat is older than the stale limit, when it was left on this host by a process that no longer exists,
or when it cannot be read and is older than :data:`UNREADABLE_CLAIM_S`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.files import read_json

__all__ = ["Lease", "hold", "is_stale", "pid_alive", "read_claim", "remove_old_break_markers", "take"]

STALE_AFTER_S = 120.0  # a claim whose heartbeat is older than this is taken to be dead
HEARTBEAT_EVERY_S = 15.0
# A claim is written whole right after its O_EXCL create: one still unreadable after this long was
# left by a process killed in between, and is judged by its age alone.
UNREADABLE_CLAIM_S = 10.0
# A runner removing a stale lock holds claim.break.<id> for milliseconds; one older than this was
# left by a runner killed in between.
BREAK_MARKER_S = 30.0
_MARKER_PREFIX = "claim.break."


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists on this host (or exists and is not ours to signal)."""
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
class Lease:
    """A held lock file (a cell's claim on its run folder, or a short critical section); keeps the
    file's mtime fresh from a thread once :meth:`start_heartbeat` runs."""

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
        info = read_claim(self.path)  # a lock file of another shape (a list, garbage) is not ours
        return info is not None and info.get("token") == self.token

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def take(lock: Path, stale_after_s: float = STALE_AFTER_S, **info: Any) -> Lease | None:
    """Create ``lock`` (O_EXCL) and return the lease; break it first if it is stale. None if held."""
    token = uuid.uuid4().hex
    body = json.dumps(
        {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "claimed_at": time.time(), **info},
        default=str,
    )
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _break_stale(lock, stale_after_s):
                return None
            continue
        with os.fdopen(fd, "w") as f:
            f.write(body)
        return Lease(lock, token, threading.Event())
    return None


@contextmanager
def hold(lock: Path, wait_s: float = 60.0, stale_after_s: float = 60.0) -> Iterator[Lease]:
    """Wait up to ``wait_s`` for a lease on ``lock`` (a stale one is broken, see :func:`take`), hold
    it for the ``with`` block, release it after. Still held by another after ``wait_s``: a UserError."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + wait_s
    while (lease := take(lock, stale_after_s)) is None:
        if time.time() > deadline:
            raise UserError(f"{lock} is held; remove it if no bench command is using it")
        time.sleep(0.1)
    with lease:
        yield lease


def read_claim(lock: Path) -> dict[str, Any] | None:
    """The claim's JSON (token, host, pid, ...); None when there is no lock or it cannot be read."""
    try:
        info = read_json(lock)
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def is_stale(lock: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    """True when ``lock``'s owner is taken to be gone (see the module's docstring).

    Raises FileNotFoundError when there is no lock."""
    age = time.time() - lock.stat().st_mtime
    if age >= stale_after_s:
        return True
    try:
        info = read_json(lock)
    except ValueError:  # being written right now, or left empty by a kill
        return age >= UNREADABLE_CLAIM_S
    if not isinstance(info, dict):
        return age >= UNREADABLE_CLAIM_S
    try:
        pid = int(info.get("pid", -1))
    except (TypeError, ValueError):
        pid = -1
    return info.get("host") == socket.gethostname() and not pid_alive(pid)


def remove_old_break_markers(folder: Path) -> list[Path]:
    """Remove the break markers in ``folder`` older than :data:`BREAK_MARKER_S` (left by a runner
    killed while it broke a lock); returns those removed."""
    gone = []
    now = time.time()
    for p in folder.glob(f"{_MARKER_PREFIX}*"):
        try:
            if now - p.stat().st_mtime >= BREAK_MARKER_S:
                p.unlink()
                gone.append(p)
        except FileNotFoundError:
            pass
    return gone


def _break_stale(lock: Path, stale_after_s: float) -> bool:
    """Remove ``lock`` if its owner is gone; True if removed (or already gone).

    Several runners may find the same stale lock at once: each tries to create
    ``claim.break.<identity of that lock>`` (O_EXCL), and only the one that did removes the lock,
    after checking that it is still the very file judged stale. The marker goes only after the
    removal, so no runner can ever remove a fresh claim in place of the stale one (moving the lock
    aside and putting back a fresh one lets a third runner claim in between: two runners train one
    cell).
    """
    try:
        judged = _identity(lock)
        if not is_stale(lock, stale_after_s):
            return False
    except FileNotFoundError:
        return True  # released meanwhile: try to create it again
    marker = lock.with_name(f"{_MARKER_PREFIX}{judged[0]}-{judged[1]}")
    if not _take_marker(marker):
        return False
    try:
        try:
            if _identity(lock) != judged:
                return False  # released and claimed again meanwhile: a fresh claim
        except FileNotFoundError:
            return True
        lock.unlink(missing_ok=True)
        return True
    finally:
        marker.unlink(missing_ok=True)


def _take_marker(marker: Path) -> bool:
    """Create ``marker`` (O_EXCL); False while another runner holds it. One older than
    :data:`BREAK_MARKER_S` was left by a runner killed while it broke the lock: dropped, then taken
    like any other."""
    for _ in range(2):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return True
        except FileExistsError:
            try:
                if time.time() - marker.stat().st_mtime < BREAK_MARKER_S:
                    return False
                marker.unlink()
            except FileNotFoundError:
                pass
    return False


def _identity(lock: Path) -> tuple[int, int, int, bytes]:
    """What tells one lock file from the next at the same path: inode, mtime, size, content."""
    st = lock.stat()
    return st.st_ino, st.st_mtime_ns, st.st_size, lock.read_bytes()
