"""``bench plan``: the cells of a study, their status and an estimated cost.

The cost of each cell is its optimizer steps, training samples and training compute (3 x the
forward multiply-adds of convolutions and matrix products, counted on the meta device: no weights,
no images, so ``image_size=100000`` is planned, not allocated) and, once any run of the study has
been recorded, an estimated time at the speed those runs trained at. Values that are legal but
absurd (``epochs=1e9``) are planned like any other: the footer says what they would cost.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import RunConfig
from bench.measure.estimate import (TRAIN_MACS_PER_FORWARD, estimate_samples, estimate_shape, estimate_steps,
                                    forward_macs, model_key, train_macs)
from bench.errors import UserError
from bench.store import ResultsStore, recorded_for, warn_once
from bench.store import recorded_extra_seeds as extra_seeds_in
from bench.text import human_duration
from bench.study import Selection, Study

# A cell estimated to take longer than this is called out under the table.
LONG_CELL_S = 30 * 86400.0


class SpeedBook:
    """Training speeds recorded in a study, in training multiply-adds per second.

    A cell of a model that has been trained is estimated at that model's recorded speed; any other
    at the median speed of every recorded run (compute-scaled). Estimates, for scale: they say
    nothing about a different device than the one the records came from.
    """

    def __init__(self, store: ResultsStore, study: str) -> None:
        self.by_model: dict[str, list[float]] = {}
        self.devices: set[str] = set()
        self.runs = 0
        for rec in store.records(study):
            sps = rec.metrics.get("epoch_train_samples_per_s")
            if rec.outcome.status != "ok" or not isinstance(sps, (int, float)) or not sps > 0:
                continue
            shape = estimate_shape(rec.cell.config)
            per_image = forward_macs(rec.cell.config, shape)
            if not per_image > 0:
                continue
            self.by_model.setdefault(model_key(rec.cell.config, shape), []).append(
                TRAIN_MACS_PER_FORWARD * per_image * float(sps))
            self.devices.add(rec.placement.device)
            self.runs += 1
        every = [r for rates in self.by_model.values() for r in rates]
        self.median = statistics.median(every) if every else math.nan

    def seconds(self, cfg: RunConfig, shape: tuple[int, int, int] | None, train_macs: float) -> float:
        """Estimated training time of ``cfg`` (NaN when nothing has been recorded)."""
        rates = self.by_model.get(model_key(cfg, shape))
        rate = statistics.median(rates) if rates else self.median
        return train_macs / rate if rate > 0 and train_macs == train_macs else math.nan


def plan_table(study: Study, profile: str, results_dir: str | Path, overrides: dict[str, Any] | None,
               selection: Selection | None = None) -> pd.DataFrame:
    """One row per selected cell: run id, arm, seed, status, length, optimizer steps, training
    samples, estimated training compute (T multiply-adds) and time; ``attrs`` holds the totals, the
    number of cells in the whole profile and where the speed estimate came from."""
    store = ResultsStore(results_dir)
    speeds = SpeedBook(store, study.name)
    rows = []
    every = study.cells(profile, overrides, recorded_extra_seeds(store, study.name, profile, overrides))
    for c in selection.apply(every) if selection else every:
        cfg = c.config
        shape = estimate_shape(cfg)
        samples = estimate_samples(cfg)
        work = train_macs(cfg)
        seconds = speeds.seconds(cfg, shape, work)
        rows.append({
            "run_id": c.run_id,
            "arm": c.label,
            "seed": c.seed,
            "status": store.state(study.name, c.run_id),
            "length": f"{cfg.iterations} it" if cfg.iterations else f"{cfg.epochs} ep",
            "train_steps": estimate_steps(cfg),
            "train_samples": samples,
            "est_train_TMACs": round(work / 1e12, 2),
            "est_time": human_duration(seconds),
            "_seconds": seconds,
        })
    df = pd.DataFrame(rows)
    # one cell's estimated time per arm, for the cost of the seeds a claim's power asks for
    df.attrs["seconds_by_arm"] = ({str(a): float(g.median()) for a, g in df.groupby("arm")["_seconds"]}
                                  if len(df) else {})
    secs = df.pop("_seconds") if "_seconds" in df else pd.Series(dtype=float)
    df.attrs["total_TMACs"] = float(df["est_train_TMACs"].sum()) if len(df) else 0.0
    df.attrs["total_steps"] = sum(int(s) for s in df["train_steps"] if s == s and s is not None) if len(df) else 0
    df.attrs["total_seconds"] = float(secs.sum()) if len(secs) and secs.notna().all() else math.nan
    df.attrs["long_cells"] = int((secs > LONG_CELL_S).sum())
    df.attrs["speed_from"] = (f"the speed of {speeds.runs} recorded run(s) on {', '.join(sorted(speeds.devices))}"
                              if speeds.runs else "")
    df.attrs["cells_in_profile"] = len(every)
    df.attrs["overrides"] = dict(overrides or {})
    return df


def recorded_extra_seeds(store: ResultsStore, study: str, profile: str,
                         overrides: dict[str, Any] | None) -> dict[str, tuple[int, ...]]:
    """Seeds added beyond the profile's that study.json records for this profile and overrides:
    their cells are planned like the profile's."""
    return extra_seeds_in(_recorded_study(store, study), profile, overrides)


