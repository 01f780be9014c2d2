"""Shared pieces of the speed and memory measurements: checks, the private model, one step of work.

Both measurements run on a private copy of the model so that the caller's weights, device, memory
format and train/eval mode are left as they were.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from bench.config import PRECISIONS, RunConfig
from bench.device import autocast, numerics, resolve_device, resolve_precision
from bench.errors import UserError
from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs
from bench.train.step import TrainStep
from bench.train.optim import build_optimizer

__all__ = ["DEFAULT_OPTIMIZER", "MODES", "OptimizerFactory", "build_step", "check_choices", "make_input",
           "private_copy", "resolve_device"]

MODES = ("infer", "train")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def check_choices(mode: str, precision: str, device: torch.device) -> None:
    """Raise UserError on an unknown mode or precision, or one the device cannot run."""
    if mode not in MODES:
        raise UserError(f"bad mode {mode!r} (accepted: {', '.join(MODES)})")
    if precision not in PRECISIONS:
        raise UserError(f"bad precision {precision!r} (accepted: {', '.join(PRECISIONS)})")
    if device.type != "cuda" and precision in ("fp16", "tf32"):
        raise UserError(f"precision {precision!r} needs a CUDA device (got {device.type}); use fp32 or bf16")


def private_copy(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Deep copy of ``model`` on ``device`` (channels_last if asked)."""
    m = copy.deepcopy(model).to(device)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def make_input(input_shape: tuple[int, ...], batch_size: int, device: torch.device,
               channels_last: bool) -> torch.Tensor:
    """Random normal batch ``[batch_size, *input_shape]``, made once: the step times compute only."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _ce_fp32(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits.float(), y)


# The step's default optimizer, built as training builds it (bench.train.optim.build_optimizer):
# fused SGD on CUDA, torch's default implementation on a CPU.
DEFAULT_OPTIMIZER = RunConfig(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4)


def build_step(model: nn.Module, x: torch.Tensor, mode: str, precision: str, device: torch.device,
               optimizer: OptimizerFactory | None = None) -> Callable[[], None]:
    """A closure doing one step on the private ``model``: a forward (infer) or the training engine's
    :class:`~bench.train.step.TrainStep` (train: forward, loss, backward, optimizer step), set up as
    training sets it up: precision resolved and applied by :func:`~bench.device.numerics` (TF32 flags,
    cuDNN autotuning on CUDA) and autocast for the forward, the optimizer from
    :func:`~bench.train.optim.build_optimizer` (fused SGD on CUDA) unless ``optimizer`` is given.
    It never reads a value back to the host."""
    prec = resolve_precision(precision, device)
    if mode == "infer":
        model.eval()

        def infer_step() -> None:
            with torch.inference_mode(), numerics(prec, device), autocast(prec, device):
                model(x)

        return infer_step

    model.train()
    # One probe forward for the number of classes, so the targets are valid and made once.
    with torch.no_grad(), numerics(prec, device), autocast(prec, device):
        logits, _ = split_outputs(model(x))
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, logits.shape[1], (x.shape[0],), generator=g).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else build_optimizer(DEFAULT_OPTIMIZER, params)
    # fp16 training needs loss scaling; with a non-fused optimizer its inf check reads a flag back
    # every step, as real fp16 training does (fused SGD/Adam take the scale and inf flag on the device).
    scaler = torch.amp.GradScaler(device.type) if prec.use_scaler else None
    step = TrainStep(model, _ce_fp32, opt, prec, device, aux_weight=AUX_LOSS_WEIGHT, scaler=scaler)

    def train_step() -> None:
        with numerics(prec, device):
            step(x, y)

    return train_step
