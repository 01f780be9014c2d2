"""Throughput and step time of inference or training steps on synthetic input.

Times compute only: the input batch is made once on the device before timing, so data loading and
host-to-device copies are not in the figures.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench.device import on_device
from bench.errors import UserError
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


def _quartiles(times_ms: list[float]) -> tuple[float, float, float]:
    """(q1, median, q3); with one sample all three are that sample."""
    if len(times_ms) == 1:
        return times_ms[0], times_ms[0], times_ms[0]
    q1, med, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return q1, med, q3


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Milliseconds per call of ``step``, one entry per repeat, after ``warmup`` untimed calls.

    CUDA: a pair of events around each repeat; the host waits on the end event only after it has
    been recorded, so nothing inside the timed region blocks the host. CPU: ``time.perf_counter``.
    """
    for _ in range(warmup):
        step()
    times: list[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # warm-up work must not leak into the first repeat
        stream = torch.cuda.current_stream(device)  # the device's stream, even if not the current device
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            step()
            end.record(stream)
            end.synchronize()  # after the region; each repeat starts with an empty queue
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


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
    """Step time (milliseconds, median and inter-quartile range over ``repeats``) and throughput
    (samples per second = batch_size / median step time) of ``mode`` steps.

    ``infer``: eval mode under ``torch.inference_mode``. ``train``: forward, cross-entropy on fixed
    random labels (auxiliary heads weighted 0.3), backward, optimizer step. ``optimizer`` is a
    factory ``params -> Optimizer`` (default SGD lr 0.01 momentum 0.9). The model is copied first,
    so the caller's model is not changed. ``precision``: fp32 / tf32 (CUDA) / bf16 / fp16 (CUDA).
    Keys: ``<mode>_samples_per_s``, ``<mode>_step_time_ms``, ``<mode>_step_time_ms_iqr``,
    ``<mode>_repeats``, ``<mode>_batch_size``.
    """
    dev = resolve_device(device)
    check_choices(mode, precision, dev)
    if repeats < 1 or warmup < 0:
        raise UserError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats} warmup={warmup}")
    m = private_copy(model, dev, channels_last)
    x = make_input(tuple(input_shape), batch_size, dev, channels_last)
    step = build_step(m, x, mode, precision, dev, optimizer)
    with on_device(dev):
        times = time_steps(step, dev, warmup, repeats)
    q1, med, q3 = _quartiles(times)
    return {
        f"{mode}_samples_per_s": batch_size / (med / 1e3) if med > 0 else float("inf"),
        f"{mode}_step_time_ms": med,
        f"{mode}_step_time_ms_iqr": q3 - q1,
        f"{mode}_repeats": int(repeats),
        f"{mode}_batch_size": int(batch_size),
    }
