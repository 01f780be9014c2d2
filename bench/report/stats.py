"""Small statistics for the report: mean, std and a t-based 95% interval over seeds.

scipy is not a dependency, so the two-sided 97.5% t quantile comes from a table (exact to 3
decimals for df <= 30, then interpolated in 1/df, which is how printed tables are read).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
_Z975 = 1.959964


def t975(df: int) -> float:
    """Two-sided 95% quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo_df, lo_t, hi_inv, hi_t = 120, _T975[120], 0.0, _Z975
    else:
        lo_df = max(k for k in keys if k < df)
        hi_df = min(k for k in keys if k > df)
        lo_t, hi_inv, hi_t = _T975[lo_df], 1.0 / hi_df, _T975[hi_df]
    # Linear in 1/df between the two table rows.
    w = (1.0 / lo_df - 1.0 / df) / (1.0 / lo_df - hi_inv)
    return lo_t + w * (hi_t - lo_t)


@dataclass(frozen=True)
class Spread:
    """Summary of one metric over seeds; ``lo``/``hi`` are None when n < 2 (no interval)."""

    n: int
    mean: float
    std: float
    lo: float | None
    hi: float | None

    def fmt(self, digits: int = 2) -> str:
        """'7.12 ± 0.31' (or '7.12' for one seed, '—' for none)."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def fmt_ci(self, digits: int = 2) -> str:
        """'[6.4, 7.8]' or '—' when there is no interval."""
        if self.lo is None or self.hi is None:
            return "—"
        return f"[{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


def spread(values: Iterable[float | None]) -> Spread:
    """Mean, sample std and 95% t interval of the finite values (NaN/None are left out)."""
    vals = np.array([float(v) for v in values if v is not None and _finite(v)], dtype=float)
    n = int(vals.size)
    if n == 0:
        return Spread(0, math.nan, math.nan, None, None)
    mean = float(vals.mean())
    if n == 1:
        return Spread(1, mean, math.nan, None, None)
    std = float(vals.std(ddof=1))
    half = t975(n - 1) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


def _finite(v: object) -> bool:
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
