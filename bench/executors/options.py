"""The options of ``bench run`` as one frozen value, built once by :func:`bench.api.run`.

:class:`RunOptions` is what the executors read: they never see the command line's argparse
``Namespace``, and its defaults live here only. A value the command line parses (``--parallel``,
``--executor``, ``--set``, ``--only``/``--seeds``) arrives parsed; a bad one is a ``UserError``
naming it and the accepted values, raised before anything is written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError
from bench.study import Selection

EXECUTORS = ("local", "slurm", "debug")


def parse_executor(value: str | None) -> str:
    """'local' | 'slurm' | 'debug' (None -> local); anything else is a UserError."""
    value = value or "local"
    if value not in EXECUTORS:
        raise UserError(f"bad --executor {value!r} (accepted: {', '.join(EXECUTORS)})")
    return value


def parse_parallel(value: str | int | None) -> int | None:
    """'auto' (or None) -> None (decided later from the device and model size); else an int >= 1."""
    if value is None or value == "auto":
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(value).strip() != str(n):
        raise UserError(f"bad --parallel {value!r} (accepted: auto, or an integer >= 1)")
    return n


@dataclass(frozen=True)
class RunOptions:
    """How to run a study's cells.

    ``overrides``: the parsed ``--set`` values (they change the run ids). ``parallel``: cells at once
    per GPU, None for auto. ``gpus``: the ``--gpus`` text (checked against the visible GPUs where the
    cells run). ``selection``: ``--only``/``--seeds``. ``slurm_*``, ``gpus_per_task``, ``timeout_min``,
    ``max_parallel``: the Slurm job array. ``measure``: False skips the per-model measurements
    (params, MACs, speed, memory); ``end_steps``: the trainer's end-of-run steps (None: all; ``()``
    leaves out the BN gap and the artifacts); neither enters the run id (``--no-measure``,
    ``--no-extras``). ``extra_seeds``: seeds beyond the profile's per arm label (added by
    ``--until-decided``; recorded in study.json, so later runs keep them); ``sequential``:
    the group-sequential design to record with them (``Design.to_dict()``).
    """

    results_dir: str = "results"
    data_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    executor: str = "local"
    device: str = "auto"
    parallel: int | None = None
    gpus: str | None = None
    retry_failed: bool = False
    selection: Selection | None = None
    slurm_partition: str | None = None
    gpus_per_task: int = 1
    timeout_min: int = 240
    max_parallel: int | None = None
    measure: bool = True
    end_steps: tuple[str, ...] | None = None
    extra_seeds: dict[str, tuple[int, ...]] = field(default_factory=dict)
    sequential: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        parse_executor(self.executor)
        if self.parallel is not None:
            parse_parallel(self.parallel)
        if not isinstance(self.overrides, dict):
            raise TypeError(f"overrides must be a dict, not {type(self.overrides).__name__}")
        if self.end_steps is not None:
            from bench.train.evaluate import check_end_steps

            object.__setattr__(self, "end_steps", check_end_steps(self.end_steps))  # a bad name: before any write

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)
