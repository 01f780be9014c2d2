"""Evaluation passes and the end-of-run steps: loss/accuracy, the BN train/eval gap, artifacts.

End-of-run steps (:data:`END_STEPS`) run once after the last epoch, each on the :class:`Finished`
run, and add metrics to its summary or arrays to its ``artifacts.npz``: ``bn_gap`` (accuracy on fixed
training images in eval and in train mode) and ``artifacts`` (test predictions, misclassified test
images, first-layer filters). ``train(..., end_steps=())`` leaves them out; the summary then reads
NaN for the BN-gap accuracies and there are no artifacts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.config import RunConfig
from bench.data import ArrayDataset, LoadedData, make_loader, mixed_order, mixed_sample
from bench.device import Precision, autocast
from bench.errors import unknown_value
from bench.files import write_atomic
from bench.models.outputs import split_outputs

MAX_MISCLASSIFIED = 36
MISCLASSIFIED_SEED = 0
BN_GAP_IMAGES = 5000  # size of the fixed training subset for the BN train/eval-mode gap
# fixed, like the validation split: every seed of a study is judged on the same training images
BN_GAP_SEED = 0


def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None,
    *,
    prec: Precision,
    device: torch.device,
    train_mode: bool = False,
    keep_predictions: bool = False,
) -> tuple[float, float, torch.Tensor | None]:
    """(mean cross-entropy, accuracy, predictions or None) over ``batches``; NaNs when there are none.

    ``model.eval()`` (BatchNorm running statistics) unless ``train_mode``, where batch statistics are
    used and the running buffers updated, so pass a copy. The loss is plain cross-entropy (no label
    smoothing, no auxiliary heads), so it is comparable across arms. One host read at the end.
    """
    if batches is None:
        return float("nan"), float("nan"), None
    model.train(train_mode)
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    preds: list[torch.Tensor] = []
    n = 0
    # no_grad rather than inference_mode in train mode: BN's in-place running-stat updates must work
    ctx = torch.no_grad() if train_mode else torch.inference_mode()
    with ctx:
        for x, y in batches:
            with autocast(prec, device):
                logits, _ = split_outputs(model(x))
            logits = logits.float()
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
            p = logits.argmax(1)
            correct += (p == y).sum()
            if keep_predictions:
                preds.append(p)
            n += y.shape[0]
    if n == 0:
        return float("nan"), float("nan"), None
    loss, corr = torch.stack([loss_sum, correct.float()]).tolist()
    return loss / n, corr / n, torch.cat(preds).cpu() if keep_predictions else None


def first_conv_weight(model: nn.Module) -> np.ndarray | None:
    """The first ``nn.Conv2d``'s weight (in module order) as float32 ``[out, in, kh, kw]``."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.weight.detach().float().cpu().numpy().copy()
    return None


def prediction_artifacts(
    pred: torch.Tensor, true: torch.Tensor, images: torch.Tensor, num_classes: int
) -> dict[str, np.ndarray]:
    """Test predictions and up to 36 misclassified test images (uint8), taken in a fixed seeded
    order (:func:`~bench.data.split.mixed_order`): the test set may be stored sorted by class, and
    its first mistakes would then all be of one class."""
    dtype = np.int16 if num_classes <= np.iinfo(np.int16).max else np.int64
    pred_np = pred.numpy().astype(dtype)
    true_np = true.numpy().astype(dtype)
    order = mixed_order(len(pred_np), MISCLASSIFIED_SEED)
    wrong = order[pred_np[order] != true_np[order]][:MAX_MISCLASSIFIED]
    return {
        "test_pred": pred_np,
        "test_true": true_np,
        "misclassified_images": images[torch.from_numpy(wrong)].numpy().astype(np.uint8),
        "misclassified_true": true_np[wrong],
        "misclassified_pred": pred_np[wrong],
    }


def save_artifacts(path: str | Path, artifacts: dict[str, np.ndarray]) -> Path:
    """Write ``artifacts`` to ``path`` with ``np.savez_compressed``, atomically (tmp + rename)."""
    # numpy's stub types **arrays as if one of them could be allow_pickle
    return write_atomic(path, lambda f: np.savez_compressed(f, **artifacts))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- end-of-run steps


@dataclass
class Finished:
    """A run after its last epoch, as the end-of-run steps read it. ``ok``: it did not diverge;
    ``test_pred``: the last epoch's test predictions (None when resumed after that epoch)."""

    cfg: RunConfig
    model: nn.Module
    prec: Precision
    device: torch.device
    data: LoadedData
    train: ArrayDataset
    test: ArrayDataset
    test_loader: Any
    ok: bool
    test_pred: torch.Tensor | None
    filters_init: np.ndarray | None


EndStep = Callable[[Finished], tuple[dict[str, Any], dict[str, np.ndarray]]]


def bn_gap(run: Finished) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``final_train_acc_evalmode`` / ``_trainmode``: accuracy on up to :data:`BN_GAP_IMAGES` fixed,
    un-augmented training images with running statistics and with batch statistics."""
    if not run.ok:
        return {}, {}
    # class-mixed batches: the stored order may be sorted by class, and a train-mode pass over
    # one-class batches would measure that, not the BN gap
    sub = mixed_sample(run.train, min(BN_GAP_IMAGES, int(run.train.labels.shape[0])), BN_GAP_SEED)
    # un-augmented batches of the training batch size: train mode then uses batch statistics
    # as in training (eval mode does not depend on the batch size)
    cfg_bs = dataclasses.replace(run.cfg, eval_batch_size=run.cfg.batch_size)
    loader = make_loader(sub, run.data, cfg_bs, train=False, device=run.device)
    _, acc_eval, _ = evaluate(run.model, loader, prec=run.prec, device=run.device)
    # a deep copy, so the train-mode pass leaves the model's running statistics untouched
    _, acc_train, _ = evaluate(copy.deepcopy(run.model), loader, prec=run.prec, device=run.device, train_mode=True)
    return {"final_train_acc_evalmode": acc_eval, "final_train_acc_trainmode": acc_train}, {}


def artifacts(run: Finished) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Test predictions and misclassified images (a run that did not diverge), and the first
    convolution's filters before and after training (every run with one)."""
    out: dict[str, np.ndarray] = {}
    if run.ok:
        pred = run.test_pred
        if pred is None:  # resumed after the last epoch had finished
            _, _, pred = evaluate(run.model, run.test_loader, prec=run.prec, device=run.device,
                                  keep_predictions=True)
        if pred is not None:  # (None only for an empty test set)
            out = prediction_artifacts(pred, run.test.labels.cpu(), run.test.images.cpu(), len(run.train.classes))
    final = first_conv_weight(run.model)
    if run.filters_init is not None and final is not None:
        out["filters_init"] = np.asarray(run.filters_init, dtype=np.float32)
        out["filters_final"] = final
    return {}, out


END_STEPS: dict[str, EndStep] = {"bn_gap": bn_gap, "artifacts": artifacts}


def check_end_steps(names: Sequence[str] | None) -> tuple[str, ...]:
    """``names`` as a tuple (None: every step of :data:`END_STEPS`); an unknown one raises UserError
    naming those there are."""
    if names is None:
        return tuple(END_STEPS)
    for name in names:
        if name not in END_STEPS:
            raise unknown_value("end-of-run step", name, END_STEPS)
    return tuple(names)


def run_end_steps(run: Finished, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metrics and artifacts of the end-of-run steps ``names``, in :data:`END_STEPS` order."""
    metrics: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, step in END_STEPS.items():
        if name in names:
            m, a = step(run)
            metrics.update(m)
            arrays.update(a)
    return metrics, arrays
