"""The MODELS registry and the functions around it (re-exported by :mod:`bench.models`).

Kept apart from ``bench/models/__init__.py`` so the model modules can import ``register_model``
without a circular import of the package that imports them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from bench.errors import UserError, unknown_value
from bench.registry import Registry

ModelFn = Callable[..., nn.Module]
F = TypeVar("F", bound=ModelFn)

MODELS: Registry[ModelFn] = Registry("model")


def register_model(
    name: str | None = None,
    *,
    input_size: tuple[int, int, int] = (3, 32, 32),
    family: str = "other",
    **meta: Any,
) -> Callable[[F], F]:
    """Decorator registering a model function ``fn(num_classes=10, in_channels=3, **options)``.

    ``input_size`` is the (C, H, W) the model is meant for by default; a second function under the
    same name raises ``ValueError``.
    """

    def deco(fn: F) -> F:
        MODELS.add(name or fn.__name__, fn, input_size=tuple(input_size), family=family, **meta)
        return fn

    return deco


def _accepted_kwargs(fn: ModelFn) -> list[str] | None:
    """Keyword names ``fn`` accepts, or None if it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY]


def _check_positive_int(model: str, what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"model {model!r}: {what} must be a positive integer, got {value!r}")


def create_model(
    name: str, num_classes: int = 10, in_channels: int | None = None, **kwargs: Any
) -> nn.Module:
    """Build the model registered as ``name``; every mistake in the arguments is a UserError.

    ``in_channels`` defaults to the channels of the model's registered ``input_size`` (3 for the
    CIFAR/ImageNet models, 1 for the MNIST ones).
    """
    fn = MODELS.get(name)
    if in_channels is None:
        in_channels = MODELS.meta(name)["input_size"][0]
    _check_positive_int(name, "num_classes", num_classes)
    _check_positive_int(name, "in_channels", in_channels)
    accepted = _accepted_kwargs(fn)
    if accepted is not None:
        options = [a for a in accepted if a not in ("num_classes", "in_channels")]
        for key in kwargs:
            if key not in accepted:
                err = unknown_value("argument", key, options)
                raise UserError(f"model {name!r}: {err}") from None
    try:
        return fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except UserError as err:
        # Name the model: "unknown norm 'xx'" alone does not say which model rejected it.
        raise UserError(f"model {name!r}: {err}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered model names matching the shell-style ``pattern``."""
    return MODELS.names(pattern)


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def model_info(name: str) -> dict[str, Any]:
    """``{name, input_size, family, description, options, ...}`` for a registered model."""
    fn = MODELS.get(name)
    meta = MODELS.meta(name)
    accepted = _accepted_kwargs(fn) or []
    return {
        "name": name,
        "input_size": tuple(meta.pop("input_size")),
        "family": meta.pop("family"),
        "description": _first_line(fn.__doc__),
        "options": [a for a in accepted if a not in ("num_classes", "in_channels")],
        **meta,
    }
