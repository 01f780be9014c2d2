"""The training loop: one :class:`~bench.config.RunConfig` in, history + summary + artifacts out.

Read top to bottom: :func:`train` prepares the data and device; :class:`_Run` builds the loaders,
the model and the run's one :class:`~bench.train.step.TrainStep` (optimizer, schedule, loss,
precision, memory format), then :meth:`_Run.run` trains epoch after epoch (:meth:`_Run._epoch`: the
steps of the :class:`EagerEngine` or the graphed engine, evaluation, one :class:`~bench.record.EpochRow`,
a checkpoint) and ends with the end-of-run steps (:data:`bench.train.evaluate.END_STEPS`) and the
summary.

Seeds. ``cfg.seed`` sets the model initialisation (``torch.manual_seed`` just before
``create_model``), the data order and augmentation (the loader's ``set_epoch(e)`` derives them from
``(cfg.seed, e)``) and dropout. The validation split and the train/test subsets use the fixed seed
``SPLIT_SEED``, so every seed of a study, and every ``train_subset`` size, is judged on the same
validation images (the split is taken first, the training subset from what remains).

Length. ``cfg.iterations`` wins when set (epochs = ceil(iterations / steps_per_epoch), the last one
stops at the budget); otherwise ``cfg.epochs`` full epochs.

Synchronisation. The step loop never reads a device value: losses and correct counts stay on the
device and are read once per epoch (see :mod:`bench.train.step` for the divergence check).

Engines. ``cfg.engine='eager'`` runs :class:`EagerEngine`; 'auto' does too until
``graphed.AUTO_USES_GRAPH`` is turned on. 'graph' on a CUDA device captures the whole training
step in a CUDA graph and replays it per batch (:mod:`bench.train.graphed`,
behind :func:`~bench.train.graphed.graph_decision` and :func:`~bench.train.graphed.start_graph`);
the warm-up and capture run before the first epoch and are timed separately (``capture_time_s``, not
in ``epoch_time_s``). Where a run cannot be graphed (CPU, fp16 with GradScaler, an optimizer without a
capturable step, a model that fails to capture) it trains with the eager engine and the summary says
why (``engine_fallback_reason``); ``engine_used`` says which ran.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.config import RunConfig
from bench.data import (
    LoadedData,
    load_dataset,
    make_loader,
    split_train_val,
    stratified_subset,
)
from bench.device import (
    Precision,
    numerics,
    on_device,
    resolve_device,
    resolve_precision,
)
from bench.faults import fault_point
from bench.models import create_model
from bench.record import EpochRow
from bench.train.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from bench.train.evaluate import (
    Finished,
    check_end_steps,
    evaluate,
    first_conv_weight,
    run_end_steps,
    save_artifacts,
)
from bench.train.graphed import GraphUnsupported, graph_decision, start_graph
from bench.train.optim import build_schedule
from bench.train.step import (
    DIVERGENCE_CHECK_EVERY,
    DivergenceWatch,
    Engine,
    EpochStats,
    PeakWindow,
    TrainStep,
    sync,
)
from bench.train.summary import HISTORY_KEYS, summarise

__all__ = ["HISTORY_KEYS", "SPLIT_SEED", "EagerEngine", "TrainResult", "save_artifacts", "train"]

SPLIT_SEED = 0  # the validation split and the subsets (see the module doc)


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
    end_steps: Sequence[str] | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``device`` and evaluate it every epoch.

    With ``run_dir``, ``run_dir/checkpoint.pt`` is written at the end of every epoch and resumed from
    when its ``run_id`` matches ``cfg.run_id`` (deleted once the run ends, unless ``drop_checkpoint``
    is False: the runner drops it only after the run's record is written). ``on_epoch(row)`` runs
    after each epoch's checkpoint, so an exception raised there leaves a resumable run. A non-finite
    loss ends the run with status 'diverged' (no exception); user mistakes raise ``UserError``.
    ``end_steps`` names the end-of-run steps to take (:data:`~bench.train.evaluate.END_STEPS`; None:
    all of them; ``()`` for none, as tests that read neither the BN gap nor the artifacts ask).
    """
    steps = check_end_steps(end_steps)
    device = resolve_device(device)
    # cuda:N the current device for the run: bf16 support, events, CUDA-graph capture, cuBLAS/cuDNN
    # handles and the optimizers' capture check all use the current device, not the tensors' device
    with on_device(device):
        prec = resolve_precision(cfg.precision, device)
        splits = prepare_splits(cfg, data_dir, data)
        with numerics(prec, device):
            result = _Run(cfg, device, prec, splits, run_dir, on_epoch, progress, steps).run()
    if drop_checkpoint and run_dir is not None:
        (Path(run_dir) / CHECKPOINT_NAME).unlink(missing_ok=True)
    return result


