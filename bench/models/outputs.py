"""What a model's forward returns, and how the loss treats it (shared by trainer, measurements, perf).

Most models return logits. GoogLeNet (and Inception-style nets) return a named tuple of main and
auxiliary logits in training mode; some return a dict with an ``'out'`` entry. Auxiliary losses are
added with weight :data:`AUX_LOSS_WEIGHT`, as the GoogLeNet paper does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

AUX_LOSS_WEIGHT = 0.3  # RunConfig.aux_loss_weight defaults to this too


def split_outputs(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main logits, auxiliary logits) from a tensor, a (named) tuple or list, or a dict."""
    if isinstance(out, torch.Tensor):
        return out, []
    if isinstance(out, Mapping):
        vals = [out["out"], *(v for k, v in out.items() if k != "out")] if "out" in out else list(out.values())
    else:
        vals = list(out)
    tensors = [v for v in vals if isinstance(v, torch.Tensor)]  # None aux heads (eval mode) drop out
    if not tensors:
        raise TypeError(f"model output has no tensor: {type(out).__name__}")
    return tensors[0], tensors[1:]
