"""Deterministic fault points: ``BENCH_FAULT=<point>[:kill|raise]`` makes the process kill itself
(SIGKILL, the default) or raise :class:`FaultInjected` the first time it reaches ``<point>``;
``BENCH_FAULT=<point>:pause=<seconds>`` makes it wait there each time instead (a slow disk: the
Slurm tests keep every epoch longer than the cluster's grace time after ``scancel``, so that a
cancelled task cannot finish its cell in that grace time, whatever the machine's speed).

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

import os
import signal
import time

ENV = "BENCH_FAULT"
POINTS = ("checkpoint", "write:checkpoint.pt", "before-summary", "write:summary.json", "measure", "write:study.json")


class FaultInjected(RuntimeError):
    """Raised at a fault point set with ``:raise``."""


def fault_point(point: str) -> None:
    """Kill this process or raise here when ``BENCH_FAULT`` names ``point`` (no-op otherwise)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, how = spec.partition(":") if not spec.startswith("write:") else _split_write(spec)
    if name != point:
        return
    if how == "raise":
        raise FaultInjected(f"fault injected at {point}")
    if how.startswith("pause="):
        time.sleep(_seconds(spec, how))
        return
    os.kill(os.getpid(), signal.SIGKILL)


def _seconds(spec: str, how: str) -> float:
    try:
        seconds = float(how.removeprefix("pause="))
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < float("inf"):
        raise ValueError(f"{ENV}={spec}: pause takes a finite number of seconds >= 0, e.g. pause=0.5")
    return seconds


def _split_write(spec: str) -> tuple[str, str, str]:
    """'write:summary.json:raise' -> ('write:summary.json', ':', 'raise')."""
    head, sep, tail = spec.rpartition(":")
    if (tail in ("kill", "raise") or tail.startswith("pause=")) and head.startswith("write:") and head != "write":
        return head, sep, tail
    return spec, "", ""
