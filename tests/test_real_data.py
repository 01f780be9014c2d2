"""Training on the real MNIST files (skipped, with the reason, when they are absent)."""

from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig
from bench.train import train
from tests.conftest import real_data_dir

DATA = real_data_dir()
needs_mnist = pytest.mark.skipif(
    DATA is None or not (DATA / "MNIST" / "raw").is_dir(),
    reason="real MNIST not found (set BENCH_DATA_DIR to a folder with MNIST/raw/*.gz)",
)


@pytest.mark.data
@pytest.mark.slow
@needs_mnist
def test_mnist_5k_subset_one_epoch_over_90_percent() -> None:
    cfg = RunConfig(
        model="mnist_cnn",
        dataset="mnist",
        val_size=1000,
        train_subset=5000,
        test_subset=2000,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        schedule="constant",
        epochs=1,
        batch_size=64,
        crop_padding=0,
        hflip=False,
        augment=False,
    )
    threads = torch.get_num_threads()
    result = train(cfg, device="cpu", data_dir=str(DATA))
    torch.set_num_threads(threads)
    s = result.summary
    assert result.status == "ok"
    assert s["train_size"] == 5000 and s["test_size"] == 2000
    assert s["final_test_acc"] > 0.90, s["final_test_acc"]
