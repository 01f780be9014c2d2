"""Shared protocol pieces for the studies (not a study itself: modules starting with _ are skipped)."""

from __future__ import annotations

from bench.config import RunConfig
from bench.study import Profile

# He et al. 2016, Sec. 4.2: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 45k/5k split,
# lr / 10 at 32k and 48k iterations, stop at 64k, 4-pixel padded random crop + horizontal flip.
HE2016_CIFAR = RunConfig(
    model="resnet20",
    dataset="cifar10",
    val_size=5000,
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    batch_size=128,
    schedule="multistep",
    schedule_unit="iter",
    milestones=(32_000, 48_000),
    gamma=0.1,
    iterations=64_000,
    epochs=None,
    crop_padding=4,
    hflip=True,
)

# The same schedule shape scaled to 15 epochs (about 5k iterations at batch 128): lr / 10 at 50%
# and 75% of training, as in the full protocol.
QUICK_15_EPOCHS = {
    "iterations": None,
    "epochs": 15,
    "schedule_unit": "epoch",
    "milestones": (8, 12),
}

# CPU-sized synthetic data: 16x16 images, 10 classes, a few hundred samples.
SMOKE_DATA = "synthetic:size=16,train=384,test=128"
SMOKE_MNIST_DATA = "synthetic:channels=1,size=28,train=384,test=128"


# The CPU profiles on real data: a stratified CIFAR-10 subset (val and test subsets too, since
# evaluating 15k images every epoch would cost as much as training), He et al.'s recipe otherwise.
CPU_CIFAR_SUBSET = {
    "val_size": 1000,
    "train_subset": 5000,
    "test_subset": 2000,
    "eval_batch_size": 500,
}


# A few hundred steps of He et al.'s recipe on a CPU (residual's cpu profile, chosen from the pilot in
# docs/cpu-pilot.md): 200 iterations, a linear warm-up over the first 40 (He et al. warm up their
# deepest net at a low lr; at lr 0.1 from the first step the 56-layer nets stay at chance for
# hundreds of steps), then lr 0.1 held (the paper's drops come after 32k iterations), and the
# fastest CPU numerics that trained like fp32 in the pilot (bf16 autocast, channels_last).
CPU_SHORT_RECIPE = {
    "iterations": 200,
    "epochs": None,
    "schedule": "constant",
    "schedule_unit": "iter",
    "milestones": (),
    "warmup": 40,
    "precision": "bf16",
    "channels_last": True,
}


def smoke_overrides(**extra: object) -> dict[str, object]:
    """A run of seconds on a CPU: tiny synthetic data, 2 epochs, small batches."""
    base = {
        "dataset": SMOKE_DATA,
        "val_size": 64,
        "iterations": None,
        "epochs": 2,
        "schedule_unit": "epoch",
        "milestones": (1,),
        "batch_size": 64,
        "eval_batch_size": 256,
        "warmup": 0,
    }
    base.update(extra)
    return base


def smoke_profile(**extra: object) -> Profile:
    """The smoke profile: :func:`smoke_overrides` plus ``extra`` (``axes=`` replaces the study's axes)."""
    axes = extra.pop("axes", None)
    over = smoke_overrides(**extra)
    description = f"seconds on a CPU: {over['dataset']}, {over['epochs']} epoch(s), 1 seed"
    return Profile(over, axes=axes, seeds=(0,), description=description)  # type: ignore[arg-type]
