"""Micro-benchmarks: forward and a training step (forward, cross-entropy, backward) of small models
at a small batch, at each model's own input size. Each also checks its own result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.models import create_model, model_info

BATCH, CLASSES = 8, 10
MODELS = ["resnet20", "plain20", "mnist_resnet_identity", "mnist_resnet_resize", "mnist_cnn"]


def make(name: str, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The model (seeded) and a fixed input batch of its own input size."""
    torch.manual_seed(0)
    shape = model_info(name)["input_size"]
    model = create_model(name, num_classes=CLASSES, in_channels=shape[0]).to(device)
    return model, torch.randn(BATCH, *shape, device=device)


@pytest.mark.benchmark(group="model-forward")
@pytest.mark.parametrize("name", MODELS)
def test_model_forward(benchmark, pedantic, device, sync, name: str) -> None:
    model, x = make(name, device)
    model.eval()

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            out = model(x)
        sync()
        return out

    out = benchmark.pedantic(forward, **pedantic)
    assert out.shape == (BATCH, CLASSES)
    assert torch.isfinite(out).all()


@pytest.mark.benchmark(group="model-forward-backward")
@pytest.mark.parametrize("name", MODELS)
def test_model_forward_backward(benchmark, pedantic, device, sync, name: str) -> None:
    model, x = make(name, device)
    model.train()
    y = torch.arange(BATCH, device=device) % CLASSES

    def step() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        sync()
        return loss.detach()

    loss = benchmark.pedantic(step, **pedantic)
    assert loss.ndim == 0 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
