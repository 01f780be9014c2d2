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

Shortcuts (only where a block changes shape; otherwise identity):
'A' strided subsampling ``x[:, :, ::s, ::s]`` plus zero-padded channels, no parameters;
'B' 1x1 strided conv projection (+ norm after it in post-activation units; pre-activation units
project the already normalised-and-activated input with a bare conv, as in the paper's code).

Pre-activation networks (units 'relu_preact', 'full_preact' and the bottleneck) have a bare conv
stem (the first unit supplies the activation) and a final norm + ReLU before pooling. The 3x3 conv
of the bottleneck carries the stride (fb.resnet.torch and torchvision convention).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import UserError, unknown_value
from bench.models._registry import register_model
from bench.models.norms import NormLayer, init_weights, make_norm_layer, norm_or_identity

SHORTCUTS: tuple[str, ...] = ("A", "B")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1."""
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=bias)


class ShortcutA(nn.Module):
    """Option A: subsample by ``stride`` and zero-pad the new channels; no parameters."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_planes - in_planes
        # Split the zero channels over both ends, as the common CIFAR implementations do.
        self.pad = (0, 0, 0, 0, extra // 2, extra - extra // 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, self.pad)

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad[4:]}"


def make_shortcut(
    kind: str,
    in_planes: int,
    out_planes: int,
    stride: int,
    norm_layer: NormLayer | None,
    with_norm: bool = True,
) -> nn.Module:
    """Identity when the shape is unchanged; else option 'A' or 'B' (see the module docstring)."""
    if kind not in SHORTCUTS:
        raise unknown_value("shortcut", kind, SHORTCUTS)
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if kind == "A":
        return ShortcutA(in_planes, out_planes, stride)
    if not with_norm or norm_layer is None:
        return conv1x1(in_planes, out_planes, stride, bias=True if norm_layer is None else False)
    return nn.Sequential(conv1x1(in_planes, out_planes, stride), norm_layer(out_planes))


class Unit(nn.Module):
    """Base of the blocks: ``Block(inplanes, planes, stride, norm_layer, shortcut)`` like torchvision.

    ``expansion``: output channels / planes. ``convs``: weighted layers per block (for depth).
    ``preact``: the block expects a bare-conv stem and needs a final norm + ReLU after the last one.
    ``label``: the unit's name in tables and figures. ``identity_mappings``: one of the five units of
    He et al. 2016b, Table 2 (the bn-placement study compares those, reading :data:`UNITS`).
    """

    expansion: ClassVar[int] = 1
    convs: ClassVar[int] = 2
    preact: ClassVar[bool] = False
    label: ClassVar[str] = ""
    identity_mappings: ClassVar[bool] = False


class _ConvNormPair(Unit):
    """Shared layers of the units that differ only in forward order: conv1, bn1 (planes), relu,
    conv2, bn2 (planes) and, if ``has_shortcut``, the shortcut."""

    has_shortcut: ClassVar[bool] = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm_layer: NormLayer | None = None,
                 shortcut: str = "A") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:  # checked even without a shortcut, so twins share options
            raise unknown_value("shortcut", shortcut, SHORTCUTS)
        bias = norm_layer is None
        self.conv1 = conv3x3(inplanes, planes, stride, bias)
        self.bn1 = norm_or_identity(norm_layer, planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.bn2 = norm_or_identity(norm_layer, planes)
        if self.has_shortcut:
            self.shortcut = make_shortcut(shortcut, inplanes, planes, stride, norm_layer)


class BasicBlock(_ConvNormPair):
    """(a) original: conv-norm-ReLU-conv-norm, add, ReLU."""

    label = "original"
    identity_mappings = True

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PlainBlock(_ConvNormPair):
    """Plain twin of the original unit: conv-norm-ReLU-conv-norm-ReLU, no shortcut."""

    label = "plain (no shortcut)"

    has_shortcut = False

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))


class BNAfterAddBlock(_ConvNormPair):
    """(b) BN after addition: conv-norm-ReLU-conv, add, norm, ReLU."""

    label = "BN after addition"
    identity_mappings = True

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.conv2(out) + self.shortcut(x)
        return self.relu(self.bn2(out))


