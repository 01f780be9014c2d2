"""Classic architectures adapted to CIFAR-sized inputs, plus two small plain CNNs.

Each reuses torchvision's implementation where one exists and changes only what CIFAR needs:

* ``alexnet_cifar``: torchvision's ``AlexNet`` (first conv 64 ch, 11x11 stride 4 pad 2, adaptive
  average pool to 6x6, dropout 0.5 in the 9216-4096-4096 classifier) for 64x64 crops. At 64 pixels
  the features end at 1x1, so the 6x6 pool replicates them (as in the usual CIFAR-64 notebooks).
* ``vgg16`` / ``vgg16_bn``: torchvision's cfg 'D' features (``make_layers``/``cfgs``); five
  max-pools take 32x32 to 1x1x512, so the ImageNet 25088-4096-4096 head is replaced by
  512 -> 512 (ReLU, dropout 0.5) -> num_classes, after a global average pool (so larger inputs
  work too). torchvision's VGG init.
* ``googlenet``: torchvision's ``GoogLeNet`` (aux_logits=True, init_weights=True,
  transform_input=False); in train mode it returns ``GoogLeNetOutputs(logits, aux_logits2,
  aux_logits1)``, in eval mode the logits. ``stem='cifar'`` (default) swaps conv1 (7x7 stride 2)
  for a 3x3 stride-1 conv and drops the first max-pool, so 32x32 inputs reach the inception
  stages at 16/8/4 pixels (ImageNet 224: 28/14/7); ``stem='imagenet'`` keeps torchvision's stem.
* ``densenet121``: torchvision's ``DenseNet`` (growth 32, blocks 6/12/24/16, 64 initial features);
  ``stem='cifar'`` (default) swaps conv0 (7x7 stride 2) for a 3x3 stride-1 conv and pool0 for an
  identity, so the dense blocks run at 32/16/8/4 pixels.
* ``simple_cnn``: the Keras ``cifar10_cnn`` example network (conv32 x2, pool, conv64 x2, pool,
  dense 512, dropout).
* ``convnet``: a plain VGG-style net for the "norm before or after the activation" ablation, the
  conv unit given as a block class: ``unit='bn_relu'`` (:class:`~bench.models.units.ConvNormReLU`) or ``'relu_bn'``
  (:class:`~bench.models.units.ConvReLUNorm`).
"""

from __future__ import annotations


import torch
from torch import Tensor, nn
from torchvision.models.alexnet import AlexNet
from torchvision.models.densenet import DenseNet
from torchvision.models.googlenet import BasicConv2d, GoogLeNet
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers

from bench.errors import UserError, unknown_value
from bench.models._registry import register_model
from bench.models.norms import NormLayer, make_norm_layer, norm_or_identity
from bench.models.units import CONV_UNITS
from bench.models.torchvision_resnet import STEMS

# --------------------------------------------------------------------------- AlexNet


@register_model(input_size=(3, 64, 64), family="alexnet")
def alexnet_cifar(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.5) -> AlexNet:
    """AlexNet (torchvision's) for 64x64 CIFAR crops: 11x11/4 conv stem, 6x6 adaptive pool, dropout."""
    model = AlexNet(num_classes=num_classes, dropout=dropout)
    model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    return model


# --------------------------------------------------------------------------- VGG


