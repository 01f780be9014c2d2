"""Claims against a run: for each :class:`~bench.study.Claim` of a study, our estimate with its 95%
interval and a verdict.

:func:`evaluate` is a pure function of a claim and the runs table: one row per cell with
``arm_label``, ``seed``, ``state`` (ok / failed / diverged / oom / running / stale / pending),
``arm_<axis>`` and ``tag_<name>`` columns and the metric columns of the finished runs. It does not
care how the records were stored.

Verdicts: **reproduced** (the interval lies on the claimed side of zero and the estimate is at
least the smallest effect; for 'within': the whole interval lies inside the margin),
**contradicted** (the interval lies on the other side; for 'within': wholly outside the margin),
**inconclusive** (otherwise, or fewer than 2 seeds per side), **not tested** (arms missing,
unfinished or failed: which ones is said).

A trend is judged on one slope per seed (the seed is the unit of replication), so a trend over two
arms is the paired test of those arms; two claims that test the same contrast (same metric, same two
arms) are marked as the same test (``same_test_as``). With a group-sequential
:class:`~bench.report.power.Design` (``bench run --until-decided``) each interval is the repeated
confidence interval of its look. ``seeds_needed``: seeds per arm for 80% power at the smallest effect
from the spread seen (see :mod:`bench.report.power`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.report.analysis import metric_label
from bench.report.power import Design, seeds_needed
from bench.report.stats import LEVEL, Estimate, _same_seeds, against, difference, finite, seed_slopes, slope_over_seeds
from bench.claim import Claim, same_value

VERDICTS = ("reproduced", "contradicted", "inconclusive", "not tested")
FAILED = ("failed", "diverged", "oom")
VAL_METRICS = ("best_val_acc", "final_val_acc")


@dataclass(frozen=True)
class Verdict:
    """One claim judged against one run: the verdict, the estimate (None when not computed), which
    arms each side used, and why the verdict is not 'reproduced'."""

    claim: Claim
    verdict: str
    estimate: Estimate | None
    arms_a: tuple[str, ...]
    arms_b: tuple[str, ...]
    why: str = ""
    # the claim's precondition on this run: None when it has none or it could not be checked (arms
    # not finished), else whether it held; ``checked`` gives the numbers either way
    precondition_held: bool | None = None
    checked: str = ""
    # seeds per arm for 80% power at the smallest effect, from ``spread_sd`` (the seed-to-seed std of
    # what the test averages, in the metric's units); None when not computed
    seeds_needed: float | None = None
    spread_sd: float | None = None
    look: int | None = None  # the group-sequential look this verdict was taken at (None: a fixed test)
    same_test_as: str = ""  # the sentence of another claim that tests the same contrast

    @property
    def compared(self) -> str:
        """'plain56 vs plain20', 'slope over depth among net=plain', 'resnet56 vs 6.97'."""
        c = self.claim
        a = " + ".join(self.arms_a) or selector_text(c.a)
        if c.kind == "comparison":
            return f"{a} vs {' + '.join(self.arms_b) or selector_text(c.b or {})}"
        if c.kind == "trend":
            return f"slope over {c.over} among {selector_text(c.a) or 'all arms'}"
        return f"{a} vs {c.value:g}"


def selector_text(sel: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items())


def matches(table: pd.DataFrame, sel: dict[str, Any]) -> pd.Series:
    """Rows whose arm label or tag equals each selector value (numbers compared as numbers); a key
    that is neither an axis nor a tag of the table matches nothing."""
    mask = pd.Series(True, index=table.index)
    for key, want in sel.items():
        hit = pd.Series(False, index=table.index)
        for col in (f"arm_{key}", f"tag_{key}"):
            if col in table:
                hit |= table[col].map(lambda v, w=want: same_value(v, w))
        mask &= hit
    return mask


def evaluate(claim: Claim, table: pd.DataFrame, design: Design | None = None) -> Verdict:
    """Judge ``claim`` on ``table`` (see the module docstring for the table's columns). A run id
    listed twice (one run standing for two seeds or arms) is refused: it would count twice. With a
    ``design`` the interval is the repeated confidence interval of the look its seeds make."""
    twice = table["run_id"][table["run_id"].duplicated()] if "run_id" in table else pd.Series(dtype=object)
    if len(twice):
        n = int((table["run_id"] == twice.iloc[0]).sum())
        return Verdict(claim, "not tested", None, (), (), f"run {twice.iloc[0]} is listed as {n} cells: one run "
                       "is counted once (rerun the study with distinct seeds: --seeds, not --set seed)")
    if claim.kind == "trend":
        return _trend(claim, table, design)
    side_a, why_a = _side(claim, claim.a, table)
    side_b, why_b = (None, "") if claim.b is None else _side(claim, claim.b, table)
    arms_a = tuple(side_a["arm_label"].unique()) if side_a is not None else ()
    arms_b = tuple(side_b["arm_label"].unique()) if side_b is not None else ()
    if why_a or why_b:
        return Verdict(claim, "not tested", None, arms_a, arms_b, "; ".join(w for w in (why_a, why_b) if w))
    assert side_a is not None
    pre = _precondition(claim, {"a": side_a, "b": side_b})
    if pre is not None and not pre[0]:
        return Verdict(claim, "not tested", None, arms_a, arms_b, f"precondition not met: {pre[1]}; {pre[2]}",
                       False, pre[1])
    out = _compare(claim, table, side_a, side_b, arms_a, arms_b, design)
    return out if pre is None else dataclasses.replace(out, precondition_held=True, checked=pre[1])


def _level(design: Design | None, n: int) -> tuple[float, int | None]:
    """The interval's level and the look at ``n`` seeds per arm (95% and no look without a design)."""
    return (LEVEL, None) if design is None else (design.level(n), design.look(n))


def _sized(out: Verdict, method: str, sd: float, look: int | None) -> Verdict:
    """``out`` with the seeds needed for 80% power at the claim's smallest effect and its look."""
    c = out.claim
    needed = None if c.exact else seeds_needed(method, c.effect, sd, direction=c.direction)
    return dataclasses.replace(out, seeds_needed=needed, spread_sd=None if c.exact else sd, look=look)


def _compare(claim: Claim, table: pd.DataFrame, side_a: pd.DataFrame, side_b: pd.DataFrame | None,
             arms_a: tuple[str, ...], arms_b: tuple[str, ...], design: Design | None = None) -> Verdict:
    """The statistics of a comparison or level claim whose arms are finished."""
    va, sa = _values(side_a, claim.metric)
    if claim.kind == "level":
        need = 1 if claim.exact else 2
        if va.size < need:
            return _few(claim, arms_a, arms_b, f"{va.size} finished seed(s) with {claim.metric}")
        level, look = _level(design, va.size)
        est = against(va, float(claim.value), level)  # type: ignore[arg-type]
        sd = float(va.std(ddof=1)) if va.size > 1 else math.nan
        return _sized(_judge(claim, est, arms_a, arms_b, _failures(table, side_a)), est.method, sd, look)
    assert side_b is not None
    vb, sb = _values(side_b, claim.metric)
    need = 1 if claim.exact else 2
    if min(va.size, vb.size) < need:
        return _few(claim, arms_a, arms_b, f"{va.size} vs {vb.size} finished seed(s) with {claim.metric}")
    if claim.exact and min(va.size, vb.size) < 2:
        d = float(va.mean() - vb.mean())
        est = Estimate(d, d, d, 0.0 if d else 1.0, f"{va.size} vs {vb.size}", "exact")
        return _judge(claim, est, arms_a, arms_b, _failures(table, side_a) + _failures(table, side_b))
    level, look = _level(design, min(va.size, vb.size))
    est = difference(va, vb, sa, sb, level)
    if _same_seeds(sa, sb):  # the spread of the per-seed differences
        sd = float((va[np.argsort(sa)] - vb[np.argsort(sb)]).std(ddof=1))
    else:  # Welch: the pooled spread of the two arms (equal seeds per arm are planned)
        sd = math.sqrt((float(va.var(ddof=1)) + float(vb.var(ddof=1))) / 2)
    out = _judge(claim, est, arms_a, arms_b, _failures(table, side_a) + _failures(table, side_b))
    return _sized(out, est.method if est.method in ("paired", "Welch") else "Welch", sd, look)


def _precondition(claim: Claim, sides: dict[str, pd.DataFrame | None]) -> tuple[bool, str, str] | None:
    """(held, the numbers) for the claim's precondition on the finished runs of its sides; None
    when the claim has none. Each arm's mean over its finished seeds is held to the bound."""
    req = claim.requires
    if req is None:
        return None
    pct = req.metric.endswith("_pct")
    label = metric_label(req.metric).removesuffix(" (%)")
    parts, held = [], True
    for name in req.sides:
        rows = sides.get(name)
        if rows is None:
            continue
        for arm, g in rows.groupby("arm_label", sort=False):
            vals = finite(pd.to_numeric(g[req.metric], errors="coerce")) if req.metric in g else np.array([])
            value = float(vals.mean()) if vals.size else float("nan")
            ok = bool(vals.size) and req.holds(value)
            held &= ok
            shown = f"{value:.1f}{'%' if pct else ''}" if vals.size else "not recorded"
            parts.append(f"{arm} {shown}")
    need = f"{label} {req.bound} {req.threshold:g}{'%' if pct else ''}"
    return held, ", ".join(parts), f"needs {need} on each arm"


def evaluate_all(claims: list[Claim], table: pd.DataFrame, profile: str | None,
                 design: Design | None = None) -> list[Verdict]:
    """Every claim that applies to ``profile``, in the study's order; claims that test the same
    contrast are marked as the same test."""
    return same_tests([evaluate(c, table, design) for c in claims if c.applies_to(profile)])


def contrast(o: Verdict) -> tuple[str, frozenset[str]] | None:
    """(metric, the two arms) when the verdict's test is a contrast of two single arms: a
    comparison of one arm with one arm, or a trend over exactly two arms (its per-seed slope is
    their paired difference over the step); else None."""
    c = o.claim
    if c.kind == "comparison" and len(o.arms_a) == 1 and len(o.arms_b) == 1 and o.arms_a != o.arms_b:
        return c.metric, frozenset((*o.arms_a, *o.arms_b))
    if c.kind == "trend" and len(o.arms_a) == 2:
        return c.metric, frozenset(o.arms_a)
    return None


def same_tests(verdicts: list[Verdict]) -> list[Verdict]:
    """Each verdict whose contrast (:func:`contrast`) an earlier one already tests, marked with that
    claim's sentence (its interval is the same test's, scaled; the verdicts may still differ by
    their smallest effects)."""
    first: dict[tuple[str, frozenset[str]], str] = {}
    out = []
    for o in verdicts:
        key = contrast(o)
        if key is not None and key in first:
            o = dataclasses.replace(o, same_test_as=first[key])
        elif key is not None:
            first[key] = o.claim.sentence
        out.append(o)
    return out


def _side(claim: Claim, sel: dict[str, Any], table: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """The ok runs of the arm(s) a selector picks, or None and why the claim cannot be tested."""
    if table.empty:
        return None, f"no arm {selector_text(sel)} in this run"
    rows = table[matches(table, sel)]
    if rows.empty:
        return None, f"no arm {selector_text(sel)} in this run"
    ok = rows[rows["state"] == "ok"]
    if ok.empty or not finite(ok[claim.metric] if claim.metric in ok else []).size:
        return None, _not_done(rows, claim.metric)
    if claim.best_on_val and ok["arm_label"].nunique() > 1:
        chosen = _best_on_validation(ok)
        if chosen is None:
            return None, f"{selector_text(sel)}: no validation accuracy to choose an arm on"
        ok = ok[ok["arm_label"] == chosen]
    return ok, ""


def _best_on_validation(ok: pd.DataFrame) -> str | None:
    """The arm with the highest mean validation accuracy (best epoch, else final); test data never
    choose."""
    for col in VAL_METRICS:
        if col in ok and pd.to_numeric(ok[col], errors="coerce").notna().any():
            means = pd.to_numeric(ok[col], errors="coerce").groupby(ok["arm_label"]).mean().dropna()
            return str(means.idxmax())
    return None


def _not_done(rows: pd.DataFrame, metric: str) -> str:
    """'plain56: 1 failed, 1 pending' for each arm of the selector that has no usable run."""
    parts = []
    for arm, g in rows.groupby("arm_label", sort=False):
        counts = g["state"].value_counts()
        desc = ", ".join(f"{n} {s}" for s, n in counts.items())
        if (g["state"] == "ok").any():
            desc += f" (no {metric} recorded)"
        parts.append(f"{arm}: {desc}")
    return "; ".join(parts)


def _failures(table: pd.DataFrame, side: pd.DataFrame) -> str:
    """Failed seeds of the arms used, left out of the statistics (said, never hidden)."""
    rows = table[table["arm_label"].isin(side["arm_label"].unique())]
    bad = rows[rows["state"].isin(FAILED)]
    if bad.empty:
        return ""
    return "; ".join(f"{arm}: {len(g)} seed(s) {'/'.join(sorted(set(g['state'])))} left out"
                     for arm, g in bad.groupby("arm_label", sort=False)) + "; "


def _values(rows: pd.DataFrame, metric: str) -> tuple[np.ndarray, list[int]]:
    vals = pd.to_numeric(rows[metric], errors="coerce") if metric in rows else pd.Series(dtype=float)
    keep = vals.notna() & np.isfinite(vals.astype(float))
    seeds = [int(s) for s in rows.loc[keep, "seed"]] if "seed" in rows else []
    return vals[keep].to_numpy(dtype=float), seeds


def _few(claim: Claim, arms_a: tuple[str, ...], arms_b: tuple[str, ...], what: str) -> Verdict:
    return Verdict(claim, "inconclusive", None, arms_a, arms_b,
                   f"fewer than 2 seeds per side ({what}): no interval")


def _trend(claim: Claim, table: pd.DataFrame, design: Design | None = None) -> Verdict:
    tag = f"tag_{claim.over}"
    if table.empty or tag not in table:
        return Verdict(claim, "not tested", None, (), (), f"no tag {claim.over} in this run")
    rows = table[matches(table, claim.a)]
    rows = rows[pd.to_numeric(rows[tag], errors="coerce").notna()]
    if rows.empty:
        return Verdict(claim, "not tested", None, (), (),
                       f"no arm {selector_text(claim.a)} with a numeric {claim.over}")
    arms = tuple(rows["arm_label"].unique())
    ok = rows[rows["state"] == "ok"]
    vals = (pd.to_numeric(ok[claim.metric], errors="coerce") if claim.metric in ok
            else pd.Series(float("nan"), index=ok.index))  # a record without the metric: not done
    ok = ok[vals.notna()]
    levels = pd.to_numeric(rows[tag]).unique()
    done = pd.to_numeric(ok[tag]).value_counts() if not ok.empty else pd.Series(dtype=int)
    missing = [lv for lv in levels if lv not in done.index]
    if missing:
        gone = rows[pd.to_numeric(rows[tag]).isin(missing)]
        return Verdict(claim, "not tested", None, arms, (), _not_done(gone, claim.metric))
    if len(levels) < 2:
        return Verdict(claim, "not tested", None, arms, (), f"only one value of {claim.over} in this run")
    if done.min() < 2:
        return _few(claim, arms, (), f"{int(done.min())} at {claim.over}={done.idxmin():g}")
    pre = _precondition(claim, {"a": ok})
    if pre is not None and not pre[0]:
        return Verdict(claim, "not tested", None, arms, (), f"precondition not met: {pre[1]}; {pre[2]}", False, pre[1])
    x, y = pd.to_numeric(ok[tag]).to_numpy(float), pd.to_numeric(ok[claim.metric]).to_numpy(float)
    seeds = ok["seed"].to_numpy() if "seed" in ok else np.arange(len(ok))
    slopes, used = seed_slopes(x, y, seeds)
    if slopes.size < 2:
        return _few(claim, arms, (), f"{slopes.size} seed(s) that ran at every {claim.over}")
    level, look = _level(design, slopes.size)
    est = slope_over_seeds(x, y, seeds, level)
    skipped = sorted(set(int(s) for s in seeds) - set(used))
    prefix = _failures(table, ok) + (f"seed(s) {', '.join(map(str, skipped))} without every {claim.over} "
                                     "left out; " if skipped else "")
    out = _sized(_judge(claim, est, arms, (), prefix), est.method, float(slopes.std(ddof=1)), look)
    return out if pre is None else dataclasses.replace(out, precondition_held=True, checked=pre[1])


def _judge(claim: Claim, est: Estimate, arms_a: tuple[str, ...], arms_b: tuple[str, ...], prefix: str) -> Verdict:
    """The verdict from the interval's position (see the module docstring)."""
    e, lo, hi = claim.effect, est.lo, est.hi
    unit = "per unit of " + claim.over if claim.over else "points" if claim.metric.endswith("_pct") else "units"
    if claim.direction == "within":
        if -e <= lo and hi <= e:
            return Verdict(claim, "reproduced", est, arms_a, arms_b, prefix.rstrip("; "))
        if lo > e or hi < -e:
            why = f"the whole interval lies outside ±{e:g}"
            return Verdict(claim, "contradicted", est, arms_a, arms_b, prefix + why)
        return Verdict(claim, "inconclusive", est, arms_a, arms_b, prefix + f"the interval reaches past ±{e:g}")
    sign = 1.0 if claim.direction == "greater" else -1.0
    s_lo, s_hi = (lo, hi) if sign > 0 else (-hi, -lo)  # in the claimed direction: positive = as claimed
    if s_lo > 0 and sign * est.value >= e:
        return Verdict(claim, "reproduced", est, arms_a, arms_b, prefix.rstrip("; "))
    if s_hi < 0:
        return Verdict(claim, "contradicted", est, arms_a, arms_b,
                       prefix + "the interval lies on the other side of zero")
    if s_lo > 0:
        why = f"right side of zero, but {abs(est.value):.2g} is below the smallest effect of {e:g} {unit}"
    else:
        why = "the interval includes zero"
    return Verdict(claim, "inconclusive", est, arms_a, arms_b, prefix + why)


def counts(verdicts: list[Verdict]) -> dict[str, int]:
    """Verdicts per word, every verdict present."""
    return {v: sum(o.verdict == v for o in verdicts) for v in VERDICTS}
