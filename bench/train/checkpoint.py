"""End-of-epoch checkpoints for resuming an interrupted run, written atomically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.files import write_atomic

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from (dropout, stochastic depth, any host-side randomness)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    except Exception:  # a truncated file cannot happen with os.replace, but a foreign one can
        return None
    if not isinstance(state, dict) or state.get("run_id") != run_id:
        return None
    return state
