"""TorchLoader: the classic input pipeline, as the tutorials write it, for comparison with GpuLoader.

A map-style ``Dataset`` hands out PIL images, torchvision transforms augment them on the CPU in
worker processes, and each batch is copied to the device (pinned memory, ``non_blocking``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, SequentialSampler
from torchvision import transforms

from bench.data.dataset import ArrayDataset, epoch_seed, output_size
from bench.errors import UserError


class PilDataset(Dataset):
    """Serves ``(PIL image, label)`` pairs from uint8 arrays, through ``transform``."""

    def __init__(self, ds: ArrayDataset, transform: transforms.Compose) -> None:
        # HWC once, so each item is a cheap view for Image.fromarray
        self.images = np.ascontiguousarray(ds.images.permute(0, 2, 3, 1).numpy())
        self.labels = ds.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        a = self.images[i]
        img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)  # 'L' or 'RGB'
        return self.transform(img), self.labels[i]


class EpochSampler(Sampler[int]):
    """A random permutation per epoch from ``(seed, epoch)``, like ``DistributedSampler.set_epoch``.

    ``DataLoader(shuffle=True, generator=g)`` alone would not do: the loader draws worker seeds
    from ``g`` only when it (re)creates workers, so the order of epoch ``e`` would depend on
    whether the process started at epoch 0 or resumed at ``e``.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())


def build_transform(
    *,
    height: int,
    width: int,
    train: bool,
    mean: Sequence[float],
    std: Sequence[float],
    crop_padding: int,
    hflip: bool,
    augment: bool,
    image_size: int | None,
    crop_size: int | None,
) -> transforms.Compose:
    """The torchvision transform matching GpuLoader's pipeline (same order, same output size)."""
    aug = train and augment
    steps: list[object] = []
    if aug and crop_padding > 0:
        steps.append(transforms.RandomCrop((height, width), padding=crop_padding))
    if image_size is not None and (image_size, image_size) != (height, width):
        steps.append(transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BILINEAR))
    if crop_size is not None:
        steps.append(transforms.RandomCrop(crop_size) if aug else transforms.CenterCrop(crop_size))
    if aug and hflip:
        steps.append(transforms.RandomHorizontalFlip())
    steps += [transforms.ToTensor(), transforms.Normalize(list(mean), list(std))]
    return transforms.Compose(steps)


class TorchLoader:
    """``DataLoader`` over PIL images with CPU transforms; yields ``(x, y)`` on ``device``.

    Same interface as :class:`~bench.data.gpu_loader.GpuLoader`. ``num_workers`` defaults to 4 on
    CUDA and 0 on a CPU device (there the workers would compete with the model for the same few
    cores, and in-process loading keeps tests quick). The order per epoch is reproducible from
    ``(seed, epoch)``; the random crops/flips draw from the workers' torch RNG (seeded by the
    DataLoader when workers start; with persistent workers they are not re-seeded per epoch, as in
    the usual tutorial setup), or from the global torch RNG when ``num_workers=0``.
    """

    def __init__(
        self,
        ds: ArrayDataset,
        batch_size: int,
        *,
        device: torch.device | str,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        hflip: bool = True,
        augment: bool = True,
        image_size: int | None = None,
        crop_size: int | None = None,
        channels_last: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int | None = None,
        persistent_workers: bool = True,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        height, width = int(ds.images.shape[2]), int(ds.images.shape[3])
        output_size(height, image_size, crop_size)  # a crop that cannot fit is a UserError here, not in a batch
        cuda = self.device.type == "cuda"
        if num_workers is None:
            num_workers = 4 if cuda else 0
        self.num_samples = len(ds)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.seed = seed
        self._epoch = 0
        transform = build_transform(
            height=height,
            width=width,
            train=train,
            mean=mean,
            std=std,
            crop_padding=crop_padding,
            hflip=hflip,
            augment=augment,
            image_size=image_size,
            crop_size=crop_size,
        )
        dataset = PilDataset(ds, transform)
        self.sampler: Sampler[int] = EpochSampler(len(ds), seed) if train else SequentialSampler(dataset)
        self._generator = torch.Generator()  # worker base seeds, re-seeded per epoch
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,  # shuffle=train, but reproducible per epoch (see EpochSampler)
            num_workers=num_workers,
            pin_memory=cuda,
            drop_last=drop_last,
            persistent_workers=persistent_workers and num_workers > 0,
            generator=self._generator,
        )

    def set_epoch(self, epoch: int) -> None:
        """Fix the order of the next iteration to that of ``epoch``."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Item 0 transformed in this process, as a batch of one on the device.

        The workers' RNG streams stay as an epoch would find them, and the CPU RNG the transforms
        draw from is forked, so taking an example changes nothing the run sees.
        """
        with torch.random.fork_rng(devices=[]):
            x0, y0 = self.loader.dataset[0]
        fmt = torch.channels_last if self.channels_last and x0.dim() == 3 else torch.contiguous_format
        x = x0.unsqueeze(0).to(self.device).contiguous(memory_format=fmt)
        return x, torch.tensor([y0], dtype=torch.int64, device=self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        if isinstance(self.sampler, EpochSampler):
            self.sampler.set_epoch(epoch)
        self._generator.manual_seed(epoch_seed(self.seed, epoch))
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        for x, y in self.loader:
            x = x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
            yield x, y.to(self.device, non_blocking=True)
