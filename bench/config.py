"""Run configuration: one frozen dataclass per training run, identified by the sha256 of its JSON.

A study derives its cells from a base config with :func:`apply_overrides` (``dataclasses.replace``
underneath), so a cell's id depends only on what it trains, and a rerun finds the cells already done.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
LOADERS = ("gpu", "torch")
ENGINES = ("auto", "eager", "graph")
SCHEDULE_UNITS = ("epoch", "iter")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what one training run computes.

    Runtime choices that do not change the result's meaning (device, results folder, progress bars)
    are not here. ``epochs`` or ``iterations`` sets the length; with ``iterations`` the last epoch
    may be partial. Learning-rate milestones count in ``schedule_unit`` (epochs or iterations).
    """

    # model
    model: str = "resnet20"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    # data
    dataset: str = "cifar10"
    val_size: float = 5000  # images (>= 1) or a fraction of the training set (< 1); 0 = no validation
    train_subset: int | None = None  # use only this many training images (stratified), None = all
    test_subset: int | None = None
    image_size: int | None = None  # resize inputs to this size first (e.g. 224 for an ImageNet stem)
    crop_size: int | None = None  # random crop to this size after resize (e.g. 70 -> 64); None = image size
    crop_padding: int = 4  # zero padding for the random crop; 0 = no padded crop
    hflip: bool = True
    augment: bool = True
    loader: str = "gpu"
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "multistep"
    schedule_unit: str = "epoch"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup: int = 0  # linear warm-up length in schedule_unit
    epochs: int | None = 10
    iterations: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1000
    label_smoothing: float = 0.0
    aux_loss_weight: float = 0.3  # auxiliary classifier losses (GoogLeNet): bench.models.outputs.AUX_LOSS_WEIGHT
    # numerics and engine
    precision: str = "fp32"
    channels_last: bool = False
    engine: str = "auto"  # auto | eager | graph (CUDA graph of the whole step; auto = eager until verified on a GPU)
    seed: int = 0
    # records: what the summary reports, not what trains (see REPORT_ONLY: not part of the run id)
    acc_thresholds: tuple[float, ...] = (0.5, 0.8, 0.9)

    def __post_init__(self) -> None:
        # Normalise types so equal configs have equal JSON (5000 vs 5000.0, [1] vs (1,)).
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, str):
                continue
            object.__setattr__(self, f.name, _coerce_field(f.name, value))
        object.__setattr__(self, "model_kwargs", canonical_kwargs(self.model_kwargs))
        object.__setattr__(self, "dataset", canonical_dataset(self.dataset))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        return json.loads(self.to_json())

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"), default=str)

    def identity_json(self) -> str:
        """The canonical JSON of what the run computes, the input of :attr:`run_id`: the
        :data:`REPORT_ONLY` fields at their fixed value, whatever this config says."""
        return json.dumps({**dataclasses.asdict(self), **REPORT_ONLY}, sort_keys=True, separators=(",", ":"),
                          default=str)

    @property
    def run_id(self) -> str:
        """First 16 hex digits of the sha256 of :meth:`identity_json`."""
        return hashlib.sha256(self.identity_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a :class:`UserError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - names)
        if bad:
            raise UserError(f"unknown config key(s) {', '.join(bad)} (accepted: {', '.join(sorted(names))})")
        kw = {k: _coerce_field(k, v) for k, v in d.items()}
        return cls(**kw)


# Fields that change what a run's summary reports, never what it trains. The run id hashes each at
# the value it had while the id hashed the field itself (the default then), so changing one retrains
# nothing and every run recorded with the default keeps its id.
REPORT_ONLY: dict[str, Any] = {"acc_thresholds": (0.5, 0.8, 0.9)}

MIN_SIDE = 4  # pixels: the smallest resize or crop any model of the zoo can take
MAX_SEED = 2**32 - 1  # numpy's legacy seeding takes no more


def validate(cfg: RunConfig) -> None:
    """Raise :class:`UserError` on a value no run could use (names the field, the value and the rule).

    Values that are legal but costly (``epochs=1e9``) pass: ``bench plan`` shows their cost. Checks
    that need the registries (model, optimizer, schedule, data set names, model arguments) are in
    :func:`bench.checks.check_config`, which the study's expansion calls for every cell.
    """
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("loader", cfg.loader, LOADERS)
    _choice("engine", cfg.engine, ENGINES)
    _choice("schedule_unit", cfg.schedule_unit, SCHEDULE_UNITS)
    for name in ("model", "dataset", "optimizer", "schedule"):
        if not getattr(cfg, name).strip():
            raise UserError(f"{name} must be a non-empty name, got {getattr(cfg, name)!r}")
    if cfg.epochs is None and cfg.iterations is None:
        raise UserError("set epochs or iterations (both are None)")
    _rule("epochs", cfg.epochs, cfg.epochs is None or cfg.epochs >= 1, "an integer >= 1 (or null with iterations)")
    _rule("iterations", cfg.iterations, cfg.iterations is None or cfg.iterations >= 1, "an integer >= 1 (or null)")
    for name in ("batch_size", "eval_batch_size"):
        _rule(name, getattr(cfg, name), getattr(cfg, name) >= 1, "an integer >= 1")
    _rule("lr", cfg.lr, cfg.lr > 0, "a finite number > 0")
    _rule("momentum", cfg.momentum, cfg.momentum >= 0, "a number >= 0")
    _rule("weight_decay", cfg.weight_decay, cfg.weight_decay >= 0, "a number >= 0")
    _rule("label_smoothing", cfg.label_smoothing, 0 <= cfg.label_smoothing < 1, "a number in [0, 1)")
    _rule("gamma", cfg.gamma, cfg.gamma > 0, "a number > 0")
    _rule("warmup", cfg.warmup, cfg.warmup >= 0, "an integer >= 0")
    _rule("aux_loss_weight", cfg.aux_loss_weight, cfg.aux_loss_weight >= 0, "a number >= 0")
    _rule("milestones", list(cfg.milestones), all(m >= 1 for m in cfg.milestones), "integers >= 1")
    _rule("betas", list(cfg.betas), len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas),
          "two numbers in [0, 1), e.g. [0.9,0.999]")
    _rule("acc_thresholds", list(cfg.acc_thresholds), all(0 < t <= 1 for t in cfg.acc_thresholds),
          "fractions in (0, 1]")
    _rule("seed", cfg.seed, 0 <= cfg.seed <= MAX_SEED, f"an integer in [0, {MAX_SEED}]")
    _rule("val_size", cfg.val_size, cfg.val_size >= 0 and (cfg.val_size < 1 or cfg.val_size == int(cfg.val_size)),
          "a fraction in [0, 1) or a whole number of images")
    for name in ("train_subset", "test_subset"):
        v = getattr(cfg, name)
        _rule(name, v, v is None or v >= 1, "an integer >= 1 (or null for all images)")
    for name in ("image_size", "crop_size"):
        v = getattr(cfg, name)
        _rule(name, v, v is None or v >= MIN_SIDE, f"an integer >= {MIN_SIDE} pixels (or null)")
    if cfg.crop_size is not None and cfg.image_size is not None and cfg.crop_size > cfg.image_size:
        raise UserError(f"crop_size {cfg.crop_size} is larger than image_size {cfg.image_size} "
                        "(accepted: crop_size <= image_size)")
    _rule("crop_padding", cfg.crop_padding, cfg.crop_padding >= 0, "an integer >= 0")


def _rule(name: str, value: Any, ok: bool, accepted: str) -> None:
    if not ok:
        raise UserError(f"bad {name} {value!r} (accepted: {accepted})")


def _choice(name: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise UserError(f"bad {name} {value!r} (accepted: {', '.join(accepted)})")


_TYPES = typing.get_type_hints(RunConfig)


def _coerce_field(name: str, value: Any) -> Any:
    """Turn JSON or command-line values into the field's type (lists -> tuples, '3' -> 3)."""
    tp = _TYPES[name]
    if isinstance(value, str) and tp is not str:
        value = parse_value(value)  # '0.05' -> 0.05 for numeric fields; text fields keep their text
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise UserError(f"{name} cannot be None")
    if origin is tuple:
        seq = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_scalar(name, args[0], v) for v in seq)
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)][0]
        return _scalar(name, inner, value)
    return _scalar(name, tp, value)


def canonical_dataset(name: str) -> str:
    """One text per data set: ``synthetic[:options]`` with its options in their canonical form
    (:func:`bench.data.synthetic.canonical_spec`); other names as given (an image folder's path is
    the user's). A bad synthetic spec is a UserError."""
    base, colon, arg = name.partition(":")
    if base.strip() != "synthetic":
        return name
    from bench.data.synthetic import canonical_spec  # late: torch

    options = canonical_spec(arg if colon else None)
    return f"synthetic:{options}" if options else "synthetic"


MAX_KWARGS_DEPTH = 8  # model arguments are flat values or short lists


def canonical_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model arguments in one form per meaning: keys sorted, -0.0 as 0.0; a non-finite number, a key
    that is not text or nesting deeper than :data:`MAX_KWARGS_DEPTH` is a UserError (each would
    make a run id that is not JSON, or two run ids for one model)."""

    def canon(key: str, v: Any, depth: int) -> Any:
        if depth > MAX_KWARGS_DEPTH:
            raise UserError(f"bad model_kwargs.{key}: nested deeper than {MAX_KWARGS_DEPTH} levels "
                            "(accepted: numbers, text, true/false, null and short lists)")
        if isinstance(v, float):
            if not math.isfinite(v):
                raise UserError(f"bad model_kwargs.{key} {v!r} (accepted: a finite number)")
            return v + 0.0
        if isinstance(v, (list, tuple)):
            return type(v)(canon(key, x, depth + 1) for x in v)  # the JSON of both is a list
        if isinstance(v, dict):
            return {k: canon(f"{key}.{k}", x, depth + 1) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
        return v

    for k in kwargs:
        if not isinstance(k, str):
            raise UserError(f"bad model argument name {k!r} (accepted: text, as in model_kwargs.<name>)")
    return {k: canon(k, v, 1) for k, v in sorted(kwargs.items())}


def _scalar(name: str, tp: Any, value: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{name} must be a number, got {value!r}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # an integer beyond any float
            finite = False
        if not finite:
            raise UserError(f"bad {name} {value!r} (accepted: a finite number)")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise UserError(f"{name} must be an integer, got {value!r}")
        return tp(value) + tp(0)  # + 0: -0.0 is 0.0, so equal values hash to one run id
    if tp is str:
        return str(value)
    return value


def split_fixed_varied(configs: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """(keys with one value across ``configs`` and that value, keys whose values differ); seeds aside.

    Used for a study's design ("what varies, what is held fixed"), from the registry or from records.
    """
    keys = sorted({k for c in configs for k in c} - {"seed"})
    varied = [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]
    fixed = {k: configs[0].get(k) for k in keys if k not in varied} if configs else {}
    return fixed, varied


def parse_value(text: str) -> Any:
    """Parse a command-line value: JSON if it parses (numbers, true/false, lists, null), else text.

    Only ``null`` means None: ``none`` stays text, since it is a value in its own right (``norm=none``).
    """
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """``dataclasses.replace`` with coercion; ``model_kwargs.<k>`` keys set one model argument."""
    plain: dict[str, Any] = {}
    mkw = dict(cfg.model_kwargs)
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for key, value in overrides.items():
        if key.startswith("model_kwargs."):
            mkw[key.split(".", 1)[1]] = value  # typed already (study arms; parse_set_args for the CLI)
        elif key in names:
            plain[key] = _coerce_field(key, value)
        else:
            raise UserError(
                f"unknown config key {key!r} (accepted: {', '.join(sorted(names))}, model_kwargs.<name>)"
            )
    if "model_kwargs" in plain:
        mkw = {**plain.pop("model_kwargs")}
        mkw.update({k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("model_kwargs.")})
    return dataclasses.replace(cfg, **plain, model_kwargs=dict(sorted(mkw.items())))


def parse_set_args(items: list[str]) -> dict[str, Any]:
    """``['lr=0.05', 'model_kwargs.norm=gn']`` -> overrides dict; a malformed item or a key given twice
    (which would leave one of them unused without a word) is a UserError."""
    out: dict[str, Any] = {}
    first: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"bad --set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if k in first:
            raise UserError(f"--set {k} given twice ({first[k]!r} and {item!r}); accepted: each key once")
        first[k] = item
        # config fields are coerced by their declared type later; model arguments have no declared
        # type here, so their text is parsed now ('8' -> 8, 'true' -> True, 'gn' stays 'gn')
        out[k] = parse_value(v) if k.startswith("model_kwargs.") else v
    return out
