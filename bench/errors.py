"""Errors that are the user's to fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the user's input (unknown name, bad value, missing data). No traceback."""


def unknown_value(kind: str, value: object, accepted: Iterable[str], limit: int = 12) -> UserError:
    """Build the standard 'unknown X' error naming close matches and the accepted values."""
    accepted = sorted(accepted)
    close = difflib.get_close_matches(str(value), accepted, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(accepted[:limit]) + (f", ... ({len(accepted)} in all)" if len(accepted) > limit else "")
    return UserError(f"unknown {kind} {value!r}{hint} (accepted: {shown})")
