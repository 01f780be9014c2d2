"""Fixtures and machine info for the micro-benchmarks (pytest-benchmark).

The benchmarks run on CUDA when there is one, else on CPU (as in CI). Each one also asserts its
result, so with ``--benchmark-disable`` they still run once, as plain tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch


def pytest_benchmark_update_machine_info(machine_info: dict[str, Any]) -> None:
    """Record what the timings depend on beyond pytest-benchmark's CPU info."""
    cuda = torch.cuda.is_available()
    machine_info["torch_version"] = torch.__version__
    machine_info["cuda_version"] = torch.version.cuda
    machine_info["device"] = "cuda" if cuda else "cpu"
    machine_info["device_name"] = torch.cuda.get_device_name(0) if cuda else machine_info.get("cpu", {}).get(
        "brand_raw", "cpu")
    machine_info["torch_num_threads"] = torch.get_num_threads()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def sync(device: torch.device) -> Callable[[], None]:
    """Wait for queued device work, so a round's time includes its kernels (no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@pytest.fixture(scope="session")
def pedantic() -> dict[str, int]:
    """``benchmark.pedantic`` settings: fixed and small, since these run inside `make test` on a
    2-core CI machine."""
    return {"rounds": 5, "iterations": 1, "warmup_rounds": 1}
