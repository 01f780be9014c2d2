"""Image-folder data sets (``train/<class>/*``, ``test/<class>/*``), from a folder or a tar archive.

Images are decoded once with PIL in a process pool and the uint8 arrays are cached as one ``.npz``
in the cache folder, keyed by the source's content (sha256 of the archive bytes, or of a folder's
file list with sizes and mtimes), so later loads are a single file read.
"""

from __future__ import annotations

import collections
import hashlib
import io
import logging
import multiprocessing
import os
import sys
import tarfile
import time
import zipfile
import zlib
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.data.dataset import ArrayDataset, LoadedData, channel_stats, sha256_files
from bench.errors import UserError, reason
from bench.files import write_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
CACHE_VERSION = "imagefolder-v1"  # bump when the cached arrays' meaning changes: older caches are decoded again
_CHUNK = 1000  # images per decode task: large enough that pickling overhead is negligible
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")

# (split, class, file name) -> bytes (from an archive) or a path (from a folder)
_Key = tuple[str, str, str]


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a tar archive this module reads."""
    return path.name.lower().endswith(_TAR_SUFFIXES)


def content_key(path: Path) -> str:
    """sha256 identifying the source's content: archive bytes, or a folder's (path, size, mtime) list."""
    if path.is_file():
        return sha256_files([path])
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            p = Path(root) / f
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def load_imagefolder(path: Path, cache_dir: Path, *, name: str | None = None, note: str = "") -> LoadedData:
    """Load an image folder or tar archive of one, decoding at most once per content (cached)."""
    path = Path(path).expanduser().absolute()
    check_source(path)
    path = path.resolve()
    key = content_key(path)
    stem = path.name.split(".")[0] or "data"
    cache_file = Path(cache_dir) / "imagefolder" / f"{stem}-{key[:16]}.npz"
    arrays = _read_cache(cache_file, key)
    how = "cached"
    if arrays is None:
        how = "decoded"
        arrays = _decode(path)
        arrays["key"] = np.array(key)
        arrays["version"] = np.array(CACHE_VERSION)
        try:
            # numpy's stub types **arrays as if one of them could be allow_pickle
            write_atomic(cache_file, lambda f: np.savez(f, **arrays), binary=True)  # type: ignore[arg-type]
        except OSError as e:  # an unwritable cache only costs time on the next load
            _warn(f"could not write the decoded-image cache {cache_file} ({e.strerror or e}); decoding again next time")
    classes = [str(c) for c in arrays["classes"]]
    train = ArrayDataset(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]), classes)
    test = ArrayDataset(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]), classes)
    extra = str(arrays["note"])
    source = f"image folder {path} (sha256 {key[:16]}, {how}: {cache_file}){'; ' + extra if extra else ''}"
    return LoadedData(
        name=name or f"imagefolder:{path}",
        train=train,
        test=test,
        mean=tuple(float(v) for v in arrays["mean"]),
        std=tuple(float(v) for v in arrays["std"]),
        source=source + (f"; {note}" if note else ""),
    )


def check_source(path: Path, also: Path | None = None) -> None:
    """UserError naming why ``path`` cannot be an image folder: missing (and where else it was looked
    for, ``also``), under a file, unreadable, an empty file or not a tar archive by its name."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        looked = f" (nor {str(also)!r})" if also is not None else ""
        raise UserError(f"image folder {str(path)!r}{looked} does not exist (accepted: a folder or "
                        f"{'/'.join(_TAR_SUFFIXES)} archive with train/<class>/ and test/<class>/)") from None
    except NotADirectoryError:
        above = next((p for p in path.parents if p.is_file()), None)
        raise UserError(f"image folder {str(path)!r} cannot exist: {str(above)!r} is a file, not a folder "
                        "(accepted: a folder or tar archive)") from None
    except OSError as exc:
        raise UserError(f"image folder {str(path)!r} cannot be read ({exc.strerror or exc}) "
                        "(accepted: a readable folder or tar archive)") from None
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise UserError(f"image folder {str(path)!r} cannot be read (permission denied) "
                            "(accepted: a readable folder or tar archive)")
        return
    if not is_archive(path):
        raise UserError(f"{str(path)!r} is neither a folder nor a tar archive (accepted: a folder, "
                        f"{', '.join(_TAR_SUFFIXES)})")
    if st.st_size == 0:
        raise UserError(f"cannot read archive {str(path)!r}: an empty file (accepted: a whole tar archive)")


