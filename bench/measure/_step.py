"""Shared pieces of the speed and memory measurements: device, precision, one step of work.

Both measurements run on a private copy of the model so that the caller's weights, device, memory
format and train/eval mode are left as they were.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from bench.config import PRECISIONS
from bench.errors import UserError
from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs

MODES = ("infer", "train")

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def resolve_device(device: str | torch.device) -> torch.device:
    """``torch.device`` for ``device``; a UserError if it names CUDA on a machine without it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"bad device {device!r} ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {str(device)!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def check_choices(mode: str, precision: str, device: torch.device) -> None:
    """Raise UserError on an unknown mode or precision, or one the device cannot run."""
    if mode not in MODES:
        raise UserError(f"bad mode {mode!r} (accepted: {', '.join(MODES)})")
    if precision not in PRECISIONS:
        raise UserError(f"bad precision {precision!r} (accepted: {', '.join(PRECISIONS)})")
    if device.type != "cuda" and precision in ("fp16", "tf32"):
        raise UserError(f"precision {precision!r} needs a CUDA device (got {device.type}); use fp32 or bf16")


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for bf16/fp16; TF32 flags on for tf32 and off for fp32 (cuDNN's default is on,
    which would make 'fp32' convolutions silently TF32 on Ampere and later). Flags are restored."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    try:
        if precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def private_copy(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Deep copy of ``model`` on ``device`` (channels_last if asked)."""
    m = copy.deepcopy(model).to(device)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m


def make_input(input_shape: tuple[int, int, int], batch_size: int, device: torch.device,
               channels_last: bool) -> torch.Tensor:
    """Random normal batch ``[batch_size, *input_shape]``, made once: the step times compute only."""
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, *input_shape, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def build_step(model: nn.Module, x: torch.Tensor, mode: str, precision: str, device: torch.device,
               optimizer: OptimizerFactory | None = None) -> Callable[[], None]:
    """A closure doing one step on the private ``model``: a forward (infer) or forward + loss +
    backward + optimizer step (train). It never reads a value back to the host (no ``.item()``)."""
    if mode == "infer":
        model.eval()

        def infer_step() -> None:
            with torch.inference_mode(), precision_context(precision, device):
                model(x)

        return infer_step

    model.train()
    # One probe forward for the number of classes, so the targets are valid and made once.
    with torch.no_grad(), precision_context(precision, device):
        logits, _ = split_outputs(model(x))
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, logits.shape[1], (x.shape[0],), generator=g).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer(params) if optimizer is not None else torch.optim.SGD(params, lr=0.01, momentum=0.9)
    # fp16 training needs loss scaling; its inf check reads one flag back, as real fp16 training does.
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    ce = nn.functional.cross_entropy

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with precision_context(precision, device):
            logits, aux = split_outputs(model(x))
            loss = ce(logits.float(), y)
            for a in aux:
                loss = loss + AUX_LOSS_WEIGHT * ce(a.float(), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return train_step
