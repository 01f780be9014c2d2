"""What a run will cost, known before it runs: its optimizer steps, training samples and training
multiply-adds (3 x the forward multiply-adds of convolutions and matrix products per training image,
counted on the meta device: no weights, no images, so any size is estimated, not allocated).

``bench plan`` prices the cells of a study with these; the runner weights its "time left" by them,
since the cells of one study differ in size (a 56-layer net costs 3x a 20-layer one).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

from bench.config import RunConfig
from bench.data.sources import input_shape, stored_shape, stored_train_size
from bench.data.split import val_count

# forward + backward ~ 3 x the forward pass's multiply-adds (the backward computes two products per one)
TRAIN_MACS_PER_FORWARD = 3


def train_size(cfg: RunConfig) -> int | None:
    """Training images one epoch goes through (after the validation split and subset, as the trainer
    takes them), or None where the data set's size is not known without loading it."""
    n = stored_train_size(cfg.dataset)
    if n is None:
        return None
    n_train = n - val_count(n, cfg.val_size)
    return min(cfg.train_subset, n_train) if cfg.train_subset is not None else n_train


def estimate_steps(cfg: RunConfig) -> int | None:
    """Optimizer steps of the run: ``iterations``, else epochs x batches per epoch (last one partial)."""
    if cfg.iterations:
        return cfg.iterations
    n = train_size(cfg)
    if n is None:
        return None
    return int(cfg.epochs or 0) * -(-n // cfg.batch_size)


def estimate_samples(cfg: RunConfig) -> int | None:
    """Training samples the run processes (epochs x train size, or iterations x batch)."""
    if cfg.iterations:
        return cfg.iterations * cfg.batch_size
    n = train_size(cfg)
    return None if n is None else int(n * (cfg.epochs or 0))


def estimate_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """The model's input shape, without loading the data (CIFAR-sized when only loading can tell)."""
    return input_shape(cfg, stored_shape(cfg.dataset) or (3, 32, 32))


def forward_macs(cfg: RunConfig, shape: tuple[int, int, int]) -> float:
    """Multiply-adds of convolutions and matrix products for one image (as ``macs_conv_linear``),
    counted on the meta device; NaN for a model that cannot run there."""
    return _forward_macs(model_key(cfg, shape))


def model_key(cfg: RunConfig, shape: tuple[int, int, int] | None) -> str:
    """What a model's per-image cost depends on: its name, arguments and input shape."""
    return json.dumps([cfg.model, cfg.model_kwargs, shape], sort_keys=True, default=str)


@lru_cache(maxsize=256)
def _forward_macs(key: str) -> float:
    import torch

    from bench.measure.compute import count_compute_meta
    from bench.models import create_model

    name, kwargs, shape = json.loads(key)
    try:
        with torch.device("meta"):
            model = create_model(name, in_channels=shape[0], **kwargs)
        return float(count_compute_meta(model, tuple(shape))["macs_conv_linear"])  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an estimate only: unknown, not a failure
        return math.nan


def train_macs(cfg: RunConfig) -> float:
    """The run's training multiply-adds (3 x forward conv+linear MACs x training images); NaN when
    its length or its model's cost cannot be known before running."""
    samples = estimate_samples(cfg)
    if not samples:
        return math.nan
    return TRAIN_MACS_PER_FORWARD * forward_macs(cfg, estimate_shape(cfg)) * samples