def _recorded_study(store: ResultsStore, study: str) -> dict[str, Any]:
    """study.json, or {} when there is none or it is damaged: a plan is made from the registry, so a
    damaged record does not stop it; it is said once, and what it records is left out."""
    try:
        return store.read_study(study) or {}
    except UserError as exc:
        warn_once(store.study_dir(study) / "study.json",
                  f"{exc}; the plan leaves out what it records (added seeds, verdicts)")
        return {}


def _number(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 1e6 else f"{v:.3g}"


def plan_footer(df: pd.DataFrame) -> list[str]:
    """The lines under the plan's table: counts, total compute, steps and time, and a note on cells
    whose cost is out of all proportion (legal values are planned, never refused)."""
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    lines = [f"{len(df)} cells ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
             f"estimated training compute {_number(df.attrs.get('total_TMACs', math.nan))} T multiply-adds "
             "(3 x forward conv+linear MACs per training image)"]
    when = (f"about {human_duration(df.attrs['total_seconds'])} of training at {df.attrs['speed_from']} "
            "(evaluation, measurements and end-of-run steps come on top)"
            if df.attrs.get("speed_from") and df.attrs.get("total_seconds") == df.attrs.get("total_seconds")
            else "time unknown until a run of this study is recorded")
    lines.append(f"estimated cost: {df.attrs.get('total_steps', 0):,} optimizer steps; {when}")
    if df.attrs.get("long_cells"):
        lines.append(f"note: {df.attrs['long_cells']} cell(s) would each train for more than "
                     f"{LONG_CELL_S / 86400:.0f} days; the values are legal, so `bench run` would start them")
    return lines


# The seed-to-seed standard deviation assumed for a metric in percent (an error rate) before any run
# is recorded: He et al. 2016 (Table 6) give 0.16 points over 5 runs of ResNet-110 at the full
# length; short runs vary far more, so the prior is taken wider. Stated in the plan where it is used.
PRIOR_SD_PCT = 1.0


def power_table(study: Study, profile: str, results_dir: str | Path, overrides: dict[str, Any] | None,
                plan: pd.DataFrame, prior_sd: float | None = None) -> pd.DataFrame:
    """One row per claim of the profile: its test, the seed-to-seed spread it assumes and where it
    comes from (the recorded runs of this profile, else ``prior_sd`` or :data:`PRIOR_SD_PCT` for a
    metric in percent, said), the seeds per arm for 80% power at the smallest effect (two-sided 95%,
    statsmodels), the extra cells beyond the profile's seeds and their estimated time (from
    ``plan``'s per-arm estimates). A claim whose precondition failed on the recorded runs, or that is
    exact, asks for no seeds, and says why."""
    from bench.report.claims import matches
    from bench.report.power import seeds_needed

    # with the seeds --until-decided added (as plan_table plans them): a claim's seeds now are its arms'
    cells = study.cells(profile, overrides, recorded_extra_seeds(ResultsStore(results_dir), study.name, profile,
                                                                 overrides))
    seeds_of: dict[str, set[int]] = {}
    for c in cells:
        seeds_of.setdefault(c.label, set()).add(c.seed)
    grid = pd.DataFrame([{"arm_label": c.label, **{f"arm_{k}": v for k, v in c.arm.items()},
                          **{f"tag_{k}": v for k, v in c.tags.items()}} for c in cells]).drop_duplicates("arm_label")
    recorded = _recorded_verdicts(study, profile, results_dir, overrides)
    per_arm = plan.attrs.get("seconds_by_arm", {})
    arm_extra: dict[str, int] = {}  # an arm shared by claims runs the largest number any of them asks
    rows = []
    for claim in (c for c in study.claims if c.applies_to(profile)):
        arms = sorted(set(grid[matches(grid, claim.a)]["arm_label"])
                      | (set(grid[matches(grid, claim.b)]["arm_label"]) if claim.b is not None else set()))
        method = {"comparison": "paired", "level": "one-sample", "trend": "per-seed slopes"}[claim.kind]
        o = recorded.get(claim.sentence)
        now = min((len(seeds_of[a]) for a in arms), default=0)  # the arm with fewest seeds decides
        row: dict[str, Any] = {"claim": claim.sentence, "test": method, "seeds now": now}
        needed, sd, source = math.nan, math.nan, ""
        if claim.exact:
            source = "exact metric: one run suffices"
        elif o is not None and o.precondition_held is False:
            source = "precondition not met on the recorded runs ('not tested'): no seeds decide it; it drives no seeds"
        elif o is not None and o.spread_sd is not None and o.spread_sd == o.spread_sd and o.estimate is not None:
            sd, needed = float(o.spread_sd), float(o.seeds_needed or math.nan)
            method = o.estimate.method
            unit = "pairs" if method == "paired" else "seeds" if method != "Welch" else "per side"
            source = f"recorded runs ({o.estimate.n} {unit})"
        else:
            base = prior_sd if prior_sd is not None else PRIOR_SD_PCT if claim.metric.endswith("_pct") else None
            if base is None:
                source = "no recorded spread and no prior (bench plan --prior-sd gives one)"
            else:
                sd = _prior_for(claim, method, base, grid, arms)
                needed = seeds_needed(method, claim.effect, sd, direction=claim.direction)
                said = "--prior-sd" if prior_sd is not None else "default prior for a metric in %"
                source = f"prior: std {base:g} per run ({said})"
            if claim.requires is not None:
                source += "; counts only if its precondition holds"
        extra = int(max(0.0, needed - now)) if needed == needed and math.isfinite(needed) else None
        secs = sum(per_arm.get(a, math.nan) for a in arms) * extra if extra else 0.0
        if extra:
            for a in arms:
                arm_extra[a] = max(arm_extra.get(a, 0), extra)
        row.update({
            "spread_sd_metric_units": round(sd, 4) if sd == sd else None,
            "seeds needed": ("> 1000" if needed == math.inf else int(needed) if needed == needed else "—"),
            "extra cells": extra * len(arms) if extra is not None else "—",
            "extra time": human_duration(secs) if extra else ("0 s" if extra == 0 else "—"),
            "spread from": source,
        })
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["extra_cells"] = sum(arm_extra.values())
    df.attrs["extra_seconds"] = sum(per_arm.get(a, math.nan) * n for a, n in arm_extra.items())
    return df


def _prior_for(claim: Any, method: str, sd: float, grid: pd.DataFrame, arms: list[str]) -> float:
    """The std of what the test averages, from a per-run std ``sd``: a paired difference sqrt(2) sd
    (no seed correlation assumed), a per-seed slope sqrt(sum (x - mean x)^2)^-1 sd over the group's
    tag values, one run sd."""
    if method == "paired":
        return math.sqrt(2) * sd
    if method == "per-seed slopes":
        x = pd.to_numeric(grid[grid["arm_label"].isin(arms)][f"tag_{claim.over}"], errors="coerce").dropna()
        ss = float(((x - x.mean()) ** 2).sum())
        return sd / math.sqrt(ss) if ss > 0 else math.nan
    return sd


def _recorded_verdicts(study: Study, profile: str, results_dir: str | Path,
                       overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The claims' verdicts on the recorded runs of this profile and overrides (empty if none)."""
    from bench.report.data import load
    from bench.report.verdicts import verdicts

    recorded = _recorded_study(ResultsStore(results_dir), study.name)
    if not recorded or not recorded_for(recorded, profile, overrides):
        return {}
    return {o.claim.sentence: o for o in verdicts(load(study.name, results_dir)).per_claim}


def power_footer(power: pd.DataFrame) -> list[str]:
    """What the power table means, under it."""
    n, secs = power.attrs.get("extra_cells", 0), power.attrs.get("extra_seconds", 0.0)
    total = (f"all claims together: {n} extra cell(s), about {human_duration(secs)}" if n else
             "no extra cells asked for")
    return [total + " (a cell shared by claims counted once; time at the recorded speed, '?' before any run)",
            "seeds needed: per arm, for 80% power of the verdict's test (two-sided 95%) when the true effect "
            "equals the claim's smallest effect (statsmodels); 'within' claims: both one-sided tests at 2.5% "
            "with 90% power each at a true difference of 0. `bench run --until-decided` adds seeds under a "
            "group-sequential design instead of fixing them now."]


@dataclass(frozen=True)
class Plan:
    """What ``bench plan`` shows: the cells with their cost (``table``, its footer), and the seeds
    each claim needs (``power``, empty when not computed; ``power_note`` says why not)."""

    study: Study
    profile: str
    selection: Selection
    table: pd.DataFrame
    power: pd.DataFrame
    power_note: str = ""

    def lines(self) -> list[str]:
        """The command's output, line by line."""
        df = self.table
        out = [f"{self.study.name} [{self.profile}]: {self.study.question}"]
        if self.selection:
            out.append(f"selection: {self.selection.describe()} ({len(df)} of {df.attrs['cells_in_profile']} cells)")
        out += [df.to_string(index=False), *plan_footer(df)]
        if self.power_note:
            out.append(self.power_note)
        elif not self.power.empty:
            out += ["", "how many seeds (80% power at each claim's smallest effect):",
                    *power_lines(self.power), *power_footer(self.power)]
        return out


CLAIM_WIDTH = 56  # characters of a claim's sentence in the terminal's power table


def power_lines(power: pd.DataFrame) -> list[str]:
    """The power table for a terminal: claims numbered and cut to :data:`CLAIM_WIDTH` (left-aligned),
    and where each spread comes from said once under the table for the claims that share it, so that a
    row fits on one line."""
    shown = power.drop(columns=["spread from"])
    shown.insert(0, "#", range(1, len(shown) + 1))
    sd = "spread_sd_metric_units"
    shown[sd] = [v if isinstance(v, (int, float)) and v == v else "—" for v in shown[sd]]
    cut = [c if len(c) <= CLAIM_WIDTH else c[:CLAIM_WIDTH - 1] + "…" for c in shown["claim"]]
    width = max(len("claim"), *map(len, cut))
    shown["claim"] = [c.ljust(width) for c in cut]
    lines = shown.rename(columns={"claim": "claim".ljust(width)}).to_string(index=False).splitlines()
    by_source: dict[str, list[int]] = {}
    for i, src in enumerate(power["spread from"], 1):
        by_source.setdefault(str(src), []).append(i)
    return [*lines, "spread from:", *(f"  {', '.join(f'#{i}' for i in ids)}: {src}" for src, ids in by_source.items())]


def make_plan(study: Study, profile: str, results_dir: str, overrides: dict[str, Any], selection: Selection,
              prior_sd: float | None = None) -> Plan:
    """The plan of ``study`` at ``profile`` with ``overrides`` (the cells ``selection`` picks); the
    seeds per claim for the whole profile only (see :func:`power_table`)."""
    if prior_sd is not None and not prior_sd > 0:
        raise UserError(f"bad --prior-sd {prior_sd} (accepted: a standard deviation > 0, in the metric's units)")
    df = plan_table(study, profile, results_dir, overrides, selection)
    if selection:
        return Plan(study, profile, selection, df, pd.DataFrame(),
                    "how many seeds: shown for the whole profile (bench plan without --only/--seeds)")
    power = power_table(study, profile, results_dir, df.attrs.get("overrides", {}), df, prior_sd)
    return Plan(study, profile, selection, df, power)
