"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2.

:func:`error_line` is the one place where any exception becomes what a command prints: a user's
mistake or a refusal of the file system is one line (exit 2); anything else is a bug of ours, said
in one short line naming where it happened and where to report it (exit 1), never a traceback.
"""

from __future__ import annotations

import difflib
import os
import tempfile
import traceback
from collections.abc import Iterable

REPORT_TO = "the project's issue tracker with the command line"  # where a bug goes
EXIT_USER = 2  # a mistake in the input, or the file system refused: one line
EXIT_BUG = 1  # an error of ours: one line naming where, the traceback kept in a file


class UserError(Exception):
    """A mistake in the user's input (unknown name, bad value, missing data). No traceback."""


def unknown_value(kind: str, value: object, accepted: Iterable[str], limit: int = 12) -> UserError:
    """Build the standard 'unknown X' error naming close matches and the accepted values."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(str(value), accepted, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(accepted[:limit]) + (f", ... ({len(accepted)} in all)" if len(accepted) > limit else "")
    return UserError(f"unknown {kind} {value!r}{hint} (accepted: {shown})")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message (its type name when it has none)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def reason(exc: BaseException, limit: int = 300) -> str:
    """'TypeName: first line' of ``exc``, at most ``limit`` characters: the one way an exception is
    said in a line that records or notes keep (a failed run, measurement, figure, variant, capture,
    cleanup; a damaged file)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    msg = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def error_line(exc: BaseException) -> tuple[str, int]:
    """(the one line a command prints for ``exc``, its exit code).

    A :class:`UserError` is its message; an OSError (read-only, full or vanished file system) its
    reason and file; running out of memory says so with what to make smaller. Any other exception is
    a bug: where it was raised (file and line of the package) and where to report it, with the full
    traceback written to a file in the temp folder.
    """
    if isinstance(exc, UserError):
        return f"bench: error: {first_line(exc)}", EXIT_USER
    if isinstance(exc, OSError):  # also a network that refuses (ConnectionError, TimeoutError)
        where = f": {exc.filename}" if exc.filename else ""
        return (f"bench: error: {exc.strerror or first_line(exc)}{where} "
                "(finished records are kept; fix this and rerun)"), EXIT_USER
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return (f"bench: error: out of memory ({first_line(exc)}); accepted: sizes that fit this machine "
                "(a smaller batch, image or model)"), EXIT_USER
    return f"bench: internal error: {type(exc).__name__}: {first_line(exc)[:300]} at {_where(exc)}" \
           f"{_saved_traceback(exc)}; this is a bug of bench, please report it to {REPORT_TO}", EXIT_BUG


def _where(exc: BaseException) -> str:
    """``file:line`` of the innermost frame inside this package (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "an unknown place"
    package = os.path.dirname(os.path.abspath(__file__))
    ours = [f for f in frames if os.path.abspath(f.filename).startswith(package + os.sep)]
    f = (ours or frames)[-1]
    name = os.path.relpath(f.filename, os.path.dirname(package)) if ours else f.filename
    return f"{name}:{f.lineno}"


def _saved_traceback(exc: BaseException) -> str:
    """Write the full traceback to a temp file; ' (traceback in <file>)', or '' when it cannot be."""
    try:
        fd, path = tempfile.mkstemp(prefix="bench-error-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    except OSError:
        return ""
    return f" (traceback in {path})"
