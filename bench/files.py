"""Files written whole or not at all, and JSON without NaN: the one atomic writer of the package.

Every record, cache entry, checkpoint, artifact file and report goes through :func:`write_atomic`
(a temporary file in the same folder, fsync, ``os.replace``), so a reader, including a concurrent
runner of the same study, sees either no file or a whole one. :func:`clean_json` is the one place
where NaN and infinities (invalid JSON) become ``null``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from bench.faults import fault_point

_HOST = socket.gethostname().replace("~", "-")
_TEMP_NAME = re.compile(r"^\..+~(.+)~(\d+)~[^.~]+\.tmp$")  # .<name>~<host>~<pid>~<random>.tmp
TEMP_GLOB = ".*.tmp"  # every temp file of write_atomic (and of other writers that hide theirs)
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | Path, data: str | bytes | Callable[[IO[Any]], None], *,
                 binary: bool | None = None) -> Path:
    """Write ``data`` to ``path`` through a temp file and ``os.replace`` (never half a file).

    ``data`` is text, bytes, or a callable that writes into the open file (``binary`` then says
    whether the file is opened in binary mode; default binary). The file gets the permissions of an
    ordinary file under the umask: records and caches are shared on cluster file systems, and
    ``mkstemp`` alone would make them 0600.
    """
    path = Path(path)
    if binary is None:
        binary = not isinstance(data, str)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's host and pid in the name: a temp file of a process gone from this host was left
    # by a kill, and the next writer of the folder removes it (bench.store), however young it is.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{_HOST}~{os.getpid()}~", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point(f"write:{path.name}")  # BENCH_FAULT=write:<name>: a kill with the temp file whole
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        refused = _os_error_behind(exc)
        if refused is None:
            raise
        # The file system refused (full, read-only): say so and name the file, also where a library
        # writer (torch.save) wrapped the OSError in an error of its own.
        raise OSError(refused.errno, refused.strerror or str(refused), str(path)) from exc
    return path


def temp_writer_here(name: str) -> int | None:
    """The pid of the process of this host that writes the temp file ``name`` (as
    :func:`write_atomic` names it); None for another host's file or a name it did not give."""
    m = _TEMP_NAME.match(name)
    return int(m.group(2)) if m is not None and m.group(1) == _HOST else None


def _os_error_behind(exc: BaseException) -> OSError | None:
    """The OSError that ``exc`` is or was raised from (its cause or context chain), else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno is not None:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def clean_json(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by None and numpy/torch scalars by Python ones, recursively."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return clean_json(obj.item())  # numpy / torch scalars
    return obj


def dumps_json(obj: Any) -> str:
    """Canonical record JSON: NaN as null, sorted keys, indented, one trailing newline."""
    return json.dumps(clean_json(obj), indent=2, sort_keys=True, default=str) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomic JSON write (sorted keys, NaN written as null)."""
    return write_atomic(path, dumps_json(obj))


MAX_JSON_BYTES = 64 << 20  # a record, cache entry or claim is kilobytes; more is not ours
MAX_JSON_DEPTH = 32  # the deepest record (a summary's measurements) nests 4 levels


class RecordTooLarge(ValueError):
    """A JSON file beyond :data:`MAX_JSON_BYTES` or nested deeper than :data:`MAX_JSON_DEPTH`."""


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The parsed JSON at ``path``, bounded: FileNotFoundError as ``open`` raises it, ValueError for
    text that is not JSON, :class:`RecordTooLarge` (a ValueError) for a file over ``max_bytes`` or
    nested deeper than ``max_depth`` (so that no reader recurses without end on a crafted file)."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RecordTooLarge(f"larger than {max_bytes} bytes")
    try:
        value = json.loads(data)
    except RecursionError:
        raise RecordTooLarge(f"nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from None
    if json_depth(value) > max_depth:
        raise RecordTooLarge(f"nested deeper than {max_depth} levels")
    return value


def json_depth(value: Any) -> int:
    """How deep lists and dicts nest in ``value`` (0 for a scalar), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is None:
            continue
        deepest = max(deepest, d)
        stack.extend((c, d + 1) for c in children)
    return deepest
