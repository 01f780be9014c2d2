"""Deterministic fault points, set with ``BENCH_FAULT=<point>[:<action>]``. At ``<point>`` the
process kills itself (``kill``, SIGKILL, the default), raises :class:`FaultInjected` (``raise``) or
waits ``pause=<seconds>`` and goes on, on every visit (a slow disk: the Slurm tests keep every epoch
longer than the cluster's grace time after ``scancel``, so that a cancelled task cannot finish its
cell in that grace time, whatever the machine's speed). A value that names no point or no action is
a :class:`FaultSpecError` (a ``UserError`` and a ``ValueError``) naming it and the accepted ones,
raised by :func:`check_env` (the CLI calls it first) or at the first fault point reached.

The points are the steps where an interruption could lose or repeat work; the tests run a study
with each one set, rerun it without, and check that the rerun finishes, that nothing finished is
trained again and that no temporary file is left:

- ``checkpoint``: right after an epoch's checkpoint is written;
- ``write:checkpoint.pt``: while the first checkpoint is written (temp file complete, not renamed);
- ``before-summary``: after training, before the run's summary is written;
- ``write:summary.json``: while the summary is written (temp file complete, not renamed);
- ``measure``: while the model's speed and memory are measured;
- ``write:study.json``: while the study's description is written, before any cell starts (its
  temp file names a process that is gone, so the next run removes it at once).
"""

from __future__ import annotations

import functools
import os
import signal
import time

from bench.errors import UserError

ENV = "BENCH_FAULT"
POINTS = ("checkpoint", "write:checkpoint.pt", "before-summary", "write:summary.json", "measure", "write:study.json")


class FaultInjected(RuntimeError):
    """Raised at a fault point set with ``:raise``."""


class FaultSpecError(UserError, ValueError):
    """A ``BENCH_FAULT`` value that names no point or no action (one line naming it)."""


def check_env() -> None:
    """Raise :class:`FaultSpecError` when ``BENCH_FAULT`` is set to a value :func:`parse` refuses."""
    spec = os.environ.get(ENV)
    if spec:
        parse(spec)


def fault_point(point: str) -> None:
    """Kill this process, raise or wait here when ``BENCH_FAULT`` names ``point`` (no-op otherwise)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, action = parse(spec)
    if name != point:
        return
    if action == "raise":
        raise FaultInjected(f"fault injected at {point}")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(float(action.removeprefix("pause=")))


@functools.lru_cache(maxsize=8)
def parse(spec: str) -> tuple[str, str]:
    """``'write:summary.json:raise'`` -> ``('write:summary.json', 'raise')``; the action defaults to kill.

    The last ``:`` splits point from action only when what follows it is not a point's own tail, as
    in ``write:summary.json``; a pause is normalised to ``pause=<float>``.
    """
    if _is_point(spec):
        return spec, "kill"
    head, _, tail = spec.rpartition(":")
    if not _is_point(head):
        raise FaultSpecError(f"{ENV}={spec}: {head or spec!r} is not a fault point; "
                         f"accepted: {', '.join(p for p in POINTS if not p.startswith('write:'))}, write:<file name>")
    if tail in ("kill", "raise"):
        return head, tail
    if tail.startswith("pause="):
        try:
            seconds = float(tail.removeprefix("pause="))
        except ValueError:
            seconds = float("nan")
        if 0 <= seconds < float("inf"):
            return head, f"pause={seconds}"
        raise FaultSpecError(f"{ENV}={spec}: pause takes a finite number of seconds >= 0 "
                             "(accepted: pause=<seconds>, e.g. pause=0.5)")
    raise FaultSpecError(f"{ENV}={spec}: {tail!r} is not an action; accepted: kill, raise, pause=<seconds>")


def _is_point(name: str) -> bool:
    return name in POINTS or (name.startswith("write:") and ":" not in name[len("write:"):] and name != "write:")
