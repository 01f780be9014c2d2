"""Micro-benchmarks: forward and forward+backward of each residual unit x each normalisation.

Small CPU shapes (batch 8, 16 channels in, 16x16), stride 1, identity shortcut: the figures compare
the cost of the units and of the norms, not absolute speed. Each also checks its own result.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.models import NORMS, make_norm_layer
from bench.models.units import UNITS

BATCH, CHANNELS, SIZE = 8, 16, 16


def make_block(unit: str, norm: str, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The unit with ``norm``, and a fixed input whose channels match its output (identity shortcut)."""
    cls = UNITS[unit]
    planes = CHANNELS // cls.expansion  # the bottleneck expands 4x, so 16 -> 4 -> 16
    torch.manual_seed(0)
    block = cls(CHANNELS, planes, 1, make_norm_layer(norm)).to(device)
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE, device=device)
    return block, x


@pytest.mark.benchmark(group="block-forward")
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("unit", list(UNITS))
def test_block_forward(benchmark, pedantic, device, sync, unit: str, norm: str) -> None:
    block, x = make_block(unit, norm, device)
    block.eval()

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            out = block(x)
        sync()
        return out

    out = benchmark.pedantic(forward, **pedantic)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.benchmark(group="block-forward-backward")
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("unit", list(UNITS))
def test_block_forward_backward(benchmark, pedantic, device, sync, unit: str, norm: str) -> None:
    block, x = make_block(unit, norm, device)
    block.train()
    x.requires_grad_(True)

    def step() -> torch.Tensor:
        block.zero_grad(set_to_none=True)
        x.grad = None
        out = block(x)
        out.square().mean().backward()
        sync()
        return out.detach()

    out = benchmark.pedantic(step, **pedantic)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
