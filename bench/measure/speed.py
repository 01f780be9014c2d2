"""Throughput and step time of inference or training steps on synthetic input.

Times compute only: the input batch is made once on the device before timing, so data loading and
host-to-device copies are not in the figures. The step is the one training runs (fused optimizer on
CUDA, cuDNN autotuning on), timed as a training loop runs it: back to back.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.device import on_device
from bench.errors import UserError
from bench.measure.env import cpu_mark, host_load
from bench.measure._step import (
    OptimizerFactory,
    build_step,
    check_choices,
    make_input,
    private_copy,
    resolve_device,
)

DEFAULT_WARMUP = 3
DEFAULT_REPEATS = 10
# Steps per timed block on CUDA: a block is queued back to back between one pair of events, so the
# figure is throughput with the queue kept full. A CPU computes as it is called: one step a block.
CUDA_STEPS_PER_REPEAT = 5
LATENCY_REPEATS = 3


def _quartiles(times_ms: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3); with one sample all three are that sample."""
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0]
    q1, med, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return q1, med, q3


def steps_per_repeat(device: torch.device) -> int:
    """Steps in one timed block on ``device`` (see :data:`CUDA_STEPS_PER_REPEAT`)."""
    return CUDA_STEPS_PER_REPEAT if device.type == "cuda" else 1


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, repeats: int,
               per_repeat: int = 1) -> list[float]:
    """Milliseconds per step, one entry per block of ``per_repeat`` back-to-back calls of ``step``,
    after ``warmup`` untimed calls.

    CUDA: every block sits between one pair of events and the blocks follow each other without a
    host wait (the host waits once, after the last block), so the device queue never drains: the
    figure is the steady training throughput, not one step's latency. CPU: ``time.perf_counter``.
    """
    for _ in range(warmup):
        step()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # warm-up work must not leak into the first block
        stream = torch.cuda.current_stream(device)  # the device's stream, even if not the current device
        pairs = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(per_repeat):
                step()
            end.record(stream)
            pairs.append((start, end))
        torch.cuda.synchronize(device)
        times = [a.elapsed_time(b) / per_repeat for a, b in pairs]
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(per_repeat):
                step()
            times.append((time.perf_counter() - t0) * 1e3 / per_repeat)
    return times


def step_latency(step: Callable[[], None], device: torch.device, repeats: int = LATENCY_REPEATS) -> float:
    """Median milliseconds of one step from an idle device to its end (host wait before and after)."""
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


def measure_speed(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: str | torch.device,
    *,
    mode: str = "infer",
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    precision: str = "fp32",
    channels_last: bool = False,
    optimizer: OptimizerFactory | None = None,
) -> dict[str, float | int]:
    """Step time (milliseconds per step, median and inter-quartile range over ``repeats`` blocks of
    back-to-back steps), throughput (samples per second = batch_size / median step time) and one
    step's latency from an idle device, of ``mode`` steps built as training builds them
    (:func:`~bench.measure._step.build_step`).

    ``infer``: eval mode under ``torch.inference_mode``. ``train``: forward, cross-entropy on fixed
    random labels (auxiliary heads weighted 0.3), backward, optimizer step. ``optimizer`` is a
    factory ``params -> Optimizer`` (default: SGD lr 0.01 momentum 0.9 as training builds it, fused
    on CUDA). The model is copied first, so the caller's model is not changed. ``precision``: fp32 /
    tf32 (CUDA) / bf16 / fp16 (CUDA).
    Keys: ``<mode>_samples_per_s``, ``<mode>_step_time_ms``, ``<mode>_step_time_ms_iqr``,
    ``<mode>_step_latency_ms``, ``<mode>_repeats``, ``<mode>_steps_per_repeat``, ``<mode>_batch_size``,
    ``<mode>_load_avg_1min`` and ``<mode>_other_cpu_pct`` (other processes' share of all CPUs' time
    during the timing: :func:`bench.measure.env.host_load`).
    """
    dev = resolve_device(device)
    check_choices(mode, precision, dev)
    if repeats < 1 or warmup < 0:
        raise UserError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats} warmup={warmup}")
    m = private_copy(model, dev, channels_last)
    x = make_input(tuple(input_shape), batch_size, dev, channels_last)
    step = build_step(m, x, mode, precision, dev, optimizer)
    per = steps_per_repeat(dev)
    mark = cpu_mark()
    with on_device(dev):
        times = time_steps(step, dev, warmup, repeats, per)
        latency = step_latency(step, dev)
    load = host_load(mark)  # the machine's load over this timing: a busy host makes it noise
    q1, med, q3 = _quartiles(times)
    return dict(zip(speed_keys(mode), (
        batch_size / (med / 1e3) if med > 0 else float("inf"), med, q3 - q1, latency, int(repeats), int(per),
        int(batch_size), load["load_avg_1min"], load["other_cpu_pct"]), strict=True))


def speed_keys(mode: str) -> tuple[str, ...]:
    """The keys :func:`measure_speed` returns for ``mode``, in its order."""
    return tuple(f"{mode}_{k}" for k in ("samples_per_s", "step_time_ms", "step_time_ms_iqr", "step_latency_ms",
                                         "repeats", "steps_per_repeat", "batch_size", "load_avg_1min",
                                         "other_cpu_pct"))
