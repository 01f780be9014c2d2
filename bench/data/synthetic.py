"""A deterministic, learnable synthetic image data set for tests and quick demos.

Each class owns a random low-frequency template (smooth blobs, per channel). A sample is its class
template at a random shift and contrast, mixed with a weaker template of another class and pixel
noise. The classes are separable by spatial pattern, not by mean colour, so a CNN has to learn
local features, and the distractor plus noise keep one gradient step from solving it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from bench.data.dataset import ArrayDataset, LoadedData, channel_stats
from bench.errors import UserError

DISTRACT = 0.6  # weight of the other class's template in every sample


@dataclass(frozen=True)
class SyntheticSpec:
    """Options of ``synthetic:<key>=<value>,...``."""

    channels: int = 3
    size: int = 32
    classes: int = 10
    train: int = 2000
    test: int = 500
    noise: float = 0.6  # pixel noise std, relative to a template's std
    seed: int = 0

    def validate(self, given: frozenset[str] = frozenset()) -> None:
        """UserError naming the first option out of its range, as typed (``given``: the options the
        user typed; a default it breaks is named as the default, beside the typed value that breaks it)."""

        def named(key: str) -> str:
            return f"{key}={getattr(self, key)}" + ("" if key in given else " (the default)")

        limits = {"channels": (self.channels >= 1, "channels >= 1"), "size": (self.size >= 8, "size >= 8"),
                  "classes": (self.classes >= 2, "classes >= 2"), "test": (self.test >= 1, "test >= 1"),
                  "noise": (self.noise >= 0, "noise >= 0"), "seed": (0 <= self.seed < 2**63, "0 <= seed < 2**63")}
        for key, (ok, rule) in limits.items():
            if not ok:
                raise UserError(f"bad synthetic option {named(key)} (accepted: {rule})")
        if self.train < self.classes:
            key = "train" if "train" in given or "classes" not in given else "classes"
            raise UserError(f"bad synthetic option {named(key)}: train={self.train} images cannot hold "
                            f"classes={self.classes} (accepted: train >= classes)")


def parse_spec(arg: str | None) -> SyntheticSpec:
    """``'channels=1,size=28'`` -> :class:`SyntheticSpec`; an unknown or repeated key or a bad value
    is a UserError naming it as typed."""
    types = {f.name: f.type for f in fields(SyntheticSpec)}
    accepted = ", ".join(types)
    kw: dict[str, int | float] = {}
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise UserError(f"bad synthetic option {item!r} (accepted: {accepted}; e.g. synthetic:size=28,channels=1)")
        if key in kw:
            raise UserError(f"synthetic option {key} given twice in {arg!r} (accepted: each option once)")
        kw[key] = _number(key, value.strip(), integer=types[key] not in (float, "float"))
    spec = SyntheticSpec(**kw)  # type: ignore[arg-type]
    spec.validate(frozenset(kw))
    return spec


def canonical_spec(arg: str | None) -> str:
    """The one text of a spec's options: declared order, defaults left out, numbers as Python writes
    them (``'train=96, size=8.0'`` and ``'size=8,train=96'`` -> ``'size=8,train=96'``), so that one
    data set has one run id. A bad spec is a UserError as :func:`parse_spec` raises it."""
    spec, default = parse_spec(arg), SyntheticSpec()
    return ",".join(f"{f.name}={getattr(spec, f.name)}" for f in fields(spec)
                    if getattr(spec, f.name) != getattr(default, f.name))


def _number(key: str, text: str, integer: bool) -> int | float:
    """A synthetic option's value: a finite number (``1e3`` is the integer 1000), else a UserError."""
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"bad synthetic option {key}={text!r} (accepted: a finite number)")
    if not integer:
        return value + 0.0
    try:
        whole = int(text)  # exact, however large
    except ValueError:
        if not value.is_integer():
            raise UserError(f"bad synthetic option {key}={text!r} (accepted: a whole number)") from None
        whole = int(value)
    return whole


def make_synthetic(arg: str | None = None, name: str = "synthetic") -> LoadedData:
    """Build the synthetic data set described by ``arg`` (see :class:`SyntheticSpec`)."""
    spec = parse_spec(arg)
    g = torch.Generator().manual_seed(spec.seed)
    k, c, s = spec.classes, spec.channels, spec.size
    shift = max(1, s // 4)  # larger than a blob, so the net must be shift-tolerant
    big = s + 2 * shift
    # Low-frequency templates: a 4x4..8x8 random grid upsampled smoothly, normalised to unit std.
    grid = max(4, s // 6)
    templates = F.interpolate(torch.randn(k, c, grid, grid, generator=g), size=(big, big), mode="bicubic")
    templates = (templates - templates.mean(dim=(1, 2, 3), keepdim=True)) / templates.std(dim=(1, 2, 3), keepdim=True)

    n = spec.train + spec.test
    # Balanced labels in a seeded order: every class has the same share of train and test.
    labels = torch.cat([torch.arange(spec.train) % k, torch.arange(spec.test) % k])
    labels = torch.cat([labels[: spec.train][torch.randperm(spec.train, generator=g)],
                        labels[spec.train:][torch.randperm(spec.test, generator=g)]])
    other = (labels + torch.randint(1, k, (n,), generator=g)) % k  # a different class as distractor
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dy2 = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    dx2 = torch.randint(0, 2 * shift + 1, (n,), generator=g)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=g)
    brightness = 0.3 * torch.randn(n, 1, 1, 1, generator=g)
    x = contrast * _windows(templates[labels], dy, dx, s) + DISTRACT * _windows(templates[other], dy2, dx2, s)
    # Smooth (low-frequency) noise does not average away under pooling the way pixel noise does.
    smooth = F.interpolate(torch.randn(n, c, grid, grid, generator=g), size=(s, s), mode="bicubic")
    x = x + brightness + spec.noise * smooth + 0.25 * torch.randn(n, c, s, s, generator=g)
    images = (128 + 42 * x).round().clamp(0, 255).to(torch.uint8)

    classes = [f"class{i}" for i in range(k)]
    train = ArrayDataset(images[: spec.train].contiguous(), labels[: spec.train].contiguous(), classes)
    test = ArrayDataset(images[spec.train:].contiguous(), labels[spec.train:].contiguous(), list(classes))
    mean, std = channel_stats(train.images)
    source = "synthetic " + ",".join(f"{f.name}={getattr(spec, f.name)}" for f in fields(spec))
    return LoadedData(name=name, train=train, test=test, mean=mean, std=std, source=source)


def _windows(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """Per-sample ``size x size`` windows of ``x [N, C, H, W]`` at ``(top, left)``, by one gather."""
    n, c, h, w = x.shape
    rows = top[:, None] + torch.arange(size)
    cols = left[:, None] + torch.arange(size)
    idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, size * size).expand(n, c, size * size)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, size, size)
