"""End-of-epoch checkpoints for resuming an interrupted run, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.files import write_atomic

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG a run draws from (dropout, stochastic depth, any host-side randomness): Python's,
    NumPy's, torch's CPU generator and, for a CUDA ``device``, that device's generator only.

    Only the run's own GPU: a checkpoint written where several GPUs were visible must resume in a
    worker that sees one (``get_rng_state_all`` would save one state per visible GPU).
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Inverse of :func:`rng_state`, onto the run's ``device`` (which may have another index now).

    Checkpoints written before one state per run (``"cuda"``: a list, one per GPU visible then) give
    the state at the run's device index if the list has one, else the first: the index a worker
    sees is not the one the writer saw, so an exact match cannot be known.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device is None or device.type != "cuda":
        return
    saved = state.get("cuda_device")
    if saved is None and state.get("cuda"):
        legacy = list(state["cuda"])
        index = device.index or 0
        saved = legacy[index] if index < len(legacy) else legacy[0]
    if saved is not None:
        torch.cuda.set_rng_state(saved, device)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through :func:`bench.files.write_atomic` (a whole file or none)."""
    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists and belongs to ``run_id``, else None.

    Loaded to CPU with ``weights_only=False``: it holds our own history rows and RNG states, and it
    is only ever read from the run's own folder.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a truncated file cannot happen with os.replace, but a foreign one can
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        return None
    return state
