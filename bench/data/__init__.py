"""Data layer: sources (``load_dataset``), stratified splits and the two loaders.

See ``docs/architecture.md`` (Data contract): sources give uint8 NCHW :class:`ArrayDataset` pairs
with their mean/std; loaders yield normalised float batches on the device.
"""

from typing import Any

from bench.data.dataset import ArrayDataset, LoadedData, Loader, channel_stats, default_cache_dir, default_data_dir
from bench.data.gpu_loader import GpuLoader, crop_windows
from bench.data.imagefolder import load_imagefolder
from bench.data.loaders import make_loader
from bench.data.sources import DATASETS, available_locally, load_dataset
from bench.data.split import mixed_order, mixed_sample, split_train_val, stratified_subset
from bench.data.synthetic import make_synthetic



def __getattr__(name: str) -> Any:
    # TorchLoader on first use: torchvision's transforms pull in torch._dynamo (~1.4 s of every start-up)
    if name == "TorchLoader":
        from bench.data.torch_loader import TorchLoader

        return TorchLoader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "ArrayDataset",
    "GpuLoader",
    "LoadedData",
    "Loader",
    "TorchLoader",
    "available_locally",
    "channel_stats",
    "crop_windows",
    "default_cache_dir",
    "default_data_dir",
    "load_dataset",
    "load_imagefolder",
    "make_loader",
    "make_synthetic",
    "mixed_order",
    "mixed_sample",
    "split_train_val",
    "stratified_subset",
]