def _read_cache(cache_file: Path, key: str) -> dict[str, np.ndarray] | None:
    if not cache_file.exists():
        return None
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if str(arrays["key"]) != key:
            raise ValueError("content key mismatch")
        made_by = str(arrays.pop("version", "imagefolder-v1"))  # caches from before the mark are v1
        if made_by != CACHE_VERSION:
            raise ValueError(f"made as {made_by}, this loader reads {CACHE_VERSION}")
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # an empty file: EOFError
        _warn(f"ignoring unreadable image cache {cache_file} ({' '.join(str(e).split())[:200]}); decoding again")
        return None


def _warn(message: str) -> None:
    """One line on stderr (a Python warning would add the source line under it)."""
    print(f"bench: warning: {message}", file=sys.stderr)


def _decode(path: Path) -> dict[str, np.ndarray]:
    """Decode every image of the layout into uint8 NCHW arrays plus labels, classes and stats."""
    t0 = time.perf_counter()
    log.info("decoding images from %s (once; cached afterwards)", path)
    keys: list[_Key] = []
    prefixes: list[str] = []
    futures: list[Future[list[np.ndarray | str]]] = []
    pending: list[bytes | str] = []
    with _pool() as pool:

        def submit() -> None:
            futures.append(pool.submit(_decode_chunk, list(pending)))
            pending.clear()

        # Decoding runs in the pool while the archive is still being read (reading is ~1/3 of the time).
        for prefix, k, item in _entries(path):
            keys.append(k)
            prefixes.append(prefix)
            pending.append(item)
            if len(pending) >= _CHUNK:
                submit()
        if pending:
            submit()
        decoded = [a for fut in futures for a in fut.result()]
    keep = _choose_layout(path, prefixes)
    records: list[tuple[tuple[str, str, str], np.ndarray]] = []
    for k, a, p in zip(keys, decoded, prefixes, strict=True):
        if p != keep:
            continue
        if isinstance(a, str):
            split, cls, fname = k
            raise UserError(f"cannot decode image {split}/{cls}/{fname} in {path}: {a}")
        records.append((k, a))
    out = _assemble(path, records)
    log.info("decoded %d images in %.1f s", sum(len(out[f"{s}_labels"]) for s in SPLITS), time.perf_counter() - t0)
    return out


def _entries(path: Path):
    """Yield ``(prefix, (split, class, file), bytes | path)`` for every image-like entry."""
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                p = Path(root) / f
                parsed = _parse(p.relative_to(path).as_posix())
                if parsed:
                    yield parsed[0], parsed[1], str(p)
        return
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                parsed = _parse(m.name) if m.isfile() else None
                if parsed:
                    member = tf.extractfile(m)
                    assert member is not None
                    yield parsed[0], parsed[1], member.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        why = "not a tar archive, or a compressed one cut short" if isinstance(e, tarfile.ReadError) else \
            " ".join(str(e).split())[:200] or type(e).__name__
        raise UserError(f"cannot read archive {str(path)!r}: {why} (accepted: a whole "
                        f"{'/'.join(_TAR_SUFFIXES)} archive)") from None


def _parse(rel: str) -> tuple[str, _Key] | None:
    """``[top/]split/class/file.ext`` -> ``(top, (split, class, file))``; anything else -> None."""
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) not in (3, 4):
        return None
    prefix = parts[0] if len(parts) == 4 else ""
    split, cls, fname = parts[-3:]
    if split not in SPLITS or fname.startswith(".") or Path(fname).suffix.lower() not in IMAGE_EXTS:
        return None
    return prefix, (split, cls, fname)


