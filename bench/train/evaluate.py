"""Evaluation passes and end-of-run measurements: loss/accuracy, BN train/eval gap, artifacts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from bench.data.split import mixed_order
from bench.files import write_atomic
from torch import nn

from bench.models.outputs import split_outputs
from bench.device import Precision, autocast

MAX_MISCLASSIFIED = 36
MISCLASSIFIED_SEED = 0


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
    return write_atomic(path, lambda f: np.savez_compressed(f, **artifacts))
