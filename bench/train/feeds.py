"""Batch feeds for the graphed engine: batches drawn on the device from counters, or copied in.

A captured step must read its batch from the same addresses at every replay. :class:`DeviceFeed`
draws the batch inside the graph from a :class:`~bench.data.gpu_loader.GpuLoader`'s device-resident
uint8 data (indices from a device position counter, the loader's own vectorised augmentation with a
generator registered with the graph); :class:`CopyFeed` copies any other loader's batches into
static buffers before each replay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from bench.data.dataset import Loader, epoch_seed
from bench.data.gpu_loader import GpuLoader

__all__ = ["CopyFeed", "DeviceFeed"]


class DeviceFeed:
    """Training batches of a :class:`GpuLoader` drawn on the device from device counters (capturable).

    Per epoch (eager, once): the generator is seeded from ``(loader.seed, epoch)`` and the permutation
    drawn into a static buffer, as ``GpuLoader.__iter__`` does. Per batch (captured): indices
    ``order[pos*B + arange(b)]``, the uint8 gathers and ``loader.transform`` drawing from the same
    generator, in the same order, so the batches are those of the eager loader.
    """

    def __init__(self, loader: GpuLoader) -> None:
        self.loader = loader
        dev = loader.device
        self.gen = torch.Generator(device=dev)
        self.order = torch.arange(loader.num_samples, device=dev)
        self.pos = torch.zeros((), dtype=torch.int64, device=dev)
        self._arange: dict[int, torch.Tensor] = {}

    def sizes(self) -> list[int]:
        """Batch size of each step of an epoch."""
        n, b = self.loader.num_samples, self.loader.batch_size
        return [min(b, n - lo) for lo in range(0, n, b)][: len(self.loader)]

    def prepare(self, size: int) -> None:
        """Allocate the index ramp for batches of ``size`` (before capture)."""
        if size not in self._arange:
            self._arange[size] = torch.arange(size, device=self.loader.device)

    def begin_epoch(self, epoch: int) -> None:
        self.gen.manual_seed(epoch_seed(self.loader.seed, epoch))
        if self.loader.train:
            torch.randperm(self.loader.num_samples, generator=self.gen, out=self.order)
        self.pos.zero_()

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of ``size`` samples (``pos`` advances on the device)."""
        ld = self.loader
        idx = self.order.index_select(0, self._arange[size] + self.pos * ld.batch_size)
        x, y = ld.images.index_select(0, idx), ld.labels.index_select(0, idx)
        self.pos += 1
        return ld.transform(x, self.gen if ld.train else None), y


class CopyFeed:
    """Any loader's batches copied into static input buffers (one pair per captured batch size)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.static: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One ``(x, y)`` sample batch from the loader's own :meth:`~bench.data.dataset.Loader.example`,
        under a forked CPU RNG, so nothing here changes the run."""
        with torch.random.fork_rng(devices=[]):
            return self.loader.example()

    def prepare_from(self, x: torch.Tensor, y: torch.Tensor, sizes: Iterable[int]) -> None:
        """Static buffers shaped like ``(x, y)`` (memory format kept) for each batch size."""
        channels_last = self.loader.channels_last and x.dim() == 4
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for s in sizes:
            xs = torch.empty((s, *x.shape[1:]), dtype=x.dtype, device=x.device, memory_format=fmt)
            xs.copy_(x[:1].expand_as(xs))
            ys = torch.zeros((s, *y.shape[1:]), dtype=y.dtype, device=y.device)
            ys.copy_(y[:1].expand_as(ys))
            self.static[s] = (xs, ys)

    def load(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = self.static[int(y.shape[0])]
        xs.copy_(x, non_blocking=True)
        ys.copy_(y, non_blocking=True)
        return xs, ys

