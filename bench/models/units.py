"""The residual and plain units of the CIFAR ResNets (He et al. 2016 and 2016b) and their shortcuts,
as one table (:data:`UNITS`, ``unit=`` name -> block class) that the models, the tests and the
bn-placement study read.

Shortcuts (only where a block changes shape; otherwise identity):
'A' strided subsampling ``x[:, :, ::s, ::s]`` plus zero-padded channels, no parameters;
'B' 1x1 strided conv projection (+ norm after it in post-activation units; pre-activation units
project the already normalised-and-activated input with a bare conv, as in the paper's code).

Pre-activation units (``preact``: 'relu_preact', 'full_preact' and the bottleneck) ask the network
for a bare conv stem and a final norm + ReLU. The 3x3 conv of the bottleneck carries the stride
(fb.resnet.torch and torchvision convention).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import unknown_value
from bench.models.norms import NormLayer, norm_or_identity

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


# ---------------------------------------------------------------- plain conv units (no shortcut)


class ConvNormReLU(nn.Sequential):
    """conv3x3 -> norm -> ReLU (norm before the activation)."""

    label: ClassVar[str] = "conv-BN-ReLU"

    def __init__(self, cin: int, cout: int, norm_layer: NormLayer | None = nn.BatchNorm2d):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, padding=1, bias=norm_layer is None),
            norm=norm_or_identity(norm_layer, cout),
            relu=nn.ReLU(inplace=True),
        ))


class ConvReLUNorm(nn.Sequential):
    """conv3x3 -> ReLU -> norm (norm after the activation); the conv keeps its bias, which the
    ReLU sees before any norm could absorb it."""

    label: ClassVar[str] = "conv-ReLU-BN"

    def __init__(self, cin: int, cout: int, norm_layer: NormLayer | None = nn.BatchNorm2d):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(cin, cout, 3, padding=1, bias=True),
            relu=nn.ReLU(inplace=True),
            norm=norm_or_identity(norm_layer, cout),
        ))


# unit= name -> plain conv unit (with its ``label``): the convnet's ``unit=`` and the bn-placement study.
CONV_UNITS: dict[str, type[nn.Module]] = {"bn_relu": ConvNormReLU, "relu_bn": ConvReLUNorm}
