"""Training on the real MNIST files, and a slice of the residual-mnist study with its verdicts (skipped,
with the reason, when the files are absent)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import RunConfig
from bench.report import build_report
from bench.study import get_study
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


@pytest.mark.data
@pytest.mark.slow
@needs_mnist
def test_residual_mnist_slice_fills_the_verdict_table(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two seeds, one epoch of the cpu profile on a stratified slice of real MNIST: every claim gets
    an estimate and a verdict (which verdict is the data's business, not the test's)."""
    base = ["--results-dir", str(results_dir), "--data-dir", str(DATA)]
    slice_ = ["--set", "epochs=1", "--set", "train_subset=3000", "--set", "val_size=500", "--set", "test_subset=1000"]
    threads = torch.get_num_threads()
    # the claims read test errors: the measurements and the end-of-run steps are left out
    assert main([*base, "run", "residual-mnist", "--profile", "cpu", "--seeds", "0,1", *slice_,
                 "--no-measure", "--no-extras"]) == 0
    torch.set_num_threads(threads)
    capsys.readouterr()
    assert main([*base, "claims", "residual-mnist"]) == 0
    out = capsys.readouterr().out
    claims = get_study("residual-mnist").claims
    verdicts = re.findall(r"^\[(reproduced|contradicted|inconclusive|not tested)\] ", out, re.M)
    assert len(verdicts) == len(claims) and "not tested" not in verdicts, out
    assert len(re.findall(r"; ours [+-]\d", out)) == len(claims), out  # an estimate with its interval each
    html = build_report("residual-mnist", results_dir).read_text()
    assert len(re.findall(r'<tr data-verdict="(?:reproduced|contradicted|inconclusive)">', html)) == len(claims)
