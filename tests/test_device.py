"""Tests of bench.device (TF32 settings) and of the checkpoints' RNG states (bench.train.checkpoint).

The CUDA calls of the RNG-state code are replaced by a stand-in that records what was asked, so the
one-GPU rule is checked here; a ``cuda``-marked test does the same on a real GPU.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from bench import device as device_mod
from bench.device import numerics, resolve_precision, tf32_state
from bench.train import checkpoint
from bench.train.checkpoint import rng_state, set_rng_state

CPU = torch.device("cpu")
NEW_API = device_mod._fp32_precision_api()


@pytest.fixture
def restore_tf32() -> Any:
    before = [(o, a, getattr(o, a)) for _, o, a in device_mod._tf32_settings()]
    yield
    for o, a, v in before:
        setattr(o, a, v)


@pytest.mark.skipif(not NEW_API, reason="this torch has no fp32_precision API (before 2.9)")
@pytest.mark.usefixtures("restore_tf32")
def test_numerics_uses_the_fp32_precision_api_even_after_a_mixed_setting() -> None:
    # a mix of the new and legacy APIs elsewhere in the process: cuDNN conv and RNN set apart, so
    # reading the legacy cudnn.allow_tf32 flag raises, as the earlier numerics() did on entry
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    with pytest.raises(RuntimeError, match="mix of the legacy and new APIs"):
        _ = torch.backends.cudnn.allow_tf32
    before = tf32_state()
    gpu = torch.device("cuda", 0)  # numerics() sets flags only; no GPU is touched
    with numerics(resolve_precision("fp32", CPU), gpu, autotune=False):
        assert set(tf32_state().values()) == {"ieee"}  # an fp32 arm is never TF32, matmul or conv
        assert torch.backends.cuda.matmul.allow_tf32 is False
    with numerics(device_mod.Precision("tf32", None, False, True), gpu, autotune=False):
        assert set(tf32_state().values()) == {"tf32"}
    assert tf32_state() == before


@pytest.mark.usefixtures("restore_tf32")
def test_numerics_legacy_flags_where_the_new_api_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_mod, "_fp32_precision_api", lambda: False)
    assert set(tf32_state()) == {"cuda.matmul.allow_tf32", "cudnn.allow_tf32"}
    torch.backends.cudnn.allow_tf32 = True
    with numerics(resolve_precision("fp32", CPU), CPU):
        assert tf32_state() == {"cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": False}
    assert torch.backends.cudnn.allow_tf32 is True


class FakeCudaRng:
    """Stand-in for the torch.cuda RNG calls: one state tensor per GPU index, calls recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.states = {i: torch.tensor([i], dtype=torch.uint8) for i in range(count)}
        self.calls: list[str] = []
        m = monkeypatch
        m.setattr(torch.cuda, "is_available", lambda: True)
        m.setattr(torch.cuda, "is_initialized", lambda: True)
        m.setattr(torch.cuda, "get_rng_state", self.get)
        m.setattr(torch.cuda, "set_rng_state", self.set)
        m.setattr(torch.cuda, "get_rng_state_all", lambda: self.fail("get_rng_state_all"))
        m.setattr(torch.cuda, "set_rng_state_all", lambda s: self.fail("set_rng_state_all"))

    def fail(self, name: str) -> None:
        raise AssertionError(f"{name} touches every visible GPU")

    def get(self, device: Any = "cuda") -> torch.Tensor:
        self.calls.append(f"get {device}")
        return self.states[torch.device(device).index].clone()

    def set(self, state: torch.Tensor, device: Any = "cuda") -> None:
        self.calls.append(f"set {device}")
        self.states[torch.device(device).index] = state.clone()


def test_checkpoint_saves_and_restores_only_the_runs_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # written where four GPUs were visible, the run on cuda:2 ...
    fake = FakeCudaRng(monkeypatch, 4)
    saved = rng_state(torch.device("cuda", 2))
    assert fake.calls == ["get cuda:2"] and "cuda" not in saved
    assert saved["cuda_device"].tolist() == [2]
    # ... resumed by a worker pinned to that GPU, which it sees as cuda:0 (the only one)
    one = FakeCudaRng(monkeypatch, 1)
    set_rng_state(saved, torch.device("cuda", 0))
    assert one.calls == ["set cuda:0"] and one.states[0].tolist() == [2]