class CifarVGG(nn.Module):
    """VGG features (torchvision ``make_layers``) + global average pool + a CIFAR-sized classifier."""

    def __init__(
        self, features: nn.Sequential, num_classes: int = 10, hidden: int = 512, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 1x1 already at 32 pixels; makes larger inputs legal
        self.classifier = nn.Sequential(
            nn.Linear(512, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )
        # torchvision's VGG initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def cifar_vgg(cfg: str, batch_norm: bool, num_classes: int, in_channels: int, dropout: float) -> CifarVGG:
    """VGG with torchvision's configuration ``cfg`` ('A', 'B', 'D', 'E') for 32x32 inputs."""
    features = make_layers(vgg_cfgs[cfg], batch_norm=batch_norm)
    first = features[0]
    # make_layers hard-codes 3 input channels.
    features[0] = nn.Conv2d(in_channels, first.out_channels, kernel_size=3, padding=1)
    return CifarVGG(features, num_classes, dropout=dropout)


@register_model(family="vgg")
def vgg16(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.5) -> CifarVGG:
    """VGG-16 (torchvision cfg 'D') for 32x32 inputs: 512-512-num_classes head, no norm."""
    return cifar_vgg("D", False, num_classes, in_channels, dropout)


@register_model(family="vgg")
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, *, dropout: float = 0.5) -> CifarVGG:
    """VGG-16 with BatchNorm (torchvision cfg 'D') for 32x32 inputs: 512-512-num_classes head."""
    return cifar_vgg("D", True, num_classes, in_channels, dropout)


# --------------------------------------------------------------------------- GoogLeNet


@register_model(family="googlenet", returns_aux_in_train=True)
def googlenet(num_classes: int = 10, in_channels: int = 3, *, stem: str = "cifar") -> GoogLeNet:
    """GoogLeNet (torchvision's, with aux heads; train mode returns (logits, aux2, aux1)); CIFAR stem."""
    if stem not in STEMS:
        raise unknown_value("stem", stem, STEMS)
    model = GoogLeNet(num_classes=num_classes, aux_logits=True, transform_input=False, init_weights=True)
    if stem == "cifar":
        model.conv1 = BasicConv2d(in_channels, 64, kernel_size=3, stride=1, padding=1)
        model.maxpool1 = nn.Identity()  # keep maxpool2: inception stages then run at 16/8/4 pixels
    else:
        model.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
    # Same init as torchvision gives its own convs with init_weights=True.
    nn.init.trunc_normal_(model.conv1.conv.weight, mean=0.0, std=0.01, a=-2, b=2)
    return model


# --------------------------------------------------------------------------- DenseNet


@register_model(family="densenet")
def densenet121(num_classes: int = 10, in_channels: int = 3, *, stem: str = "cifar",
                drop_rate: float = 0.0) -> DenseNet:
    """DenseNet-121 (torchvision's, growth 32, blocks 6/12/24/16); CIFAR stem 3x3/1 without pool."""
    if stem not in STEMS:
        raise unknown_value("stem", stem, STEMS)
    model = DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, drop_rate=drop_rate)
    if stem == "cifar":
        conv0 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.features.pool0 = nn.Identity()  # replaced, not deleted, so module names stay stable
    else:
        conv0 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv0.weight)  # torchvision's DenseNet init
    model.features.conv0 = conv0
    return model


# --------------------------------------------------------------------------- small CNNs


def _conv_norm_relu(cin: int, cout: int, norm_layer: NormLayer | None) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=norm_layer is None),
            norm_or_identity(norm_layer, cout), nn.ReLU(inplace=True)]


class SimpleCNN(nn.Module):
    """Keras ``cifar10_cnn``: (conv32-conv32-pool-drop) (conv64-conv64-pool-drop) dense512-drop-FC."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, norm_layer: NormLayer | None = None):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_norm_relu(in_channels, 32, norm_layer), *_conv_norm_relu(32, 32, norm_layer),
            nn.MaxPool2d(2), nn.Dropout(0.25),
            *_conv_norm_relu(32, 64, norm_layer), *_conv_norm_relu(64, 64, norm_layer),
            nn.MaxPool2d(2), nn.Dropout(0.25),
        )
        # Identity at 32x32 (8x8 maps); lets other input sizes through the fixed-size dense layer.
        self.pool = nn.AdaptiveAvgPool2d(8)
        self.classifier = nn.Sequential(
            nn.Linear(64 * 8 * 8, 512), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(512, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(family="cnn")
def simple_cnn(
    num_classes: int = 10, in_channels: int = 3, *, norm: str = "none", groups: int = 32
) -> SimpleCNN:
    """Small plain CNN (the Keras cifar10_cnn example): 4 convs, 2 pools, dense 512, dropout."""
    return SimpleCNN(num_classes, in_channels, make_norm_layer(norm, groups))


CONVNET_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, "M")


class ConvNet(nn.Module):
    """Plain conv net: ``block`` units per ``cfg`` entry ('M' = 2x2 max-pool), global pool, FC."""

    def __init__(
        self,
        block: type[nn.Module],
        cfg: tuple[int | str, ...] = CONVNET_CFG,
        num_classes: int = 10,
        in_channels: int = 3,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(block(c, int(v), norm_layer))
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model(family="cnn")
def convnet(num_classes: int = 10, in_channels: int = 3, *, unit: str | None = None,
            block: type[nn.Module] | None = None, norm: str = "bn", groups: int = 32) -> ConvNet:
    """Plain VGG-style 6-conv net; unit 'bn_relu' (conv-norm-ReLU) or 'relu_bn' (conv-ReLU-norm)."""
    if unit is not None and block is not None:
        raise UserError(f"give unit= or block=, not both (unit={unit!r}, block={block!r})")
    if block is None:
        unit = "bn_relu" if unit is None else unit
        if unit not in CONV_UNITS:
            raise unknown_value("unit", unit, CONV_UNITS)
        block = CONV_UNITS[unit]
    return ConvNet(block, CONVNET_CFG, num_classes, in_channels, make_norm_layer(norm, groups))
