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
from bench.errors import UserError, reason

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
    _check_model(cfg, shape)


# Model arguments the harness sets itself, from the data set (and the flags of ``bench measure``).
RESERVED_KWARGS = {"num_classes": "the data set's classes (bench measure: --num-classes)",
                   "in_channels": "the data set's channels (bench measure: --in-channels)"}


def check_model_kwargs(model: str, kwargs: dict[str, object]) -> None:
    """UserError for an empty argument name, or one the harness sets itself (given twice)."""
    for k in kwargs:
        if not k.strip():
            raise UserError(f"model {model!r}: empty model argument name (accepted: model_kwargs.<name>=<value>)")
        if k in RESERVED_KWARGS:
            raise UserError(f"model_kwargs.{k} cannot be set: it comes from {RESERVED_KWARGS[k]} "
                            f"(accepted: any other argument of {model!r})")


def check_model_input(model: str, kwargs: dict[str, object], shape: tuple[int, int, int],
                      num_classes: int = 10, flag: str = "image_size") -> None:
    """Build ``model`` on the meta device (no weights, no images allocated) and run a batch of one
    of ``shape`` through it: an argument it refuses, or an input too small for its layers, is one
    UserError naming the value; ``flag`` names the setting that sizes the input."""
    import torch

    from bench.models import MODELS, create_model

    MODELS.get(model)
    check_model_kwargs(model, kwargs)
    key = json.dumps([model, kwargs, list(shape), num_classes], sort_keys=True, default=str)
    if key in _built:
        return
    try:
        with torch.device("meta"):
            net = create_model(model, num_classes=num_classes, in_channels=shape[0], **kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a wrong argument value surfaces as TypeError/ValueError/...
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no arguments"
        raise UserError(f"model {model!r} cannot be built with {args}: {reason(exc)}") from None
    failure = _forward_fails(net, shape)
    if failure is not None:
        own = tuple(MODELS.meta(model)["input_size"])
        if _forward_fails(net, (shape[0], *own[1:])) is not None:
            return  # it fails at its own input size too: not the input's fault (the run records why)
        side = "x".join(map(str, shape))
        raise UserError(f"bad {flag} {shape[1]}: model {model!r} cannot take {side} inputs ({failure[:200]}; "
                        f"accepted: a larger {flag}, e.g. its own {own[1]})")
    _built.add(key)


def _forward_fails(net: object, shape: tuple[int, ...]) -> str | None:
    """Why a batch of one of ``shape`` cannot pass through ``net`` (built on the meta device), or None."""
    import torch

    try:
        with torch.device("meta"), torch.no_grad():
            net.eval()(torch.zeros(1, *shape))  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - a layer that cannot take the input (size, channels)
        return reason(exc)
    return None


def _check_model(cfg: RunConfig, shape: tuple[int, int, int] | None) -> None:
    """The model of ``cfg`` at the input shape its data set's images of ``shape`` give after resize and crop
    (the model's registered input size when only loading can tell): unknown names, unknown or empty arguments,
    bad argument values and inputs too small for the model all fail here, not in the cell's run."""
    from bench.data.sources import input_shape
    from bench.models import MODELS

    MODELS.get(cfg.model)
    stored = shape if shape is not None else tuple(MODELS.meta(cfg.model)["input_size"])
    flag = "crop_size" if cfg.crop_size else "image_size"
    check_model_input(cfg.model, cfg.model_kwargs, input_shape(cfg, stored), flag=flag)


def check_cells_configs(configs: list[RunConfig]) -> None:
    """:func:`check_config` for each distinct config of a study's expansion, and no two cells with
    one config: two cells with one run id would be one run counted twice (``--set seed=5`` on a
    profile of several seeds makes every seed the same run)."""
    seen: set[str] = set()
    for cfg in configs:
        j = cfg.to_json()
        if j in seen:
            seeds = sorted({c.seed for c in configs})
            hint = (f"--set seed={cfg.seed} makes every seed of the profile seed {cfg.seed}; pick among the "
                    "profile's seeds with --seeds instead" if len(seeds) == 1 else "an override made two arms the same")
            raise UserError(f"two cells of the study would be one run (run id {cfg.run_id}): {hint} "
                            "(accepted: overrides that keep the cells distinct)")
        seen.add(j)
        check_config(cfg)

