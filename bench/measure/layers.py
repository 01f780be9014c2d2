"""Per-module table: output shape, parameters and MACs, in the order the forward pass runs.

It answers what people otherwise find by printing ``x.size()`` inside ``forward``, e.g. the input
size of the first linear layer is the previous row's ``output_features``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import torch
from torch import nn

from bench.measure.compute import eval_mode, fvcore_analysis, quiet_fvcore, sample_input

COLUMNS = ["name", "type", "output_shape", "output_features", "params", "macs", "calls", "leaf"]


def _shape(out: Any) -> tuple[int, ...] | list[tuple[int, ...]] | None:
    """Shape of a tensor output; a list of shapes for a tuple/list of tensors; None otherwise."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        shapes = [tuple(o.shape) for o in out if isinstance(o, torch.Tensor)]
        return shapes[0] if len(shapes) == 1 else (shapes or None)
    return None


def layer_table(model: nn.Module, input_shape: tuple[int, int, int], *, containers: bool = False) -> pd.DataFrame:
    """One row per leaf module (and per container if ``containers``) at batch 1, in eval mode.

    Columns: ``name`` (dotted, as in ``named_modules``), ``type`` (class name), ``output_shape``
    (tuple including the batch dim of 1, from the module's first call), ``output_features``
    (elements per sample of that output, i.e. what a following ``nn.Linear`` needs as
    ``in_features`` after flattening), ``params`` (elements, the module's whole subtree), ``macs``
    (fvcore's count for the module over all its calls, one multiply-add = 1), ``calls`` (times the
    forward ran; a ReLU reused twice shows 2), ``leaf``. Rows follow the order in which modules
    first returned; modules never called come last with a None shape.
    """
    x = sample_input(model, tuple(input_shape))
    names = {id(m): n for n, m in reversed(list(model.named_modules()))}  # first name of a shared module
    wanted = [(n, m) for n, m in model.named_modules() if names[id(m)] == n
              and (containers or not any(True for _ in m.children()))]
    first_out: dict[str, Any] = {}
    calls: dict[str, int] = {}
    order: list[str] = []

    def hook_for(name: str):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            if name not in calls:
                order.append(name)
                first_out[name] = _shape(out)
            calls[name] = calls.get(name, 0) + 1

        return hook

    handles = [m.register_forward_hook(hook_for(n)) for n, m in wanted]
    try:
        with eval_mode(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    with eval_mode(model), torch.no_grad(), quiet_fvcore():
        by_module = dict(fvcore_analysis(model, x).by_module())

    mods = dict(wanted)
    rows = []
    for n in order + [n for n, _ in wanted if n not in calls]:
        m = mods[n]
        shape = first_out.get(n)
        feats = math.prod(shape[1:]) if isinstance(shape, tuple) and len(shape) >= 1 else None
        rows.append({
            "name": n or "(model)",
            "type": type(m).__name__,
            "output_shape": shape,
            "output_features": feats,
            "params": sum(p.numel() for p in m.parameters()),
            "macs": int(by_module.get(n, 0)),
            "calls": calls.get(n, 0),
            "leaf": not any(True for _ in m.children()),
        })
    return pd.DataFrame(rows, columns=COLUMNS)
