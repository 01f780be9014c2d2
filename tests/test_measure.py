"""Tests of bench.measure: counts against published oracles, and sanity (never thresholds) for speed."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from bench.errors import UserError
from bench.measure import (
    count_compute,
    count_params,
    environment,
    layer_table,
    measure_memory,
    measure_model,
    measure_speed,
)
from bench.models import create_model
from bench.train.optim import build_optimizer


def tiny_net(in_ch: int = 3, classes: int = 10) -> nn.Module:
    """Conv(3->4, 3x3, bias) -> ReLU -> pool -> Flatten -> Linear(4*4*4 -> 10): counts by hand."""
    return nn.Sequential(
        nn.Conv2d(in_ch, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, classes),
    )


def test_count_params_tiny() -> None:
    m = tiny_net()
    m[0].weight.requires_grad_(False)
    got = count_params(m)
    conv_w, conv_b, fc = 4 * 3 * 3 * 3, 4, 64 * 10 + 10
    assert got == {"params_total": conv_w + conv_b + fc, "params_trainable": conv_b + fc}


def test_count_params_tied_weights_count_once() -> None:
    a = nn.Linear(5, 5, bias=False)
    m = nn.Sequential(a, a)
    assert count_params(m)["params_total"] == 25


def test_macs_oracle_torchvision_resnet18() -> None:
    # torchvision publishes resnet18 '_ops' = 1.814 GFLOPS, counted as multiply-adds.
    published = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]
    got = count_compute(torchvision.models.resnet18(), (3, 224, 224))
    assert round(got["macs_conv_linear"] / 1e9, 3) == published == 1.814
    assert got["macs_fvcore_total"] > got["macs_conv_linear"]  # plus batch norm and pooling
    assert got["flops_torch"] == 2 * got["macs_conv_linear"]
    assert "aten::add_" in got["fvcore_skipped_ops"]  # residual additions are skipped


def test_macs_oracle_cifar_resnet20() -> None:
    # He et al. 2016 CIFAR ResNet-20 at 32x32: 40.55 M multiply-adds (conv + linear).
    got = count_compute(create_model("resnet20", num_classes=10), (3, 32, 32))
    assert abs(got["macs_conv_linear"] / 1e6 - 40.55) <= 0.01


def test_flops_torch_is_twice_macs_for_conv_linear_net() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2), nn.Flatten(),
                      nn.Linear(8 * 7 * 7, 10))
    got = count_compute(m, (3, 16, 16))
    expected = 8 * 3 * 9 * 16 * 16 + 8 * 8 * 9 * 7 * 7 + 8 * 7 * 7 * 10
    assert got["macs_conv_linear"] == expected
    assert got["flops_torch"] == 2 * expected


def test_plain_and_residual_twins_have_same_macs() -> None:
    res = count_compute(create_model("resnet20"), (3, 32, 32))
    plain = count_compute(create_model("plain20"), (3, 32, 32))
    assert res["macs_conv_linear"] == plain["macs_conv_linear"]


def test_count_compute_restores_training_mode() -> None:
    m = tiny_net().train()
    m[0].eval()
    count_compute(m, (3, 8, 8))
    assert m.training and not m[0].training


def test_speed_sanity_and_caller_model_unchanged() -> None:
    m = tiny_net()
    before = [p.detach().clone() for p in m.parameters()]
    runs = [measure_speed(m, (3, 8, 8), 4, "cpu", mode="train", warmup=1, repeats=5) for _ in range(2)]
    for r in runs:
        assert set(r) == {"train_samples_per_s", "train_step_time_ms", "train_step_time_ms_iqr",
                          "train_step_latency_ms", "train_repeats", "train_steps_per_repeat", "train_batch_size",
                          "train_load_avg_1min", "train_other_cpu_pct"}
        assert r["train_repeats"] == 5 and r["train_batch_size"] == 4 and r["train_steps_per_repeat"] == 1
        assert r["train_step_latency_ms"] > 0
        assert math.isfinite(r["train_samples_per_s"]) and r["train_samples_per_s"] > 0
        assert r["train_step_time_ms"] > 0 and r["train_step_time_ms_iqr"] >= 0
        assert r["train_samples_per_s"] == pytest.approx(4 / (r["train_step_time_ms"] / 1e3))
    a, b = (r["train_step_time_ms"] for r in runs)
    assert max(a, b) / min(a, b) < 10  # same order of magnitude, not a speed threshold
    assert all(torch.equal(p, q) for p, q in zip(before, m.parameters(), strict=True))
    assert m.training  # the caller's mode is untouched


def test_time_steps_blocks_of_back_to_back_steps() -> None:
    from bench.measure.speed import time_steps

    calls = []

    def step() -> None:
        calls.append(time.perf_counter())
        time.sleep(0.002)

    times = time_steps(step, torch.device("cpu"), warmup=2, repeats=3, per_repeat=4)
    assert len(calls) == 2 + 3 * 4 and len(times) == 3
    assert all(2.0 <= t < 2.0 * 4 for t in times)  # milliseconds per step, not per block of 4


def test_step_optimizer_is_built_as_training_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.measure import _step
    from bench.train.optim import accel_kwargs

    built = []

    def spy(cfg: Any, params: Any) -> torch.optim.Optimizer:
        built.append(cfg)
        return build_optimizer(cfg, params)

    monkeypatch.setattr(_step, "build_optimizer", spy)
    measure_speed(tiny_net(), (3, 8, 8), 2, "cpu", mode="train", warmup=0, repeats=1)
    assert built == [_step.DEFAULT_OPTIMIZER]
    assert accel_kwargs(_step.DEFAULT_OPTIMIZER.optimizer, on_cuda=True) == {"fused": True}  # on a GPU


@pytest.mark.cuda
def test_cuda_step_is_fused_autotuned_and_timed_back_to_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.measure import _step

    seen: dict[str, Any] = {}

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny_net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen["benchmark"] = torch.backends.cudnn.benchmark
            return self.net(x)

    real = _step.build_optimizer
    monkeypatch.setattr(_step, "build_optimizer", lambda cfg, p: seen.setdefault("opt", real(cfg, p)))
    r = measure_speed(Probe(), (3, 8, 8), 4, "cuda", mode="train", warmup=1, repeats=3)
    assert seen["opt"].defaults.get("fused") is True and seen["benchmark"] is True
    assert r["train_steps_per_repeat"] == 5 and r["train_step_latency_ms"] > 0


def test_speed_infer_bf16_and_tuple_outputs() -> None:
    r = measure_speed(tiny_net(), (3, 8, 8), 2, "cpu", mode="infer", warmup=0, repeats=2,
                      precision="bf16", channels_last=True)
    assert r["infer_step_time_ms"] > 0
    r = measure_speed(WithAux(), (3, 8, 8), 2, "cpu", mode="train", warmup=0, repeats=1)
    assert r["train_step_time_ms"] > 0 and r["train_step_time_ms_iqr"] == 0


class WithAux(nn.Module):
    """Returns (logits, aux_logits) in training, like GoogLeNet's auxiliary classifiers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tiny_net()
        self.aux = nn.Linear(3 * 8 * 8, 10)

    def forward(self, x: torch.Tensor):
        out = self.body(x)
        return (out, self.aux(x.flatten(1))) if self.training else out


