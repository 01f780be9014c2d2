"""bench.locks on its own: one holder per lock file, heartbeat, and what makes a lock stale.

The races between many runners are in test_faults_races.py; these are the single-process rules."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from bench import locks


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_one_holder_until_released(tmp_path: Path) -> None:
    lock = tmp_path / "claim.lock"
    first = locks.take(lock, worker="w1")
    assert first is not None and first.held()
    assert locks.take(lock) is None  # held by a live process of this host
    info = locks.read_claim(lock)
    assert info is not None and info["worker"] == "w1" and info["pid"] == os.getpid()
    assert info["host"] == socket.gethostname() and info["token"] == first.token
    first.release()
    assert not lock.exists() and not first.held()
    with locks.take(lock) as second:
        assert second is not None and second.token != first.token
    assert not lock.exists()  # the context manager released it


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path: Path) -> None:
    lock = tmp_path / "claim.lock"
    mine = locks.take(lock)
    assert mine is not None
    lock.write_text(json.dumps({"token": "someone else", "host": "elsewhere", "pid": 1}))
    assert not mine.held()
    mine.release()
    assert lock.exists()


def test_heartbeat_keeps_the_lock_fresh(tmp_path: Path) -> None:
    lock = tmp_path / "claim.lock"
    claim = locks.take(lock)
    assert claim is not None
    _age(lock, 3600)
    claim.start_heartbeat(every_s=0.05)
    deadline = time.time() + 5
    while time.time() - lock.stat().st_mtime > 60 and time.time() < deadline:
        time.sleep(0.05)
    assert time.time() - lock.stat().st_mtime < 60
    claim.release()
    assert claim._thread is not None
    claim._thread.join(timeout=5)
    assert not claim._thread.is_alive()


def test_what_is_stale(tmp_path: Path) -> None:
    lock = tmp_path / "claim.lock"
    with pytest.raises(FileNotFoundError):
        locks.is_stale(lock)
    lock.write_text(json.dumps({"token": "t", "host": "elsewhere", "pid": 1}))
    assert not locks.is_stale(lock)  # another host's fresh heartbeat: its pid says nothing here
    _age(lock, locks.STALE_AFTER_S + 1)
    assert locks.is_stale(lock)
    assert not locks.is_stale(lock, stale_after_s=locks.STALE_AFTER_S * 10)

    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(json.dumps({"token": "t", "host": socket.gethostname(), "pid": gone.pid}))
    assert locks.is_stale(lock)  # this host, process gone: stale at once
    lock.write_text(json.dumps({"token": "t", "host": socket.gethostname(), "pid": os.getpid()}))
    assert not locks.is_stale(lock)

    for body in ("", "not json", "[1, 2]"):
        lock.write_text(body)
        assert locks.read_claim(lock) is None
        assert not locks.is_stale(lock)  # may be being written this instant
        _age(lock, locks.UNREADABLE_CLAIM_S + 1)
        assert locks.is_stale(lock)


def test_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "claim.lock"
    lock.write_text(json.dumps({"token": "old", "host": "elsewhere", "pid": 1}))
    _age(lock, locks.STALE_AFTER_S + 1)
    claim = locks.take(lock, worker="new")
    assert claim is not None and locks.read_claim(lock)["worker"] == "new"
    assert not list(tmp_path.glob("claim.break.*"))  # the break marker is gone after the break
    claim.release()


def test_pid_alive() -> None:
    assert locks.pid_alive(os.getpid())
    assert not locks.pid_alive(0) and not locks.pid_alive(-5)
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not locks.pid_alive(gone.pid)


def test_old_break_markers_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    old, fresh = tmp_path / "claim.break.1-2", tmp_path / "claim.break.3-4"
    for p in (old, fresh):
        p.write_text("")
    _age(old, locks.BREAK_MARKER_S + 1)
    (tmp_path / "claim.lock").write_text("")  # not a marker: left alone
    assert locks.remove_old_break_markers(tmp_path) == [old]
    assert fresh.exists() and not old.exists() and (tmp_path / "claim.lock").exists()


@pytest.mark.parametrize("body", ['["token"]', "3", "{x", ""])
def test_a_lock_file_of_another_shape_is_not_ours(tmp_path: Path, body: str) -> None:
    """A claim whose lock file was overwritten with JSON of another shape (or garbage) is not held,
    and releasing it leaves that file alone instead of raising."""
    lock = tmp_path / "claim.lock"
    claim = locks.take(lock, worker="w1")
    assert claim is not None and claim.held()
    lock.write_text(body)
    assert not claim.held()
    claim.release()
    assert lock.read_text() == body
