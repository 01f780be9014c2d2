"""How many seeds: the power numbers against simulation and a textbook case, the group-sequential
boundaries against the alpha they spend, and the sequential procedure on constructed data: under no
effect it says "reproduced" at most 5% of the time where looking after every seed with the fixed 95%
interval says it more often; under a true effect it decides within the seed budget."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from bench.report.claims import evaluate
from bench.report.power import Design, achieved_power, boundaries, seeds_needed, spend
from bench.study import Claim

REPS = 40_000


def _paired_power(n: int, effect: float, sd: float, rng: np.random.Generator) -> float:
    """Simulated power of the two-sided 95% one-sample t test on n per-seed differences."""
    d = rng.normal(effect, sd, size=(REPS, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    return float(np.mean(np.abs(t) > st.t.isf(0.025, n - 1)))


def _welch_power(n: int, effect: float, sd: float, rng: np.random.Generator) -> float:
    """Simulated power of the two-sided 95% Welch test with n seeds per arm."""
    a, b = rng.normal(effect, sd, size=(REPS, n)), rng.normal(0.0, sd, size=(REPS, n))
    va, vb = a.var(1, ddof=1) / n, b.var(1, ddof=1) / n
    t = (a.mean(1) - b.mean(1)) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (n - 1) + vb**2 / (n - 1))
    return float(np.mean(np.abs(t) > st.t.isf(0.025, df)))


@pytest.mark.parametrize(("effect", "sd"), [(1.0, 1.0), (0.5, 0.4), (2.0, 3.0)])
def test_paired_seeds_needed_is_the_smallest_n_with_80_percent_power_in_simulation(effect: float, sd: float) -> None:
    rng = np.random.default_rng(0)
    n = int(seeds_needed("paired", effect, sd))
    assert _paired_power(n, effect, sd, rng) >= 0.8 - 0.01
    assert _paired_power(n - 1, effect, sd, rng) < 0.8 + 0.01
    assert achieved_power("paired", effect, sd, n) >= 0.8 > achieved_power("paired", effect, sd, n - 1)


def test_welch_seeds_needed_is_cohens_textbook_case_and_holds_in_simulation() -> None:
    # Cohen (1988), Table 2.4.1: d = 0.5, two-sided 0.05, power 0.8 -> 64 per group
    assert seeds_needed("Welch", 0.5, 1.0) == 64
    rng = np.random.default_rng(1)
    n = int(seeds_needed("Welch", 1.5, 1.0))
    assert _welch_power(n, 1.5, 1.0, rng) >= 0.8 - 0.015
    assert _welch_power(n - 1, 1.5, 1.0, rng) < 0.8


def test_within_seeds_needed_keeps_the_interval_inside_the_margin_80_percent_of_the_time() -> None:
    rng = np.random.default_rng(2)
    n = int(seeds_needed("paired", 1.0, 1.0, direction="within"))
    d = rng.normal(0.0, 1.0, size=(REPS, n))
    half = st.t.isf(0.025, n - 1) * d.std(1, ddof=1) / math.sqrt(n)
    inside = np.mean((d.mean(1) - half >= -1.0) & (d.mean(1) + half <= 1.0))
    assert inside >= 0.8


def test_no_effect_or_no_spread_sizes_nothing_and_a_tiny_effect_is_more_than_any_budget() -> None:
    assert math.isnan(seeds_needed("paired", 0.0, 1.0))
    assert math.isnan(seeds_needed("paired", 1.0, 0.0))
    assert seeds_needed("paired", 1e-4, 1.0) == math.inf
    with pytest.raises(ValueError, match="slope"):
        seeds_needed("slope", 1.0, 1.0)


# --------------------------------------------------------------------------- group-sequential design


@pytest.mark.parametrize("kind", ["obrien-fleming", "pocock"])
def test_boundaries_spend_the_alpha_of_their_spending_function(kind: str) -> None:
    fr = (2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
    c = np.array(boundaries(fr, kind))
    rng = np.random.default_rng(3)
    # z statistics of a Brownian motion under no effect, observed at the information fractions
    steps = rng.normal(size=(400_000, len(fr))) * np.sqrt(np.diff((0.0, *fr)))
    z = np.cumsum(steps, axis=1) / np.sqrt(fr)
    crossed = np.maximum.accumulate(np.abs(z) >= c, axis=1).mean(0)
    assert crossed == pytest.approx(spend(np.array(fr), kind), abs=0.0015)
    assert crossed[-1] == pytest.approx(0.05, abs=0.0015)


@pytest.mark.parametrize("kind", ["obrien-fleming", "pocock"])
def test_boundaries_agree_with_scipys_multivariate_normal(kind: str) -> None:
    """P(|Z_j| < c_j for every j <= k) = 1 - alpha spent by look k, with the z statistics' correlation
    sqrt(t_i / t_j), computed by scipy's multivariate normal (Genz) instead of the grid recursion."""
    fr = np.array([0.4, 0.7, 1.0])
    c = np.array(boundaries(tuple(fr), kind))
    cov = np.sqrt(np.minimum.outer(fr, fr) / np.maximum.outer(fr, fr))
    for k in (2, 3):
        mvn = st.multivariate_normal(mean=np.zeros(k), cov=cov[:k, :k])
        stay = mvn.cdf(c[:k], lower_limit=-c[:k], rng=np.random.default_rng(0))
        assert 1 - stay == pytest.approx(spend(fr[k - 1], kind), abs=2e-5)


