"""BatchNorm vs. GroupNorm, LayerNorm, InstanceNorm and no norm as the batch shrinks (Wu & He 2018)."""

from __future__ import annotations

from bench.config import RunConfig
from bench.models.norms import NORM_TABLE
from bench.study import Arm, Claim, Profile, Published, Study, register_study
from experiments._common import smoke_profile

WU_HE = "Wu & He 2018, Group Normalization, Table 1 (ImageNet ResNet-50 val error at batch 32; context only)"
WU_HE_B2 = "Wu & He 2018, Group Normalization, Table 2 (ImageNet ResNet-50 val error at batch 2; context only)"

BASE_LR, BASE_BATCH = 0.1, 128  # lr 0.1 at batch 128, scaled linearly (Wu & He scale lr with batch too)


def norm_arms() -> tuple[Arm, ...]:
    """One arm per norm of the zoo's table (bench.models.norms.NORM_TABLE), labelled as it labels them."""
    # GroupNorm uses 8 groups: ResNet-20's narrowest stage has 16 channels, so the paper's 32
    # groups would make GN identical to InstanceNorm there.
    return tuple(Arm(n, {"model_kwargs.norm": n, **({"model_kwargs.groups": 8} if n == "gn" else {})},
                     {"norm": norm.label})
                 for n, norm in NORM_TABLE.items())


def lr_scaled_batch_arms(sizes: tuple[int, ...]) -> tuple[Arm, ...]:
    """One arm per batch size, its lr scaled linearly with it (0.1 at batch 128)."""
    return tuple(Arm(str(b), {"batch_size": b, "lr": BASE_LR * b / BASE_BATCH}, {"batch_size": b}) for b in sizes)


normalization = register_study(Study(
    name="normalization",
    question="How do BN, GN, LN, IN and no normalisation compare as the batch per step shrinks from 32 to 2?",
    base=RunConfig(
        model="resnet20",
        dataset="cifar10",
        val_size=5000,
        optimizer="sgd",
        lr=BASE_LR * 32 / BASE_BATCH,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=32,
        eval_batch_size=500,
        schedule="multistep",
        schedule_unit="epoch",
        milestones=(15, 22),
        epochs=30,
        crop_padding=4,
        hflip=True,
    ),
    axes={"norm": norm_arms(), "batch": lr_scaled_batch_arms((32, 16, 8, 4, 2))},
    profiles={
        "full": Profile({}, seeds=(0, 1, 2), description="ResNet-20, 30 epochs, batch 32..2, 3 seeds"),
        "quick": Profile({"epochs": 4, "milestones": (3,), "train_subset": 5000},
                         axes={"norm": norm_arms(), "batch": lr_scaled_batch_arms((32, 8, 2))}, seeds=(0, 1, 2),
                         description="ResNet-20, 5k training images, 4 epochs, batch 32/8/2, 3 seeds"),
        "smoke": smoke_profile(axes={"norm": norm_arms(), "batch": lr_scaled_batch_arms((32, 2))}, epochs=1,
                               milestones=(), dataset="synthetic:size=16,train=192,test=64"),
    },
    published=(
        *(Published({"norm": n, "batch": b}, "final_test_error_pct", v, src, note="ImageNet", comparable=False)
          for n, b, v, src in (("bn", "32", 23.6, WU_HE), ("gn", "32", 24.1, WU_HE), ("ln", "32", 25.3, WU_HE),
                               ("in", "32", 28.4, WU_HE), ("bn", "2", 34.7, WU_HE_B2), ("gn", "2", 24.1, WU_HE_B2))),
    ),
    claims=(
        Claim.compare("BN's error rises by at least 3 points from batch 32 to batch 2 (23.6 -> 34.7)",
                      metric="final_test_error_pct", a={"norm": "bn", "batch": "2"}, b={"norm": "bn", "batch": "32"},
                      greater_by=3.0, source=WU_HE_B2),
        Claim.compare("GN's error stays within 1 point from batch 32 to batch 2 (24.1 -> 24.1)",
                      metric="final_test_error_pct", a={"norm": "gn", "batch": "2"}, b={"norm": "gn", "batch": "32"},
                      within=1.0, source=WU_HE_B2),
        Claim.compare("GN ends with a lower error than BN at batch 2 (24.1 vs 34.7)", metric="final_test_error_pct",
                      a={"norm": "gn", "batch": "2"}, b={"norm": "bn", "batch": "2"}, less_by=1.0, source=WU_HE_B2),
    ),
    figures=("error_vs_batch", "cost_by_arm", "bn_mode_gap"),
    notes="Learning rate scales linearly with the batch (0.1 at 128). The published figures are "
          "ImageNet ResNet-50 numbers for context: compare trends, not absolute errors.",
))
