"""Matplotlib plumbing shared by the figure modules: Agg backend, style, PNG as base64, and the few
plot shapes (mean line with a seed band, mean with error bars, points with seed dots) they reuse."""

from __future__ import annotations

import base64
import io
import math
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib

# Reports are built headless (CI, Slurm nodes): never a display backend. A Jupyter kernel's inline
# backend (set in MPLBACKEND by ipykernel) is headless too, and switching it would stop the notebook's
# own plots from showing after a report is built there.
if "inline" not in os.environ.get("MPLBACKEND", ""):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

DPI = 110
PANEL = (4.6, 3.2)  # inches per panel: small enough that a report of 40 figures stays a few MB
RC: dict[str, Any] = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "legend.fontsize": 7.5, "legend.title_fontsize": 8, "figure.dpi": DPI}


@dataclass
class Figure:
    """One rendered figure (``png`` base64) or the reason it was not drawn (``note``)."""

    kind: str
    title: str
    png: str | None = None
    note: str = ""
    caption: str = ""


@contextmanager
def style() -> Iterator[None]:
    """Seaborn's whitegrid look with small fonts, scoped so the caller's rcParams stay untouched."""
    # matplotlib's stub types rc keys as a Literal of every known name; RC's are all known ones
    with sns.axes_style("whitegrid"), plt.rc_context(RC):  # type: ignore[arg-type]
        yield


def panels(n: int, *, width: float = PANEL[0], height: float = PANEL[1], sharey: bool = False
           ) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=sharey, squeeze=False)
    return fig, list(axes[0])


def to_png(fig: plt.Figure) -> str:
    """Encode as base64 PNG (tight layout, moderate DPI) and free the figure."""
    buf = io.BytesIO()
    try:
        fig.tight_layout()
    except Exception:  # noqa: BLE001 - tight_layout can fail on odd text; the figure is still fine
        pass
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def array_png(img: np.ndarray, scale: int = 1) -> str:
    """An image array (H, W) gray or (H, W, 3) in [0, 1] or uint8 as base64 PNG, no axes."""
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    gray = {"cmap": "gray", "vmin": 0, "vmax": 1 if img.dtype != np.uint8 else 255}
    kw: dict[str, Any] = gray if img.ndim == 2 else {}
    plt.imsave(buf, img, format="png", **kw)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def not_measured(ax: plt.Axes, what: str = "not measured") -> None:
    """Mark an empty panel instead of drawing nothing (e.g. memory on a CPU run)."""
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def mean_band(ax: plt.Axes, df: pd.DataFrame, by: str, x: str, y: str, *, color: str, label: str | None,
              lw: float = 1.6, alpha: float = 0.18, ls: str = "-", band: bool = True) -> None:
    """Mean of ``y`` over seeds per value of ``by`` (epoch), plotted at the mean ``x`` (which may be
    elapsed time, different per seed), with a min-max band over seeds."""
    cols = list(dict.fromkeys([by, x, y]))
    d = df[cols].apply(pd.to_numeric, errors="coerce").dropna()
    if d.empty:
        return
    g = d.groupby(by, sort=True).agg(x=(x, "mean"), m=(y, "mean"), lo=(y, "min"), hi=(y, "max"))
    # with few points (short runs) a bare line is invisible or misleading: mark the points
    marker = "o" if len(g) <= 12 else None
    ax.plot(g["x"], g["m"], color=color, lw=lw, ls=ls, label=label, marker=marker, ms=3 + lw)
    if band and len(g) > 1 and (g["hi"] - g["lo"]).abs().max() > 0:
        ax.fill_between(g["x"], g["lo"], g["hi"], color=color, alpha=alpha, lw=0)


ERROR_PCT_RANGE = (0.0, 100.0)  # an error in percent: intervals shown are clipped to it


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """The range a metric's values can take (``*_error_pct``: 0-100), for clipping intervals; None
    where it has none worth clipping to."""
    return ERROR_PCT_RANGE if metric.endswith("_error_pct") else None


