"""Multiply-accumulate and FLOP counts for one sample (batch 1), from fvcore and from PyTorch.

Conventions, since published tables disagree by a factor of two:

* ``macs_*``: one multiply-add = 1. fvcore counts this way (it calls them "flops"), and so do the
  usual CNN tables (He et al. 2016; torchvision's ``_ops`` metadata, e.g. resnet18 = 1.814 G).
* ``flops_torch``: ``torch.utils.flop_counter.FlopCounterMode``, one multiply-add = 2 FLOPs. It
  counts matmul-like ops only (conv, linear, mm, bmm, attention), so for a net made of convs and
  linears it is exactly ``2 * macs_conv_linear``.

``macs_conv_linear`` keeps only convolutions and matrix products, which is what papers count.
Element-wise work (residual additions, activations, normalisation, pooling) is left out, so a
residual net and its plain twin have the same ``macs_conv_linear``; fvcore's total adds batch norm
and adaptive pooling, and skips (and lists in ``fvcore_skipped_ops``) ops it has no handle for,
such as ``aten::add`` and ``aten::max_pool2d``. Attention (``scaled_dot_product_attention``) is
counted by neither on CPU; this harness is for CNNs.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    from fvcore.nn import FlopCountAnalysis

# fvcore's by_operator names for matrix-product work (see fvcore.nn.jit_handles / _DEFAULT_SUPPORTED_OPS)
# what count_compute and count_compute_meta return, in this order
COMPUTE_KEYS = ("macs_fvcore_total", "macs_conv_linear", "flops_torch", "fvcore_skipped_ops")
CONV_LINEAR_OPS = frozenset({"conv", "linear", "addmm", "matmul", "bmm", "einsum", "mm", "baddbmm"})


@contextlib.contextmanager
def quiet_fvcore() -> Iterator[None]:
    """Silence fvcore's skipped-op log lines and the tracer's warnings (jit.trace deprecation,
    TracerWarning on Python control flow), which would otherwise flood every call."""
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` (and every submodule) in eval mode, then restore each module's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t


def sample_input(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """A zero batch of one on the model's device and in its floating dtype."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros(1, *input_shape, device=device, dtype=dtype)


def fvcore_analysis(model: nn.Module, x: torch.Tensor) -> FlopCountAnalysis:
    """A FlopCountAnalysis with its own warnings off; call its methods inside ``quiet_fvcore``."""
    from fvcore.nn import FlopCountAnalysis  # imported late: pulls in iopath, yacs, tabulate

    fa = FlopCountAnalysis(model, (x,))
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    return fa


def count_compute(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int | str]:
    """Compute per single sample (batch 1) in eval mode without gradients.

    Keys: ``macs_fvcore_total`` (MACs, everything fvcore knows), ``macs_conv_linear`` (MACs,
    convolutions and matrix products only; residual additions are not counted), ``flops_torch``
    (FLOPs, 2 per multiply-add), ``fvcore_skipped_ops`` (``"aten::op:count,..."`` sorted by name,
    the count after the last colon; empty string if none).
    """
    x = sample_input(model, tuple(input_shape))
    # nn.MultiheadAttention's eval fast path is one fused op neither counter sees into.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        return _count(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _count(model: nn.Module, x: torch.Tensor) -> dict[str, int | str]:
    with eval_mode(model), torch.no_grad(), quiet_fvcore():
        fa = fvcore_analysis(model, x)
        total = int(fa.total())
        by_op = fa.by_operator()
        skipped = fa.unsupported_ops()
        counter = FlopCounterMode(display=False)
        with counter:
            model(x)
    conv_linear = sum(int(v) for k, v in by_op.items() if k in CONV_LINEAR_OPS)
    skipped_text = ",".join(f"{k}:{v}" for k, v in sorted(skipped.items()))
    return dict(zip(COMPUTE_KEYS, (total, int(conv_linear), int(counter.get_total_flops()), skipped_text), strict=True))


def count_compute_meta(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int | str | None]:
    """:func:`count_compute`'s keys for a model on the meta device (nothing allocated, any size):
    ``macs_conv_linear`` and ``flops_torch`` from PyTorch's counter (``flops_torch / 2``: the same
    matrix-product work fvcore counts as ``conv``/``linear``), ``macs_fvcore_total`` None (fvcore's
    tracer cannot run on meta tensors) and ``fvcore_skipped_ops`` saying so."""
    with eval_mode(model), torch.no_grad(), torch.device("meta"):
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, *input_shape))
    flops = int(counter.get_total_flops())
    return dict(zip(COMPUTE_KEYS, (None, flops // 2, flops,
                                   "not counted (too large to allocate: counted on the meta device)"), strict=True))


def footprint(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """(parameters, activation elements of one sample's forward pass summed over the leaf modules'
    outputs) of a model on the meta device: what measuring it would allocate, before allocating."""
    elems = [0]

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                elems[0] += t.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with eval_mode(model), torch.no_grad(), torch.device("meta"):
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
    return sum(p.numel() for p in model.parameters()), elems[0]
