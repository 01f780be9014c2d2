"""Cost figures: step time and memory per arm, epoch time per arm, time and throughput by batch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report.analysis import hue_groups, other_tag, shared_note, timing_runs
from bench.report.data import ReportData
from bench.report.plotting import (Figure, arms_by_group, legend_above, legend_outside, log2_axis, not_measured,
                                   panels, short, style, to_png)

MIB = 2.0**20


def _per_arm(d: ReportData, cols: list[str]) -> pd.DataFrame:
    """Median of each column over an arm's finished runs (measurements repeat per run)."""
    runs = d.runs
    if runs.empty:
        return pd.DataFrame()
    frame = pd.DataFrame({c: d.col(runs, c) for c in cols}).assign(arm_label=runs["arm_label"])
    g = frame.groupby("arm_label", sort=False)[cols].median()
    return g.reindex([a for a in d.arm_order if a in g.index])


def cost_by_arm(d: ReportData) -> Figure:
    """Train and inference step time (ms) and peak training memory (MiB) per arm."""
    fig_ = Figure("cost_by_arm", "Step time and peak memory by arm")
    cols = ["train_step_time_ms", "infer_step_time_ms", "train_peak_allocated_bytes", "peak_allocated_bytes"]
    g = _per_arm(d, cols)
    if g.empty:
        fig_.note = "no finished runs yet"
        return fig_
    arms = list(g.index)
    y = np.arange(len(arms))
    with style():
        fig, axes = panels(2, width=4.4, height=0.9 + 0.3 * len(arms), sharey=True)
        colours = [d.palette.arm(a) for a in arms]
        if g[["train_step_time_ms", "infer_step_time_ms"]].notna().any().any():
            axes[0].barh(y - 0.2, g["train_step_time_ms"].fillna(0), height=0.38, color=colours, label="train step")
            axes[0].barh(y + 0.2, g["infer_step_time_ms"].fillna(0), height=0.38, color=colours, alpha=0.45,
                         hatch="//", label="inference step")
            axes[0].set_xlabel("time per step (ms, median)")
            legend_above(axes[0])
        else:
            not_measured(axes[0], "step time: not measured")
        mem = g["train_peak_allocated_bytes"].fillna(g["peak_allocated_bytes"]) / MIB
        if mem.notna().any():
            axes[1].barh(y, mem.fillna(0), height=0.6, color=colours)
            axes[1].set_xlabel("peak memory, training (MiB)")
            for i, v in enumerate(mem):
                if pd.isna(v):
                    axes[1].text(0, i, " not measured", va="center", fontsize=7, color="#666")
        else:
            not_measured(axes[1], "peak memory: not measured (CPU run)")
        axes[0].set_yticks(y)
        axes[0].set_yticklabels([short(a) for a in arms])
        axes[0].invert_yaxis()
        fig_.png = to_png(fig)
    reps = d.col(d.runs, "train_repeats").dropna()
    fig_.caption = ("Measured once per model and input shape at the training batch size (synthetic steps)"
                    + (f", the median of {reps.median():.0f} timed blocks" if len(reps) else "") + "; the cost "
                    "table says which timings were taken under load." + shared_note(d))
    return fig_


def epoch_time_by_arm(d: ReportData) -> Figure:
    """Median epoch time per arm (bar: mean over seeds, dots: seeds; hollow dots: shared GPU)."""
    fig_ = Figure("epoch_time_by_arm", "Epoch time by arm")
    ok = d.ok
    if ok.empty or not d.has(ok, "median_epoch_time_s"):
        fig_.note = "epoch time: not measured yet"
        return fig_
    arms = [a for a in d.arm_order if a in set(ok["arm_label"])]
    shared = ok["shared_gpu"].fillna(False).astype(bool) if "shared_gpu" in ok else pd.Series(False, index=ok.index)
    t = d.col(ok, "median_epoch_time_s")
    with style():
        fig, (ax,) = panels(1, width=6.0, height=0.9 + 0.3 * len(arms))
        for i, arm in enumerate(arms):
            m = ok["arm_label"] == arm
            c = d.palette.arm(arm)
            ax.barh([i], [t[m].mean()], color=c, alpha=0.75, height=0.6)
            ax.scatter(t[m & ~shared], np.full(int((m & ~shared).sum()), i), color="k", s=10, zorder=3,
                       label="seed (own GPU)")
            if (m & shared).any():
                ax.scatter(t[m & shared], np.full(int((m & shared).sum()), i), facecolor="none", edgecolor="k",
                           s=16, zorder=3, label="seed (shared GPU: timing unreliable)")
        ax.set_yticks(range(len(arms)))
        ax.set_yticklabels([short(a) for a in arms])
        ax.invert_yaxis()
        ax.set_xlabel("median epoch time (s, first epoch left out)")
        legend_above(ax)
        fig_.png = to_png(fig)
    fig_.caption = "Bar: mean over seeds; dots: seeds."
    return fig_


def batch_time(d: ReportData) -> Figure:
    """Epoch time and training throughput against batch size (log2 axes); runs on an exclusive GPU
    only, unless every run shared its GPU (then the caption says so)."""
    fig_ = Figure("batch_time", "Epoch time and throughput against batch size")
    ok, note = timing_runs(d.ok)
    if ok.empty or "tag_batch_size" not in ok or not d.has(ok, "median_epoch_time_s"):
        fig_.note = "needs finished runs tagged with batch_size, with epoch times"
        return fig_
    hue = other_tag(d, ok, "tag_batch_size")
    ok = ok.assign(_x=pd.to_numeric(ok["tag_batch_size"], errors="coerce"), _t=d.col(ok, "median_epoch_time_s"),
                   _r=d.col(ok, "epoch_train_samples_per_s"), _m=d.col(ok, "train_samples_per_s"))
    groups = hue_groups(d, ok, hue)
    with style():
        fig, axes = panels(2, width=4.6, height=3.4)
        for ax, y in zip(axes, ("_t", "_r"), strict=True):  # every point an arm in its own colour, grey lines per group
            arms_by_group(ax, ok, "_x", y, hue=hue, groups=groups, arm_order=d.arm_order, colour_of=d.palette.arm)
        if ok["_m"].notna().any():
            m = ok.groupby("_x")["_m"].median()
            axes[1].plot(m.index, m.values, color="k", ls="--", marker="x", lw=1, label="measured steps")
        axes[0].set_ylabel("median epoch time (s)")
        axes[1].set_ylabel("training throughput (images/s)")
        for ax in axes:
            log2_axis(ax, ok["_x"].dropna().tolist())
            ax.set_xlabel("batch size (log2)")
        legend_outside(axes[-1], source=axes)
        fig_.png = to_png(fig)
    fig_.caption = ("Throughput from whole epochs (data loading included); dashed: synthetic measured steps. "
                    "Mean ± std over seeds." + note)
    return fig_