def test_a_design_outside_its_budget_or_spending_is_one_line() -> None:
    from bench.errors import UserError

    with pytest.raises(UserError, match="--max-seeds 1"):
        Design(2, 1)
    with pytest.raises(UserError, match="accepted: obrien-fleming, pocock"):
        Design(2, 4, "haybittle")


# --------------------------------------------------------------------------- optional stopping


def _sequential(effect: float, *, n0: int, n_max: int, claim_effect: float, level_of, sims: int = 20_000,
                seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(reproduced, contradicted) per simulated sequential run of a 'greater' paired claim: look at
    n0..n_max per-seed differences (normal, sd 1, mean ``effect``), stop at the first decision; the
    interval at n is the t interval at ``level_of(n)``. The rule is the verdicts' (:func:`_judge`)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(effect, 1.0, size=(sims, n_max))
    rep, con, open_ = np.zeros(sims, bool), np.zeros(sims, bool), np.ones(sims, bool)
    for n in range(n0, n_max + 1):
        x = d[:, :n]
        m, se = x.mean(1), x.std(1, ddof=1) / math.sqrt(n)
        half = st.t.isf((1 - level_of(n)) / 2, n - 1) * se
        r, c = (m - half > 0) & (m >= claim_effect), m + half < 0
        rep |= open_ & r
        con |= open_ & c
        open_ &= ~(r | c)
    return rep, con


def test_the_simulation_uses_the_verdicts_rule() -> None:
    """The vectorised rule above gives the verdict `evaluate` gives, look by look, on constructed runs."""
    design = Design(2, 6)
    claim = Claim.compare("a > b", metric="final_test_error_pct", a={"model": "a"}, b={"model": "b"}, greater_by=0.3,
                          source="constructed")
    rng = np.random.default_rng(5)
    for _ in range(25):
        diffs = rng.normal(1.0, 1.0, size=6)
        for n in range(2, 7):
            t = pd.DataFrame([{"run_id": f"{arm}-{s}", "arm_label": arm, "arm_model": arm, "seed": s, "state": "ok",
                               "final_test_error_pct": 10.0 + (diffs[s] if arm == "a" else 0.0)}
                              for arm in ("a", "b") for s in range(n)])
            out = evaluate(claim, t, design)
            x = diffs[:n]
            half = st.t.isf((1 - design.level(n)) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
            want = ("reproduced" if x.mean() - half > 0 and x.mean() >= 0.3 else
                    "contradicted" if x.mean() + half < 0 else "inconclusive")
            assert out.verdict == want and out.look == design.look(n)
            assert out.estimate is not None and out.estimate.lo == pytest.approx(x.mean() - half)


@pytest.mark.parametrize("kind", ["obrien-fleming", "pocock"])
def test_no_effect_reproduces_at_most_5_percent_where_looking_at_every_seed_exceeds_it(kind: str) -> None:
    design = Design(2, 10, kind)
    rep, con = _sequential(0.0, n0=2, n_max=10, claim_effect=0.0, level_of=design.level)
    naive_rep, naive_con = _sequential(0.0, n0=2, n_max=10, claim_effect=0.0, level_of=lambda n: 0.95)
    assert rep.mean() <= 0.05 and (rep | con).mean() <= 0.05 + 0.004  # 20k runs: 0.004 is 2.6 sd
    assert naive_rep.mean() > 0.05 + 0.004  # the naive repeated test: "reproduced" alone passes 5%


def test_a_true_effect_is_decided_within_the_seed_budget_most_of_the_time() -> None:
    design = Design(2, 10)
    rep, con = _sequential(1.5, n0=2, n_max=10, claim_effect=0.5, level_of=design.level)
    assert rep.mean() >= 0.8 and con.mean() <= 0.01


# --------------------------------------------------------------------------- bench plan


def test_plan_sizes_each_claim_from_a_stated_prior_then_from_the_recorded_runs(tmp_path) -> None:
    from bench.commands.plan import PRIOR_SD_PCT, plan_table, power_table
    from bench.report.synthetic import write_synthetic_study
    from bench.study import get_study

    study = get_study("residual")
    df = plan_table(study, "cpu", tmp_path, None)
    power = power_table(study, "cpu", tmp_path, None, df)
    claims = [c for c in study.claims if c.applies_to("cpu")]
    assert list(power["claim"]) == [c.sentence for c in claims]
    for c, (_, row) in zip(claims, power.iterrows(), strict=True):
        assert "prior: std 1" in row["spread from"]
        if c.kind == "comparison":
            assert row["seeds needed"] == seeds_needed("paired", c.effect, math.sqrt(2) * PRIOR_SD_PCT)
        else:  # depths 20 and 56: a per-seed slope is the paired difference over 36 layers
            assert row["seeds needed"] == seeds_needed("paired", c.effect * 36, math.sqrt(2) * PRIOR_SD_PCT)
        assert ("precondition" in row["spread from"]) == (c.requires is not None)
        assert row["extra cells"] == (row["seeds needed"] - 2) * (1 if c.kind == "level" else 2)
    # with recorded runs of the profile: their spread, and the test the verdict used
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0, 1, 2), artifacts=False)
    quick = power_table(study, "quick", tmp_path, None, plan_table(study, "quick", tmp_path, None))
    assert quick["spread from"].str.startswith(("recorded runs", "precondition not met", "exact")).all()
    unmet = quick[quick["spread from"].str.startswith("precondition not met")]
    assert (unmet["seeds needed"] == "—").all() and (unmet["extra cells"] == "—").all()


