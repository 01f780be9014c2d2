"""Peak device memory of one inference or training step (CUDA only)."""

from __future__ import annotations

import torch
from torch import nn

from bench.device import memory_peaks, release_cached_memory, reset_memory_peaks
from bench.measure._step import (
    OptimizerFactory,
    build_step,
    check_choices,
    make_input,
    private_copy,
    resolve_device,
)


def measure_memory(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: str | torch.device,
    *,
    mode: str = "infer",
    precision: str = "fp32",
    channels_last: bool = False,
    optimizer: OptimizerFactory | None = None,
) -> dict[str, int | bool | None]:
    """Peak CUDA memory (bytes) during one ``mode`` step, as the caching allocator reports it.

    Keys: ``<mode>_peak_allocated_bytes`` (tensors), ``<mode>_peak_reserved_bytes`` (allocator
    pool), ``memory_measured``. The peak is device-wide: it includes the weights of the private
    model copy, the input batch, and anything else the process holds on that device. One step runs
    before the measured one, so a training figure is a steady-state step's, with the optimizer
    state (momentum) already in place. On a CPU (or
    other non-CUDA) device both values are None and ``memory_measured`` is False: no number is
    better than a made-up one.
    """
    dev = resolve_device(device)
    check_choices(mode, precision, dev)
    keys = memory_keys(mode)
    if dev.type != "cuda":
        return dict(zip(keys, (None, None, False), strict=True))
    m = private_copy(model, dev, channels_last)
    x = make_input(tuple(input_shape), batch_size, dev, channels_last)
    step = build_step(m, x, mode, precision, dev, optimizer)
    with torch.cuda.device(dev):
        # One untimed step first: a training step's steady state holds the optimizer state (SGD
        # momentum, Adam moments) that the first step creates, and cuDNN picks its algorithms.
        step()
        torch.cuda.synchronize(dev)
        release_cached_memory(dev)  # so the reserved peak is what this step needs, not leftovers
        reset_memory_peaks(dev)
        step()
        torch.cuda.synchronize(dev)
    allocated, reserved = memory_peaks(dev)
    out = dict(zip(keys, (allocated, reserved, True), strict=True))
    del step, m, x
    release_cached_memory(dev)
    return out


def memory_keys(mode: str) -> tuple[str, ...]:
    """The keys :func:`measure_memory` returns for ``mode``, in its order."""
    return f"{mode}_peak_allocated_bytes", f"{mode}_peak_reserved_bytes", "memory_measured"
