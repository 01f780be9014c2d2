"""The measurement cache: a model's params, MACs/FLOPs, speed and memory for one input and device,
measured once and kept as ``<folder>/<key>.json`` (the runner's folder is
``<results>/<study>/measurements/``).

The key (:func:`measurement_key`) holds what a measurement depends on: the model and its arguments,
the input shape, classes, batch size, precision, memory format, the device's name and
:data:`MEASUREMENT_SCHEMA`, not seeds or schedules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.errors import reason
from bench.faults import fault_point
from bench.files import read_json, write_json

__all__ = ["MEASUREMENT_SCHEMA", "cached_measurements", "measurement_key"]

# Part of every key: raise it when what cached_measurements records changes, so that cached
# measurements of the old kind are taken again instead of reaching new records.
MEASUREMENT_SCHEMA = 4  # 3: steps timed back to back, fused optimizer, autotuning on; 4: the load during each timing


def measurement_key(cfg: RunConfig, shape: tuple[int, int, int], num_classes: int, device_name: str) -> str:
    """The cache key of ``cfg``'s measurements on this input and device (16 hex digits)."""
    key = {
        "schema": MEASUREMENT_SCHEMA,
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "shape": shape,
        "num_classes": num_classes,
        "batch_size": cfg.batch_size,
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "device": device_name,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _read(path: Path) -> dict[str, Any] | None:
    """A cached measurement, or None: a missing or damaged entry (garbage, cut short, not a
    measurement) is a miss, measured again."""
    try:
        cached = read_json(path)
    except (FileNotFoundError, ValueError, OSError):
        return None
    ok = isinstance(cached, dict) and ("params_total" in cached or "measure_error" in cached)
    return cached if ok else None


def cached_measurements(cfg: RunConfig, shape: tuple[int, int, int], num_classes: int, folder: Path,
                        device: str) -> dict[str, Any]:
    """Params, MACs/FLOPs, speed and memory of ``cfg``'s model on this input and device, from the
    cache in ``folder`` or measured now and cached. A measurement that fails is
    ``{"measure_error": <one line>}`` (not cached): it must not cost the training run."""
    from bench.device import resolve_device, resolve_precision
    from bench.measure import environment, measure_model
    from bench.measure.env import device_name

    path = folder / f"{measurement_key(cfg, shape, num_classes, device_name(device) + device)}.json"
    cached = _read(path)
    if cached is not None:
        return cached
    fault_point("measure")
    # measure in the precision the run will actually use (e.g. fp16 -> bf16 on a CPU)
    precision = resolve_precision(cfg.precision, resolve_device(device)).used
    on_gpu = device.startswith("cuda")
    try:
        m = measure_model(
            cfg.model,
            input_shape=shape,
            batch_size=cfg.batch_size,
            device=device,
            num_classes=num_classes,
            model_kwargs=dict(cfg.model_kwargs),
            precision=precision,
            channels_last=cfg.channels_last,
            # CPU timings are indicative only; keep them cheap
            warmup=5 if on_gpu else 1,
            repeats=20 if on_gpu else 3,
        )
    except Exception as exc:  # noqa: BLE001 - a measurement problem must not cost the training run
        return {"measure_error": reason(exc)}
    env = environment(resolve_device(device))
    m = {k: v for k, v in m.items() if k not in env}  # the summary carries the environment once
    # What was measured is in the config already; keep these names from shadowing the summary's.
    for k in ("model", "device", "batch_size", "precision", "channels_last", "input_shape"):
        if k in m:
            m[f"measured_{k}"] = m.pop(k)
    write_json(path, m)
    return m