def test_the_terminal_power_table_fits_a_row_on_a_line_and_says_every_source(tmp_path) -> None:
    """Claims numbered and cut, the spreads' sources said once under the table for the claims sharing
    them: no row is wider than the table's numbers need, and no source is lost."""
    from bench.commands.plan import CLAIM_WIDTH, plan_table, power_lines, power_table
    from bench.report.synthetic import write_synthetic_study
    from bench.study import get_study

    study = get_study("residual")
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0, 1, 2), artifacts=False)
    power = power_table(study, "quick", tmp_path, None, plan_table(study, "quick", tmp_path, None))
    lines = power_lines(power)
    at = lines.index("spread from:")
    rows, said = lines[1:at], lines[at + 1:]
    assert len(rows) == len(power) and max(map(len, rows)) < CLAIM_WIDTH + 100
    for i, (row, claim) in enumerate(zip(rows, power["claim"], strict=True), 1):
        assert row.split()[0] == str(i) and claim[:CLAIM_WIDTH - 1] in row
    groups = {}
    for part in said:
        m = re.match(r"  ((?:#\d+, )*#\d+): (.*)$", part)
        assert m, part
        groups.update({int(n): m.group(2) for n in re.findall(r"#(\d+)", m.group(1))})
    assert groups == dict(enumerate(power["spread from"], 1))


def test_the_power_table_counts_the_seeds_until_decided_added(tmp_path) -> None:
    """After --until-decided added seeds to some arms (study.json's extra_seeds), a claim's 'seeds now'
    is the fewest any of its arms has, as the plan's cell table counts them."""
    import json

    from bench.commands.plan import plan_table, power_table
    from bench.report.synthetic import write_synthetic_study
    from bench.study import get_study

    study = get_study("residual")
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0, 1, 2), artifacts=False)
    path = tmp_path / "residual" / "study.json"
    desc = json.loads(path.read_text())
    path.write_text(json.dumps({**desc, "extra_seeds": {"plain20": [3, 4], "plain56": [3, 4]}}))
    power = power_table(study, "quick", tmp_path, None, plan_table(study, "quick", tmp_path, None))
    now = dict(zip(power["claim"], power["seeds now"], strict=True))
    assert now["plain56 ends with a higher training error than plain20 (degradation)"] == 5  # both arms added to
    assert now["resnet56 ends with a lower test error than resnet20"] == 3  # neither arm added to
    assert now["Training error rises with depth among plain nets"] == 3  # plain32, plain44, plain110 were not
