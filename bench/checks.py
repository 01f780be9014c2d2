"""Checks of a run's config against the registries, made when a study is expanded into cells.

:func:`bench.config.validate` checks each value on its own; this module checks what needs the
registries or the data set's known size: model name and arguments (the model is built on the meta
device, so every argument reaches the code that reads it), optimizer, schedule, data set name and
options, and the validation split and subsets against the training set. ``Study.cells`` calls it,
so ``plan``, ``run``, ``status`` and every executor accept and reject the same configs before
anything is written or trained.
"""

from __future__ import annotations

import json

from bench.config import RunConfig
from bench.errors import UserError

_built: set[str] = set()  # model configs already built once in this process


def dataset_facts(dataset: str) -> tuple[int | None, tuple[int, int, int] | None]:
    """(training images, (C, H, W)) of a data set name when known without loading it, else None.

    Unknown base names and bad ``synthetic:`` options are a UserError."""
    from bench.data import DATASETS
    from bench.data.sources import stored_shape, stored_train_size

    base, colon, arg = dataset.partition(":")
    DATASETS.get(base.strip())  # unknown name -> UserError with close matches
    if colon and not DATASETS.meta(base.strip()).get("takes_arg"):
        raise UserError(f"data set {base!r} takes no options, got {dataset!r}")
    if base.strip() == "imagefolder" and not arg.strip():
        raise UserError("data set 'imagefolder:' needs a path (accepted: imagefolder:<folder or .tar[.gz]>)")
    return stored_train_size(dataset), stored_shape(dataset)  # the data layer's one lookup


def check_config(cfg: RunConfig) -> None:
    """Raise UserError when ``cfg`` names something unknown or cannot fit its data set."""
    from bench.train.optim import OPTIMIZERS, SCHEDULES

    OPTIMIZERS.get(cfg.optimizer)
    SCHEDULES.get(cfg.schedule)
    n_train, shape = dataset_facts(cfg.dataset)
    if n_train is not None:
        n_val = int(cfg.val_size) if cfg.val_size >= 1 else int(n_train * cfg.val_size)
        if n_val >= n_train:
            raise UserError(f"bad val_size {cfg.val_size!r}: {cfg.dataset} has {n_train} training images "
                            f"(accepted: fewer images, or a fraction < 1)")
        if cfg.train_subset is not None and cfg.train_subset > n_train - n_val:
            raise UserError(f"bad train_subset {cfg.train_subset}: {cfg.dataset} leaves {n_train - n_val} "
                            f"training images after the validation split (accepted: 1..{n_train - n_val})")
    if shape is not None and cfg.crop_size is not None and cfg.image_size is None and cfg.crop_size > shape[1]:
        raise UserError(f"bad crop_size {cfg.crop_size}: larger than the {shape[1]}-pixel images of "
                        f"{cfg.dataset} (accepted: <= {shape[1]}, or set image_size)")
    _check_model(cfg, shape[0] if shape is not None else None)


def _check_model(cfg: RunConfig, in_channels: int | None) -> None:
    """Build the model once on the meta device (no weights allocated): unknown names, unknown or
    empty arguments and bad argument values all fail here, not in the cell's run."""
    from bench.models import MODELS, create_model

    MODELS.get(cfg.model)
    if in_channels is None:
        in_channels = MODELS.meta(cfg.model)["input_size"][0]
    key = json.dumps([cfg.model, cfg.model_kwargs, in_channels], sort_keys=True, default=str)
    if key in _built:
        return
    for k in cfg.model_kwargs:
        if not k.strip():
            raise UserError(f"model {cfg.model!r}: empty model argument name (accepted: model_kwargs.<name>=<value>)")
    import torch

    try:
        with torch.device("meta"):
            create_model(cfg.model, in_channels=in_channels, **cfg.model_kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a wrong argument value surfaces as TypeError/ValueError/...
        args = ", ".join(f"{k}={v!r}" for k, v in cfg.model_kwargs.items()) or "no arguments"
        raise UserError(f"model {cfg.model!r} cannot be built with {args}: "
                        f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    _built.add(key)


def check_cells_configs(configs: list[RunConfig]) -> None:
    """:func:`check_config` for each distinct config of a study's expansion."""
    seen: set[str] = set()
    for cfg in configs:
        j = cfg.to_json()
        if j not in seen:
            seen.add(j)
            check_config(cfg)

