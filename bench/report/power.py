"""How many seeds: the power of a claim's test, and a group-sequential design for adding seeds until
each claim is decided.

**Power.** :func:`seeds_needed` gives the seeds per arm for which the test a verdict uses (paired,
Welch, one-sample or per-seed slopes; two-sided, 95%) rejects "no effect" with probability 0.8 when
the true effect equals the claim's smallest effect, from statsmodels' t-test power functions. For a
'within' claim it is the seeds for which each of the two one-sided tests at 2.5% (the 95% interval's
two ends) has power 0.9 against a true difference of zero: both then hold with probability >= 0.8.

**Optional stopping.** Looking after each added seed and stopping once the 95% interval clears zero
makes "reproduced" more likely than 5% when there is no effect. :class:`Design` is a group-sequential
design fixed before the first look: looks at n0, n0 + 1, ..., n_max seeds per arm (information
fractions n / n_max), two-sided alpha 0.05 spent over the looks by a Lan-DeMets spending function
(O'Brien-Fleming by default, or Pocock). The normal theory's z boundaries (:func:`boundaries`, the
recursive numerical integration of Armitage, McPherson & Rowe 1969) assume many seeds; with 2 to 10
seeds their nominal levels applied to t tests spend more than alpha, so the design's boundaries are
set on the t statistics themselves, by simulation under no effect (:func:`t_boundaries`). A look at
n seeds is judged on the repeated confidence interval (Jennison & Turnbull 1989) at level 1 - the
look's nominal alpha, with the verdict's own t test. The verdict rule is unchanged, only the
interval widens.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as st

from bench.errors import UserError

ALPHA = 0.05  # two-sided, the verdicts' 95%
POWER = 0.8
SPENDING = ("obrien-fleming", "pocock")  # the first is the default
SPENDING_NAMES = {"obrien-fleming": "O'Brien-Fleming", "pocock": "Pocock"}
MAX_SEEDS = 1000  # a bound for the power search; more is reported as "more than"


def seeds_needed(method: str, effect: float, sd: float, *, direction: str = "greater",
                 alpha: float = ALPHA, power: float = POWER) -> float:
    """Seeds per arm (pairs for 'paired', seeds for 'per-seed slopes' and 'one-sample') for the test
    ``method`` to reach ``power`` at ``effect`` (the smallest effect, in the metric's units) given the
    seed-to-seed standard deviation ``sd`` in the same units: of the per-seed differences (paired),
    of one arm's values (Welch: the pooled sd of the two arms, equal seeds per arm), of the values
    (one-sample) or of the per-seed slopes. Rounded up; NaN when ``effect`` or ``sd`` is not > 0 and
    finite (no smallest effect or no spread: nothing to size), inf past :data:`MAX_SEEDS`."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if method not in ("paired", "Welch", "one-sample", "per-seed slopes"):
        raise ValueError(f"no power calculation for test {method!r}")
    if not (effect > 0 and sd > 0 and math.isfinite(effect) and math.isfinite(sd)):
        return math.nan
    d = effect / sd
    if direction == "within":  # two one-sided tests at alpha/2, each at 1 - (1 - power)/2: both hold w.p. >= power
        alpha, power, alternative = alpha / 2, 1 - (1 - power) / 2, "larger"
    else:
        alternative = "two-sided"

    def reaches(n: int) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' noncentral t warns far in the tails
            if method == "Welch":
                got = TTestIndPower().power(effect_size=d, nobs1=n, alpha=alpha, alternative=alternative)
            else:
                got = TTestPower().power(effect_size=d, nobs=n, alpha=alpha, alternative=alternative)
        return bool(got >= power)

    # the smallest n with enough power, counting up from 2 (a t test needs 2): statsmodels' power
    # grows with n but turns NaN where it is within 1e-15 of 1, far past the first n that reaches
    # it, and its solve_power gives up below 2 (both break a bisection or a root search)
    for n in range(2, MAX_SEEDS + 1):
        if reaches(n):
            return float(n)
    return math.inf


def achieved_power(method: str, effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """The power of the two-sided test ``method`` with ``n`` seeds per arm at ``effect`` (statsmodels)."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if method == "Welch":
        return float(TTestIndPower().power(effect_size=effect / sd, nobs1=n, alpha=alpha, alternative="two-sided"))
    return float(TTestPower().power(effect_size=effect / sd, nobs=n, alpha=alpha, alternative="two-sided"))


def spend(t: float | np.ndarray, kind: str = SPENDING[0], alpha: float = ALPHA) -> Any:
    """Cumulative two-sided alpha spent by information fraction ``t`` (0..1), Lan-DeMets:
    O'Brien-Fleming 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)); Pocock alpha ln(1 + (e - 1) t)."""
    t = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    if kind == "obrien-fleming":
        with np.errstate(divide="ignore"):
            return 2 * st.norm.sf(st.norm.isf(alpha / 2) / np.sqrt(t))
    if kind == "pocock":
        return alpha * np.log1p((math.e - 1) * t)
    raise UserError(f"unknown alpha spending {kind!r} (accepted: {', '.join(SPENDING)})")


@lru_cache(maxsize=256)
def boundaries(fractions: tuple[float, ...], kind: str = SPENDING[0], alpha: float = ALPHA) -> tuple[float, ...]:
    """Two-sided z boundaries c_k of a group-sequential test at the increasing information
    ``fractions`` (last one 1): under no effect, P(|Z_j| < c_j for j < k, |Z_k| >= c_k) is the alpha
    spent between looks k - 1 and k. Recursive numerical integration on a grid of the continuation
    region (Armitage, McPherson & Rowe 1969)."""
    t = np.asarray(fractions, dtype=float)
    if t.size == 0 or np.any(np.diff(t) <= 0) or not 0 < t[0] <= t[-1] <= 1:
        raise ValueError(f"information fractions must increase within (0, 1], got {fractions}")
    cum = spend(t, kind, alpha)
    grid_n = 801
    cs: list[float] = []
    dens: np.ndarray | None = None  # density of Z_{k-1} on its continuation grid
    z_prev = np.empty(0)
    for k in range(t.size):
        target = float(cum[k] - (cum[k - 1] if k else 0.0))
        if target <= 1e-12:
            cs.append(math.inf)  # nothing spent: this look cannot reject
            c = 40.0
        elif dens is None:
            c = float(st.norm.isf(target / 2))
            cs.append(c)
        else:
            look = (dens, z_prev, float(t[k - 1]), float(t[k]))
            c = float(optimize.brentq(lambda c, at=look, tg=target: _exit_prob(c, *at) - tg, 0.0, 40.0, xtol=1e-10))
            cs.append(c)
        # the density of Z_k on (-c, c), from that of Z_{k-1}
        z = np.linspace(-min(c, 12.0), min(c, 12.0), grid_n)
        if dens is None:
            dens = st.norm.pdf(z)
        else:
            step = math.sqrt(t[k] - t[k - 1])
            w = _weights(z_prev)
            kern = st.norm.pdf((z[:, None] * math.sqrt(t[k]) - z_prev[None, :] * math.sqrt(t[k - 1])) / step)
            dens = (kern * (w * dens)[None, :]).sum(axis=1) * math.sqrt(t[k]) / step
        z_prev = z
    return tuple(cs)


CALIBRATION_PATHS = 200_000
CALIBRATION_SEED = 2026  # fixed: the same design gives the same boundaries on every machine


@lru_cache(maxsize=64)
def t_boundaries(n0: int, n_max: int, kind: str = SPENDING[0], alpha: float = ALPHA) -> tuple[float, ...]:
    """Two-sided boundaries on |t| (one-sample t, n - 1 df) at n = n0..n_max seeds that spend alpha as
    the z boundaries of :func:`boundaries` do at information fractions n / n_max, calibrated on
    :data:`CALIBRATION_PATHS` simulated sequences under no effect. With few seeds the t statistics of
    successive looks are less alike than the z statistics the normal theory assumes, and its nominal
    levels, applied to t tests, spend more than alpha (``tests/test_power.py``); the t statistic is
    free of the spread under no effect, so one simulation serves every claim. A look at 1 seed (no t)
    spends nothing; its share carries to the next look. inf: the look cannot reject."""
    if n0 < 1 or n_max < n0:
        raise ValueError(f"need 1 <= n0 <= n_max, got {n0}, {n_max}")
    rng = np.random.default_rng(CALIBRATION_SEED)
    total = np.zeros(CALIBRATION_PATHS)
    squares = np.zeros(CALIBRATION_PATHS)
    alive = np.ones(CALIBRATION_PATHS, dtype=bool)
    crossed = 0
    out: list[float] = []
    for n in range(1, n_max + 1):
        x = rng.standard_normal(CALIBRATION_PATHS)
        total += x
        squares += x * x
        if n < n0:
            continue
        target = int(round(float(spend(n / n_max, kind, alpha)) * CALIBRATION_PATHS)) - crossed
        if n < 2 or target <= 0:
            out.append(math.inf)
            continue
        sd = np.sqrt(np.maximum(squares - total * total / n, 0.0) / (n - 1))
        t = np.abs(total / n) / (sd / math.sqrt(n))
        live = t[alive]
        k = min(target, live.size)
        c = float(np.partition(live, live.size - k)[live.size - k])  # the k-th largest |t| still running
        hit = alive & (t >= c)
        crossed += int(hit.sum())
        alive &= ~hit
        out.append(c)
    return tuple(out)


def _exit_prob(c: float, dens: np.ndarray, z_prev: np.ndarray, t_prev: float, t_now: float) -> float:
    """P(|Z_k| >= c) over the paths still going at the previous look (density ``dens`` of Z_{k-1} on
    the grid ``z_prev``), information fractions ``t_prev`` then ``t_now``."""
    step = math.sqrt(t_now - t_prev)
    mu = z_prev * math.sqrt(t_prev)  # the score S_{k-1} = Z_{k-1} sqrt(t_{k-1})
    hi = st.norm.sf((c * math.sqrt(t_now) - mu) / step)
    lo = st.norm.cdf((-c * math.sqrt(t_now) - mu) / step)
    return float(np.sum(_weights(z_prev) * dens * (hi + lo)))


def _weights(z: np.ndarray) -> np.ndarray:
    """Trapezoid weights of an evenly spaced grid."""
    h = float(z[1] - z[0]) if z.size > 1 else 1.0
    w = np.full(z.size, h)
    w[0] = w[-1] = h / 2
    return w


@dataclass(frozen=True)
class Design:
    """A group-sequential design fixed before the first look: the first look at ``n0`` seeds per arm,
    one look per added seed up to ``n_max``, two-sided ``alpha`` spent by ``spending``."""

    n0: int
    n_max: int
    spending: str = SPENDING[0]
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        if self.spending not in SPENDING:
            raise UserError(f"unknown alpha spending {self.spending!r} (accepted: {', '.join(SPENDING)})")
        if self.n0 < 1 or self.n_max < self.n0:
            raise UserError(f"--max-seeds {self.n_max}: must be at least the profile's {self.n0} seed(s) "
                            f"(accepted: an integer >= {self.n0})")

    @property
    def looks(self) -> int:
        """The maximum number of looks."""
        return self.n_max - self.n0 + 1

    def look(self, n: int) -> int:
        """The look (1-based) at which ``n`` seeds per arm are judged (n below n0: look 1, above
        n_max: the last look)."""
        return min(max(n - self.n0 + 1, 1), self.looks)

    def nominal_alpha(self, look: int) -> float:
        """Two-sided nominal alpha of a look: the t test's p-value at its boundary (:func:`t_boundaries`),
        2 P(T_{n-1} >= c_look) at the look's n seeds; 0 for a look that cannot reject."""
        c = t_boundaries(self.n0, self.n_max, self.spending, self.alpha)[look - 1]
        n = self.n0 + look - 1
        return 0.0 if not math.isfinite(c) else float(2 * st.t.sf(c, n - 1))

    def level(self, n: int) -> float:
        """The level of the repeated confidence interval at ``n`` seeds per arm."""
        return 1.0 - self.nominal_alpha(self.look(n))

    def name(self) -> str:
        """The procedure in words, for the report."""
        return (f"group-sequential, {SPENDING_NAMES[self.spending]} alpha spending (Lan-DeMets, two-sided "
                f"{self.alpha:g}), at most {self.looks} look(s) at {self.n0}..{self.n_max} seeds per arm, "
                "t boundaries calibrated by simulation, repeated confidence intervals")

    def to_dict(self) -> dict[str, Any]:
        return {"n0": self.n0, "n_max": self.n_max, "spending": self.spending, "alpha": self.alpha}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Design:
        return cls(int(d["n0"]), int(d["n_max"]), str(d.get("spending", SPENDING[0])),
                   float(d.get("alpha", ALPHA)))
