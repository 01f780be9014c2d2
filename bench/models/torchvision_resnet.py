"""ResNet-18/34 built from torchvision's own ``ResNet`` and ``BasicBlock`` (reused, not copied).

``stem='cifar'`` (default, 32x32 inputs): the 7x7 stride-2 conv and the max-pool are replaced by a
3x3 stride-1 conv and nothing, the usual CIFAR adaptation (stages then run at 32/16/8/4 pixels).
``stem='imagenet'``: torchvision's stem unchanged, for inputs upscaled to 224 pixels
(``create_model('resnet18', stem='imagenet')`` then wants (3, 224, 224); the registered default
input size is the CIFAR one because the default stem is). No pretrained weights.

``norm`` goes to torchvision's ``norm_layer`` argument; for ``'none'`` an identity is passed and
every conv gets a zero-initialised bias.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, ResNet

from bench.errors import unknown_value
from bench.models._registry import register_model
from bench.models.norms import identity_norm, make_norm_layer, restore_conv_biases

STEMS: tuple[str, ...] = ("cifar", "imagenet")

# Variants as data, as in torchvision: block class and blocks per stage.
TV_RESNET_CFGS: dict[str, dict] = {
    "resnet18": dict(block=BasicBlock, layers=(2, 2, 2, 2)),
    "resnet34": dict(block=BasicBlock, layers=(3, 4, 6, 3)),
}


def make_stem_conv(stem: str, in_channels: int, out_channels: int = 64) -> nn.Conv2d:
    """The first conv for ``stem`` ('cifar': 3x3 stride 1; 'imagenet': 7x7 stride 2), He-initialised."""
    if stem not in STEMS:
        raise unknown_value("stem", stem, STEMS)
    if stem == "cifar":
        conv = nn.Conv2d(in_channels, out_channels, 3, stride=1, padding=1, bias=False)
    else:
        conv = nn.Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def torchvision_resnet(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    stem: str = "cifar",
    norm: str = "bn",
    groups: int = 32,
    zero_init_residual: bool = False,
) -> ResNet:
    """torchvision ``ResNet`` for the configuration ``name`` in :data:`TV_RESNET_CFGS`."""
    cfg = TV_RESNET_CFGS[name]
    norm_layer = make_norm_layer(norm, groups)
    conv1 = make_stem_conv(stem, in_channels)  # validates stem before the (slower) build
    model = ResNet(cfg["block"], list(cfg["layers"]), num_classes=num_classes,
                   zero_init_residual=zero_init_residual and norm_layer is not None,
                   norm_layer=norm_layer or identity_norm)
    model.conv1 = conv1
    if stem == "cifar":
        # A max-pool after a stride-1 stem would throw away 3/4 of a 32x32 image for nothing.
        model.maxpool = nn.Identity()
    if norm_layer is None:
        restore_conv_biases(model)
    return model


@register_model(family="resnet")
def resnet18(num_classes: int = 10, in_channels: int = 3, *, stem: str = "cifar", norm: str = "bn",
             groups: int = 32, zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 from torchvision's ResNet/BasicBlock; stem 'cifar' (3x3, no max-pool) or 'imagenet'."""
    return torchvision_resnet("resnet18", num_classes, in_channels, stem=stem, norm=norm, groups=groups,
                              zero_init_residual=zero_init_residual)


@register_model(family="resnet")
def resnet34(num_classes: int = 10, in_channels: int = 3, *, stem: str = "cifar", norm: str = "bn",
             groups: int = 32, zero_init_residual: bool = False) -> ResNet:
    """ResNet-34 from torchvision's ResNet/BasicBlock; stem 'cifar' (3x3, no max-pool) or 'imagenet'."""
    return torchvision_resnet("resnet34", num_classes, in_channels, stem=stem, norm=norm, groups=groups,
                              zero_init_residual=zero_init_residual)
