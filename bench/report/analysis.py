"""Arm-level numbers shared by tables and figures: the headline metric, per-arm spreads, the
learning-rate selection (on validation only) and the best run of each arm."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.report.data import ReportData
from bench.report.stats import Spread, spread

METRIC_LABELS = {
    "final_test_error_pct": "final test error (%)",
    "test_error_at_best_val_pct": "test error at best-val epoch (%)",
    "best_val_error_pct": "best validation error (%)",
    "final_val_error_pct": "final validation error (%)",
    "final_train_error_pct": "final training error (%)",
}


def main_metric(d: ReportData) -> str:
    """The error the study is judged on: the published entries' metric when they agree (so ours and
    theirs compare like with like), else the final test error."""
    metrics = {p.get("metric") for p in d.published if p.get("metric")}
    if len(metrics) == 1:
        return str(metrics.pop())
    return "final_test_error_pct"


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_pct", " (%)").replace("_", " "))


def arm_spreads(d: ReportData, metric: str) -> dict[str, Spread]:
    """Spread over seeds of ``metric`` for every arm (ok runs only; arms without any get n=0)."""
    ok = d.ok
    out: dict[str, Spread] = {}
    for arm in d.arm_order:
        vals = d.col(ok, metric)[ok["arm_label"] == arm].tolist() if not ok.empty else []
        out[arm] = spread(vals)
    return out


def arm_values(d: ReportData, metric: str) -> pd.DataFrame:
    """Long frame arm_label, seed, value for the ok runs (value NaN when missing)."""
    ok = d.ok
    if ok.empty:
        return pd.DataFrame(columns=["arm_label", "seed", "value"])
    return pd.DataFrame({"arm_label": ok["arm_label"], "seed": ok["seed"], "value": d.col(ok, metric)})


def select_lr(d: ReportData) -> pd.DataFrame:
    """Per optimiser: the lr whose mean best validation accuracy over seeds is highest, and the test
    error of that arm. Test numbers never enter the choice."""
    ok = d.ok
    if ok.empty or "tag_optimizer" not in ok or "tag_lr" not in ok:
        return pd.DataFrame()
    val = "best_val_acc" if d.has(ok, "best_val_acc") else "final_val_acc"
    rows = []
    for opt in dict.fromkeys(ok["tag_optimizer"].tolist()):
        sub = ok[ok["tag_optimizer"] == opt]
        per_lr = []
        for lr, g in sub.groupby("tag_lr", sort=True):
            v = spread(d.col(g, val))
            per_lr.append((lr, v, g))
        scored = [p for p in per_lr if p[1].n > 0]
        if not scored:
            continue
        lr, v, g = max(scored, key=lambda p: p[1].mean)
        test = spread(d.col(g, "test_error_at_best_val_pct"))
        final = spread(d.col(g, "final_test_error_pct"))
        arm = str(g["arm_label"].iloc[0])
        rows.append({"optimizer": opt, "chosen lr": float(lr), "arm": arm, "n seeds": v.n,
                     "grid": ", ".join(f"{p[0]:g}" for p in per_lr),
                     "val acc (%)": 100 * v.mean, "val acc std": 100 * v.std if v.n > 1 else math.nan,
                     "test error at best val (%)": test.mean, "test error std": test.std,
                     "test error 95% CI": test.fmt_ci(), "final test error (%)": final.mean,
                     "selected on": val})
    return pd.DataFrame(rows)


def best_runs(d: ReportData) -> dict[str, pd.Series]:
    """The best finished run of each arm by validation accuracy (best, else final; ties to the
    lower seed). Without a validation split, the lowest seed: test numbers never choose."""
    ok = d.ok
    out: dict[str, pd.Series] = {}
    if ok.empty:
        return out
    ok = ok.sort_values("seed", kind="stable")  # idxmax takes the first maximum: the lower seed
    score = d.col(ok, "best_val_acc").fillna(d.col(ok, "final_val_acc"))
    for arm in d.arm_order:
        mask = ok["arm_label"] == arm
        if not mask.any():
            continue
        s = score[mask]
        if s.notna().any():
            out[arm] = ok.loc[s.idxmax()]
        else:
            out[arm] = ok[mask].iloc[0]
    return out


def shared_gpu(df: pd.DataFrame) -> pd.Series:
    """True for runs whose GPU was shared with other runs (their timings are unreliable)."""
    if "shared_gpu" not in df:
        return pd.Series(False, index=df.index)
    return df["shared_gpu"].map(lambda v: bool(v) if v == v and v is not None else False).astype(bool)


def timing_runs(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The runs whose timings count, and a caption note: shared-GPU runs are left out when any run
    had its GPU alone; when every run shared its GPU, all are kept and the note says so."""
    shared = shared_gpu(df)
    if df.empty or not shared.any():
        return df, ""
    if shared.all():
        return df, f" All {len(df)} timings were taken on a shared GPU: unreliable."
    return df[~shared], f" {int(shared.sum())} run(s) on a shared GPU left out of the timings."


def shared_note(d: ReportData, run_ids: pd.Series | list[str] | None = None) -> str:
    """Caption note when any of the runs (default: all finished runs) trained on a shared GPU."""
    runs = d.runs
    if runs.empty or "run_id" not in runs:
        return ""
    if run_ids is not None:
        runs = runs[runs["run_id"].isin(list(run_ids))]
    k = int(shared_gpu(runs).sum())
    return f" {k} of {len(runs)} runs trained on a shared GPU: their timings are unreliable." if k else ""


def other_tag(d: ReportData, df: pd.DataFrame, exclude: str) -> str | None:
    """The first tag (or arm axis) column besides ``exclude`` that varies: the hue of x-vs-y plots."""
    cands = [c for c in df.columns if c.startswith("tag_") and c != exclude]
    cands += [f"arm_{a}" for a in d.axes if f"arm_{a}" in df and f"arm_{a}" != exclude]
    for c in cands:
        if df[c].nunique(dropna=True) > 1:
            return c
    return None


def hue_groups(d: ReportData, df: pd.DataFrame, hue: str | None) -> list[Any]:
    """Values of the hue column present in ``df``, in the palette's (report-wide) order."""
    if hue is None:
        return [None]
    present = list(dict.fromkeys(df[hue].dropna().tolist()))
    ordered = [v for v in d.palette.tags.get(hue, {}) if v in present]
    return ordered + [v for v in present if v not in ordered]