class _Run:
    """State of one run; split from :func:`train` so that numerics() wraps all of it."""

    def __init__(
        self, cfg: RunConfig, device: torch.device, prec: Precision, splits: _Splits,
        run_dir: Path | None, on_epoch: Callable[[dict[str, Any]], None] | None, progress: bool,
        end_steps: tuple[str, ...],
    ) -> None:
        self.cfg, self.device, self.prec, self.splits = cfg, device, prec, splits
        self.on_epoch, self.progress, self.end_steps = on_epoch, progress, end_steps
        self.ckpt_path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None
        info = splits.info
        self.train_loader = make_loader(splits.train, info, cfg, train=True, device=device)
        self.val_loader = make_loader(splits.val, info, cfg, train=False, device=device) if splits.val else None
        self.test_loader = make_loader(splits.test, info, cfg, train=False, device=device)
        self.steps_per_epoch = len(self.train_loader)
        spe = max(self.steps_per_epoch, 1)
        self.total_steps = cfg.iterations if cfg.iterations is not None else int(cfg.epochs or 0) * spe
        self.num_epochs = math.ceil(self.total_steps / spe)

        torch.manual_seed(cfg.seed)  # the model's initialisation depends on cfg.seed only
        model = create_model(
            cfg.model, num_classes=info.num_classes, in_channels=info.in_channels, **cfg.model_kwargs,
        ).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: nn.Module = model
        self.filters_init = first_conv_weight(model)
        self.schedule = build_schedule(cfg, spe, self.total_steps)
        # the run's one step: both engines drive it, the checkpoints keep its optimizer
        self.step = TrainStep.for_run(cfg, model, prec, device, self.schedule)
        self.engine: Engine = EagerEngine(self.step, self.train_loader)
        self.want_graph, self.engine_fallback_reason = graph_decision(cfg, device, prec)
        self.capture_time = 0.0
        self.capture_peaks: tuple[int | None, int | None] = (None, None)
        self.peaks = PeakWindow(device)
        self.history: list[dict[str, Any]] = []
        self.start_epoch, self.iteration, self.train_time = 0, 0, 0.0
        self.test_pred: torch.Tensor | None = None
        self._resume()

    # ------------------------------------------------------------------------------------ loop

    def run(self) -> TrainResult:
        status, error = "ok", None
        bar = None
        if self.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=self.num_epochs, initial=self.start_epoch, desc=self.cfg.model, unit="epoch")
        if self.want_graph and self.start_epoch < self.num_epochs:
            self._start_graph(self.start_epoch)
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
        splits = self.splits
        extra, artifacts = run_end_steps(Finished(
            cfg=self.cfg, model=self.model, prec=self.prec, device=self.device, data=splits.info,
            train=splits.train, test=splits.test, test_loader=self.test_loader, ok=status == "ok",
            test_pred=self.test_pred, filters_init=self.filters_init,
        ), self.end_steps)
        if status == "ok":
            extra["resumed_from_epoch"] = self.start_epoch  # 0 unless continued from a checkpoint
        summary = summarise(
            self.cfg, self.history, extra=extra,
            iterations_done=self.iteration, steps_per_epoch=self.steps_per_epoch, train_time_s=self.train_time,
            precision_used=self.prec.used, classes=list(splits.train.classes),
            sizes=(_size(splits.train), _size(splits.val), _size(splits.test)),
            data_source=str(splits.info.source),
        )
        summary.update({"engine_used": self.engine.name, "engine_fallback_reason": self.engine_fallback_reason,
                        "capture_time_s": self.capture_time,
                        "capture_peak_allocated_bytes": self.capture_peaks[0],
                        "capture_peak_reserved_bytes": self.capture_peaks[1]})
        return TrainResult(status, self.history, summary, artifacts, error=error, device=str(self.device))

    def _start_graph(self, epoch: int) -> None:
        """Warm up and capture the graphed engine once, before the first epoch of this process; a
        run that cannot be graphed keeps the eager engine and the reason."""
        self.peaks.begin(release=False)
        t0 = time.perf_counter()
        try:
            self.engine = start_graph(self.step, self.train_loader, total_steps=self.total_steps, first_epoch=epoch)
        except GraphUnsupported as exc:
            self.engine_fallback_reason = str(exc)
        sync(self.device)
        self.capture_time += time.perf_counter() - t0
        self.capture_peaks = self.peaks.end()  # warm-up + capture: the graph pools are made here

    def _epoch(self, epoch: int) -> dict[str, Any]:
        self.train_loader.set_epoch(epoch)
        self.peaks.begin()  # the peaks below: this epoch's training steps only
        t0 = time.perf_counter()
        stats = self.engine.train_epoch(epoch, self.iteration, self.total_steps)
        sync(self.device)
        epoch_time = time.perf_counter() - t0
        peak, peak_reserved = self.peaks.end()  # training part only
        train_loss, train_acc = stats.read()
        self.iteration += stats.steps
        self.train_time += epoch_time
        nan = float("nan")
        val_loss = val_acc = test_loss = test_acc = nan
        t1 = time.perf_counter()
        if math.isfinite(train_loss) and not stats.diverged:
            val_loss, val_acc, _ = evaluate(self.model, self.val_loader, prec=self.prec, device=self.device)
            last = epoch == self.num_epochs - 1  # keep the final model's test predictions (no extra pass)
            test_loss, test_acc, self.test_pred = evaluate(self.model, self.test_loader, prec=self.prec,
                                                           device=self.device, keep_predictions=last)
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

    # ------------------------------------------------------------------------------ checkpoints

    def _resume(self) -> None:
        if self.ckpt_path is None:
            return
        state = load_checkpoint(self.ckpt_path, self.cfg.run_id)
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.step.optimizer.load_state_dict(state["optimizer"])
        if self.step.scaler is not None:  # a run without loss scaling saved its disabled scaler's {}
            self.step.scaler.load_state_dict(state["scaler"])
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
            "optimizer": self.engine.optimizer_state_dict(),
            "scaler": self.step.scaler.state_dict() if self.step.scaler is not None else {},
            "schedule": self.schedule.state_dict(),
            "rng": rng_state(self.device),
        })


