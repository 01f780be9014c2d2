"""Measurements of a model: parameters, compute, speed, memory, environment, per-layer table.

Every function returns a flat dict (or a DataFrame) with the unit in each key, so results from
many models stack into one table. :func:`measure_model` does all of them for a model name.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from bench.errors import UserError
from bench.measure.compute import COMPUTE_KEYS, count_compute, count_compute_meta, footprint
from bench.measure.env import environment
from bench.measure.layers import layer_table
from bench.measure.memory import measure_memory, memory_keys
from bench.measure.params import PARAM_KEYS, count_params
from bench.measure.speed import DEFAULT_REPEATS, DEFAULT_WARMUP, measure_speed, speed_keys

__all__ = [
    "check_fits",
    "count_compute",
    "count_compute_meta",
    "count_params",
    "environment",
    "layer_table",
    "measure_memory",
    "measure_model",
    "measure_speed",
    "measurement_keys",
    "shape_str",
]

MODES = ("infer", "train")  # the steps measure_model times


def measurement_keys() -> tuple[str, ...]:
    """The numbers :func:`measure_model` records of a model (parameters, compute, and per mode its
    speed and memory), from the keys each measuring function declares."""
    per_mode = (k for mode in MODES for k in (*speed_keys(mode), *memory_keys(mode)))
    return tuple(dict.fromkeys((*PARAM_KEYS, *COMPUTE_KEYS, *per_mode)))


def shape_str(shape: tuple[int, ...]) -> str:
    """``(3, 32, 32)`` -> ``"3x32x32"``."""
    return "x".join(str(int(s)) for s in shape)


COUNT_ON_META_BYTES = 1 << 30  # a model and one sample larger than this is counted on the meta device


def available_bytes(device: str | torch.device) -> int:
    """Memory free for a measurement on ``device``: the GPU's free memory, else the host's available."""
    from bench.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: let the allocator say


def check_fits(model_name: str, shape: tuple[int, ...], batch_size: int, device: str | torch.device,
               params: int, activations: int, num_classes: int = 10) -> None:
    """UserError when timing ``model_name`` would need more memory than ``device`` has free:
    weights, gradients and two optimizer buffers, plus a batch's input and activations kept for the
    backward pass (a lower bound, fp32)."""
    need = 4 * (4 * params + batch_size * (activations + math.prod(shape)))
    free = available_bytes(device)
    if need > free:
        raise UserError(f"measuring {model_name} ({num_classes} classes, {params:,} parameters) at batch "
                        f"{batch_size} of {'x'.join(map(str, shape))} needs at "
                        f"least {need / 2**30:,.1f} GiB, {free / 2**30:,.1f} GiB free on {device} (accepted: a "
                        "smaller batch size, image size or number of classes, or --no-speed: counted without "
                        "allocating)")


def measure_model(
    model_name: str,
    *,
    input_shape: tuple[int, int, int] | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    num_classes: int = 10,
    model_kwargs: dict[str, Any] | None = None,
    precision: str = "fp32",
    channels_last: bool = False,
    speed: bool = True,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
) -> dict[str, Any]:
    """Everything about one model in one flat dict.

    Builds ``model_name`` with ``in_channels = input_shape[0]`` (``input_shape`` defaults to the
    model's ``model_info(...)['input_size']``), then records: ``model``, ``input_shape``
    (``"3x32x32"``), ``device``, ``batch_size``, ``precision``, ``channels_last``, the
    :func:`count_params` and :func:`count_compute` keys (per sample), and, if ``speed``, the
    :func:`measure_speed` and :func:`measure_memory` keys for ``infer`` and ``train`` (memory is
    None on CPU), plus the :func:`environment` keys.
    """
    from bench.models import create_model, model_info  # late: the zoo imports many modules

    c, h, w = (int(s) for s in (input_shape or model_info(model_name)["input_size"]))
    shape = (c, h, w)
    with torch.device("meta"):  # sized before anything is allocated: counted here if too large
        meta = create_model(model_name, num_classes=num_classes, in_channels=shape[0], **(model_kwargs or {}))
    params, activations = footprint(meta, shape)
    count_bytes = 4 * (params + activations + math.prod(shape))
    if speed:
        check_fits(model_name, shape, batch_size, device, params, activations, num_classes)
    model = meta if count_bytes > COUNT_ON_META_BYTES else create_model(
        model_name, num_classes=num_classes, in_channels=shape[0], **(model_kwargs or {}))
    out: dict[str, Any] = {
        "model": model_name,
        "input_shape": shape_str(shape),
        "device": str(device),
        "batch_size": int(batch_size),
        "precision": precision,
        "channels_last": bool(channels_last),
    }
    out.update(count_params(model))
    out.update(count_compute_meta(model, shape) if model is meta else count_compute(model, shape))
    if speed:
        for mode in MODES:
            out.update(measure_speed(model, shape, batch_size, device, mode=mode, warmup=warmup,
                                     repeats=repeats, precision=precision, channels_last=channels_last))
            out.update(measure_memory(model, shape, batch_size, device, mode=mode, precision=precision,
                                      channels_last=channels_last))
    from bench.device import resolve_device

    out.update(environment(resolve_device(device)))  # names the run's own GPU for cuda:N
    return out
