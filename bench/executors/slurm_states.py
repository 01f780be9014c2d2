"""What Slurm itself says about submitted array tasks, for ``bench status``.

``squeue --array --states=all`` knows every job the controller still holds: pending, running and,
for ``MinJobAge`` seconds after the end (300 s by default), finished ones. ``sacct`` knows the rest
when the cluster keeps accounting (slurmdbd); without it sacct answers "accounting storage is
disabled" and is left out. The live answer (squeue) wins where both know a task.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

TIMEOUT_S = 15.0  # a controller that does not answer must not hang `bench status`


@dataclass
class SlurmStates:
    """``states``: task id (``<array>_<index>``) -> state, e.g. ``RUNNING`` or ``PENDING (BeginTime)``.
    ``sources``: the commands that answered. ``notes``: why one did not."""

    states: dict[str, str] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _run(cmd: list[str]) -> tuple[int, str, str]:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"no answer in {TIMEOUT_S:.0f} s"
    except OSError as exc:
        return 127, "", str(exc)
    return p.returncode, p.stdout, p.stderr


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else "no output"


def from_squeue(arrays: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """Task id -> state (with the pending reason) for the tasks the controller holds; a note if
    squeue could not answer. Job ids it no longer knows are simply absent."""
    if shutil.which("squeue") is None:
        return {}, "squeue is not on this machine's PATH"
    out: dict[str, str] = {}
    failed = None
    # One call per array: squeue fails the whole call when none of its ids is known any more.
    for array in arrays:
        rc, stdout, stderr = _run(["squeue", "--array", "--states=all", "--noheader",
                                   "--format=%i|%T|%r", f"--jobs={array}"])
        if rc != 0:
            if "Invalid job id" not in stderr:
                failed = f"squeue: {_first_line(stderr)}"
            continue
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3:
                continue
            task, state, reason = parts
            out[task] = f"{state} ({reason})" if state == "PENDING" and reason not in ("None", "") else state
    return out, failed


def from_sacct(arrays: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """Task id -> state from accounting (the latest run of each task); a note when sacct is missing
    or accounting is off."""
    if shutil.which("sacct") is None:
        return {}, "sacct is not on this machine's PATH"
    rc, stdout, stderr = _run(["sacct", "--noheader", "--parsable2", "--allocations",
                               "--format=JobID,State", f"--jobs={','.join(arrays)}"])
    if rc != 0 or "disabled" in stderr:
        return {}, f"sacct: {_first_line(stderr)}"
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2 and parts[0]:
            out[parts[0]] = parts[1].split()[0] if parts[1] else parts[1]  # "CANCELLED by 0" -> CANCELLED
    return out, None


def slurm_states(arrays: Sequence[str]) -> SlurmStates:
    """The states of every task of ``arrays`` (job array ids) that squeue or sacct knows."""
    arrays = [str(a) for a in arrays if a]
    res = SlurmStates()
    if not arrays:
        return res
    live, live_note = from_squeue(arrays)
    past, past_note = from_sacct(arrays)
    for name, note in (("squeue", live_note), ("sacct", past_note)):
        (res.notes if note else res.sources).append(note or name)
    res.states = {**past, **live}
    return res


# States after which a job's processes are gone (squeue --states=all keeps such jobs for MinJobAge).
ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
         "PREEMPTED", "SPECIAL_EXIT", "TIMEOUT")


def job_ended(job_id: str) -> bool:
    """True when Slurm reports job ``job_id`` (a plain job id, or ``<array>_<index>``) as ended;
    False when it runs, waits, or Slurm does not (or no longer) know it."""
    if shutil.which("squeue") is None:
        return False
    rc, stdout, _ = _run(["squeue", "--noheader", "--states=all", "--format=%A|%i|%T", f"--jobs={job_id}"])
    # --jobs=<n> lists the whole array when n is also an array's id: keep the rows of job n itself
    states = {p[2] for p in (ln.strip().split("|") for ln in stdout.splitlines())
              if len(p) == 3 and str(job_id) in (p[0], p[1])}
    return rc == 0 and bool(states) and states <= set(ENDED)
