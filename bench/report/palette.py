"""One colour mapping per report, so an arm (or a tag value such as depth=56) has the same colour in
every figure."""

from __future__ import annotations

import numbers
from typing import Any

import seaborn as sns

_FALLBACK = "#7f7f7f"


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


class Palette:
    """Colours for arms (categorical) and for tag values (sequential when numeric)."""

    def __init__(self, arms: list[str], tags: dict[str, list[Any]] | None = None) -> None:
        n = max(len(arms), 1)
        # tab10 is the most distinguishable up to 10; husl keeps hues apart beyond that.
        colours = sns.color_palette("tab10" if n <= 10 else "husl", n)
        self.arms: dict[str, str] = {a: _hex(c) for a, c in zip(arms, colours, strict=True)}
        self.tags: dict[str, dict[Any, str]] = {}
        for col, values in (tags or {}).items():
            uniq = list(dict.fromkeys(values))
            if uniq and all(_is_number(v) for v in uniq):
                uniq = sorted(uniq)
                # Sequential: deeper nets / larger batches get darker shades.
                cols = sns.color_palette("viridis_r" if len(uniq) > 2 else "dark", len(uniq))
            else:
                cols = sns.color_palette("Set1" if len(uniq) <= 9 else "husl", len(uniq))
            self.tags[col] = {v: _hex(c) for v, c in zip(uniq, cols, strict=True)}

    def arm(self, label: str) -> str:
        """The arm's colour (grey for an arm not known when the palette was built)."""
        return self.arms.get(label, _FALLBACK)

    def tag(self, col: str, value: Any) -> str:
        """The colour of one value of a tag column (``tag_depth``, ``tag_norm``, ...)."""
        mapping = self.tags.get(col, {})
        if value in mapping:
            return mapping[value]
        for k, c in mapping.items():  # tags read back from CSV may be str while cells hold int
            if str(k) == str(value):
                return c
        return _FALLBACK


def _hex(rgb: tuple[float, float, float]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * x)) for x in rgb[:3]))