class EagerEngine:
    """The default engine: the run's step called from Python on each of the loader's batches."""

    name = "eager"

    def __init__(self, step: TrainStep, batches: Any) -> None:
        self.step, self.batches = step, batches

    def train_epoch(self, _epoch: int, start_iteration: int, max_iteration: int) -> EpochStats:
        """One pass over the batches (the loop has set the loader's epoch) in train mode, stopping at
        ``max_iteration`` (global step count). The lr is set per step from the schedule (a host
        float: no sync); accuracy counts the main logits only."""
        step = self.step
        step.model.train()
        loss_sum = torch.zeros((), device=step.device, dtype=torch.float32)
        correct = torch.zeros((), device=step.device, dtype=torch.int64)
        watch = DivergenceWatch(step.device)
        it, samples, lr, diverged = start_iteration, 0, float("nan"), False
        # islice: a partial last epoch stops at the budget without preparing one batch too many
        for x, y in itertools.islice(self.batches, max(max_iteration - start_iteration, 0)):
            lr = step.set_lr(it)
            loss, main = step(x, y)
            n = y.shape[0]
            loss_sum += loss.float() * n
            correct += (main.argmax(1) == y).sum()
            samples += n
            it += 1
            if (it - start_iteration) % DIVERGENCE_CHECK_EVERY == 0 and watch.poll(loss_sum):
                diverged = True
                break
        return EpochStats(loss_sum, correct, samples, it - start_iteration, diverged, lr)

    def optimizer_state_dict(self) -> dict[str, Any]:
        """``optimizer.state_dict()``: the eager engine keeps a float lr in every group."""
        return self.step.optimizer.state_dict()
