"""Numbers as people read them in a terminal line or a table cell (one formatter for durations)."""

from __future__ import annotations


def human_duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h', '4.0 d', '1.2e+06 y'; '?' when unknown."""
    if not seconds == seconds:
        return "?"
    for unit, size in (("y", 365.25 * 86400), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            v = seconds / size
            return f"{v:.3g} {unit}" if v < 1e4 else f"{v:.2g} {unit}"
    return f"{max(seconds, 0.0):.0f} s"
