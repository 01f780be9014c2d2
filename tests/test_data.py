"""Tests of bench.data: sources, splits, the GPU-resident loader (on CPU tensors) and TorchLoader."""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from bench.config import RunConfig
from bench.data import (
    DATASETS,
    ArrayDataset,
    GpuLoader,
    LoadedData,
    TorchLoader,
    channel_stats,
    crop_windows,
    default_cache_dir,
    load_dataset,
    make_loader,
    split_train_val,
    stratified_subset,
)
from bench.data import imagefolder, sources
from bench.data.gpu_loader import epoch_seed
from bench.errors import UserError

from tests.conftest import real_data_dir


def indexed(n: int = 103, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> ArrayDataset:
    """Random images whose label is their index, so batches show which samples they hold."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    return ArrayDataset(images, torch.arange(n), [str(i) for i in range(n)])


def identity_norm(c: int = 3) -> dict:
    return {"mean": (0.0,) * c, "std": (1.0,) * c}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undo the identity normalisation (x = v / 255) exactly."""
    return (x * 255).round().to(torch.uint8)


def epoch_labels(loader) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


# ---------------------------------------------------------------- GpuLoader


def test_gpu_loader_every_sample_once_and_epoch_orders():
    ds = indexed()
    loader = GpuLoader(ds, 10, device="cpu", train=True, seed=3, **identity_norm())
    assert len(loader) == 11 and loader.num_samples == 103
    e0 = epoch_labels(loader)  # epoch 0
    e1 = epoch_labels(loader)  # iteration advances to epoch 1
    assert sorted(e0.tolist()) == list(range(103)) and sorted(e1.tolist()) == list(range(103))
    assert not torch.equal(e0, e1)
    loader.set_epoch(0)
    assert torch.equal(epoch_labels(loader), e0)
    again = GpuLoader(ds, 10, device="cpu", train=True, seed=3, **identity_norm())
    again.set_epoch(1)
    assert torch.equal(epoch_labels(again), e1)  # a resumed run sees the same order
    other = GpuLoader(ds, 10, device="cpu", train=True, seed=4, **identity_norm())
    assert not torch.equal(epoch_labels(other), e0)
    # same (seed, epoch) -> same augmented pixels too
    loader.set_epoch(5)
    again.set_epoch(5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(loader, again, strict=True))


def test_gpu_loader_drop_last_and_eval_order():
    ds = indexed()
    loader = GpuLoader(ds, 10, device="cpu", train=True, drop_last=True, **identity_norm())
    sizes = [len(y) for _, y in loader]
    assert len(loader) == 10 and sizes == [10] * 10
    ev = GpuLoader(ds, 25, device="cpu", train=False, **identity_norm())
    assert torch.equal(epoch_labels(ev), torch.arange(103)) and torch.equal(epoch_labels(ev), torch.arange(103))


def reference_batch(ds: ArrayDataset, batch: int, seed: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First training batch recomputed with a per-sample Python loop, drawing the same random numbers."""
    g = torch.Generator().manual_seed(epoch_seed(seed, 0))
    idx = torch.randperm(len(ds), generator=g)[:batch]
    flip = torch.rand(batch, generator=g) < 0.5
    top = torch.randint(0, 2 * pad + 1, (batch,), generator=g)
    left = torch.randint(0, 2 * pad + 1, (batch,), generator=g)
    _, _, h, w = ds.images.shape
    out = []
    for k, i in enumerate(idx.tolist()):
        padded = torch.zeros(ds.images.shape[1], h + 2 * pad, w + 2 * pad, dtype=torch.uint8)
        padded[:, pad : pad + h, pad : pad + w] = ds.images[i]
        crop = padded[:, top[k] : top[k] + h, left[k] : left[k] + w]
        out.append(crop.flip(-1) if flip[k] else crop)
    return torch.stack(out), flip


def test_gpu_loader_crop_and_flip_match_reference_loop():
    ds = indexed(n=64, h=10, w=12)
    loader = GpuLoader(ds, 32, device="cpu", train=True, crop_padding=3, hflip=True, seed=7, **identity_norm())
    x, y = next(iter(loader))
    ref, flip = reference_batch(ds, 32, seed=7, pad=3)
    assert x.shape == (32, 3, 10, 12)
    assert torch.equal(to_uint8(x), ref)
    assert 0 < int(flip.sum()) < 32  # both flipped and unflipped samples were checked
    # independent of the RNG order: every output is a (mirrored) window of the zero-padded image
    for k in range(8):
        padded = F.pad(ds.images[y[k]], (3, 3, 3, 3))
        windows = [padded[:, t : t + 10, s : s + 12] for t in range(7) for s in range(7)]
        assert any(torch.equal(to_uint8(x[k]), win) or torch.equal(to_uint8(x[k]), win.flip(-1)) for win in windows)


def test_gpu_loader_flip_only_and_no_augment():
    ds = indexed(n=200)
    x, y = next(iter(GpuLoader(ds, 200, device="cpu", train=True, crop_padding=0, hflip=True, **identity_norm())))
    got, src = to_uint8(x), ds.images[y]
    same = (got == src).flatten(1).all(1)
    mirrored = (got == src.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 60 < int(mirrored.sum()) < 140
    x, y = next(iter(GpuLoader(ds, 200, device="cpu", train=True, augment=False, **identity_norm())))
    assert torch.equal(to_uint8(x), ds.images[y])  # shuffled, but untouched


def test_crop_windows_direct():
    x = torch.arange(2 * 1 * 4 * 5).view(2, 1, 4, 5)
    out = crop_windows(x, torch.tensor([0, 1]), torch.tensor([2, 0]), 3, 3, torch.tensor([False, True]))
    assert torch.equal(out[0, 0], x[0, 0, 0:3, 2:5])
    assert torch.equal(out[1, 0], x[1, 0, 1:4, 0:3].flip(-1))


def test_gpu_loader_resize_and_crop_70_to_64():
    ds = indexed(n=20, h=32, w=32)
    kw = dict(image_size=70, crop_size=64, crop_padding=0, **identity_norm())
    train = GpuLoader(ds, 8, device="cpu", train=True, hflip=False, **kw)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 64, 64)
    big = F.interpolate(ds.images[y].float(), size=(70, 70), mode="bilinear", align_corners=False) / 255
    for k in range(3):  # each is some 64x64 window of the resized image
        assert any(
            torch.allclose(x[k], big[k, :, t : t + 64, s : s + 64], atol=1e-6) for t in range(7) for s in range(7)
        )
    ev = GpuLoader(ds, 8, device="cpu", train=False, **kw)
    x, y = next(iter(ev))
    big = F.interpolate(ds.images[:8].float(), size=(70, 70), mode="bilinear", align_corners=False) / 255
    assert torch.allclose(x, big[:, :, 3:67, 3:67], atol=1e-6)  # centre crop
    with pytest.raises(UserError, match="crop_size"):
        GpuLoader(ds, 8, device="cpu", train=True, crop_size=40, **identity_norm())


def test_gpu_loader_normalisation_and_channels_last():
    ds = indexed(n=30)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x, _ = next(iter(GpuLoader(ds, 30, device="cpu", train=False, mean=mean, std=std)))
    expect = (ds.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert x.dtype == torch.float32 and torch.allclose(x, expect, atol=1e-5)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    for train in (True, False):
        x, _ = next(iter(GpuLoader(ds, 30, device="cpu", train=train, mean=mean, std=std, channels_last=True)))
        assert x.is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------- TorchLoader and the factory


def test_torch_loader_shapes_samples_and_values():
    ds = indexed(n=50, h=32, w=32)
    loader = TorchLoader(ds, 16, device="cpu", train=True, image_size=70, crop_size=64, **identity_norm())
    batches = list(loader)
    assert len(loader) == 4 and [b[0].shape for b in batches][0] == (16, 3, 64, 64)
    labels = torch.cat([y for _, y in batches])
    assert sorted(labels.tolist()) == list(range(50)) and labels.dtype == torch.int64
    loader.set_epoch(0)
    assert torch.equal(epoch_labels(loader), labels)
    assert not torch.equal(epoch_labels(loader), labels)  # epoch 1
    # eval: the same values as the GPU loader (ToTensor + Normalize vs. one addcmul)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    t = TorchLoader(ds, 50, device="cpu", train=False, mean=mean, std=std, channels_last=True)
    g = GpuLoader(ds, 50, device="cpu", train=False, mean=mean, std=std)
    (xt, yt), (xg, yg) = next(iter(t)), next(iter(g))
    assert torch.equal(yt, yg) and torch.allclose(xt, xg, atol=1e-5)
    assert xt.is_contiguous(memory_format=torch.channels_last)


def test_torch_loader_with_workers():
    ds = indexed(n=40, c=1, h=12, w=12)
    loader = TorchLoader(ds, 8, device="cpu", train=True, num_workers=2, **identity_norm(1))
    first = epoch_labels(loader)
    assert sorted(first.tolist()) == list(range(40))
    loader.set_epoch(0)
    assert torch.equal(epoch_labels(loader), first)


def test_make_loader_dispatch():
    data = load_dataset("synthetic:train=100,test=30,size=16")
    for kind, cls in (("gpu", GpuLoader), ("torch", TorchLoader)):
        cfg = RunConfig(loader=kind, batch_size=32, eval_batch_size=25, dataset="synthetic")
        tr = make_loader(data.train, data, cfg, train=True, device="cpu")
        ev = make_loader(data.test, data, cfg, train=False, device="cpu")
        assert isinstance(tr, cls) and len(tr) == 4 and len(ev) == 2 and ev.num_samples == 30


# ---------------------------------------------------------------- splits


def test_split_stratified_disjoint_deterministic():
    labels = torch.arange(1000) % 10
    ds = ArrayDataset(torch.zeros(1000, 1, 1, 1, dtype=torch.uint8), labels, list("abcdefghij"))
    torch.manual_seed(1)
    train, val = split_train_val(ds, 100, seed=0)
    assert val is not None and len(train) == 900 and len(val) == 100
    assert torch.bincount(val.labels).tolist() == [10] * 10
    torch.manual_seed(2)  # the global RNG must not matter
    train2, val2 = split_train_val(ds, 0.1, seed=0)
    assert torch.equal(val.labels, val2.labels) and len(val2) == 100
    # disjoint and complete: split a copy whose images spell their index, with the same class structure
    idx = torch.arange(1000)
    indexed = ArrayDataset(torch.stack([idx // 256, idx % 256], 1).to(torch.uint8).view(1000, 1, 1, 2), labels,
                           list("abcdefghij"))

    def split_indices(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rest_ds, picked_ds = split_train_val(indexed, 100, seed)
        assert picked_ds is not None
        return tuple(d.images.view(-1, 2).long() @ torch.tensor([256, 1]) for d in (picked_ds, rest_ds))

    picked, rest = split_indices(0)
    assert set(picked.tolist()).isdisjoint(rest.tolist()) and len(set(picked.tolist()) | set(rest.tolist())) == 1000
    assert not torch.equal(picked, split_indices(1)[0])
    assert torch.equal(picked, split_indices(0)[0])
    assert split_train_val(ds, 0, seed=0) == (ds, None)
    for bad in (1000, 2000, 10.5, -1):
        with pytest.raises(UserError):
            split_train_val(ds, bad, seed=0)
    sub = stratified_subset(ds, 50, seed=0)
    assert len(sub) == 50 and torch.bincount(sub.labels).tolist() == [5] * 10
    assert stratified_subset(ds, 5000, seed=0) is ds


def test_split_uneven_classes():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    ds = ArrayDataset(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, ["a", "b", "c"])
    train, val = split_train_val(ds, 0.25, seed=3)
    assert val is not None and len(val) == 25 and len(train) == 75
    counts = torch.bincount(val.labels, minlength=3).tolist()
    assert counts[0] in (17, 18) and counts[1] == 5 and counts[2] in (2, 3)


# ---------------------------------------------------------------- synthetic and names


def test_synthetic_deterministic_and_options():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert isinstance(a, LoadedData) and a.num_classes == 10 and a.in_channels == 3 and a.image_shape == (3, 32, 32)
    assert len(a.train) == 2000 and len(a.test) == 500
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.mean == b.mean and all(0 < s for s in a.std)
    c = load_dataset("synthetic:channels=1,size=28,classes=4,train=100,test=20,noise=0.3,seed=5")
    assert c.train.images.shape == (100, 1, 28, 28) and c.num_classes == 4 and len(c.test) == 20
    assert torch.bincount(c.train.labels).tolist() == [25] * 4
    d = load_dataset("synthetic:seed=1")
    assert not torch.equal(d.train.images, a.train.images)
    for bad in ("synthetic:colour=1", "synthetic:size=abc", "synthetic:classes=1", "synthetic:size"):
        with pytest.raises(UserError, match="synthetic"):
            load_dataset(bad)




def test_synthetic_is_learnable_by_a_small_cnn(one_thread):
    torch.manual_seed(0)
    data = load_dataset("synthetic:size=16")  # 16x16: about a second on one CPU thread
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    train = GpuLoader(data.train, 64, device="cpu", train=True, mean=data.mean, std=data.std, crop_padding=0)
    test = GpuLoader(data.test, 500, device="cpu", train=False, mean=data.mean, std=data.std)

    def accuracy() -> float:
        net.eval()
        with torch.no_grad():
            x, y = next(iter(test))
            acc = (net(x).argmax(1) == y).float().mean().item()
        net.train()
        return acc

    for step, (x, y) in enumerate(train):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if step == 0:
            assert accuracy() < 0.5  # not solved by one step
    for x, y in train:  # a second epoch
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    assert accuracy() > 0.6


def test_unknown_names():
    with pytest.raises(UserError, match="did you mean cifar10"):
        load_dataset("cifar")
    with pytest.raises(UserError, match="takes no options"):
        load_dataset("cifar10:x")
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("imagefolder")
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagefolder:/nonexistent/folder")
    assert {"cifar10", "cifar100", "mnist", "fashion_mnist", "imagefolder", "synthetic"} <= set(DATASETS.names())


def test_channel_stats_exact():
    images = torch.tensor([0, 255, 0, 255], dtype=torch.uint8).view(4, 1, 1, 1)
    assert channel_stats(images) == ((0.5,), (0.5,))


# ---------------------------------------------------------------- missing torchvision data, offline


@pytest.mark.parametrize("name,expect", [("cifar10", "cifar-10-batches-py/data_batch_1"), ("mnist", "MNIST/raw/")])
def test_missing_torchvision_data_is_a_user_error(tmp_path, monkeypatch, name, expect):
    url = "https://www.cs.toronto.edu/" if name == "cifar10" else "https://ossci-datasets.s3.amazonaws.com/"
    if sources._reachable(url)[0]:  # online: do not download for real
        monkeypatch.setattr(sources, "_reachable", lambda url: (False, "network disabled by the test"))
    t0 = time.perf_counter()
    with pytest.raises(UserError) as info:
        load_dataset(name, tmp_path, cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert time.perf_counter() - t0 < 10
    assert "\n" not in msg and expect in msg and "BENCH_DATA_DIR" in msg and str(tmp_path) in msg


def test_failed_download_is_a_user_error(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got: 404")

    monkeypatch.setattr(sources, "_reachable", lambda url: (True, ""))
    monkeypatch.setattr(sources._tv_class("MNIST"), "download", broken)
    with pytest.raises(UserError, match=r"download failed \(Error downloading .* 404\).*BENCH_DATA_DIR"):
        load_dataset("fashion_mnist", tmp_path)


# ---------------------------------------------------------------- MNIST-style .gz raw files


def write_idx_gz(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, h, w) + images.tobytes())
    with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes())


def test_gz_raw_files_decompressed_next_to_them(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    imgs = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    write_idx_gz(raw, "train", imgs, np.arange(30) % 10)
    write_idx_gz(raw, "t10k", imgs[:10], np.arange(10))
    data = load_dataset("fashion_mnist", tmp_path, cache_dir=tmp_path / "cache")
    assert (raw / "train-images-idx3-ubyte").exists() and not (tmp_path / "cache").exists()
    assert data.train.images.shape == (30, 1, 28, 28) and torch.equal(data.train.images[:, 0], torch.from_numpy(imgs))
    assert data.test.labels.tolist() == list(range(10)) and "decompressed" in data.source


def test_mnist_real_gz_into_cache(tmp_path):
    root = real_data_dir()
    if root is None or not (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("no MNIST/raw/*.gz under $BENCH_DATA_DIR or ../shared/data")
    raw = root / "MNIST" / "raw"
    before = sorted(os.listdir(raw))
    data = load_dataset("mnist", root, cache_dir=tmp_path)
    assert len(data.train) == 60000 and len(data.test) == 10000 and data.train.images.shape[1:] == (1, 28, 28)
    assert abs(data.mean[0] - 0.1307) < 5e-4 and abs(data.std[0] - 0.3081) < 5e-4
    assert torch.bincount(data.test.labels).sum() == 10000 and data.num_classes == 10
    if not raw.stat().st_mode & 0o222:  # read-only (even for root): nothing written there, all in the cache
        assert sorted(os.listdir(raw)) == before
        assert list(tmp_path.glob("raw/*/MNIST/raw/train-images-idx3-ubyte")), "expected decompression into the cache"


# ---------------------------------------------------------------- image folders


def make_images(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (6, 5, 3), dtype=np.uint8) for _ in range(n)]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_imagefolder_tar_nested_and_cached(tmp_path, monkeypatch):
    imgs = make_images(10, 0)
    files = {f"top/train/{c}/{i}.png": png(imgs[k]) for k, (c, i) in enumerate(
        [("dog", 1), ("cat", 2), ("dog", 0), ("cat", 1), ("cat", 0), ("dog", 2)])}  # fmt: skip
    files.update({f"top/test/{c}/{i}.png": png(imgs[6 + k]) for k, (c, i) in enumerate([("dog", 0), ("cat", 0)])})
    files["top/README.txt"] = b"not an image"
    tar = tmp_path / "pets.tar.gz"
    write_tar(tar, files)
    cache = tmp_path / "cache"
    data = load_dataset(f"imagefolder:{tar}", cache_dir=cache)
    assert data.train.classes == ["cat", "dog"] and data.train.images.shape == (6, 3, 6, 5)
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.test.labels.tolist() == [0, 1]
    # sorted by (class, file): cat/0 is image 4, dog/2 is image 5
    assert torch.equal(data.train.images[0], torch.from_numpy(imgs[4]).permute(2, 0, 1))
    assert torch.equal(data.train.images[5], torch.from_numpy(imgs[5]).permute(2, 0, 1))
    assert "decoded" in data.source and data.mean == channel_stats(data.train.images)[0]
    cached = list((cache / "imagefolder").glob("pets-*.npz"))
    assert len(cached) == 1 and not list((cache / "imagefolder").glob(".*tmp"))
    again = load_dataset(f"imagefolder:{tar}", cache_dir=cache)
    assert "cached" in again.source and torch.equal(again.train.images, data.train.images)
    monkeypatch.setattr(imagefolder, "CACHE_VERSION", "imagefolder-v2")  # a new cache layout: decoded again
    assert "decoded" in load_dataset(f"imagefolder:{tar}", cache_dir=cache).source
    monkeypatch.undo()
    write_tar(tar, {**files, "top/test/cat/9.png": png(imgs[9])})  # new content -> new key
    changed = load_dataset(f"imagefolder:{tar}", cache_dir=cache)
    assert "decoded" in changed.source and len(changed.test) == 3
    assert len(list((cache / "imagefolder").glob("pets-*.npz"))) == 2


def test_imagefolder_directory_grey_and_bad_layouts(tmp_path):
    root = tmp_path / "digits"
    for split, n in (("train", 4), ("test", 2)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((7, 7), 10 * i, np.uint8)).save(root / split / c / f"{i}.png")
    data = load_dataset("imagefolder:digits", tmp_path, cache_dir=tmp_path / "cache")  # relative to data_dir
    assert data.train.images.shape == (8, 1, 7, 7) and data.in_channels == 1 and len(data.test) == 4
    (root / "test" / "zebra").mkdir()
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(root / "test" / "zebra" / "0.png")
    with pytest.raises(UserError, match="zebra"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        load_dataset(f"imagefolder:{empty}", cache_dir=tmp_path / "cache")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="cannot read archive"):
        load_dataset(f"imagefolder:{tmp_path / 'broken.tar.gz'}", cache_dir=tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.data
def test_cifar10_jpeg_tarball():
    root = real_data_dir()
    if root is None or not (root / "cifar10-jpeg.tar.gz").exists():
        pytest.skip("no cifar10-jpeg.tar.gz under $BENCH_DATA_DIR or ../shared/data")
    if (root / "cifar-10-batches-py").exists():
        pytest.skip("torchvision's cifar-10-batches-py is present and takes precedence")
    # $BENCH_CACHE_DIR (tests/conftest.py points it at the session's tmp unless set, so a session
    # decodes once, ~10-20 s) or the user's cache; the second load below must come from it.
    data = load_dataset("cifar10", root, cache_dir=default_cache_dir())
    classes = "airplane automobile bird cat deer dog frog horse ship truck".split()
    assert data.name == "cifar10" and data.train.classes == classes and data.test.classes == classes
    assert data.train.images.shape == (50000, 3, 32, 32) and data.test.images.shape == (10000, 3, 32, 32)
    assert torch.bincount(data.train.labels).tolist() == [5000] * 10
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert all(abs(m - r) < 0.01 for m, r in zip(data.mean, (0.4914, 0.4822, 0.4465), strict=True))
    assert "lossy JPEG" in data.source and "cifar10-jpeg.tar.gz" in data.source
    t0 = time.perf_counter()
    load_dataset("cifar10", root, cache_dir=default_cache_dir())
    assert time.perf_counter() - t0 < 5  # cached (well under 1-2 s on an idle machine)


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layout(classes: tuple[str, ...]) -> dict[str, bytes]:
    imgs = make_images(4 * len(classes), 1)
    return {f"{split}/{c}/{i}.png": png(imgs[k * 4 + j]) for k, c in enumerate(classes)
            for j, (split, i) in enumerate((("train", 0), ("train", 1), ("train", 2), ("test", 0)))}


@pytest.mark.parametrize("form", ["folder", "tar"])
@pytest.mark.parametrize("classes", [("only",), ("a b",)])
def test_an_image_folder_with_one_class_is_refused(form: str, classes: tuple[str, ...], tmp_path: Path) -> None:
    """Nothing to classify (a synthetic set of one class was refused already; a folder trained)."""
    files = _layout(classes)
    if form == "tar":
        src = tmp_path / "one.tar.gz"
        src.write_bytes(_tar_bytes(files))
    else:
        src = tmp_path / "one"
        for name, data in files.items():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes(data)
    with pytest.raises(UserError, match=r"has 1 class .*accepted: train/<class>/ folders for 2 or more"):
        load_dataset(f"imagefolder:{src}", cache_dir=tmp_path / "cache")
    two = _layout(("a", "b"))
    (tmp_path / "two.tar.gz").write_bytes(_tar_bytes(two))
    assert load_dataset(f"imagefolder:{tmp_path / 'two.tar.gz'}", cache_dir=tmp_path / "cache").num_classes == 2


def _cut_archive() -> bytes:
    whole = _tar_bytes(_layout(("a", "b")))
    return whole[: len(whole) // 2]


BAD_ARCHIVES = {
    "empty": (lambda: b"", "an empty file"),
    "random": (lambda: np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes(), "not a tar archive"),
    "text": (lambda: b"not a tar\n" * 50, "not a tar archive"),
    "gzip-of-text": (lambda: gzip.compress(b"hello " * 100), "not a tar archive"),
    "cut-in-half": (_cut_archive, "cannot read archive"),
}


@pytest.mark.parametrize("kind", list(BAD_ARCHIVES))
def test_a_bad_archive_is_one_line(kind: str, tmp_path: Path) -> None:
    make, needle = BAD_ARCHIVES[kind]
    path = tmp_path / f"{kind}.tar.gz"
    path.write_bytes(make())
    with pytest.raises(UserError) as info:
        load_dataset(f"imagefolder:{path}", cache_dir=tmp_path / "cache")
    text = str(info.value)
    assert "\n" not in text and needle in text and str(path) in text and "accepted" in text, text


@pytest.mark.parametrize("spec, cause", [
    ("{tmp}/nowhere", "does not exist"),
    ("{tmp}/a-file/inside", "is a file, not a folder"),
    ("{tmp}/a-file", "neither a folder nor a tar archive"),
    ("relative-missing", "nor"),
])
def test_a_path_error_names_its_cause(spec: str, cause: str, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    data_dir = tmp_path / "data"
    with pytest.raises(UserError, match=cause) as info:
        load_dataset(f"imagefolder:{spec.format(tmp=tmp_path)}", data_dir, cache_dir=tmp_path / "cache")
    assert "\n" not in str(info.value)
    if spec == "relative-missing":  # both places looked in are named
        assert str(data_dir / "relative-missing") in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not gzip at all", b"\x00" * 100])
def test_an_empty_or_foreign_cifar10_jpeg_archive_is_not_cifar10_found(content: bytes, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(content)
    assert not sources.available_locally("cifar10", tmp_path)
    monkeypatch.setattr(sources, "_reachable", lambda url: (False, "network disabled by the test"))
    with pytest.raises(UserError, match="cifar10-jpeg.tar.gz is empty or not a gzip archive"):
        load_dataset("cifar10", tmp_path, cache_dir=tmp_path / "cache")
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(gzip.compress(b"x"))
    assert sources.available_locally("cifar10", tmp_path)  # a gzip file: looked at by name and magic only


@pytest.mark.parametrize("spec, needle", [
    ("size=8,size=16", "size given twice"), ("train=64,classes=4,train=64", "train given twice"),
    ("seed=1,seed=1", "seed given twice"), ("noise=0.1, noise=0.2", "noise given twice"),
])
def test_a_data_set_spec_with_a_key_given_twice_is_refused(spec: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        load_dataset(f"synthetic:{spec}")


@pytest.mark.parametrize("spec, named, not_named", [
    ("classes=3000", "classes=3000", None),  # before: 'bad train=2000', a value never typed
    ("train=5", "train=5", None),
    ("classes=20,train=10", "train=10", None),
    ("size=1e3,classes=1", "classes=1", None),
    ("seed=18446744073709551616", "seed=18446744073709551616", "not an integer"),
])
def test_a_synthetic_spec_error_names_what_was_typed(spec: str, named: str, not_named: str | None) -> None:
    with pytest.raises(UserError) as info:
        load_dataset(f"synthetic:{spec}")
    text = str(info.value)
    assert text.startswith(f"bad synthetic option {named}") and "accepted" in text, text
    assert not_named is None or not_named not in text


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 cut", b"garbage"])
def test_a_damaged_image_cache_is_one_warning_line_and_decoded_again(damage: bytes, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "two.tar.gz").write_bytes(_tar_bytes(_layout(("a", "b"))))
    first = load_dataset(f"imagefolder:{tmp_path / 'two.tar.gz'}", cache_dir=tmp_path / "cache")
    [cached] = list((tmp_path / "cache" / "imagefolder").glob("*.npz"))
    cached.write_bytes(damage)
    capsys.readouterr()
    again = load_dataset(f"imagefolder:{tmp_path / 'two.tar.gz'}", cache_dir=tmp_path / "cache")
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("bench: warning: ignoring unreadable image cache"), err
    assert "decoded" in again.source and torch.equal(again.train.images, first.train.images)