def clipped_err(mean: Any, std: Any, bounds: tuple[float, float] | None) -> np.ndarray:
    """The (2, n) lower/upper bar lengths of mean ± std, each cut where it would leave ``bounds``
    (an error bar past 100% error or below 0% shows no possible value)."""
    m = np.asarray(mean, dtype=float)
    sd = np.nan_to_num(np.asarray(std, dtype=float), nan=0.0)
    lo, hi = sd.copy(), sd.copy()
    if bounds is not None:
        lo = np.clip(np.minimum(sd, m - bounds[0]), 0.0, None)
        hi = np.clip(np.minimum(sd, bounds[1] - m), 0.0, None)
    return np.vstack([lo, hi])


def mean_errorbar(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, *, color: str, label: str | None,
                  marker: str = "o", bounds: tuple[float, float] | None = None, ls: str = "-",
                  line_color: str | None = None) -> None:
    """Mean +/- std over seeds at each x (bars clipped to ``bounds``, the metric's range), joined by a
    line (``line_color``, default ``color``); seeds as faint dots."""
    d = df[[x, y]].dropna()
    if d.empty:
        return
    g = d.groupby(x, sort=True)[y].agg(["mean", "std", "count"]).reset_index()
    ax.errorbar(g[x], g["mean"], yerr=clipped_err(g["mean"], g["std"], bounds), color=line_color or color,
                marker=marker, ms=5, lw=1.5, ls=ls, capsize=3, label=label, mfc=color, mec=color, ecolor=color)
    ax.scatter(d[x], d[y], color=color, s=9, alpha=0.45, lw=0, zorder=3)


GROUP_LINE = "#666"
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def arms_by_group(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, *, hue: str | None, groups: list[Any],
                  arm_order: list[str], colour_of: Any, bounds: tuple[float, float] | None = None,
                  arm_label: str = "arm_label", with_arm_labels: bool = True) -> None:
    """``y`` against ``x`` where every point is an arm (its seeds' mean ± std, bars cut at
    ``bounds``) in the arm's own colour (``colour_of(arm)``, the same in every figure), and the arms
    of one hue group (net, norm, optimizer, lr rule) are joined by a grey line with the group's own
    line style and marker, labelled '<hue> <group>' for the legend."""
    name = hue.split("_", 1)[1] if hue and "_" in hue else (hue or "")
    for i, g in enumerate(groups):
        sub = data if g is None else data[data[hue] == g]
        sub = sub[[c for c in dict.fromkeys([x, y, arm_label])]].dropna(subset=[x, y])
        if sub.empty:
            continue
        marker = MARKERS[i % len(MARKERS)]
        means = sub.groupby(x, sort=True)[y].mean()
        ax.plot(means.index, means.values, color=GROUP_LINE, lw=1.1, ls=LINE_STYLES[i % len(LINE_STYLES)],
                marker=marker, mfc="none", mec=GROUP_LINE, ms=9, zorder=1,
                label=f"{name} {g}".strip() if g is not None else None)
        for arm in [a for a in arm_order if a in set(sub[arm_label])]:
            mean_errorbar(ax, sub[sub[arm_label] == arm], x, y, color=colour_of(arm),
                          label=short(arm) if with_arm_labels else None, bounds=bounds, ls="none", marker=marker)


def chance_error_pct(num_classes: Any) -> float | None:
    """The error of guessing at random among ``num_classes`` balanced classes: 100 - 100/k %."""
    try:
        k = int(num_classes)
    except (TypeError, ValueError):
        return None
    return 100.0 - 100.0 / k if k >= 2 else None


def runs_chance_error_pct(runs: pd.DataFrame) -> float | None:
    """:func:`chance_error_pct` of the runs' one number of classes (None when unknown or mixed)."""
    if "num_classes" not in runs:
        return None
    ks = pd.to_numeric(runs["num_classes"], errors="coerce").dropna().unique()
    return chance_error_pct(ks[0]) if len(ks) == 1 else None


