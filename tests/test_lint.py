"""The type check as one of the suite's tests: `make test` runs ruff first (a second), then pytest, where
mypy (tens of seconds on a fresh clone) runs beside the other tests instead of before them all.
`make lint` runs both on their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_finds_nothing() -> None:
    """mypy with the settings of pyproject.toml ([tool.mypy]: bench and experiments, untyped defs checked)."""
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
