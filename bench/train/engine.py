"""The training engine: one :class:`~bench.config.RunConfig` in, history + summary + artifacts out.

Seeds. ``cfg.seed`` sets the model initialisation (``torch.manual_seed`` just before
``create_model``), the data order and augmentation (the loader's ``set_epoch(e)`` derives them from
``(cfg.seed, e)``) and dropout. The validation split and the train/test subsets use the fixed seed
``SPLIT_SEED``, so every seed of a study, and every ``train_subset`` size, is judged on the same
validation images (the split is taken first, the training subset from what remains).

Length. ``cfg.iterations`` wins when set (epochs = ceil(iterations / steps_per_epoch), the last one
stops at the budget); otherwise ``cfg.epochs`` full epochs.

Synchronisation. The step loop never reads a device value: losses and correct counts stay on the
device and are read once per epoch (see :mod:`bench.train.loop` for the divergence check).

Engines. ``cfg.engine='eager'`` runs :func:`bench.train.loop.train_epoch`. 'graph', and 'auto' on a
CUDA device, capture the whole training step in a CUDA graph and replay it per batch
(:mod:`bench.train.graphed`); the warm-up and capture run before the first epoch and are timed
separately (``capture_time_s``, not in ``epoch_time_s``). Where a run cannot be graphed (CPU, fp16 with
GradScaler, an optimizer without a capturable step, a model that fails to capture) it trains with the
eager loop and the summary says why (``engine_fallback_reason``); ``engine_used`` says which ran.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.config import RunConfig
from bench.faults import fault_point
from bench.data import LoadedData, load_dataset, make_loader, mixed_sample, split_train_val, stratified_subset
from bench.models import create_model
from bench.record import EpochRow
from bench.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bench.train.evaluate import evaluate, first_conv_weight, prediction_artifacts, save_artifacts
from bench.train.graphed import GraphTrainer, GraphUnsupported, graph_decision
from bench.device import (
    Precision,
    memory_peaks,
    numerics,
    on_device,
    release_cached_memory,
    reset_memory_peaks,
    resolve_device,
    resolve_precision,
)
from bench.train.loop import train_epoch
from bench.train.optim import build_optimizer, build_schedule
from bench.train.summary import HISTORY_KEYS, summarise

__all__ = ["HISTORY_KEYS", "SPLIT_SEED", "TrainResult", "save_artifacts", "train"]

SPLIT_SEED = 0
BN_GAP_IMAGES = 5000  # size of the fixed training subset for the BN train/eval-mode gap


@dataclass
class TrainResult:
    """What a run produced: ``status`` is 'ok' or 'diverged' (``error`` says why, one line);
    ``history`` has one :meth:`EpochRow.to_dict` per epoch; ``summary`` holds the run's metrics only
    (:func:`~bench.train.summary.summarise`); ``device`` is the one it trained on (``cuda:0``)."""

    status: str
    history: list[dict[str, Any]]
    summary: dict[str, Any]
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None
    device: str = "cpu"

    @property
    def rows(self) -> tuple[EpochRow, ...]:
        """The history as the record keeps it."""
        return tuple(EpochRow(**r) for r in self.history)


@dataclass
class _Splits:
    info: LoadedData
    train: Any
    val: Any | None
    test: Any


def _size(ds: Any) -> int:
    return 0 if ds is None else int(ds.labels.shape[0])


def prepare_splits(cfg: RunConfig, data_dir: str | Path | None, data: LoadedData | None) -> _Splits:
    """Load the data set once (or take ``data``), split off validation, apply the subsets."""
    info = data if data is not None else load_dataset(cfg.dataset, data_dir)
    train, val = split_train_val(info.train, cfg.val_size, SPLIT_SEED)
    if val is not None and _size(val) == 0:
        val = None
    if cfg.train_subset is not None and cfg.train_subset < _size(train):
        train = stratified_subset(train, cfg.train_subset, SPLIT_SEED)
    test = info.test
    if cfg.test_subset is not None and cfg.test_subset < _size(test):
        test = stratified_subset(test, cfg.test_subset, SPLIT_SEED)
    return _Splits(info, train, val, test)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    cfg: RunConfig,
    *,
    device: str | torch.device = "cpu",
    data_dir: str | Path | None = None,
    run_dir: Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    data: LoadedData | None = None,
    drop_checkpoint: bool = True,
) -> TrainResult:
    """Train ``cfg`` on ``device`` and evaluate it every epoch.

    With ``run_dir``, ``run_dir/checkpoint.pt`` is written at the end of every epoch and resumed from
    when its ``run_id`` matches ``cfg.run_id`` (deleted once the run ends, unless ``drop_checkpoint``
    is False: the runner drops it only after the run's record is written). ``on_epoch(row)`` runs
    after each epoch's checkpoint, so an exception raised there leaves a resumable run. A non-finite
    loss ends the run with status 'diverged' (no exception); user mistakes raise ``UserError``.
    """
    device = resolve_device(device)
    # cuda:N the current device for the run: bf16 support, events, CUDA-graph capture, cuBLAS/cuDNN
    # handles and the optimizers' capture check all use the current device, not the tensors' device
    with on_device(device):
        prec = resolve_precision(cfg.precision, device)
        splits = prepare_splits(cfg, data_dir, data)
        with numerics(prec, device):
            result = _Run(cfg, device, prec, splits, run_dir, on_epoch, progress).run()
    if drop_checkpoint and run_dir is not None:
        (Path(run_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
    return result


class _Run:
    """State of one run; split from :func:`train` so that numerics() wraps all of it."""

    def __init__(
        self, cfg: RunConfig, device: torch.device, prec: Precision, splits: _Splits,
        run_dir: Path | None, on_epoch: Callable[[dict[str, Any]], None] | None, progress: bool,
    ) -> None:
        self.cfg, self.device, self.prec, self.splits = cfg, device, prec, splits
        self.on_epoch, self.progress = on_epoch, progress
        self.ckpt_path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None
        info = splits.info
        self.train_loader = make_loader(splits.train, info, cfg, train=True, device=device)
        self.val_loader = make_loader(splits.val, info, cfg, train=False, device=device) if splits.val else None
        self.test_loader = make_loader(splits.test, info, cfg, train=False, device=device)
        self.steps_per_epoch = len(self.train_loader)
        spe = max(self.steps_per_epoch, 1)
        self.total_steps = cfg.iterations if cfg.iterations is not None else int(cfg.epochs or 0) * spe
        self.num_epochs = math.ceil(self.total_steps / spe)
        self.classes = list(splits.train.classes)

        torch.manual_seed(cfg.seed)  # the model's initialisation depends on cfg.seed only
        model = create_model(
            cfg.model, num_classes=splits.info.num_classes, in_channels=splits.info.in_channels,
            **cfg.model_kwargs,
        ).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self.filters_init = first_conv_weight(model)
        self.optimizer = build_optimizer(cfg, model.parameters())
        self.schedule = build_schedule(cfg, spe, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=prec.use_scaler)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.iteration, self.train_time = 0, 0, 0.0
        self.test_pred: torch.Tensor | None = None
        self._resume()
        self.engine_used = "eager"
        self._want_graph, self.engine_fallback_reason = graph_decision(cfg, device, prec)
        self.graph: GraphTrainer | None = None
        self.capture_time = 0.0
        self.capture_peaks: tuple[int | None, int | None] = (None, None)

    # ------------------------------------------------------------------------------ checkpoints

    def _resume(self) -> None:
        if self.ckpt_path is None:
            return
        state = load_checkpoint(self.ckpt_path, self.cfg.run_id)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.history = [EpochRow.from_dict(r).to_dict() for r in state["history"]]  # older rows: renamed keys
        self.start_epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.train_time = float(state["train_time_s"])
        self.filters_init = state["filters_init"]
        set_rng_state(state["rng"], self.device)

    def _save(self, epochs_done: int) -> None:
        if self.ckpt_path is None:
            return
        save_checkpoint(self.ckpt_path, {
            "run_id": self.cfg.run_id, "config": self.cfg.to_dict(),
            "epoch": epochs_done, "iteration": self.iteration, "train_time_s": self.train_time,
            "history": self.history, "filters_init": self.filters_init,
            "model": self.model.state_dict(),
            "optimizer": self.graph.optimizer_state_dict() if self.graph is not None else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "schedule": self.schedule.state_dict(),
            "rng": rng_state(self.device),
        })

    # ------------------------------------------------------------------------------------ loop

    def run(self) -> TrainResult:
        status, error = "ok", None
        bar = None
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=self.num_epochs, initial=self.start_epoch, desc=self.cfg.model, unit="epoch")
        try:
            for epoch in range(self.start_epoch, self.num_epochs):
                row = self._epoch(epoch)
                self.history.append(row)
                # a finite training loss with a non-finite test loss: the last update broke the weights
                bad_test = _size(self.splits.test) > 0 and not math.isfinite(row["test_loss"])
                diverged = bad_test or not math.isfinite(row["train_loss"])
                if not diverged:
                    # plateau: validation loss, or the training loss when there is no validation split
                    self.schedule.step_epoch(row["val_loss"] if self.val_loader else row["train_loss"])
                    self._save(epoch + 1)
                    fault_point("checkpoint")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", acc=f"{row['train_acc']:.3f}",
                                    val=f"{row['val_acc']:.3f}")
                if self.on_epoch is not None:
                    self.on_epoch(dict(row))
                if diverged:
                    status = "diverged"
                    what = "test" if math.isfinite(row["train_loss"]) else "training"
                    error = f"non-finite {what} loss in epoch {epoch + 1} (by iteration {self.iteration})"
                    break
        finally:
            if bar is not None:
                bar.close()
        extra, artifacts = ({}, {}) if status != "ok" else self._final()
        if self.filters_init is not None:
            artifacts["filters_init"] = np.asarray(self.filters_init, dtype=np.float32)
            artifacts["filters_final"] = first_conv_weight(self.model)
        summary = summarise(
            self.cfg, self.history, extra=extra,
            iterations_done=self.iteration, steps_per_epoch=self.steps_per_epoch, train_time_s=self.train_time,
            precision_used=self.prec.used, classes=self.classes,
            sizes=(_size(self.splits.train), _size(self.splits.val), _size(self.splits.test)),
            data_source=str(self.splits.info.source),
        )
        summary.update({"engine_used": self.engine_used, "engine_fallback_reason": self.engine_fallback_reason,
                        "capture_time_s": self.capture_time,
                        "capture_peak_allocated_bytes": self.capture_peaks[0],
                        "capture_peak_reserved_bytes": self.capture_peaks[1]})
        return TrainResult(status, self.history, summary, artifacts, error=error, device=str(self.device))

    def _setup_graph(self, epoch: int) -> None:
        """Warm up and capture the graphed step once, before the first epoch of this process."""
        if not self._want_graph:
            return
        self._want_graph = False
        _sync(self.device)
        reset_memory_peaks(self.device)
        t0 = time.perf_counter()
        graph: GraphTrainer | None = None
        try:
            graph = GraphTrainer(
                self.model, self.train_loader, optimizer=self.optimizer, schedule=self.schedule,
                base_lr=self.cfg.lr, total_steps=self.total_steps, criterion=self.criterion,
                aux_weight=self.cfg.aux_loss_weight, prec=self.prec, device=self.device,
                channels_last=self.cfg.channels_last,
            )
            graph.setup(epoch)
            self.graph, self.engine_used = graph, "graph"
        except GraphUnsupported as exc:
            if graph is not None:
                graph.restore_eager_optimizer()
            self.engine_fallback_reason = str(exc)
        _sync(self.device)
        self.capture_time += time.perf_counter() - t0
        self.capture_peaks = memory_peaks(self.device)  # warm-up + capture: the graph pools are made here

    def _epoch(self, epoch: int) -> dict[str, Any]:
        self._setup_graph(epoch)
        self.train_loader.set_epoch(epoch)
        _sync(self.device)
        release_cached_memory(self.device)  # the last evaluation's cached blocks are not this epoch's
        reset_memory_peaks(self.device)  # the peaks below: this epoch's training steps only
        t0 = time.perf_counter()
        if self.graph is not None:
            stats = self.graph.train_epoch(epoch, self.iteration, self.total_steps)
        else:
            stats = train_epoch(
                self.model, self.train_loader, optimizer=self.optimizer, scaler=self.scaler,
                schedule=self.schedule, base_lr=self.cfg.lr, criterion=self.criterion,
                aux_weight=self.cfg.aux_loss_weight, prec=self.prec, device=self.device,
                start_iteration=self.iteration, max_iteration=self.total_steps,
                channels_last=self.cfg.channels_last,
            )
        _sync(self.device)
        epoch_time = time.perf_counter() - t0
        peak, peak_reserved = memory_peaks(self.device)  # training part only
        train_loss, train_acc = stats.read()
        self.iteration += stats.steps
        self.train_time += epoch_time
        nan = float("nan")
        val_loss = val_acc = test_loss = test_acc = nan
        t1 = time.perf_counter()
        if math.isfinite(train_loss) and not stats.diverged:
            kw = {"prec": self.prec, "device": self.device}
            val_loss, val_acc, _ = evaluate(self.model, self.val_loader, **kw)
            last = epoch == self.num_epochs - 1  # keep the final model's test predictions (no extra pass)
            test_loss, test_acc, self.test_pred = evaluate(self.model, self.test_loader, keep_predictions=last, **kw)
        else:
            train_loss = nan if stats.diverged else train_loss
        eval_time = time.perf_counter() - t1  # evaluate() ends with a host read, so this is synced
        return EpochRow(
            epoch=epoch + 1, iteration=self.iteration, lr=stats.last_lr,
            train_loss=train_loss, train_acc=train_acc,
            val_loss=val_loss, val_acc=val_acc, test_loss=test_loss, test_acc=test_acc,
            epoch_time_s=epoch_time, eval_time_s=eval_time,
            epoch_train_samples_per_s=stats.samples / epoch_time if epoch_time > 0 else nan,
            elapsed_train_time_s=self.train_time, peak_allocated_bytes=peak,
            peak_reserved_bytes=peak_reserved,
        ).to_dict()

    # ---------------------------------------------------------------------------- end of run

    def _final(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """BN train/eval-mode gap on fixed un-augmented training images, and test-set artifacts."""
        cfg, splits, kw = self.cfg, self.splits, {"prec": self.prec, "device": self.device}
        if self.test_pred is None:  # resumed after the last epoch had finished
            _, _, self.test_pred = evaluate(self.model, self.test_loader, keep_predictions=True, **kw)
        # class-mixed batches: the stored order may be sorted by class, and a train-mode pass over
        # one-class batches would measure that, not the BN gap
        sub = mixed_sample(splits.train, min(BN_GAP_IMAGES, _size(splits.train)), SPLIT_SEED)
        # un-augmented batches of the training batch size: train mode then uses batch statistics
        # as in training (eval mode does not depend on the batch size)
        cfg_bs = dataclasses.replace(cfg, eval_batch_size=cfg.batch_size)
        loader = make_loader(sub, splits.info, cfg_bs, train=False, device=self.device)
        _, acc_eval, _ = evaluate(self.model, loader, **kw)
        # a deep copy, so the train-mode pass leaves the model's running statistics untouched
        _, acc_train, _ = evaluate(copy.deepcopy(self.model), loader, train_mode=True, **kw)
        extra = {"final_train_acc_evalmode": acc_eval, "final_train_acc_trainmode": acc_train,
                 "resumed_from_epoch": self.start_epoch}  # 0 unless continued from a checkpoint
        test = splits.test
        artifacts = prediction_artifacts(self.test_pred, test.labels.cpu(), test.images.cpu(), len(self.classes))
        return extra, artifacts
