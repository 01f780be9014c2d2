"""What every command decides the same way: where results and data go unless told, whether the
results folder can be used, and which profile runs (``auto``, or the last run's)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import UserError

SHARED_DATA_DIR = "../shared/data"  # a data folder shared by the checkouts beside this one


def default_results_dir() -> str:
    """Where records and reports go unless told: $BENCH_RESULTS_DIR, else ./results."""
    return os.environ.get("BENCH_RESULTS_DIR", "results")


def default_data_dir() -> str:
    """Where data sets are found unless told, for the command line, ``make`` and the notebook API
    alike: $BENCH_DATA_DIR, else ../shared/data when that folder exists, else ./data."""
    env = os.environ.get("BENCH_DATA_DIR")
    if env:
        return env
    return SHARED_DATA_DIR if Path(SHARED_DATA_DIR).is_dir() else "data"


def check_results_dir(path: str, write: bool) -> None:
    """A results folder that is a file, cannot be created or (for writers) cannot be written is one
    clear line before anything starts, not a traceback halfway."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise UserError(f"--results-dir {path!r} is a file, not a folder (accepted: a folder, made if missing)")
    above = next((p for p in root.absolute().parents if p.exists()), None)
    if not root.exists() and above is not None and not above.is_dir():
        raise UserError(f"--results-dir {path!r} is inside {str(above)!r}, a file "
                        "(accepted: a folder, made if missing)")
    if not write:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"--results-dir {path!r} cannot be written ({exc.strerror or exc}); "
                        "accepted: a writable folder") from None


# the profile of `bench run` and api.run when none is given: resolved by resolve_profile
DEFAULT_PROFILE = "auto"


def resolve_profile(profile: str, study: Any = None, data_dir: str | None = None) -> str:
    """'auto' -> 'quick' on a CUDA machine; on a CPU the study's 'cpu' profile (real data, minutes)
    when its data set is in ``data_dir``, else 'smoke' (synthetic, seconds). Said on stderr."""
    if profile != "auto":
        return profile
    import torch

    if torch.cuda.is_available():
        chosen, why = "quick", "CUDA GPU found"
    elif study is not None and "cpu" in study.profiles:
        from bench.config import apply_overrides
        from bench.data import available_locally

        dataset = apply_overrides(study.base, study.profiles["cpu"].overrides).dataset
        where = data_dir or "./data"
        if available_locally(dataset, data_dir):
            chosen, why = "cpu", f"no CUDA GPU; {dataset} found in {where}"
        else:
            chosen, why = "smoke", f"no CUDA GPU and no {dataset} in {where} (synthetic data)"
    else:
        chosen, why = "smoke", "no CUDA GPU"
    print(f"bench: profile auto -> {chosen} ({why})", file=sys.stderr)
    return chosen


def recorded_or_auto(study: Any, profile: str | None, overrides: dict[str, Any], results_dir: str,
                     data_dir: str | None) -> tuple[str, dict[str, Any]]:
    """No profile: the profile (and, without overrides, the overrides) of the study's last
    ``bench run``, said on stderr; else 'auto' resolved. A given profile is resolved as always."""
    from bench.commands.status import recorded_choice
    from bench.store import ResultsStore

    if profile is None:
        chosen, recorded = recorded_choice(study.name, ResultsStore(results_dir), None, overrides)
        if chosen is not None:
            print(f"bench: profile {chosen} (the last run's; --profile to choose another)", file=sys.stderr)
            return chosen, recorded
    return resolve_profile(profile or DEFAULT_PROFILE, study, data_dir), overrides
