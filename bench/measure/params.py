"""Parameter counts."""

from __future__ import annotations

from torch import nn

PARAM_KEYS = ("params_total", "params_trainable")  # what count_params returns


def count_params(model: nn.Module) -> dict[str, int]:
    """Number of parameters (elements, not bytes): ``params_total`` and ``params_trainable``.

    ``model.parameters()`` yields a shared (tied) parameter once, so tied weights count once.
    """
    total = 0
    trainable = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return dict(zip(PARAM_KEYS, (int(total), int(trainable)), strict=True))