def _choose_layout(path: Path, prefixes: list[str]) -> str:
    """The one top folder holding ``train/`` and ``test/`` (``''`` when they are at the root)."""
    found = collections.Counter(prefixes)
    if "" in found:
        return ""
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise UserError(
            f"no images found in {path}: expected train/<class>/<image> and test/<class>/<image>, "
            "optionally inside one top folder"
        )
    raise UserError(f"{path} holds several top folders with train/ and test/ ({', '.join(sorted(found))}); keep one")


def _assemble(path: Path, records: list[tuple[_Key, np.ndarray]]) -> dict[str, np.ndarray]:
    by_split = {s: sorted((k for k in records if k[0][0] == s), key=lambda r: r[0]) for s in SPLITS}
    for s in SPLITS:
        if not by_split[s]:
            raise UserError(f"no {s}/<class>/<image> files found in {path}")
    classes = sorted({k[1] for k, _ in by_split["train"]})
    if len(classes) < 2:
        raise UserError(f"{path} has {len(classes)} class ({', '.join(classes)}) in train/: nothing to classify "
                        "(accepted: train/<class>/ folders for 2 or more classes)")
    unknown = sorted({k[1] for k, _ in by_split["test"]} - set(classes))
    if unknown:
        raise UserError(f"test classes not in train in {path}: {', '.join(unknown)}")
    # One array needs one shape: the most common size wins, colour wins over grey.
    all_arrays = [a for s in SPLITS for _, a in by_split[s]]
    color = any(a.ndim == 3 for a in all_arrays)
    size = collections.Counter(a.shape[:2] for a in all_arrays).most_common(1)[0][0]
    resized = 0
    out: dict[str, np.ndarray] = {}
    index = {c: i for i, c in enumerate(classes)}
    for s in SPLITS:
        imgs = []
        for _, a in by_split[s]:
            if a.shape[:2] != size:
                a = np.asarray(Image.fromarray(a).resize((size[1], size[0]), Image.Resampling.BILINEAR))
                resized += 1
            if color and a.ndim == 2:
                a = np.repeat(a[:, :, None], 3, axis=2)
            imgs.append(a if a.ndim == 3 else a[:, :, None])
        out[f"{s}_images"] = np.ascontiguousarray(np.stack(imgs).transpose(0, 3, 1, 2))
        out[f"{s}_labels"] = np.array([index[k[1]] for k, _ in by_split[s]], dtype=np.int64)
    mean, std = channel_stats(torch.from_numpy(out["train_images"]))
    out["classes"] = np.array(classes)
    out["mean"] = np.array(mean, dtype=np.float64)
    out["std"] = np.array(std, dtype=np.float64)
    out["note"] = np.array(f"resized {resized} images to {size[0]}x{size[1]}" if resized else "")
    return out


def _decode_chunk(items: list[bytes | str]) -> list[np.ndarray | str]:
    """Decode images (bytes or paths) to uint8 HxW (grey) or HxWx3 arrays; an error becomes its message."""
    out: list[np.ndarray | str] = []
    for item in items:
        try:
            with Image.open(io.BytesIO(item) if isinstance(item, bytes) else item) as opened:
                im: Image.Image = opened
                if im.mode in ("1", "I", "I;16", "F"):
                    im = im.convert("L")
                elif im.mode not in ("L", "RGB"):
                    im = im.convert("RGB")
                out.append(np.array(im, dtype=np.uint8))
        except Exception as e:  # noqa: BLE001 - reported with the file's name by the caller
            out.append(reason(e))
    return out


class _InlineExecutor(Executor):
    """Runs tasks at submission; used when a pool would not pay for itself."""

    def submit(self, fn, /, *args, **kwargs):
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def _pool() -> Executor:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    if n < 2:
        return _InlineExecutor()
    # fork starts workers in milliseconds and they only need PIL/numpy; elsewhere spawn is the safe default.
    Image.init()  # load PIL's format plugins once, before forking, not lazily in every worker
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context(method))
