"""Runner conflicts: 2 to 8 processes racing for the same cells, many of them held by dead workers'
locks (a dead pid with a fresh heartbeat, an old heartbeat from another host, an empty lock a kill
left), never run one cell twice, and leave a live claim alone.

Each racer is a real process doing what :func:`bench.runner.work` does with the store: skip what
is done, claim, check again under the claim, run (a few ms), record, release. Rounds start at one
agreed instant so that the racers meet on the same lock; before breaking stale locks went through
a per-lock marker, 8 racers ran a cell twice in one round of 50 to 75 (the 60 rounds here caught it).
"""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import locks
from bench.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
CELLS = 12
LIVE = "c3"  # a live claim of another host: never taken

RACER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from bench.store import ResultsStore

    root, t0, rounds, me = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    for k in range(rounds):
        store = ResultsStore(root / f"r{k}")
        while time.time() < t0 + k * 0.25:
            time.sleep(0.0005)
        for i in range(%d):
            rid = f"c{i}"
            done = store.run_dir("s", rid) / "done"
            if done.exists():
                continue
            claim = store.claim("s", rid, worker=me)
            if claim is None:
                continue
            with claim:
                if done.exists():
                    continue
                with open(root / f"r{k}" / "log", "a") as f:
                    f.write(f"{rid} {me}\\n")
                time.sleep(0.005)
                done.write_text(me)
''' % CELLS)  # noqa: UP031 - the script's own f-strings hold braces


def _seed_locks(root: Path, dead_pid: int) -> None:
    for i in range(CELLS):
        rd = root / "s" / "runs" / f"c{i}"
        rd.mkdir(parents=True)
        lock = rd / "claim.lock"
        if f"c{i}" == LIVE:
            lock.write_text(json.dumps({"token": "live", "host": "elsewhere", "pid": 1}))
        elif i % 3 == 0:  # this host, process gone, heartbeat fresh
            lock.write_text(json.dumps({"token": "dead", "host": socket.gethostname(), "pid": dead_pid}))
        elif i % 3 == 1:  # another host, heartbeat an hour old
            lock.write_text(json.dumps({"token": "old", "host": "elsewhere", "pid": 1}))
            os.utime(lock, (time.time() - 3600,) * 2)
        elif i % 3 == 2 and i % 2 == 0:  # empty, left by a kill between create and write
            lock.write_text("")
            os.utime(lock, (time.time() - locks.UNREADABLE_CLAIM_S - 5,) * 2)
        # else: no lock at all


@pytest.mark.slow
@pytest.mark.parametrize("runners,rounds", [(2, 8), (4, 8), (8, 60)])
def test_concurrent_runners_never_run_a_cell_twice(runners: int, rounds: int, tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    for k in range(rounds):
        _seed_locks(tmp_path / f"r{k}", dead.pid)
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    t0 = time.time() + 4  # every racer imported and waiting before the first round
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(t0), str(rounds), f"p{j}"], env=env)
             for j in range(runners)]
    assert [p.wait(timeout=300) for p in procs] == [0] * runners
    want = {f"c{i}" for i in range(CELLS)} - {LIVE}
    for k in range(rounds):
        log = (tmp_path / f"r{k}" / "log").read_text().split("\n")
        ran = collections.Counter(line.split()[0] for line in log if line)
        assert set(ran) == want, (k, sorted(ran))  # every free or dead worker's cell ran, the live one did not
        assert all(n == 1 for n in ran.values()), (k, {c: n for c, n in ran.items() if n > 1})
        runs = tmp_path / f"r{k}" / "s" / "runs"
        assert not list(runs.glob("*/claim.break.*")) and not list(runs.glob("*/claim.stale.*"))
        assert (runs / LIVE / "claim.lock").exists() and not (runs / LIVE / "done").exists()


def test_a_break_marker_left_by_a_kill_does_not_block_for_good(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    rd = store.run_dir("s", "c0")
    rd.mkdir(parents=True)
    lock = rd / "claim.lock"
    lock.write_text(json.dumps({"token": "old", "host": "elsewhere", "pid": 1}))
    os.utime(lock, (time.time() - 3600,) * 2)
    st = lock.stat()
    marker = rd / f"claim.break.{st.st_ino}-{st.st_mtime_ns}"
    marker.write_text("")  # a runner was killed while it broke this lock
    assert store.claim("s", "c0") is None  # a fresh marker: someone is breaking it right now
    assert lock.exists()
    os.utime(marker, (time.time() - locks.BREAK_MARKER_S - 1,) * 2)
    claim = store.claim("s", "c0")  # an old marker is dropped, and the stale lock broken
    assert claim is not None and claim.held() and not marker.exists()
    claim.release()


def test_a_fresh_claim_is_never_broken(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    first = store.claim("s", "c0")
    assert first is not None
    assert store.claim("s", "c0") is None and first.held()
    first.release()