def chance_line(ax: plt.Axes, chance: float | None, *, vertical: bool = False) -> None:
    """A dotted grey line at the chance error, labelled for the legend ('chance (90% error)'); call
    it after the data are drawn. Where it lies far above the data (errors of a few percent), the axis
    is not stretched to it: a note at the axis' end says where chance is instead."""
    if chance is None:
        return
    lo, hi = ax.get_xlim() if vertical else ax.get_ylim()
    label = f"chance ({chance:g}% error)"
    if chance > hi + (hi - lo) * 1.5:
        if vertical:
            ax.text(1.0, -0.02, f"{label}: off the scale →", transform=ax.transAxes, ha="right", va="top",
                    fontsize=7, color="#666")
        else:
            ax.text(0.99, 0.99, f"↑ {label}: off the scale", transform=ax.transAxes, ha="right", va="top",
                    fontsize=7, color="#666")
        return
    kw: dict[str, Any] = dict(color="#888", ls=":", lw=1.2, zorder=0, label=label)
    (ax.axvline if vertical else ax.axhline)(chance, **kw)


def legend_outside(ax: plt.Axes, *, source: list[plt.Axes] | None = None, **kw: Any) -> None:
    """Legend right of ``ax`` (each label once, gathered from ``source`` axes, default ``ax``):
    inside the axes it covered curves (e.g. the 56-layer ones)."""
    seen: dict[str, Any] = {}
    for a in source or [ax]:
        for h, lab in zip(*a.get_legend_handles_labels(), strict=True):
            if lab and not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    if seen:
        ax.legend(seen.values(), seen.keys(), loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  frameon=False, **kw)


def published_marker(ax: plt.Axes, x: Any, value: float, spread: float | None, *, color: str,
                     label: str | None, horizontal: bool = False) -> None:
    """A published figure: hollow star (with its spread as an error bar when given)."""
    kw: dict[str, Any] = dict(marker="*", ms=11, mfc="none", mec=color, mew=1.3, ls="none", label=label, zorder=4,
              ecolor=color, capsize=2)
    err = spread if spread and not math.isnan(spread) else None
    if horizontal:
        ax.errorbar([value], [x], xerr=err, **kw)
    else:
        ax.errorbar([x], [value], yerr=err, **kw)


def dedupe_legend(ax: plt.Axes, **kw: Any) -> None:
    """Legend with each label once (several calls may use the same label)."""
    handles, labels = ax.get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for h, lab in zip(handles, labels, strict=True):
        if lab and not lab.startswith("_") and lab not in seen:
            seen[lab] = h
    if seen:
        ax.legend(seen.values(), seen.keys(), **kw)


def legend_above(ax: plt.Axes) -> None:
    """Legend in a row above the axes: bar charts fill their whole width, so inside it would hide bars."""
    dedupe_legend(ax, loc="lower left", bbox_to_anchor=(0.0, 1.01), ncols=2, frameon=False, borderaxespad=0.2)


def plain_log_axis(ax: plt.Axes) -> None:
    """Log x axis labelled 40, 60, 100 rather than 4x10^1 (MACs in millions read better plain)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    ax.xaxis.set_minor_formatter(fmt)


def log2_axis(ax: plt.Axes, values: list[float]) -> None:
    """Log-2 x axis with the actual values as tick labels (batch sizes read better as 32, 64, ...)."""
    ax.set_xscale("log", base=2)
    vals = sorted({float(v) for v in values if v and v > 0})
    if vals:
        ax.set_xticks(vals)
        ax.set_xticklabels([f"{v:g}" for v in vals])
        ax.minorticks_off()


def short(label: str, width: int = 30) -> str:
    """Arm label without axis names ('batch=32, rule=fixed lr' -> '32 · fixed lr'), truncated. Only
    a leading 'name=' goes: 'adamw lr=0.001' stays whole (cut to '0.001', two arms read the same)."""
    parts = [re.sub(r"^\w+=", "", p) for p in str(label).split(", ")]
    out = " · ".join(parts)
    return out if len(out) <= width else out[: width - 1] + "…"