@pytest.mark.parametrize("kw", [{"mode": "eval"}, {"precision": "fp8"}, {"precision": "fp16"}, {"repeats": 0}])
def test_speed_bad_arguments_are_user_errors(kw: dict) -> None:
    with pytest.raises(UserError):
        measure_speed(tiny_net(), (3, 8, 8), 2, "cpu", **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answer")
def test_cuda_requested_without_cuda_is_user_error() -> None:
    with pytest.raises(UserError, match="CUDA"):
        measure_speed(tiny_net(), (3, 8, 8), 2, "cuda")


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_memory_on_cpu_is_not_measured(mode: str) -> None:
    got = measure_memory(tiny_net(), (3, 8, 8), 4, "cpu", mode=mode)
    assert got == {f"{mode}_peak_allocated_bytes": None, f"{mode}_peak_reserved_bytes": None,
                   "memory_measured": False}


@pytest.mark.cuda
def test_memory_on_cuda_train_exceeds_infer() -> None:
    m = create_model("resnet20")
    inf = measure_memory(m, (3, 32, 32), 64, "cuda", mode="infer")
    tr = measure_memory(m, (3, 32, 32), 64, "cuda", mode="train")
    assert inf["memory_measured"] and tr["memory_measured"]
    assert 0 < inf["infer_peak_allocated_bytes"] < tr["train_peak_allocated_bytes"]
    assert tr["train_peak_reserved_bytes"] >= tr["train_peak_allocated_bytes"]


def test_environment_keys() -> None:
    env = environment()
    keys = {"python_version", "torch_version", "torchvision_version", "cuda_version", "cudnn_version",
            "device_name", "gpu_count", "driver_version", "cpu_model", "cpu_count", "hostname",
            "platform", "git_commit", "git_dirty"}
    assert keys <= set(env)
    assert env["torch_version"] == torch.__version__
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["git_dirty"] in (None, True, False)
    env["torch_version"] = "changed"
    assert environment()["torch_version"] == torch.__version__  # the cache hands out copies


def test_host_load_counts_the_other_processes_share() -> None:
    """Between two marks the machine was busy 1.5 of its 2 CPU-seconds, 0.5 of them ours (this process
    and its children): other processes used 1.0 of 2, 50%. Our own work is never counted as load."""
    from bench.measure.env import CpuMark, host_load

    hz = os.sysconf("SC_CLK_TCK")
    start = CpuMark(busy_ticks=10 * hz, total_ticks=40 * hz, own_cpu_s=3.0)
    assert host_load(start, CpuMark(int(11.5 * hz), 42 * hz, 3.5))["other_cpu_pct"] == 50.0
    assert host_load(start, CpuMark(int(11.5 * hz), 42 * hz, 4.5))["other_cpu_pct"] == 0.0  # all ours
    assert host_load(start, CpuMark(None, None, 4.0))["other_cpu_pct"] is None  # no /proc/stat
    assert host_load(None)["other_cpu_pct"] is None


def test_environment_measures_the_load_from_the_mark_it_is_given() -> None:
    """Without a mark there is no window to measure: other_cpu_pct is None, however often it is called
    (it once counted from the previous call in the process, whatever happened between)."""
    from bench.measure.env import cpu_mark

    assert environment()["other_cpu_pct"] is None and environment()["other_cpu_pct"] is None
    mark = cpu_mark()
    sum(i * i for i in range(200_000))  # some CPU time of our own, which is not load
    env = environment(since=mark)
    assert {"load_avg_1min", "load_avg_5min", "other_cpu_pct"} <= set(env)
    if Path("/proc/stat").exists():
        assert 0.0 <= env["other_cpu_pct"] <= 100.0


def test_a_records_load_window_is_its_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record's other_cpu_pct covers the cell's training: the mark is taken after the measurement
    (which has its own windows) and right before train(), and the record's environment is taken from it."""
    import bench.runner as runner
    import bench.train
    from bench.store import ResultsStore
    from bench.study import get_study

    events: list[Any] = []
    real_mark, real_env, real_train = runner.cpu_mark, runner.environment, bench.train.train

    def mark() -> Any:
        events.append("mark")
        m = real_mark()
        events.append(m)
        return m

    def env(device: Any = None, since: Any = None) -> dict[str, Any]:
        events.append(("environment", since))
        return real_env(device, since=since)

    def train(*args: Any, **kwargs: Any) -> Any:
        events.append("train")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(runner, "cpu_mark", mark)
    monkeypatch.setattr(runner, "environment", env)
    monkeypatch.setattr(runner, "get_measurements", lambda *a, **k: events.append("measure") or {})
    monkeypatch.setattr(bench.train, "train", train)  # the runner imports it when a cell starts
    cell = get_study("residual").cells("smoke")[0]
    record = runner.execute_cell(cell, ResultsStore(tmp_path), measure=True, end_steps=())
    assert record is not None and record.outcome.status == "ok"
    assert [e for e in events if isinstance(e, str)] == ["measure", "mark", "train"], events
    assert events[-1] == ("environment", events[events.index("mark") + 1])
    if Path("/proc/stat").exists():
        assert 0.0 <= record.environment["other_cpu_pct"] <= 100.0


def test_git_state_outside_a_checkout(tmp_path) -> None:
    from bench.measure.env import git_state

    assert git_state(tmp_path) == (None, None)


def test_layer_table_gives_first_linear_in_features() -> None:
    m = torchvision.models.alexnet(num_classes=10)
    df = layer_table(m, (3, 224, 224))
    assert list(df.columns[:4]) == ["name", "type", "output_shape", "output_features"]
    i = df.index[df["type"] == "Linear"][0]
    first_linear = m.get_submodule(df.loc[i, "name"])
    assert df.loc[i - 1, "output_features"] == first_linear.in_features == 256 * 6 * 6
    assert df.set_index("name").loc["avgpool", "output_shape"] == (1, 256, 6, 6)
    assert df["params"].sum() == count_params(m)["params_total"]  # leaves partition the params
    convs = df[df["type"].isin(["Conv2d", "Linear"])]["macs"].sum()
    assert convs == count_compute(m, (3, 224, 224))["macs_conv_linear"]


def test_layer_table_reused_module_and_containers() -> None:
    df = layer_table(torchvision.models.resnet18(), (3, 64, 64), containers=True)
    relu = df.set_index("name").loc["layer1.0.relu"]
    assert relu["calls"] == 2  # torchvision's BasicBlock calls one ReLU twice
    assert df.iloc[-1]["name"] == "(model)" and not df.iloc[-1]["leaf"]


def test_measure_model_flat_dict() -> None:
    got = measure_model("resnet20", batch_size=2, warmup=0, repeats=1)
    assert got["model"] == "resnet20" and got["input_shape"] == "3x32x32" and got["device"] == "cpu"
    assert abs(got["macs_conv_linear"] / 1e6 - 40.55) <= 0.01
    assert got["infer_samples_per_s"] > 0 and got["train_samples_per_s"] > 0
    assert got["memory_measured"] is False and "torch_version" in got
    assert all(not isinstance(v, (dict, list)) for v in got.values())  # flat


def test_measure_model_in_channels_from_input_shape() -> None:
    got = measure_model("resnet20", input_shape=(1, 28, 28), speed=False)
    assert got["input_shape"] == "1x28x28" and "infer_step_time_ms" not in got
    assert got["macs_conv_linear"] > 0
