"""GpuLoader: the whole data set lives on the device as uint8; batches are augmented there.

No worker processes, no host-to-device copies per step and no host syncs: each epoch is one
device-side permutation, and a batch is an ``index_select`` plus a few vectorised kernels (one
gather does the padded random crop and the flip for the whole batch).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from bench.data.dataset import ArrayDataset, epoch_seed, output_size
from bench.errors import UserError


class GpuLoader:
    """Device-resident loader yielding ``(x float32 [B, C, H, W], y int64)`` on ``device``.

    Train: per-epoch permutation and augmentation from ``(seed, epoch)``: padded random crop
    (``crop_padding``, zero fill as torchvision's ``RandomCrop``), horizontal flip, then optional
    resize to ``image_size`` and random crop to ``crop_size``. Eval (``train=False``): fixed order,
    resize and centre crop only. ``augment=False`` turns crop/flip off but keeps the shuffling.
    Each ``iter()`` uses the current epoch and advances it; ``set_epoch(e)`` jumps to ``e``.
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
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0:
            raise UserError(f"crop_padding must be >= 0, got {crop_padding}")
        n, c, h, w = ds.images.shape
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values, got {len(mean)}/{len(std)}")
        self.device = torch.device(device)
        self.images = ds.images.to(self.device)  # once; uint8 is 4x smaller than float
        self.labels = ds.labels.to(self.device)
        self.batch_size = batch_size
        self.train = train
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.augment = augment
        self.image_size = image_size
        self.crop_size = crop_size
        self.channels_last = channels_last
        self.seed = seed
        self.drop_last = drop_last
        self.num_samples = int(n)
        output_size(h, image_size, crop_size)  # a crop that cannot fit is a UserError here, not in a batch
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift, one fused addcmul per batch
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -mean_t / std_t
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Fix the order and augmentation of the next iteration to those of ``epoch``."""
        self._epoch = int(epoch)

    def __len__(self) -> int:
        n, b = self.num_samples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self._epoch = self._epoch, self._epoch + 1
        gen = torch.Generator(device=self.device)
        gen.manual_seed(epoch_seed(self.seed, epoch))
        order = torch.randperm(self.num_samples, generator=gen, device=self.device) if self.train else None
        b = self.batch_size
        for step in range(len(self)):
            lo, hi = step * b, min((step + 1) * b, self.num_samples)
            if order is None:  # eval: contiguous slices, no copy
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.images.index_select(0, idx), self.labels.index_select(0, idx)
            yield self.transform(x, gen if self.train else None), y

    def example(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch of the current epoch, leaving the epoch counter where it was."""
        epoch = self._epoch
        try:
            return next(iter(self))
        finally:
            self._epoch = epoch

    def transform(self, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        """uint8 batch -> normalised float batch; random augmentation only when ``gen`` is given."""
        aug = gen is not None and self.augment
        bsz, _, h, w = x.shape
        dev = x.device
        flip = torch.rand(bsz, generator=gen, device=dev) < 0.5 if aug and self.hflip else None
        p = self.crop_padding if aug else 0
        if p > 0:
            top = torch.randint(0, 2 * p + 1, (bsz,), generator=gen, device=dev)
            left = torch.randint(0, 2 * p + 1, (bsz,), generator=gen, device=dev)
            # The flip rides along in the last gather; flipping before or after a resize is the same.
            last = self.crop_size is None
            x = crop_windows(F.pad(x, (p, p, p, p)), top, left, h, w, flip if last else None)
            flip = None if last else flip
        x = x.float()
        if self.image_size is not None and (x.shape[-2], x.shape[-1]) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        if self.crop_size is not None:
            s, c = x.shape[-1], self.crop_size
            if aug:
                top = torch.randint(0, x.shape[-2] - c + 1, (bsz,), generator=gen, device=dev)
                left = torch.randint(0, s - c + 1, (bsz,), generator=gen, device=dev)
                x = crop_windows(x, top, left, c, c, flip)
                flip = None
            else:
                top0, left0 = (x.shape[-2] - c) // 2, (s - c) // 2
                x = x[:, :, top0 : top0 + c, left0 : left0 + c]
        if flip is not None:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        x = torch.addcmul(self._shift, x, self._scale)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=fmt)


def crop_windows(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample ``h x w`` windows of ``x [B, C, H, W]`` at ``(top, left)``, mirrored where ``flip``.

    One ``gather`` over the flattened spatial dims: ``out[b, c, i, j] = x[b, c, top[b] + i,
    left[b] + (w - 1 - j if flip[b] else j)]``, so no Python loop over samples and no host sync.
    """
    bsz, ch, hs, ws = x.shape
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = top[:, None] + ar_h  # [B, h]
    cols = ar_w.expand(bsz, w) if flip is None else torch.where(flip[:, None], w - 1 - ar_w, ar_w)
    cols = left[:, None] + cols  # [B, w]
    idx = (rows[:, :, None] * ws + cols[:, None, :]).reshape(bsz, 1, h * w).expand(bsz, ch, h * w)
    return x.reshape(bsz, ch, hs * ws).gather(2, idx).view(bsz, ch, h, w)
