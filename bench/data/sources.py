"""Where data sets come from: the ``DATASETS`` registry and :func:`load_dataset`.

Names: ``cifar10``, ``cifar100``, ``mnist``, ``fashion_mnist`` (torchvision, downloaded when the
network allows), ``imagefolder:<path>`` (folder or tar, decoded once and cached) and
``synthetic[:options]``. Offline, a missing torchvision set is a one-line :class:`UserError`
naming the files looked for; MNIST-style ``.gz`` raw files are decompressed (into the cache folder
when the data folder is read-only), and a ``cifar10-jpeg.tar.gz`` stands in for CIFAR-10.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import torch

from bench.data.dataset import (
    ArrayDataset,
    LoadedData,
    channel_stats,
    default_cache_dir,
    default_data_dir,
    is_writable_dir,
    sha256_files,
)
from bench.data.imagefolder import check_source, load_imagefolder
from bench.data.synthetic import make_synthetic, parse_spec
from bench.errors import UserError
from bench.files import write_atomic
from bench.registry import Registry

if TYPE_CHECKING:
    from torchvision import datasets

    from bench.config import RunConfig

# A source takes the text after ``name:`` (None if absent), the data folder and the cache folder.
Source = Callable[[str | None, Path, Path], LoadedData]
DATASETS: Registry[Source] = Registry("data set")

PROBE_TIMEOUT_S = 3.0  # reachability check before a download, so offline runs fail in seconds
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0  # per socket operation while downloading (not the whole file)
CIFAR10_JPEG = ("cifar10-jpeg.tar.gz", "cifar10-jpeg")


def load_dataset(name: str, data_dir: str | Path | None = None, *, cache_dir: str | Path | None = None) -> LoadedData:
    """Load data set ``name`` (``'cifar10'``, ``'imagefolder:<path>'``, ``'synthetic:size=28'``, ...).

    ``data_dir`` defaults to ``$BENCH_DATA_DIR`` else ``./data``; ``cache_dir`` (decoded images,
    decompressed files) to ``$BENCH_CACHE_DIR`` else ``~/.cache/ablation-bench``.
    """
    base, colon, arg = name.partition(":")
    source = DATASETS.get(base.strip())
    if colon and not DATASETS.meta(base.strip()).get("takes_arg"):
        raise UserError(f"data set {base!r} takes no options, got {name!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return source(arg.strip() if colon else None, root, cache)


def available_locally(name: str, data_dir: str | Path | None = None) -> bool:
    """True when ``name`` loads from ``data_dir`` without a download (synthetic data always does);
    looks at file names and sizes (and a gzip file's first two bytes), reads nothing else."""
    base, _, arg = name.partition(":")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    if base == "synthetic":
        return True
    if base == "imagefolder":
        path = Path(arg).expanduser()
        return bool(arg) and (path.exists() or (root / path).exists())
    cls = DATASETS.meta(base).get("torchvision") if base in DATASETS.names() else None
    if cls is None:
        return False
    tv = _tv_class(cls)
    expected = _expected_files(tv, root)
    if all(_has_bytes(p) for p in expected):
        return True
    if _is_mnist_like(tv) and all(_has_bytes(p) or _is_gzip(p.with_name(p.name + ".gz")) for p in expected):
        return True
    return base == "cifar10" and _find_cifar10_jpeg(root) is not None


def _has_bytes(path: Path) -> bool:
    """A file that exists and is not empty (an empty one is a failed copy, not a data set)."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _is_gzip(path: Path) -> bool:
    """A file that starts as gzip does (two bytes read; the rest is checked when it is loaded)."""
    try:
        with path.open("rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def stored_shape(dataset: str) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the images of ``dataset``, known without loading it: the registry's ``shape``
    for the named sets, the options for ``synthetic[:...]``; None when only loading can tell
    (image folders, unknown names). A loaded set has it as ``LoadedData.image_shape``."""
    base, _, arg = dataset.partition(":")
    base = base.strip()
    if base == "synthetic":
        spec = parse_spec(arg.strip() or None)
        return (spec.channels, spec.size, spec.size)
    return DATASETS.meta(base).get("shape") if base in DATASETS else None


def stored_train_size(dataset: str) -> int | None:
    """Training images of ``dataset`` before any split, known without loading it (as :func:`stored_shape`)."""
    base, _, arg = dataset.partition(":")
    if base.strip() == "synthetic":
        return parse_spec(arg.strip() or None).train
    return DATASETS.meta(base.strip()).get("train_size") if base.strip() in DATASETS else None


def input_shape(cfg: RunConfig, image_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The ``(C, H, W)`` the model sees for images of ``image_shape``: crop size, else resize size,
    else the images' own size (the loaders' output, :func:`~bench.data.dataset.output_size`)."""
    c, h, w = image_shape
    side = cfg.crop_size or cfg.image_size
    return (int(c), int(side or h), int(side or w))


@DATASETS.register("synthetic", takes_arg=True)
def _synthetic(arg: str | None, _data_dir: Path, _cache_dir: Path) -> LoadedData:
    """Deterministic class-template images (options after the colon); nothing read from disk."""
    return make_synthetic(arg, name=f"synthetic:{arg}" if arg else "synthetic")


@DATASETS.register("imagefolder", takes_arg=True)
def _imagefolder(arg: str | None, data_dir: Path, cache_dir: Path) -> LoadedData:
    """A ``train/<class>/*``, ``test/<class>/*`` folder or tar file."""
    if not arg:
        raise UserError("imagefolder needs a path: imagefolder:<folder or .tar/.tar.gz>")
    path = Path(arg).expanduser()
    # A relative path is tried as given, then inside the data folder.
    if not path.is_absolute() and not path.exists():
        if (data_dir / path).exists():
            path = data_dir / path
        else:
            check_source(path.absolute(), also=(data_dir / path).absolute())
    return load_imagefolder(path, cache_dir, name=f"imagefolder:{arg}")


# ---------------------------------------------------------------- torchvision sets


def _tv_class(cls_name: str) -> type[Any]:
    """torchvision's data set class ``cls_name``, imported when a set is looked for: torchvision pulls
    in torch._dynamo (~1.4 s of every start-up, also of commands that read no data)."""
    from torchvision import datasets

    return getattr(datasets, cls_name)


def _torchvision(name: str, cls_name: str, shape: tuple[int, int, int], train_size: int) -> None:
    def source(_arg: str | None, data_dir: Path, cache_dir: Path) -> LoadedData:
        return _load_torchvision(name, _tv_class(cls_name), data_dir, cache_dir)

    DATASETS.add(name, source, torchvision=cls_name, shape=shape, train_size=train_size)


# cifar10 also reads cifar10-jpeg.tar.gz from the data folder; the MNIST pair their raw .gz files.
_torchvision("cifar10", "CIFAR10", (3, 32, 32), 50_000)
_torchvision("cifar100", "CIFAR100", (3, 32, 32), 50_000)
_torchvision("mnist", "MNIST", (1, 28, 28), 60_000)
_torchvision("fashion_mnist", "FashionMNIST", (1, 28, 28), 60_000)


def _is_mnist_like(cls: type) -> bool:
    return issubclass(cls, _tv_class("MNIST"))


def _expected_files(cls: type[Any], root: Path) -> list[Path]:
    """The files torchvision's loader reads (decompressed raw files, or the CIFAR pickles)."""
    if _is_mnist_like(cls):
        raw = root / cls.__name__ / "raw"
        return [raw / Path(os.path.basename(url)).stem for url, _ in cls.resources]
    names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [root / cls.base_folder / n for n in names]


def _load_torchvision(name: str, cls: type[Any], data_dir: Path, cache_dir: Path) -> LoadedData:
    expected = _expected_files(cls, data_dir)
    note = ""
    root = data_dir
    if all(p.exists() for p in expected):
        pass
    elif _is_mnist_like(cls) and all(p.exists() or p.with_name(p.name + ".gz").exists() for p in expected):
        root, note = _decompress_raw(cls, data_dir, cache_dir)
    elif name == "cifar10" and (jpeg := _find_cifar10_jpeg(data_dir)) is not None:
        return load_imagefolder(
            jpeg,
            cache_dir,
            name="cifar10",
            note="lossy JPEG copy of CIFAR-10 (torchvision's cifar-10-batches-py not found)",
        )
    else:
        _download(name, cls, data_dir, expected)
    try:
        train_set = cls(str(root), train=True, download=False)
        test_set = cls(str(root), train=False, download=False)
    except RuntimeError as e:  # corrupted files: torchvision checks the CIFAR md5 sums
        raise UserError(f"{name}: cannot read {root}: {e}") from None
    train, test = _to_arrays(train_set), _to_arrays(test_set)
    mean, std = channel_stats(train.images)
    if _is_mnist_like(cls):
        files = _expected_files(cls, root)
        origin = f"raw files sha256 {sha256_files(files)[:16]}"
    else:
        origin = "md5-verified by torchvision"
    source = f"torchvision {cls.__name__} from {root} ({origin}){'; ' + note if note else ''}"
    return LoadedData(name=name, train=train, test=test, mean=mean, std=std, source=source)


def _to_arrays(ds: datasets.VisionDataset) -> ArrayDataset:
    """torchvision's in-memory ``data``/``targets`` -> uint8 NCHW :class:`ArrayDataset`."""
    data = torch.as_tensor(ds.data)
    images = data.unsqueeze(1) if data.ndim == 3 else data.permute(0, 3, 1, 2)  # MNIST NHW, CIFAR NHWC
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return ArrayDataset(images.contiguous(), labels, list(ds.classes))


def _find_cifar10_jpeg(data_dir: Path) -> Path | None:
    """The CIFAR-10 JPEG copy in ``data_dir``: a non-empty folder, or an archive that starts as a
    gzip file does (an empty or foreign file is not CIFAR-10 found)."""
    for n in CIFAR10_JPEG:
        p = data_dir / n
        try:
            if p.is_dir() and any(p.iterdir()):
                return p
            if p.is_file():
                with open(p, "rb") as f:
                    if f.read(2) == b"\x1f\x8b":
                        return p
        except OSError:
            continue
    return None


def _decompress_raw(cls: type[Any], data_dir: Path, cache_dir: Path) -> tuple[Path, str]:
    """Make the decompressed raw files exist; return the root torchvision should read and a note.

    Next to the ``.gz`` files when that folder is writable; otherwise under
    ``<cache>/raw/<sha256 of the .gz files>/<Name>/raw`` so a changed source never reuses a stale copy.
    """
    raw = data_dir / cls.__name__ / "raw"
    targets = _expected_files(cls, data_dir)
    gz = sorted(p.with_name(p.name + ".gz") for p in targets if not p.exists())
    if is_writable_dir(raw):
        root, out_raw = data_dir, raw
    else:
        key = sha256_files(gz)[:16]
        root = cache_dir / "raw" / key
        out_raw = root / cls.__name__ / "raw"
    for t in targets:
        dest = out_raw / t.name
        if dest.exists():
            continue
        if t.exists():  # already decompressed in the read-only folder: link it in
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(t.resolve(), dest)
            continue
        src = t.with_name(t.name + ".gz")
        try:
            with gzip.open(src, "rb") as fin:
                write_atomic(dest, lambda fout: shutil.copyfileobj(fin, fout, 1 << 20), binary=True)
        except (OSError, EOFError) as e:
            raise UserError(f"cannot decompress {src} into {out_raw}: {e} "
                            "(set BENCH_CACHE_DIR to a writable folder)") from e
    where = "in place" if out_raw == raw else f"into {out_raw}"
    return root, f"decompressed {len(gz)} .gz file(s) from {raw} {where}"


def _download(name: str, cls: type[Any], data_dir: Path, expected: list[Path]) -> None:
    """Try torchvision's downloader; offline or failing, raise a one-line UserError."""
    missing = [p for p in expected if not p.exists()]
    shown = ", ".join(str(p.relative_to(data_dir)) for p in missing[:4]) + (
        f" (+{len(missing) - 4} more)" if len(missing) > 4 else ""
    )
    alt = f" (or {CIFAR10_JPEG[0]})" if name == "cifar10" else ""
    rejected = [n for n in CIFAR10_JPEG if name == "cifar10" and (data_dir / n).exists()]
    if rejected:
        alt = f" (its {rejected[0]} is empty or not a gzip archive)"
    if _is_mnist_like(cls):
        alt = " (or the same files with .gz)"

    def fail(reason: str) -> UserError:
        return UserError(
            f"{name}: missing {shown}{alt} in {data_dir.resolve()} and the download failed ({reason}); "
            f"put a copy there or point --data-dir / BENCH_DATA_DIR at a folder that has it"
        )

    url = cls.mirrors[0] if _is_mnist_like(cls) else cls.url
    reachable, why = _reachable(url)
    if not reachable:
        raise fail(f"{urllib.parse.urlsplit(url).hostname} unreachable: {why}")
    if not is_writable_dir(data_dir):
        raise fail(f"{data_dir} is not writable")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT_S)  # urllib in torchvision sets none; a stalled server would hang
    try:
        cls(str(data_dir), train=True, download=True)
    except (RuntimeError, URLError, OSError) as e:
        raise fail(" ".join(str(e).split())[:200]) from None
    finally:
        socket.setdefaulttimeout(old)


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` (DNS included).

    Runs in a daemon thread because ``getaddrinfo`` ignores socket timeouts and can hang offline.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    result: list[tuple[bool, str]] = []

    def probe() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            result.append((True, ""))
        except OSError as e:
            result.append((False, str(e) or type(e).__name__))

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return result[0] if result else (False, f"no answer in {timeout:.0f} s")


_reachable = reachable  # the name the downloader calls (tests replace it to stay offline)
