"""The model zoo: every model behind one registry, built by name.

>>> from bench.models import create_model, list_models, model_info
>>> model = create_model("resnet20", num_classes=10, norm="gn", shortcut="B")
>>> model_info("alexnet_cifar")["input_size"]
(3, 64, 64)

Importing this package imports the model modules, which register their models with
:func:`register_model` (timm style).
"""

from __future__ import annotations

from bench.models._registry import MODELS, create_model, list_models, model_info, register_model
from bench.models.norms import NORM_TABLE, NORMS, make_norm_layer

# Imported for their registrations.
from bench.models import cifar_resnet, classic, mnist, torchvision_resnet  # noqa: F401  isort: skip

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
