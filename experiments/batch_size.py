"""Batch size vs. epoch time and accuracy, with a fixed lr and with linear scaling + warm-up (Goyal et al. 2017)."""

from __future__ import annotations

from bench.config import RunConfig
from bench.study import Arm, Claim, Profile, Study, register_study
from experiments._common import smoke_profile

BASE_LR, BASE_BATCH = 0.1, 128
GOYAL = "Goyal et al. 2017, Accurate, Large Minibatch SGD, Table 2 and Fig. 1 (ImageNet ResNet-50)"
GOYAL_TIME = "Goyal et al. 2017, Sec. 5 (larger batches, fewer and better-used steps: until the device saturates)"
LARGE = ("full", "quick")  # the profiles with batches 256..1024


def batch_size_arms(sizes: tuple[int, ...]) -> tuple[Arm, ...]:
    """One arm per batch size, the lr left to the rule axis (fixed, or scaled with warm-up)."""
    return tuple(Arm(str(b), {"batch_size": b}, {"batch_size": b}) for b in sizes)


def rule_arms(warmup_epochs: int) -> tuple[Arm, ...]:
    return (
        Arm("fixed lr", {}, {"rule": "fixed lr"}),
        Arm("linear scaling", {"warmup": warmup_epochs}, {"rule": "linear scaling + warm-up"}),
    )


def scale_lr(cfg: RunConfig, arm: dict[str, str]) -> dict[str, object]:
    """Goyal et al.: lr = base_lr * B / 256 on ImageNet; here 0.1 * B / 128 (ResNet-20's own base)."""
    if arm.get("rule") == "linear scaling":
        return {"lr": BASE_LR * cfg.batch_size / BASE_BATCH}
    return {}


batch_size = register_study(Study(
    name="batch-size",
    question="How much faster are epochs at larger batches, and what does it cost in accuracy?",
    base=RunConfig(
        model="resnet20",
        dataset="cifar10",
        val_size=5000,
        optimizer="sgd",
        lr=BASE_LR,
        momentum=0.9,
        weight_decay=1e-4,
        batch_size=BASE_BATCH,
        eval_batch_size=2000,
        schedule="multistep",
        schedule_unit="epoch",
        epochs=160,
        milestones=(80, 120),
        crop_padding=4,
        hflip=True,
        acc_thresholds=(0.5, 0.8, 0.9),
    ),
    axes={"batch": batch_size_arms((32, 64, 128, 256, 512, 1024, 2048)), "rule": rule_arms(5)},
    profiles={
        "full": Profile({}, seeds=(0, 1, 2), description="ResNet-20, 160 epochs, batch 32..2048, 3 seeds"),
        # Timing cells run one at a time (never packed), so quick trains on a 20k subset.
        "quick": Profile({"epochs": 8, "milestones": (5, 7), "train_subset": 20000},
                         axes={"batch": batch_size_arms((32, 64, 128, 256, 512, 1024, 2048)), "rule": rule_arms(2)},
                         seeds=(0, 1, 2),
                         description="ResNet-20, 20k training images, 8 epochs (2-epoch warm-up), "
                                     "batch 32..2048, 3 seeds"),
        "smoke": smoke_profile(axes={"batch": batch_size_arms((32, 128)), "rule": rule_arms(1)}),
    },
    claims=(
        Claim.compare("Epoch time falls from batch 32 to batch 128 (fixed lr)", metric="median_epoch_time_s",
                      a={"batch": "128", "rule": "fixed lr"}, b={"batch": "32", "rule": "fixed lr"}, less_by=0.0,
                      source=GOYAL_TIME, note="any decrease counts: its size depends on the device"),
        *(Claim.compare(f"With linear scaling and warm-up, batch {b} ends within 1 point of batch 128",
                        metric="final_test_error_pct", a={"batch": str(b), "rule": "linear scaling"},
                        b={"batch": "128", "rule": "linear scaling"}, within=1.0, source=GOYAL, profiles=LARGE)
          for b in (256, 512, 1024)),
        Claim.compare("Without scaling the lr, batch 1024 ends more than 1 point worse than batch 128",
                      metric="final_test_error_pct", a={"batch": "1024", "rule": "fixed lr"},
                      b={"batch": "128", "rule": "fixed lr"}, greater_by=1.0, source=GOYAL, profiles=LARGE),
    ),
    figures=("batch_time", "batch_accuracy", "curves_time"),
    timing_critical=True,
    derive=scale_lr,
    notes="Epoch time and samples/s are timings: these cells are never packed on a shared GPU.",
))
