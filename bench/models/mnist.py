"""The two small MNIST residual nets of the well-known lecture notebook, and a plain MNIST CNN.

* ``mnist_resnet_identity``: two identity residual blocks (conv C->4 3x3 pad 1, norm, ReLU,
  conv 4->C 3x3 pad 1, norm, add the input, ReLU) on the 28x28 image, then one FC layer
  (C*28*28 -> num_classes; 784 -> 10 for MNIST).
* ``mnist_resnet_resize``: two resizing residual blocks. Block 1: conv C->4 3x3 stride 1, norm,
  ReLU, conv 4->8 3x3 stride 2, norm; shortcut 1x1 conv C->8 stride 2 + norm; add, ReLU (28 -> 14).
  Block 2 likewise 8->16->32 (14 -> 7). Then FC 7*7*32 -> num_classes.
* ``mnist_cnn``: plain baseline, conv32-pool-conv64-pool, dense 128, FC.

All take ``norm`` (BatchNorm in the notebook; 'none' restores the conv biases). The FC layers fix
the input at 28x28.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bench.models._registry import register_model
from bench.models.norms import NormLayer, make_norm_layer, norm_or_identity

MNIST_INPUT = (1, 28, 28)


class IdentityResidualBlock(nn.Module):
    """conv(c->mid) - norm - ReLU - conv(mid->c) - norm, add input, ReLU; shape unchanged."""

    def __init__(self, channels: int, mid: int = 4, norm_layer: NormLayer | None = nn.BatchNorm2d) -> None:
        super().__init__()
        bias = norm_layer is None
        self.conv1 = nn.Conv2d(channels, mid, 3, padding=1, bias=bias)
        self.bn1 = norm_or_identity(norm_layer, mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, channels, 3, padding=1, bias=bias)
        self.bn2 = norm_or_identity(norm_layer, channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class ResizeResidualBlock(nn.Module):
    """conv(cin->mid, s1) - norm - ReLU - conv(mid->cout, s2) - norm, plus 1x1/s2 conv + norm shortcut."""

    def __init__(self, cin: int, mid: int, cout: int, norm_layer: NormLayer | None = nn.BatchNorm2d) -> None:
        super().__init__()
        bias = norm_layer is None
        self.conv1 = nn.Conv2d(cin, mid, 3, stride=1, padding=1, bias=bias)
        self.bn1 = norm_or_identity(norm_layer, mid)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, cout, 3, stride=2, padding=1, bias=bias)
        self.bn2 = norm_or_identity(norm_layer, cout)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=2, bias=bias), norm_or_identity(norm_layer, cout)
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class MnistResNet(nn.Module):
    """A stack of residual ``blocks`` followed by flatten and one FC layer of ``fc_in`` inputs."""

    def __init__(self, blocks: Sequence[nn.Module], fc_in: int, num_classes: int = 10) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(fc_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.blocks(x), 1))


@register_model(input_size=MNIST_INPUT, family="mnist")
def mnist_resnet_identity(num_classes: int = 10, in_channels: int = 1, *, norm: str = "bn",
                          groups: int = 32) -> MnistResNet:
    """MNIST ResNet with two identity residual blocks (1->4->1 channels) and a 784->10 FC layer."""
    norm_layer = make_norm_layer(norm, groups)
    blocks = [IdentityResidualBlock(in_channels, 4, norm_layer) for _ in range(2)]
    return MnistResNet(blocks, in_channels * 28 * 28, num_classes)


@register_model(input_size=MNIST_INPUT, family="mnist")
def mnist_resnet_resize(num_classes: int = 10, in_channels: int = 1, *, norm: str = "bn",
                        groups: int = 32) -> MnistResNet:
    """MNIST ResNet with two resizing residual blocks (1->4->8, 8->16->32, stride 2) and a 1568->10 FC."""
    norm_layer = make_norm_layer(norm, groups)
    blocks = [ResizeResidualBlock(in_channels, 4, 8, norm_layer), ResizeResidualBlock(8, 16, 32, norm_layer)]
    return MnistResNet(blocks, 7 * 7 * 32, num_classes)


class MnistCNN(nn.Module):
    """conv32-norm-ReLU-pool, conv64-norm-ReLU-pool, dense 128, dropout, FC."""

    def __init__(
        self, num_classes: int = 10, in_channels: int = 1, norm_layer: NormLayer | None = None
    ) -> None:
        super().__init__()
        bias = norm_layer is None
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1, bias=bias), norm_or_identity(norm_layer, 32),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=bias), norm_or_identity(norm_layer, 64),
            nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model(input_size=MNIST_INPUT, family="mnist")
def mnist_cnn(
    num_classes: int = 10, in_channels: int = 1, *, norm: str = "none", groups: int = 32
) -> MnistCNN:
    """Plain MNIST CNN baseline: two conv-pool stages (32, 64 channels), dense 128, dropout."""
    return MnistCNN(num_classes, in_channels, make_norm_layer(norm, groups))