def test_old_checkpoints_with_every_gpus_state_still_resume(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "cuda": [torch.tensor([10], dtype=torch.uint8), torch.tensor([11], dtype=torch.uint8)]}
    set_rng_state(legacy, CPU)  # a CPU run ignores GPU states
    set_rng_state(legacy)
    fake = FakeCudaRng(monkeypatch, 4)
    set_rng_state(legacy, torch.device("cuda", 1))
    assert fake.states[1].tolist() == [11]
    set_rng_state(legacy, torch.device("cuda", 3))  # index beyond the saved list: the first state
    assert fake.states[3].tolist() == [10] and fake.calls == ["set cuda:1", "set cuda:3"]


def test_cpu_rng_round_trip() -> None:
    state = rng_state(CPU)
    assert set(state) == {"python", "numpy", "torch"}
    a = (random.random(), float(np.random.rand()), torch.rand(1).item())
    set_rng_state(state, CPU)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == a


@pytest.mark.cuda
def test_cuda_checkpoint_rng_is_the_runs_device_only() -> None:
    dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.init()
    state = rng_state(dev)
    assert "cuda" not in state and torch.equal(state["cuda_device"], torch.cuda.get_rng_state(dev))
    a = torch.rand(4, device=dev)
    set_rng_state(state, dev)
    assert torch.equal(torch.rand(4, device=dev), a)
    assert checkpoint.rng_state(CPU).keys() == {"python", "numpy", "torch"}


def test_release_cached_memory_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.device import release_cached_memory

    assert release_cached_memory("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    calls = []

    def broken() -> None:  # what torch < 2.12 does after a failed capture
        calls.append(1)
        raise RuntimeError("captures_underway.empty() INTERNAL ASSERT FAILED\nmore")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    got = release_cached_memory(torch.device("cuda", 1))
    assert calls == [1] and got == ("torch.cuda.empty_cache() failed (RuntimeError: "
                                    "captures_underway.empty() INTERNAL ASSERT FAILED)")
    assert release_cached_memory("cpu") is None and calls == [1]


def test_runner_writes_the_record_when_empty_cache_raises(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A cell on a GPU whose allocator is broken: the cleanup fails, the record is still written."""
    import bench.train
    from bench.config import RunConfig
    from bench.measure import environment
    from bench.record import Cell
    from bench.runner import execute_cell
    from bench.store import ResultsStore
    from bench.train.engine import TrainResult

    environment()  # probed (and cached) before torch.cuda is faked below
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Fake GPU")

    def broken() -> None:
        raise RuntimeError("captures_underway.empty() INTERNAL ASSERT FAILED")

    monkeypatch.setattr(torch.cuda, "empty_cache", broken)
    monkeypatch.setattr(bench.train, "train", lambda cfg, **kw: TrainResult(
        "ok", [], {"final_test_acc": 0.5}, device="cuda:0"))
    cfg = RunConfig(model="mnist_cnn", dataset="synthetic:train=64,test=32,size=28,channels=1", epochs=1)
    cell = Cell("gpu", "smoke", {}, {}, 0, cfg)
    store = ResultsStore(tmp_path)
    store.write_study("gpu", {"name": "gpu", "run_ids": [cell.run_id], "cells": [cell.identity()]})
    rec = execute_cell(cell, store, device="cuda:0", measure=False)
    assert rec is not None and rec.status == "ok"
    back = store.read_record("gpu", cell.run_id)
    assert back is not None and back.status == "ok" and back.placement.device == "cuda:0"
    assert back.environment["device_name"] == "Fake GPU"
    assert "empty_cache() failed (RuntimeError: captures_underway" in capsys.readouterr().err


def test_auto_device_falling_back_to_the_cpu_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.device import auto_device_note

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    note = "--device auto: no CUDA GPU is visible, running on the CPU"
    assert auto_device_note("auto") == auto_device_note(None) == note
    assert auto_device_note("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert auto_device_note("auto") is None
