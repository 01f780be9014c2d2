"""Normalisation-layer factories shared by every model in the zoo.

A model never names a norm class; it takes a ``norm_layer`` callable (channels -> module), exactly
like torchvision's ``norm_layer`` argument, and this module turns the user's ``norm=`` string into
one. ``norm='none'`` gives ``None``: the model then puts an ``nn.Identity`` where the norm was and
turns the bias of the preceding conv back on (torchvision's ``bias = norm_layer is None`` rule),
because without a norm nothing else supplies the per-channel shift.

Choices (the table :data:`NORM_TABLE`, read by :func:`make_norm_layer`, :func:`init_weights`, the
accepted values of ``norm=`` and the normalization study; a new norm is one entry there):

* ``'bn'``  ``nn.BatchNorm2d``.
* ``'gn'``  ``nn.GroupNorm`` with the largest divisor of ``channels`` that is ``<= groups`` as the
  number of groups (so 16-channel CIFAR stages with ``groups=32`` get 16 groups, 24 channels with
  ``groups=16`` get 12).
* ``'ln'``  ``nn.GroupNorm(1, channels)``: layer norm over (C, H, W), with per-channel affine.
* ``'in'``  ``nn.GroupNorm(channels, channels)``: instance norm with per-channel affine, computed
  identically to ``nn.InstanceNorm2d(affine=True)``; GroupNorm is used so that it has no running
  statistics (same behaviour in train and eval) and is initialised like the other GroupNorms.
* ``'none'`` no normalisation (``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import UserError, unknown_value

NormLayer = Callable[[int], nn.Module]


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is ``<= limit`` (at least 1)."""
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


@dataclass(frozen=True)
class Norm:
    """One entry of :data:`NORM_TABLE`.

    ``factory(groups)`` gives the ``channels -> nn.Module`` layer factory (None: no norm);
    ``module`` is the class :func:`init_weights` sets to weight 1, bias 0; ``label`` is its name in
    tables and figures.
    """

    label: str
    factory: Callable[[int], NormLayer | None]
    module: type[nn.Module] | None


def _group_norm(groups: int) -> NormLayer:
    def group_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(largest_divisor_at_most(channels, groups), channels)

    return group_norm


def _layer_norm(_groups: int) -> NormLayer:
    def layer_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(1, channels)

    return layer_norm


def _instance_norm(_groups: int) -> NormLayer:
    def instance_norm(channels: int) -> nn.Module:
        return nn.GroupNorm(channels, channels)

    return instance_norm


NORM_TABLE: dict[str, Norm] = {
    "bn": Norm("BatchNorm", lambda _groups: nn.BatchNorm2d, nn.BatchNorm2d),
    "gn": Norm("GroupNorm", _group_norm, nn.GroupNorm),
    "ln": Norm("LayerNorm", _layer_norm, nn.GroupNorm),
    "in": Norm("InstanceNorm", _instance_norm, nn.GroupNorm),
    "none": Norm("no norm", lambda _groups: None, None),
}
NORMS: tuple[str, ...] = tuple(NORM_TABLE)  # the accepted values of norm=, in table order


def make_norm_layer(norm: str, groups: int = 32) -> NormLayer | None:
    """A ``channels -> nn.Module`` factory for ``norm`` (a key of :data:`NORM_TABLE`), or None for 'none'."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise UserError(f"norm groups must be a positive integer, got {groups!r}")
    if norm not in NORM_TABLE:
        raise unknown_value("norm", norm, NORM_TABLE)
    return NORM_TABLE[norm].factory(groups)


def norm_or_identity(norm_layer: NormLayer | None, channels: int) -> nn.Module:
    """``norm_layer(channels)``, or ``nn.Identity()`` when there is no norm."""
    return nn.Identity() if norm_layer is None else norm_layer(channels)


def identity_norm(_channels: int) -> nn.Module:
    """A norm factory that normalises nothing; for code (torchvision's) that insists on one."""
    return nn.Identity()


def restore_conv_biases(model: nn.Module) -> nn.Module:
    """Give every bias-free ``nn.Conv2d`` in ``model`` a zero-initialised bias (for norm='none').

    Used on torchvision-built models, whose convs are hard-coded ``bias=False``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.bias is None:
            m.bias = nn.Parameter(torch.zeros(m.out_channels, device=m.weight.device, dtype=m.weight.dtype))
    return model


def init_weights(model: nn.Module) -> nn.Module:
    """He (Kaiming) init as in torchvision's ResNet: conv fan_out/ReLU, norms weight 1 bias 0.

    The norms are the module classes of :data:`NORM_TABLE` (affine ones: a weight and a bias).
    """
    norm_types = tuple({n.module for n in NORM_TABLE.values() if n.module is not None})
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, norm_types):
            weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
            if isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor):  # affine ones only
                nn.init.ones_(weight)
                nn.init.zeros_(bias)
    return model
