"""Training curves: error against iterations (He et al. Fig. 6 style), epochs and training time."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from bench.report.analysis import shared_note
from bench.report.data import CURVE_STATES, ReportData
from bench.report.plotting import (Figure, chance_line, legend_outside, mean_band, panels, runs_chance_error_pct,
                                   short, style, to_png)

NET_ORDER = ("plain", "residual")


def curve_history(d: ReportData) -> pd.DataFrame:
    """Epoch rows of runs that ended ok or are still going, with error columns in percent."""
    h = d.history
    if h.empty:
        return h
    h = h[h["state"].isin(CURVE_STATES)].copy()
    for split in ("train", "val", "test"):
        col = f"{split}_acc"
        if col in h:
            h[f"{split}_err"] = 100.0 * (1.0 - pd.to_numeric(h[col], errors="coerce"))
    return h


def _has(h: pd.DataFrame, col: str) -> bool:
    return col in h and pd.to_numeric(h[col], errors="coerce").notna().any()


def curves_iter(d: ReportData) -> Figure:
    """Training error (thin) and test error (bold) against iterations; plain | residual panels,
    one colour per arm (as in every figure), the chance error dotted."""
    fig_ = Figure("curves_iter", "Error against iterations (thin: training, bold: test)")
    h = curve_history(d)
    if h.empty or not _has(h, "iteration") or not _has(h, "test_err"):
        fig_.note = "no per-epoch history with iterations and test accuracy yet"
        return fig_
    if "tag_net" in h:
        nets = [n for n in NET_ORDER if n in set(h["tag_net"])] + sorted(set(h["tag_net"].dropna()) - set(NET_ORDER))
    else:
        nets = [None]
    chance = runs_chance_error_pct(d.runs)
    with style():
        fig, axes = panels(len(nets), sharey=True)
        for ax, net in zip(axes, nets, strict=True):
            sub = h if net is None else h[h["tag_net"] == net]
            for arm in [a for a in d.arm_order if a in set(sub["arm"])]:
                s = sub[sub["arm"] == arm]
                colour = d.palette.arm(arm)
                if _has(s, "train_err"):
                    mean_band(ax, s, "epoch", "iteration", "train_err", color=colour, label=None, lw=0.8,
                              band=False)
                mean_band(ax, s, "epoch", "iteration", "test_err", color=colour, label=short(arm), lw=2.2)
            chance_line(ax, chance)
            ax.set_title(f"{net} nets" if net else "all arms")
            ax.set_xlabel("iteration")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
            ax.set_ylabel("error (%)")
        # One legend for all panels, right of the last: inside, it covered the 56-layer curves.
        handles, labels = [], []
        for ax in axes:
            for hd, lb in zip(*ax.get_legend_handles_labels(), strict=True):
                if lb not in labels:
                    handles.append(hd)
                    labels.append(lb)
        handles += [Line2D([], [], color="k", lw=0.8), Line2D([], [], color="k", lw=2.2)]
        labels += ["training", "test"]
        axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                        frameon=False)
        fig_.png = to_png(fig)
    fig_.caption = "Mean over seeds; band: min-max over seeds." + (
        f" Dotted: chance ({chance:g}% error, guessing among the classes)." if chance is not None else "")
    return fig_


def _curves(d: ReportData, kind: str, x: str, xlabel: str, title: str) -> Figure:
    fig_ = Figure(kind, title)
    h = curve_history(d)
    if h.empty or not _has(h, x):
        fig_.note = f"no per-epoch history with {x} yet"
        return fig_
    splits = [s for s in ("val", "test") if _has(h, f"{s}_err")]
    if not splits:
        fig_.note = "no validation or test accuracy in the history"
        return fig_
    scale = 1.0
    if x == "elapsed_train_time_s" and pd.to_numeric(h[x], errors="coerce").max() > 600:
        scale, xlabel = 60.0, "training time (min)"
    h = h.assign(_x=pd.to_numeric(h[x], errors="coerce") / scale)
    arms = [a for a in d.arm_order if a in set(h["arm"])]
    chance = runs_chance_error_pct(d.runs)
    with style():
        fig, axes = panels(len(splits), sharey=True)
        for ax, split in zip(axes, splits, strict=True):
            for arm in arms:
                mean_band(ax, h[h["arm"] == arm], "epoch", "_x", f"{split}_err", color=d.palette.arm(arm),
                          label=short(arm))
            chance_line(ax, chance)
            ax.set_title("validation error" if split == "val" else "test error")
            ax.set_xlabel(xlabel)
            if x == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("error (%)")
        # right of the axes, never over the curves
        legend_outside(axes[-1], source=axes, ncols=1 if len(arms) <= 16 else 2)
        fig_.png = to_png(fig)
    fig_.caption = "Mean over seeds per arm; band: min-max over seeds." + (
        f" Dotted: chance ({chance:g}% error)." if chance is not None else "") + (
        shared_note(d, h["run_id"].unique()) if x == "elapsed_train_time_s" else "")
    return fig_


def curves_epoch(d: ReportData) -> Figure:
    """Validation and test error against epoch, per arm."""
    return _curves(d, "curves_epoch", "epoch", "epoch", "Error against epochs")


def curves_time(d: ReportData) -> Figure:
    """Validation and test error against cumulative training time, per arm."""
    return _curves(d, "curves_time", "elapsed_train_time_s", "training time (s)", "Error against training time")

