"""Statistics over seeds, with scipy: mean, std and 95% t interval of one arm; the difference of two
arms' means (paired by seed when both sides ran the same seeds, else Welch) or of one arm against a
reference value; the slope of a metric over a numeric tag, one slope per seed (the seed is the unit
of replication: runs of one seed share its data order and initialisation). Every interval is
two-sided, 95% unless ``level`` says otherwise (a group-sequential look uses a wider one, see
:mod:`bench.report.power`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

LEVEL = 0.95
Floats = Sequence[float] | np.ndarray  # a side's values: a list, or a column as an array
Ints = Sequence[int] | np.ndarray


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
    vals = finite(values)
    n = int(vals.size)
    if n == 0:
        return Spread(0, math.nan, math.nan, None, None)
    mean = float(vals.mean())
    if n == 1:
        return Spread(1, mean, math.nan, None, None)
    std = float(vals.std(ddof=1))
    half = float(st.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Estimate:
    """An effect with its 95% interval: a difference of means or a slope, in the metric's units.

    ``method`` says how it was computed ('paired', 'Welch', 'one-sample', 'slope'); ``n`` is the
    number of pairs, the runs per side ('3 vs 2'), or the number of points of a slope.
    """

    value: float
    lo: float
    hi: float
    p: float
    n: str
    method: str

    def fmt(self, digits: int = 2) -> str:
        """'+3.21 [1.02, 5.40]'."""
        return f"{self.value:+.{digits}f} [{self.lo:+.{digits}f}, {self.hi:+.{digits}f}]"


def difference(a: Floats, b: Floats, seeds_a: Ints | None = None, seeds_b: Ints | None = None,
               level: float = LEVEL) -> Estimate:
    """mean(a) - mean(b). Paired over seeds when both sides hold one value per seed for the same
    seeds (seed-to-seed noise such as the data order then cancels), else Welch's unequal-variance
    test. Each side needs >= 2 values (ValueError otherwise)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(a_arr.size, b_arr.size) < 2:
        raise ValueError("each side needs at least 2 values")
    if seeds_a is not None and seeds_b is not None and _same_seeds(seeds_a, seeds_b):
        order_a, order_b = np.argsort(seeds_a), np.argsort(seeds_b)
        d = a_arr[order_a] - b_arr[order_b]
        return _one_sample(d, 0.0, method="paired", n=str(d.size), level=level)
    diff = float(a_arr.mean() - b_arr.mean())
    n = f"{a_arr.size} vs {b_arr.size}"
    va, vb = a_arr.var(ddof=1) / a_arr.size, b_arr.var(ddof=1) / b_arr.size
    if va + vb == 0:  # no spread on either side (e.g. counts): the difference is exact
        return Estimate(diff, diff, diff, 0.0 if diff else 1.0, n, "Welch")
    res = st.ttest_ind(a_arr, b_arr, equal_var=False)
    ci = res.confidence_interval(level)
    return Estimate(diff, float(ci.low), float(ci.high), float(res.pvalue), n, "Welch")


def against(values: Sequence[float], reference: float, level: float = LEVEL) -> Estimate:
    """mean(values) - reference, with the one-sample t interval (>= 2 values; exact when the values
    do not vary, e.g. a parameter count)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 1:
        raise ValueError("no values")
    return _one_sample(arr, reference, method="one-sample", n=str(arr.size), level=level)


def slope(x: Sequence[float], y: Sequence[float]) -> Estimate:
    """Least-squares slope of y over x (units of y per unit of x) with its t interval (n - 2 df).
    Needs >= 3 points and >= 2 distinct x (ValueError otherwise)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.size < 3 or np.unique(xa).size < 2:
        raise ValueError("a slope needs at least 3 points at 2 or more distinct x")
    res = st.linregress(xa, ya)
    half = float(st.t.ppf(0.5 + LEVEL / 2, xa.size - 2)) * float(res.stderr)
    return Estimate(float(res.slope), float(res.slope) - half, float(res.slope) + half, float(res.pvalue),
                    str(xa.size), "slope")


def seed_slopes(x: Floats, y: Floats, seeds: Ints) -> tuple[np.ndarray, list[int]]:
    """One least-squares slope of y over x per seed (units of y per unit of x), for the seeds that
    ran at every distinct x; returns (slopes, the seeds used), in seed order."""
    xa, ya, sa = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(seeds)
    levels = np.unique(xa)
    out, used = [], []
    for s in sorted(set(sa.tolist())):
        m = sa == s
        if levels.size < 2 or not np.array_equal(np.unique(xa[m]), levels):
            continue  # a seed that misses a level would tilt its slope by the levels it has
        out.append(float(np.polyfit(xa[m], ya[m], 1)[0]))
        used.append(int(s))
    return np.array(out, dtype=float), used


def slope_over_seeds(x: Floats, y: Floats, seeds: Ints, level: float = LEVEL) -> Estimate:
    """The mean of the per-seed slopes (:func:`seed_slopes`) with its one-sample t interval over
    seeds (n - 1 df, n = seeds): runs of one seed are not independent, so the seed, not the run, is
    the unit. With two levels of x each seed's slope is its paired difference over the x step, so the
    test is the paired test of the two arms. Needs >= 2 seeds with every level (ValueError)."""
    slopes, used = seed_slopes(x, y, seeds)
    if slopes.size < 2:
        raise ValueError("per-seed slopes need at least 2 seeds that ran at every level")
    return _one_sample(slopes, 0.0, method="per-seed slopes", n=str(slopes.size), level=level)


def finite(values: Iterable[object]) -> np.ndarray:
    """The finite numbers among ``values`` (None, NaN and non-numbers left out)."""
    out = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.array(out, dtype=float)


def _same_seeds(a: Ints, b: Ints) -> bool:
    return len(set(a)) == len(a) and len(set(b)) == len(b) and set(a) == set(b)


def _one_sample(values: np.ndarray, reference: float, *, method: str, n: str, level: float = LEVEL) -> Estimate:
    diff = float(values.mean() - reference)
    if values.size < 2 or float(values.std()) == 0.0:
        if values.size < 2 and method != "one-sample":
            raise ValueError("at least 2 values needed")
        # Constant values: the estimate has no sampling spread (exact), or one value (no interval
        # but exact when the caller says the metric does not depend on the seed).
        return Estimate(diff, diff, diff, 0.0 if diff else 1.0, n, method)
    res = st.ttest_1samp(values, reference)
    ci = res.confidence_interval(level)
    return Estimate(diff, float(ci.low) - reference, float(ci.high) - reference, float(res.pvalue), n, method)
