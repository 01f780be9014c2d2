"""Shared fixtures: where the real data lives, and a quiet matplotlib."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import pytest
import torch

import experiments  # noqa: F401 - registers the studies, as the bench command does

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    """bench's own rule (commands.defaults.default_data_dir) seen from the repository: BENCH_DATA_DIR if
    set, else ../shared/data beside it, else its ./data; None when none is a folder."""
    for cand in (os.environ.get("BENCH_DATA_DIR"), REPO.parent / "shared" / "data", REPO / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (make test: one worker per core) each worker gets its share of the cores as torch
    threads, here and in the processes its tests start (on 2 cores, two workers took 6 min 14 s with two threads
    each and 5 min 7 s with one: oversubscribed threads wait on each other). An OMP_NUM_THREADS already set wins."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or "OMP_NUM_THREADS" in os.environ:
        return
    share = max(1, len(os.sched_getaffinity(0)) // int(workerinput["workercount"]))
    torch.set_num_threads(share)
    os.environ["OMP_NUM_THREADS"] = str(share)


def _start_order(item: pytest.Item) -> int:
    """The Slurm cluster's tests (a minute, mostly waiting on the scheduler), then the other slow ones, then
    the rest: with workers handed one test at a time (make test), the long tests run beside the short ones
    instead of last (with pytest-xdist's worksteal on 3 workers, the slow tests ran in the suite's last 110 s)."""
    if item.get_closest_marker("slurm") is not None:
        return 0
    return 1 if item.get_closest_marker("slow") is not None else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests start first (:func:`_start_order`; the order is otherwise the files'). Tests
    marked ``cuda`` skip, with the reason, where no CUDA GPU is visible (``pytest -m cuda`` selects
    them all on a GPU machine)."""
    items.sort(key=_start_order)  # stable: every worker collects the same order
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (marked cuda; none is visible here)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` that ``build`` fills, built once per test session and shared by every
    pytest-xdist worker (the first to ask builds it under a lock; the others wait, then read it). For
    expensive fixtures that tests only read."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    root = base / name
    with open(base / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (root / ".built").exists():
            root.mkdir(exist_ok=True)
            build(root)
            (root / ".built").touch()
    return root


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # One decoded-data cache per test session, never the user's own cache.
    if "BENCH_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bench-cache"))


@pytest.fixture(scope="module")
def one_thread() -> Any:
    """One intra-op thread here and in every child process started meanwhile: the same float order
    everywhere, and no oversubscription of a small CI machine."""
    old_threads, old_env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(old_threads)
    if old_env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = old_env