class ReLUBeforeAddBlock(_ConvNormPair):
    """(c) ReLU before addition: conv-norm-ReLU-conv-norm-ReLU, add (no activation after it)."""

    label = "ReLU before addition"
    identity_mappings = True

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return out + self.shortcut(x)


class ReLUPreActBlock(_ConvNormPair):
    """(d) ReLU-only pre-activation: ReLU-conv-norm-ReLU-conv-norm, add."""

    label = "ReLU-only pre-activation"
    identity_mappings = True

    preact = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm_layer: NormLayer | None = None,
                 shortcut: str = "A") -> None:
        super().__init__(inplanes, planes, stride, norm_layer, shortcut)
        self.relu0 = nn.ReLU()  # not in place: the identity path still needs x
        self.project_preact = shortcut == "B"  # a projection sees the activated input

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu0(x)
        out = self.relu(self.bn1(self.conv1(pre)))
        out = self.bn2(self.conv2(out))
        return out + self.shortcut(pre if self.project_preact else x)


class PreActBlock(Unit):
    """(e) full pre-activation: norm-ReLU-conv-norm-ReLU-conv, add."""

    label = "full pre-activation"
    identity_mappings = True

    preact = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm_layer: NormLayer | None = None,
                 shortcut: str = "A") -> None:
        super().__init__()
        bias = norm_layer is None
        self.bn1 = norm_or_identity(norm_layer, inplanes)
        # In place only when bn1 made a new tensor: the identity path still needs x.
        self.relu0 = nn.ReLU(inplace=norm_layer is not None)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3(inplanes, planes, stride, bias)
        self.bn2 = norm_or_identity(norm_layer, planes)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.shortcut = make_shortcut(shortcut, inplanes, planes, stride, norm_layer, with_norm=False)
        # A projection sees the shared pre-activation (He et al.'s code); identity/option A see x.
        self.project_preact = shortcut == "B"

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu0(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + self.shortcut(pre if self.project_preact else x)


class PreActBottleneck(Unit):
    """Full pre-activation bottleneck: norm-ReLU-conv1x1, norm-ReLU-conv3x3/s, norm-ReLU-conv1x1 (x4)."""

    label = "pre-activation bottleneck"

    expansion = 4
    convs = 3
    preact = True

    def __init__(self, inplanes: int, planes: int, stride: int = 1, norm_layer: NormLayer | None = None,
                 shortcut: str = "B") -> None:
        super().__init__()
        bias = norm_layer is None
        out_planes = planes * self.expansion
        self.bn1 = norm_or_identity(norm_layer, inplanes)
        self.relu0 = nn.ReLU(inplace=norm_layer is not None)  # see PreActBlock
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv1x1(inplanes, planes, 1, bias)
        self.bn2 = norm_or_identity(norm_layer, planes)
        self.conv2 = conv3x3(planes, planes, stride, bias)
        self.bn3 = norm_or_identity(norm_layer, planes)
        self.conv3 = conv1x1(planes, out_planes, 1, bias)
        self.shortcut = make_shortcut(shortcut, inplanes, out_planes, stride, norm_layer, with_norm=False)
        self.project_preact = shortcut == "B"

    def forward(self, x: Tensor) -> Tensor:
        pre = self.relu0(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + self.shortcut(pre if self.project_preact else x)


# unit= name -> block class: the one table of residual units (models, tests and the bn-placement study).
UNITS: dict[str, type[Unit]] = {
    "original": BasicBlock,
    "bn_after_add": BNAfterAddBlock,
    "relu_before_add": ReLUBeforeAddBlock,
    "relu_preact": ReLUPreActBlock,
    "full_preact": PreActBlock,
    "plain": PlainBlock,
    "preact_bottleneck": PreActBottleneck,
}


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
    PreActBottleneck: "Pre-activation bottleneck ResNet-{d}, He et al. 2016b: {n} bottlenecks per stage, 64/128/256 out.",
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
    register_model(_name, family=_cfg["family"], depth=_cfg["depth"])(
        _make_variant(_name, _cfg["depth"], _cfg["block"], _cfg["shortcut"]))
