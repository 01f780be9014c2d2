"""The popular CNNs side by side on CIFAR-10: accuracy against multiply-adds, parameters and time."""

from __future__ import annotations

from bench.config import RunConfig
from bench.study import Arm, Profile, Study, register_study
from experiments._common import smoke_profile

# Every arm trains with the same recipe (SGD, cosine schedule, crop + flip) except where an arm says
# otherwise: AlexNet has no normalisation and needs a smaller lr; the ImageNet-stem ResNets follow the
# well-known lecture setup (224-pixel upscaled inputs, Adam 1e-4).
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
        "full": Profile("full", {}, seeds=(0, 1, 2), description="100 epochs, cosine lr, 3 seeds"),
        "quick": Profile("quick", {"epochs": 5, "train_subset": 20000}, seeds=(0, 1, 2),
                         description="5 epochs on 20k training images, 3 seeds"),
        "smoke": smoke_profile(
            axes={"arch": arch_arms(("simple_cnn", "alexnet_cifar", "resnet20", "googlenet"))},
            epochs=1, milestones=(), dataset="synthetic:size=32,train=128,test=64", batch_size=32),
    },
    figures=("bubble", "cost_by_arm", "curves_epoch"),
    notes="Accuracy against multiply-adds (fvcore, conv + linear, per image at the trained input size) "
          "and parameters; bubble area is epoch time.",
))
