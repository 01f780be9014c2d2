"""The loader factory: the run's config -> the loader it names (``cfg.loader``).

The two loaders are peers that share only the data contract (:mod:`bench.data.dataset`); the
factory sits above both, so neither imports the other. A new loader is a class with the
:class:`~bench.data.dataset.Loader` interface and one entry in :data:`LOADER_CLASSES`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bench.data.dataset import ArrayDataset, LoadedData, Loader
from bench.data.gpu_loader import GpuLoader
from bench.errors import UserError

if TYPE_CHECKING:
    from bench.config import RunConfig



def _torch_loader() -> type:
    # imported when chosen: torchvision's transforms pull in torch._dynamo (~1.4 s of every start-up)
    from bench.data.torch_loader import TorchLoader

    return TorchLoader


# cfg.loader -> a function giving its class; each class takes (ds, batch_size, **loader_kwargs(...)).
LOADER_CLASSES: dict[str, Any] = {"gpu": lambda: GpuLoader, "torch": _torch_loader}


def loader_kwargs(info: LoadedData, cfg: RunConfig, *, train: bool, device: torch.device | str) -> dict[str, Any]:
    """The keyword arguments every loader takes, read from the run's config and the data's statistics."""
    return dict(
        device=device,
        train=train,
        mean=info.mean,
        std=info.std,
        crop_padding=cfg.crop_padding,
        hflip=cfg.hflip,
        augment=cfg.augment,
        image_size=cfg.image_size,
        crop_size=cfg.crop_size,
        channels_last=cfg.channels_last,
        seed=cfg.seed,
        drop_last=False,
    )


def make_loader(
    ds: ArrayDataset, info: LoadedData, cfg: RunConfig, *, train: bool, device: torch.device | str
) -> Loader:
    """Build the loader ``cfg.loader`` names ('gpu' | 'torch') from the run's config.

    Train batches are ``cfg.batch_size``, eval batches ``cfg.eval_batch_size``; both keep the last
    partial batch (``drop_last=False``), so every image is seen once per epoch and evaluated.
    """
    if cfg.loader not in LOADER_CLASSES:
        raise UserError(f"bad loader {cfg.loader!r} (accepted: {', '.join(LOADER_CLASSES)})")
    batch = cfg.batch_size if train else cfg.eval_batch_size
    return LOADER_CLASSES[cfg.loader]()(ds, batch, **loader_kwargs(info, cfg, train=train, device=device))
