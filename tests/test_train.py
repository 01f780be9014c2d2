"""Tests of bench.train: optimisers, schedules and the eager engine (CPU, small synthetic data)."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.config import RunConfig
from bench.errors import UserError
from bench.train.optim import (
    OPTIMIZERS,
    PLATEAU_PATIENCE,
    SCHEDULES,
    accel_kwargs,
    build_optimizer,
    build_schedule,
)

# ------------------------------------------------------------------------------------- optimisers


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_each_optimizer_builds_and_steps(name: str) -> None:
    cfg = RunConfig(optimizer=name, lr=0.05, weight_decay=5e-4, momentum=0.8, nesterov=True, betas=(0.8, 0.99))
    model = nn.Linear(4, 2)
    opt = build_optimizer(cfg, model.parameters())
    group = opt.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 5e-4
    if name == "sgd":
        assert isinstance(opt, torch.optim.SGD) and group["momentum"] == 0.8 and group["nesterov"]
    if name in ("adam", "adamw"):
        assert group["betas"] == (0.8, 0.99)
    if name == "rmsprop":
        assert group["momentum"] == 0.8
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    assert not torch.equal(before, model.weight)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]  # cuda: skipped without a GPU (conftest)


@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_registered_without_accel_works_on_every_device(device: str) -> None:
    def plain_sgd(cfg: RunConfig, params: list, accel: dict[str, bool]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=cfg.lr, **accel)

    OPTIMIZERS.add("plain_sgd_test", plain_sgd)  # no accel=
    try:
        # what a CUDA run asks for, decided without needing a GPU: nothing for it, fused for sgd
        assert accel_kwargs("plain_sgd_test", on_cuda=True) == {} == accel_kwargs("plain_sgd_test", on_cuda=False)
        assert accel_kwargs("sgd", on_cuda=True) == {"fused": True} and accel_kwargs("sgd", on_cuda=False) == {}
        w = nn.Parameter(torch.ones(3, device=device))
        opt = build_optimizer(RunConfig(optimizer="plain_sgd_test", lr=0.5), [w])
        (w * torch.arange(3.0, device=device)).sum().backward()
        opt.step()
        assert w.detach().cpu().tolist() == [1.0, 0.5, 0.0]
    finally:
        OPTIMIZERS.remove("plain_sgd_test")


def test_registries_list_the_documented_names() -> None:
    assert OPTIMIZERS.names() == ["adam", "adamw", "rmsprop", "sgd"]
    assert SCHEDULES.names() == ["constant", "cosine", "multistep", "onecycle", "plateau"]


def test_unknown_names_are_user_errors() -> None:
    with pytest.raises(UserError, match="did you mean sgd"):
        build_optimizer(RunConfig(optimizer="sgdd"), nn.Linear(2, 2).parameters())
    with pytest.raises(UserError, match="cosine"):
        build_schedule(RunConfig(schedule="cosin"), 10, 100)


# -------------------------------------------------------------------------------------- schedules


def test_multistep_he_et_al_iterations() -> None:
    # He et al.: 45k train images at batch 128 -> 352 steps/epoch; /10 at 32k and 48k, stop at 64k.
    cfg = RunConfig(schedule="multistep", schedule_unit="iter", milestones=(32000, 48000), gamma=0.1,
                    iterations=64000, batch_size=128)
    s = build_schedule(cfg, 352, 64000)
    assert s(0) == 1.0 and s(31999) == 1.0
    assert s(32000) == pytest.approx(0.1) and s(47999) == pytest.approx(0.1)
    assert s(48000) == pytest.approx(0.01) and s(63999) == pytest.approx(0.01)


def test_multistep_in_epochs() -> None:
    s = build_schedule(RunConfig(milestones=(2, 4), gamma=0.5), 10, 60)
    assert [s(i) for i in (19, 20, 39, 40)] == [1.0, 0.5, 0.5, 0.25]


def test_linear_warmup_composes() -> None:
    cfg = RunConfig(schedule="multistep", milestones=(8,), warmup=5)
    s = build_schedule(cfg, 10, 100)
    ramp = [s(i) for i in range(50)]
    assert ramp[0] == pytest.approx(0.02) and ramp[49] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(ramp, ramp[1:], strict=False))
    assert s(50) == 1.0 and s(80) == pytest.approx(0.1)
    it = build_schedule(dataclasses.replace(cfg, schedule_unit="iter", warmup=100, milestones=()), 10, 1000)
    assert it(0) == pytest.approx(0.01) and it(99) == 1.0 and it(500) == 1.0


def test_cosine_goes_to_zero_after_warmup() -> None:
    s = build_schedule(RunConfig(schedule="cosine"), 10, 100)
    assert s(0) == 1.0 and s(99) == pytest.approx(0.0, abs=1e-12)
    assert s(49) == pytest.approx(0.5 * (1 + math.cos(math.pi * 49 / 99)))
    w = build_schedule(RunConfig(schedule="cosine", warmup=2), 10, 100)
    assert w(19) == pytest.approx(1.0) and w(99) == pytest.approx(0.0, abs=1e-12) and 0 < w(60) < 1


def test_onecycle_matches_torch() -> None:
    s = build_schedule(RunConfig(schedule="onecycle", lr=0.1), 10, 100)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=100, cycle_momentum=False)
    for i in range(100):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * s(i), rel=1e-9, abs=1e-15)
        opt.step()
        ref.step()


def test_plateau_reduces_after_patience_and_round_trips() -> None:
    s = build_schedule(RunConfig(schedule="plateau", gamma=0.1), 10, 1000)
    s.step_epoch(1.0)
    for _ in range(PLATEAU_PATIENCE):
        s.step_epoch(1.0)
    assert s(5) == 1.0
    s.step_epoch(1.0)
    assert s(5) == pytest.approx(0.1)
    s2 = build_schedule(RunConfig(schedule="plateau", gamma=0.1), 10, 1000)
    s2.load_state_dict(s.state_dict())
    assert s2(0) == s(0)


# ----------------------------------------------------------------------------------------- engine

from bench.data import LoadedData, load_dataset  # noqa: E402
from bench.train import HISTORY_KEYS, TrainResult, save_artifacts, train  # noqa: E402
from bench.train import engine as engine_mod  # noqa: E402
from bench.train.checkpoint import CHECKPOINT_NAME  # noqa: E402

SPEC = "synthetic:train=640,test=160,size=28,channels=1,noise=0.2"
TIMING_KEYS = {"epoch_time_s", "eval_time_s", "epoch_train_samples_per_s", "elapsed_train_time_s"}


@pytest.fixture(scope="module")
def data() -> LoadedData:
    return load_dataset(SPEC)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def small_cfg(**kw: object) -> RunConfig:
    base = dict(model="mnist_cnn", model_kwargs={"norm": "bn"}, dataset=SPEC, val_size=160, epochs=3,
                batch_size=32, eval_batch_size=160, lr=0.02, schedule="cosine", crop_padding=2, hflip=False,
                acc_thresholds=(0.3, 0.99))
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def check_history(res: TrainResult, epochs: int) -> None:
    assert len(res.history) == epochs
    for i, row in enumerate(res.history):
        assert tuple(row) == HISTORY_KEYS
        assert row["epoch"] == i + 1
        assert row["epoch_time_s"] > 0 and row["eval_time_s"] > 0 and row["epoch_train_samples_per_s"] > 0
        for k in ("train_acc", "val_acc", "test_acc"):
            assert 0.0 <= row[k] <= 1.0
        assert row["peak_allocated_bytes"] is None  # CPU
    times = [r["elapsed_train_time_s"] for r in res.history]
    assert times == sorted(times)
    assert [r["iteration"] for r in res.history] == [(i + 1) * res.summary["steps_per_epoch"] for i in range(epochs)]


def test_train_learns_and_reports(data: LoadedData) -> None:
    rows: list[dict] = []
    res = train(small_cfg(epochs=4), data=data, on_epoch=rows.append)
    assert res.status == "ok" and rows == res.history
    check_history(res, 4)
    s = res.summary
    assert s["final_val_acc"] > 0.3 and s["final_test_acc"] > 0.3  # chance is 0.1
    assert s["final_train_loss"] < res.history[0]["train_loss"]
    assert s["steps_per_epoch"] == 15 and s["iterations_done"] == 60  # 480 train images / 32
    assert (s["train_size"], s["val_size"], s["test_size"]) == (480, 160, 160)
    assert s["num_classes"] == 10 and len(s["class_names"]) == 10 and s["data_source"].startswith("synthetic")
    assert s["precision_used"] == "fp32" and s["engine_used"] == "eager" and res.device == "cpu"
    assert res.error is None and s["epochs_done"] == 4
    assert not {"status", "error", "device"} & set(s)  # the record's outcome and placement say those once
    assert s["best_val_acc"] == max(r["val_acc"] for r in res.history)
    assert s["test_acc_at_best_val"] == res.history[s["best_val_epoch"] - 1]["test_acc"]
    assert s["epochs_to_val_acc_30"] is not None and s["time_to_val_acc_30_s"] > 0
    assert s["epochs_to_val_acc_99"] is None and math.isnan(s["time_to_val_acc_99_s"])
    assert s["median_epoch_time_s"] > 0 and s["epoch_train_samples_per_s"] > 0
    assert 0 <= s["final_train_acc_evalmode"] <= 1 and 0 <= s["final_train_acc_trainmode"] <= 1
    assert res.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine ends at 0

    a = res.artifacts
    assert a["test_pred"].shape == a["test_true"].shape == (160,)
    assert (a["test_pred"] == a["test_true"]).mean() == pytest.approx(s["final_test_acc"])
    k = int((a["test_pred"] != a["test_true"]).sum())
    assert a["misclassified_images"].shape == (min(k, 36), 1, 28, 28) and a["misclassified_images"].dtype == np.uint8
    assert a["misclassified_true"].shape == a["misclassified_pred"].shape == (min(k, 36),)
    assert (a["misclassified_true"] != a["misclassified_pred"]).all()
    assert a["filters_init"].shape == a["filters_final"].shape == (32, 1, 3, 3)
    assert a["filters_init"].dtype == np.float32 and not np.array_equal(a["filters_init"], a["filters_final"])


def test_end_of_run_steps_can_be_left_out(data: LoadedData) -> None:
    """``end_steps=()``: the same epochs, NaN for the BN-gap accuracies and no artifacts; one step alone
    gives its own part only; an unknown name is one line naming those there are."""
    cfg = small_cfg(epochs=1)
    full = train(cfg, data=data)
    bare = train(cfg, data=data, end_steps=())
    gap = train(cfg, data=data, end_steps=("bn_gap",))
    arts = train(cfg, data=data, end_steps=["artifacts"])
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in h]  # noqa: E731
    assert strip(bare.history) == strip(full.history) == strip(gap.history) == strip(arts.history)
    assert bare.artifacts == {} == gap.artifacts and set(arts.artifacts) == set(full.artifacts)
    assert math.isnan(bare.summary["final_train_acc_evalmode"])
    assert math.isnan(arts.summary["final_train_acc_trainmode"])
    assert gap.summary["final_train_acc_trainmode"] == full.summary["final_train_acc_trainmode"]
    assert list(bare.summary) == list(full.summary)  # the record's schema does not depend on them
    assert bare.summary["resumed_from_epoch"] == 0
    with pytest.raises(UserError, match=r"unknown end-of-run step 'bn-gap'; did you mean bn_gap\? "
                                         r"\(accepted: artifacts, bn_gap\)"):
        train(cfg, data=data, end_steps=("bn-gap",))


def test_save_artifacts_round_trip(tmp_path: Path) -> None:
    arts = {"test_pred": np.arange(5, dtype=np.int16), "filters_init": np.ones((2, 1, 3, 3), np.float32)}
    path = save_artifacts(tmp_path / "r" / "artifacts.npz", arts)
    with np.load(path) as z:
        assert set(z.files) == set(arts) and np.array_equal(z["test_pred"], arts["test_pred"])


def test_iteration_budget_and_no_validation(data: LoadedData) -> None:
    # 25 iterations at 20 steps/epoch (640 images / 32): the second epoch stops after 5 steps
    res = train(small_cfg(iterations=25, val_size=0, schedule="plateau"), data=data, end_steps=())
    assert res.status == "ok" and [r["iteration"] for r in res.history] == [20, 25]
    assert all(math.isnan(r["val_acc"]) and math.isnan(r["val_loss"]) for r in res.history)
    assert res.summary["val_size"] == 0 and math.isnan(res.summary["best_val_acc"])
    assert res.summary["epochs_to_val_acc_30"] is None and res.summary["train_size"] == 640


def test_divergence_ends_the_run_without_raising(data: LoadedData) -> None:
    rows: list[dict] = []
    res = train(small_cfg(lr=1e8, schedule="constant", epochs=4), data=data, on_epoch=rows.append)
    assert res.status == "diverged" and res.error is not None
    assert "non-finite" in res.error
    assert len(res.history) < 4 and rows == res.history
    assert math.isnan(res.summary["final_test_acc"]) and "test_pred" not in res.artifacts


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_resume_gives_the_same_history(data: LoadedData, tmp_path: Path) -> None:
    cfg = small_cfg(schedule="multistep", milestones=(2,), model_kwargs={"norm": "bn"})
    straight = train(cfg, data=data)

    def stop_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(cfg, data=data, run_dir=tmp_path, on_epoch=stop_after_two)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    strip = lambda h: [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in h]  # noqa: E731
    # a checkpoint of another config (run_id) is ignored: that run starts from scratch
    foreign = tmp_path / "other"
    foreign.mkdir()
    shutil.copy(tmp_path / CHECKPOINT_NAME, foreign / CHECKPOINT_NAME)
    other = train(dataclasses.replace(cfg, epochs=1), data=data, run_dir=foreign)
    assert strip(other.history) == strip(straight.history[:1])

    resumed_rows: list[dict] = []
    resumed = train(cfg, data=data, run_dir=tmp_path, on_epoch=resumed_rows.append)
    assert [r["epoch"] for r in resumed_rows] == [3]  # only the missing epoch ran
    assert not (tmp_path / CHECKPOINT_NAME).exists()
    assert strip(resumed.history) == strip(straight.history)
    for k in ("test_pred", "filters_init", "filters_final"):
        assert np.array_equal(resumed.artifacts[k], straight.artifacts[k])
    assert resumed.summary["final_train_acc_trainmode"] == straight.summary["final_train_acc_trainmode"]


def test_label_smoothing_bf16_channels_last(data: LoadedData) -> None:
    res = train(small_cfg(label_smoothing=0.1, precision="fp16", channels_last=True, epochs=2), data=data,
                end_steps=())
    assert res.status == "ok" and res.summary["precision_used"] == "bf16"  # no fp16 autocast on CPU
    check_history(res, 2)
    assert res.summary["final_val_acc"] > 0.2
    tf = train(small_cfg(precision="tf32", epochs=1, train_subset=128), data=data, end_steps=())
    assert tf.summary["precision_used"] == "fp32" and tf.summary["train_size"] == 128
    assert torch.backends.cudnn.allow_tf32  # restored to torch's default after the run


class AuxNet(nn.Module):
    """Returns (logits, aux) in train mode like GoogLeNet, logits alone in eval mode."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, num_classes)
        self.aux = nn.Linear(8 * 16, num_classes)
        self.aux_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h = torch.flatten(self.pool(torch.relu(self.conv(x))), 1)
        if self.training:
            self.aux_calls += 1
            return self.fc(h), self.aux(h)
        return self.fc(h)


def test_tuple_output_model_trains_with_aux_loss(data: LoadedData, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[AuxNet] = []

    def fake_create(name: str, num_classes: int, in_channels: int, **kw: object) -> nn.Module:
        made.append(AuxNet(num_classes, in_channels))
        return made[-1]

    monkeypatch.setattr(engine_mod, "create_model", fake_create)
    res = train(small_cfg(aux_loss_weight=0.3, optimizer="adam", lr=3e-3, schedule="constant"), data=data,
                end_steps=())
    assert res.status == "ok" and made[0].aux_calls > 0
    assert res.summary["final_val_acc"] > 0.2
    aux_before = made[0].aux.weight.detach().clone()
    # the aux head only learns through the aux loss: with weight 0 it stays at its initialisation
    res0 = train(small_cfg(aux_loss_weight=0.0, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                           schedule="constant", epochs=1), data=data, end_steps=())
    assert res0.status == "ok"
    torch.manual_seed(0)
    init = AuxNet(10, 1).aux.weight
    assert torch.equal(made[1].aux.weight, init) and not torch.equal(aux_before, init)
