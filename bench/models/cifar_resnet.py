"""CIFAR ResNets (He et al. 2016, Sec. 4.2), their plain twins, and pre-activation variants.

Network (torchvision's ``models/resnet.py`` pattern: a block class and per-stage block counts):
3x3 conv stem with 16 channels, three stages of ``n`` blocks with 16/32/64 base widths (stride 2
at the first block of stages 2 and 3), global average pooling, one FC layer.

* ``resnet{20,32,44,56,110}``: :class:`BasicBlock`, depth 6n+2, shortcut option A by default.
* ``plain{20,32,44,56,110}``: the same net with :class:`PlainBlock` (no shortcut). With option A
  the shortcut has no parameters, so the residual and plain twins have identical parameter counts.
* ``unit=`` selects one of the five residual units of He et al. 2016b ("Identity Mappings",
  Table 2 / Fig. 4) at any depth: 'original' (a), 'bn_after_add' (b), 'relu_before_add' (c),
  'relu_preact' (d), 'full_preact' (e). ``block=`` takes the block class (or a unit name) instead.
* ``preact_resnet{20,29,56,110,164,1001}``: pre-activation BOTTLENECK ResNets, depth 9n+2 (n = 2,
  3, 6, 12, 18, 111), bottleneck widths 16/32/64 expanded 4x to 64/128/256 output channels. The
  number is the depth counted as in He et al. 2016b and the Keras CIFAR-10 example's 'v2' nets
  (``preact_resnet164`` = ResNet-164, ``preact_resnet1001`` = ResNet-1001). The basic-block
  pre-activation ResNet-110 of Table 2 is ``resnet110(unit='full_preact')``, not
  ``preact_resnet110``. Their shortcut default is option B, as in both references.
* ``cifar_resnet(depth=..., unit=/block=...)``: the generic builder.

The units and the shortcuts (option A: subsampling plus zero channels, no parameters; option B:
a 1x1 projection) are in :mod:`bench.models.units`. Pre-activation networks (units 'relu_preact',
'full_preact' and the bottleneck) have a bare conv stem (the first unit supplies the activation) and
a final norm + ReLU before pooling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from bench.errors import UserError, unknown_value
from bench.models._registry import register_model
from bench.models.norms import NormLayer, init_weights, make_norm_layer, norm_or_identity
from bench.models.units import SHORTCUTS, UNITS, BasicBlock, PlainBlock, PreActBottleneck, Unit, conv3x3


class CifarResNet(nn.Module):
    """He et al. 2016 CIFAR network: stem, three stages of ``layers[i]`` blocks, pool, FC."""

    def __init__(
        self,
        block: type[Unit],
        layers: tuple[int, int, int],
        num_classes: int = 10,
        in_channels: int = 3,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = conv3x3(in_channels, widths[0], 1, bias=norm_layer is None)
        # Pre-activation units normalise and activate their own input, so their stem is a bare conv.
        self.bn1 = nn.Identity() if block.preact else norm_or_identity(norm_layer, widths[0])
        self.relu = nn.Identity() if block.preact else nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], 1, norm_layer, shortcut)
        self.layer2 = self._make_layer(block, widths[1], layers[1], 2, norm_layer, shortcut)
        self.layer3 = self._make_layer(block, widths[2], layers[2], 2, norm_layer, shortcut)
        # ... and need the last activation after the final addition (He et al. 2016b).
        self.bn_final = norm_or_identity(norm_layer, self.inplanes) if block.preact else nn.Identity()
        self.relu_final = nn.ReLU(inplace=True) if block.preact else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, num_classes)
        init_weights(self)

    def _make_layer(self, block: type[Unit], planes: int, blocks: int, stride: int,
                    norm_layer: NormLayer | None, shortcut: str) -> nn.Sequential:
        layers = []
        for i in range(blocks):
            layers.append(block(self.inplanes, planes, stride if i == 0 else 1, norm_layer, shortcut))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu_final(self.bn_final(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resolve_block(unit: str | None, block: type[Unit] | str | None, default: type[Unit]) -> type[Unit]:
    """The block class from ``unit=`` (a name in :data:`UNITS`) or ``block=`` (a class or a name)."""
    if isinstance(block, str):  # block='full_preact' means unit='full_preact'
        if unit not in (None, block):
            raise UserError(f"give unit= or block=, not both (unit={unit!r}, block={block!r})")
        unit, block = block, None
    if unit is not None and block is not None:
        raise UserError(f"give unit= or block=, not both (unit={unit!r}, block={block!r})")
    if unit is not None:
        if unit not in UNITS:
            raise unknown_value("unit", unit, UNITS)
        return UNITS[unit]
    if block is None:
        return default
    if not (isinstance(block, type) and issubclass(block, nn.Module)):
        raise UserError(f"block must be an nn.Module class or one of {', '.join(UNITS)}; got {block!r}")
    return block


def layers_for_depth(depth: int, block: type[Unit]) -> tuple[int, int, int]:
    """Blocks per stage for ``depth`` = 3 * convs * n + 2 (6n+2 basic, 9n+2 bottleneck)."""
    per = 3 * getattr(block, "convs", 2)
    if not isinstance(depth, int) or depth < per + 2 or (depth - 2) % per:
        raise UserError(f"depth {depth!r} does not fit {block.__name__}: it must be {per}n+2 with n >= 1")
    n = (depth - 2) // per
    return (n, n, n)


@register_model(family="cifar_resnet")
def cifar_resnet(
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    depth: int = 20,
    unit: str | None = None,
    block: type[Unit] | str | None = None,
    norm: str = "bn",
    groups: int = 32,
    shortcut: str = "A",
) -> CifarResNet:
    """CIFAR ResNet of any depth (6n+2 basic units, 9n+2 bottleneck) with any unit, norm, shortcut."""
    if shortcut not in SHORTCUTS:
        raise unknown_value("shortcut", shortcut, SHORTCUTS)
    blk = resolve_block(unit, block, BasicBlock)
    return CifarResNet(blk, layers_for_depth(depth, blk), num_classes, in_channels,
                       make_norm_layer(norm, groups), shortcut)


# Variants as data: name -> depth, default block, default shortcut, family.
_DOCS = {
    BasicBlock: "ResNet-{d} for CIFAR (He et al. 2016): {n} basic blocks per stage, 16/32/64 channels.",
    PlainBlock: "Plain-{d} for CIFAR: ResNet-{d} without shortcuts (He et al. 2016 Sec. 4.2).",
    PreActBottleneck: ("Pre-activation bottleneck ResNet-{d}, He et al. 2016b: {n} bottlenecks per stage, "
                       "64/128/256 out."),
}
CIFAR_VARIANTS: dict[str, dict] = {
    **{f"resnet{d}": dict(depth=d, block=BasicBlock, shortcut="A", family="cifar_resnet")
       for d in (20, 32, 44, 56, 110)},
    **{f"plain{d}": dict(depth=d, block=PlainBlock, shortcut="A", family="cifar_plain")
       for d in (20, 32, 44, 56, 110)},
    **{f"preact_resnet{d}": dict(depth=d, block=PreActBottleneck, shortcut="B", family="cifar_preact_resnet")
       for d in (20, 29, 56, 110, 164, 1001)},
}


def _make_variant(
    name: str, depth: int, default_block: type[Unit], default_shortcut: str
) -> Callable[..., CifarResNet]:
    def model(
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        unit: str | None = None,
        block: type[Unit] | str | None = None,
        norm: str = "bn",
        groups: int = 32,
        shortcut: str = default_shortcut,
    ) -> CifarResNet:
        if unit is None and block is None:
            block = default_block
        return cifar_resnet(num_classes, in_channels, depth=depth, unit=unit, block=block, norm=norm,
                            groups=groups, shortcut=shortcut)

    model.__name__ = model.__qualname__ = name
    n = layers_for_depth(depth, default_block)[0]
    model.__doc__ = _DOCS[default_block].format(d=depth, n=n)
    return model


for _name, _cfg in CIFAR_VARIANTS.items():
    register_model(_name, family=_cfg["family"])(
        _make_variant(_name, _cfg["depth"], _cfg["block"], _cfg["shortcut"]))
