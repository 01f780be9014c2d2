"""The model zoo: every model behind one registry, built by name.

>>> from bench.models import create_model, list_models, model_info
>>> model = create_model("resnet20", num_classes=10, norm="gn", shortcut="B")
>>> model_info("alexnet_cifar")["input_size"]
(3, 64, 64)

The model modules register their models with :func:`register_model` (timm style) when the zoo is
first asked for (``MODELS``, ``create_model``, ``list_models``, ``model_info``), not when this package
is imported: torchvision's model modules pull in torch._dynamo, ~1.4 s of every start-up of a
command that builds no model (``bench list``, ``status``, ``claims``, ``report``).
"""

from __future__ import annotations

import importlib
from typing import Any

from bench.models._registry import register_model
from bench.models.norms import NORM_TABLE, NORMS, make_norm_layer

ZOO_MODULES = ("cifar_resnet", "classic", "mnist", "torchvision_resnet")  # each registers its models
_ZOO_NAMES = ("MODELS", "create_model", "list_models", "model_info")


def __getattr__(name: str) -> Any:
    if name not in _ZOO_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for mod in ZOO_MODULES:
        importlib.import_module(f"{__name__}.{mod}")
    from bench.models import _registry

    globals().update({n: getattr(_registry, n) for n in _ZOO_NAMES})  # loaded once: later lookups are plain
    return getattr(_registry, name)

__all__ = [
    "MODELS",
    "NORMS",
    "NORM_TABLE",
    "create_model",
    "list_models",
    "make_norm_layer",
    "model_info",
    "register_model",
]
