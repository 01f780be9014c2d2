"""Training: optimisers and schedules (:mod:`.optim`) and the training loop (:func:`train`, :mod:`.engine`).

The engine names are imported lazily, so ``bench.train.optim`` works without importing the data and
model packages.
"""

from __future__ import annotations

from typing import Any

from bench.train.optim import OPTIMIZERS, SCHEDULES, Schedule, build_optimizer, build_schedule

_LAZY = {
    "train": "bench.train.engine",
    "TrainResult": "bench.train.engine",
    "SPLIT_SEED": "bench.train.engine",
    "save_artifacts": "bench.train.evaluate",
    "HISTORY_KEYS": "bench.train.summary",
}

__all__ = ["OPTIMIZERS", "SCHEDULES", "Schedule", "build_optimizer", "build_schedule", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bench.train' has no attribute {name!r}")
