"""The popular CNNs side by side on CIFAR-10: accuracy against multiply-adds, parameters and time."""

from __future__ import annotations

from bench.config import RunConfig
from bench.study import Arm, Claim, Profile, Study, register_study
from experiments._common import smoke_profile

# Every arm trains with the same recipe (SGD, cosine schedule, crop + flip) except where an arm says
# otherwise: AlexNet has no normalisation and needs a smaller lr; the ImageNet-stem ResNets follow the
# well-known lecture setup (224-pixel upscaled inputs, Adam 1e-4).
HE2016_T6 = "He et al. 2016, Deep Residual Learning, Table 6 (CIFAR-10)"
HE2016_T1 = "He et al. 2016, Deep Residual Learning, Table 1 (its 'FLOPs' are multiply-adds, at 224x224)"
KUANGLIU = ("kuangliu/pytorch-cifar README (a widely used reimplementation, not a paper: "
            "DenseNet-121 95.04%, ResNet-18 93.02%, VGG16 92.64% test accuracy)")
LARGE = ("full", "quick")  # the profiles with the whole zoo
_IMAGENET_STEM = {"image_size": 224, "crop_padding": 28, "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0,
                  "batch_size": 128}


def arch_arms(include: tuple[str, ...] | None = None) -> tuple[Arm, ...]:
    arms = (
        Arm("simple_cnn", {"model": "simple_cnn"}, {"family": "small CNN"}),
        Arm("alexnet_cifar", {"model": "alexnet_cifar", "image_size": 70, "crop_size": 64, "crop_padding": 0,
                              "lr": 0.01}, {"family": "AlexNet (64x64 crops)"}),
        Arm("vgg16_bn", {"model": "vgg16_bn"}, {"family": "VGG"}),
        Arm("resnet20", {"model": "resnet20"}, {"family": "CIFAR ResNet"}),
        Arm("resnet56", {"model": "resnet56"}, {"family": "CIFAR ResNet"}),
        Arm("resnet18", {"model": "resnet18", "model_kwargs.stem": "cifar"}, {"family": "ResNet (CIFAR stem)"}),
        Arm("resnet34", {"model": "resnet34", "model_kwargs.stem": "cifar"}, {"family": "ResNet (CIFAR stem)"}),
        Arm("resnet18_224", {"model": "resnet18", "model_kwargs.stem": "imagenet", **_IMAGENET_STEM},
            {"family": "ResNet (ImageNet stem, 224 px, Adam)"}),
        Arm("resnet34_224", {"model": "resnet34", "model_kwargs.stem": "imagenet", **_IMAGENET_STEM},
            {"family": "ResNet (ImageNet stem, 224 px, Adam)"}),
        Arm("googlenet", {"model": "googlenet"}, {"family": "GoogLeNet (aux losses x0.3)"}),
        Arm("densenet121", {"model": "densenet121"}, {"family": "DenseNet"}),
    )
    return arms if include is None else tuple(a for a in arms if a.label in include)


architectures = register_study(Study(
    name="architectures",
    question="How do the popular CNNs compare on CIFAR-10 in accuracy, size, compute and speed?",
    base=RunConfig(
        model="resnet20",
        dataset="cifar10",
        val_size=5000,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=128,
        schedule="cosine",
        schedule_unit="epoch",
        epochs=100,
        crop_padding=4,
        hflip=True,
    ),
    axes={"arch": arch_arms()},
    profiles={
        "full": Profile({}, seeds=(0, 1, 2), description="100 epochs, cosine lr, 3 seeds"),
        "quick": Profile({"epochs": 5, "train_subset": 20000}, seeds=(0, 1, 2),
                         description="5 epochs on 20k training images, 3 seeds"),
        "smoke": smoke_profile(
            axes={"arch": arch_arms(("simple_cnn", "alexnet_cifar", "resnet20", "googlenet"))},
            epochs=1, milestones=(), dataset="synthetic:size=32,train=128,test=64", batch_size=32),
    },
    claims=(
        Claim.level("ResNet-20 has 0.27M parameters", metric="params_total", a={"arch": "resnet20"},
                    value=270_000, within=5_000, exact=True, source=HE2016_T6),
        Claim.level("ResNet-56 has 0.85M parameters", metric="params_total", a={"arch": "resnet56"},
                    value=850_000, within=5_000, exact=True, source=HE2016_T6, profiles=LARGE),
        Claim.level("ResNet-18 (ImageNet stem, 224 px) costs 1.8G multiply-adds per image", metric="macs_conv_linear",
                    a={"arch": "resnet18_224"}, value=1.8e9, within=0.05e9, exact=True, source=HE2016_T1,
                    profiles=LARGE),
        Claim.level("ResNet-34 (ImageNet stem, 224 px) costs 3.6G multiply-adds per image", metric="macs_conv_linear",
                    a={"arch": "resnet34_224"}, value=3.6e9, within=0.05e9, exact=True, source=HE2016_T1,
                    profiles=LARGE),
        Claim.compare("ResNet-56 ends with a lower test error than ResNet-20 (6.97 vs 8.75)",
                      metric="final_test_error_pct", a={"arch": "resnet56"}, b={"arch": "resnet20"}, less_by=0.5,
                      source=HE2016_T6, profiles=LARGE),
        Claim.compare("ResNet-18 (CIFAR stem) ends with a lower test error than VGG16-BN (6.98 vs 7.36)",
                      metric="final_test_error_pct", a={"arch": "resnet18"}, b={"arch": "vgg16_bn"}, less_by=0.2,
                      source=KUANGLIU, profiles=LARGE),
        Claim.compare("DenseNet-121 ends with a lower test error than ResNet-18 (4.96 vs 6.98)",
                      metric="final_test_error_pct", a={"arch": "densenet121"}, b={"arch": "resnet18"}, less_by=0.5,
                      source=KUANGLIU, profiles=LARGE),
    ),
    figures=("bubble", "cost_by_arm", "curves_epoch"),
    notes="Accuracy against multiply-adds (fvcore, conv + linear, per image at the trained input size) "
          "and parameters; bubble area is epoch time.",
))
