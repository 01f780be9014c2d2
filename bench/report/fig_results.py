"""Final-result figures: error against depth / batch / arm, the lr grid, the BN train-eval gap,
accuracy against batch size, and the accuracy-vs-compute bubble chart."""

from __future__ import annotations


import numpy as np
import pandas as pd

from bench.report.analysis import (arm_spreads, arm_values, hue_groups, main_metric,
                                   metric_label, other_tag, select_lr, shared_note, timing_runs)
from bench.report.data import ReportData
from bench.report.plotting import (Figure, arms_by_group, chance_line, clipped_err, legend_above, legend_outside,
                                   log2_axis, metric_bounds, not_measured, panels, plain_log_axis, published_marker,
                                   runs_chance_error_pct, short, style, to_png)
from bench.report.verdicts import published_protocol


def _ok_with(d: ReportData, *cols: str) -> pd.DataFrame:
    ok = d.ok
    if ok.empty or any(not d.has(ok, c) for c in cols):
        return pd.DataFrame()
    return ok


def _published_points(d: ReportData, metric: str) -> list[tuple[str, dict]]:
    """(arm, published entry) pairs for the arms that have a published figure of ``metric``; none
    unless the run follows the published protocol (beside ours, they would read as a comparison)."""
    if not published_protocol(d)[0]:
        return []
    out = []
    for arm in d.arm_order:
        p = d.published_for(d.arm_dict(arm))
        if p is not None and p.get("metric") == metric and p.get("comparable", True):
            out.append((arm, p))
    return out


def _published_caption(d: ReportData, metric: str) -> str:
    """What the figure says about published figures: drawn as stars, or why not."""
    points = _published_points(d, metric)
    if points:
        notes = sorted({str(p["note"]) for _, p in points if p.get("note")})
        return " Hollow stars: published figures" + (f" (their notes: {'; '.join(notes)})." if notes else ".")
    if not d.published:
        return ""
    ok, why = published_protocol(d)
    why = why if not ok else "the published figures are for another setting"
    return f" Published figures not drawn ({why}); they are in the results table as reference values."


def _xy_by_hue(d: ReportData, kind: str, title: str, xcol: str, xlabel: str, log2: bool,
               with_train: bool = False) -> Figure:
    """Main metric against a numeric tag: every point an arm in its colour (the one it has in every
    figure), the arms of one hue group (net, norm, rule) joined by a grey line of its own style;
    published figures as stars, the chance error dotted. ``with_train``: a training-error panel first."""
    fig_ = Figure(kind, title)
    metric = main_metric(d)
    ok = _ok_with(d, metric)
    if ok.empty or xcol not in ok:
        fig_.note = f"no finished runs with {xcol} and {metric} yet"
        return fig_
    metrics = [metric]
    if with_train and metric.endswith("_error_pct") and d.has(ok, "final_train_error_pct"):
        metrics.insert(0, "final_train_error_pct")
    hue = other_tag(d, ok, xcol)
    ok = ok.assign(_x=pd.to_numeric(ok[xcol], errors="coerce"))
    chance = runs_chance_error_pct(d.runs) if metric.endswith("_error_pct") else None
    with style():
        fig, axes = panels(len(metrics), width=5.0 if len(metrics) > 1 else 5.6, height=3.6)
        for ax, m in zip(axes, metrics, strict=True):
            data = ok.assign(_y=d.col(ok, m))
            arms_by_group(ax, data, "_x", "_y", hue=hue, groups=hue_groups(d, data, hue), arm_order=d.arm_order,
                          colour_of=d.palette.arm, bounds=metric_bounds(m))
            if m == metric:
                for arm, p in _published_points(d, metric):
                    tags = d.arm_tags(arm)
                    x = tags.get(xcol[4:]) if xcol.startswith("tag_") else None
                    if x is None:
                        continue
                    published_marker(ax, float(x), float(p["value"]), p.get("spread"), color=d.palette.arm(arm),
                                     label="published")
            chance_line(ax, chance)
            if log2:
                log2_axis(ax, ok["_x"].dropna().tolist())
            elif ok["_x"].nunique() < 12:
                ax.set_xticks(sorted(ok["_x"].dropna().unique()))
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric_label(m))
            if len(metrics) > 1:
                ax.set_title("training error" if m == "final_train_error_pct" else "test error")
        legend_outside(axes[-1], source=axes)
        fig_.png = to_png(fig)
    fig_.caption = ("Mean ± std over seeds (dots: seeds; bars cut at the metric's range, 0-100%); one colour "
                    "per arm, grey lines join an arm group." + (f" Dotted: chance ({chance:g}% error)."
                                                               if chance is not None else "")
                    + _published_caption(d, metric))
    return fig_


def error_vs_depth(d: ReportData) -> Figure:
    """Final training error and test error against depth, one line per net type (the degradation
    claim is about training error)."""
    return _xy_by_hue(d, "error_vs_depth", "Training and test error against depth", "tag_depth", "depth (layers)",
                      False, with_train=True)


def error_vs_batch(d: ReportData) -> Figure:
    """Error against batch size (log2 axis), one line per normalisation."""
    return _xy_by_hue(d, "error_vs_batch", "Test error against batch size", "tag_batch_size",
                      "batch size (images per step, log2)", True)


def error_by_arm(d: ReportData) -> Figure:
    """Mean error per arm with its spread, seeds as dots, published figures as stars."""
    fig_ = Figure("error_by_arm", "Test error by arm")
    metric = main_metric(d)
    vals = arm_values(d, metric).dropna(subset=["value"])
    if vals.empty:
        fig_.note = f"no finished runs with {metric} yet"
        return fig_
    arms = [a for a in d.arm_order if a in set(vals["arm_label"])]
    spreads = arm_spreads(d, metric)
    with style():
        fig, (ax,) = panels(1, width=6.0, height=0.8 + 0.32 * len(arms))
        for i, arm in enumerate(arms):
            c = d.palette.arm(arm)
            s = spreads[arm]
            ax.errorbar([s.mean], [i], xerr=clipped_err([s.mean], [s.std], metric_bounds(metric)), color=c, marker="D",
                        ms=6, capsize=3, ls="none")
            v = vals[vals["arm_label"] == arm]["value"]
            ax.scatter(v, np.full(len(v), i) + 0.12, color=c, s=12, alpha=0.6, lw=0)
            p = dict(_published_points(d, metric)).get(arm)
            if p is not None:
                published_marker(ax, i, float(p["value"]), p.get("spread"), color="k", label="published",
                                 horizontal=True)
        chance = runs_chance_error_pct(d.runs) if metric.endswith("_error_pct") else None
        chance_line(ax, chance, vertical=True)
        ax.set_yticks(range(len(arms)))
        ax.set_yticklabels([short(a) for a in arms])
        ax.invert_yaxis()
        ax.set_xlabel(metric_label(metric))
        legend_outside(ax)
        fig_.png = to_png(fig)
    fig_.caption = ("Diamond: mean ± std over seeds (cut at the metric's range); dots: seeds."
                    + (f" Dotted: chance ({chance:g}% error)." if chance is not None else "")
                    + _published_caption(d, metric))
    return fig_


def lr_grid(d: ReportData) -> Figure:
    """Validation accuracy against lr per optimiser; the chosen lr (best mean validation) ringed."""
    fig_ = Figure("lr_grid", "Learning-rate grid (validation accuracy)")
    val = "best_val_acc" if d.has(d.ok, "best_val_acc") else "final_val_acc"
    ok = _ok_with(d, val)
    if ok.empty or "tag_lr" not in ok or "tag_optimizer" not in ok:
        fig_.note = "needs finished runs tagged with optimizer and lr, with validation accuracy"
        return fig_
    ok = ok.assign(_x=pd.to_numeric(ok["tag_lr"], errors="coerce"), _y=100 * d.col(ok, val))
    chosen = select_lr(d)
    with style():
        fig, (ax,) = panels(1, width=5.6, height=3.6)
        # every point an arm (optimizer, lr) in its own colour; one grey line style per optimizer
        arms_by_group(ax, ok, "_x", "_y", hue="tag_optimizer", groups=hue_groups(d, ok, "tag_optimizer"),
                      arm_order=d.arm_order, colour_of=d.palette.arm, bounds=(0.0, 100.0))
        for _, r in chosen.iterrows():
            ax.plot([r["chosen lr"]], [r["val acc (%)"]], marker="o", ms=16, mfc="none", mec="k", mew=1.6, ls="none",
                    label="chosen lr")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log)")
        ax.set_ylabel(f"{'best' if val == 'best_val_acc' else 'final'} validation accuracy (%)")
        legend_outside(ax, ncols=1 if len(set(ok["arm_label"])) <= 16 else 2)
        fig_.png = to_png(fig)
    fig_.caption = ("Mean ± std over seeds, one colour per arm, grey lines join an optimizer's arms; ringed: the lr "
                    "chosen on validation accuracy (never on test).")
    return fig_


def bn_mode_gap(d: ReportData) -> Figure:
    """Accuracy on the training data with BN in train mode (batch stats) vs eval mode (running stats)."""
    fig_ = Figure("bn_mode_gap", "Train-mode vs eval-mode accuracy on training data")
    ok = _ok_with(d, "final_train_acc_trainmode", "final_train_acc_evalmode")
    if ok.empty:
        fig_.note = "train-/eval-mode accuracy on the training data: not measured"
        return fig_
    arms = [a for a in d.arm_order if a in set(ok["arm_label"])]
    with style():
        fig, axes = panels(2, width=4.4, height=0.9 + 0.3 * len(arms), sharey=True)
        for i, arm in enumerate(arms):
            sub = ok[ok["arm_label"] == arm]
            tm = 100 * d.col(sub, "final_train_acc_trainmode").mean()
            em = 100 * d.col(sub, "final_train_acc_evalmode").mean()
            axes[0].plot([tm, em], [i, i], color="#999", lw=1, zorder=1)
            axes[0].scatter([tm], [i], color="#1f77b4", marker="o", s=28, label="train mode", zorder=2)
            axes[0].scatter([em], [i], color="#d62728", marker="s", s=28, label="eval mode", zorder=2)
            axes[1].barh([i], [tm - em], color=d.palette.arm(arm), height=0.6)
        axes[0].set_yticks(range(len(arms)))
        axes[0].set_yticklabels([short(a) for a in arms])
        axes[0].invert_yaxis()
        axes[0].set_xlabel("accuracy on training data (%)")
        legend_above(axes[0])
        axes[1].axvline(0, color="k", lw=0.8)
        axes[1].set_xlabel("train mode − eval mode (points)")
        fig_.png = to_png(fig)
    fig_.caption = "Mean over seeds. A large gap means batch statistics differ from the running averages."
    return fig_


def batch_accuracy(d: ReportData) -> Figure:
    """Test error and time to a validation accuracy against batch size, one line per lr rule."""
    fig_ = Figure("batch_accuracy", "Accuracy and time-to-accuracy against batch size")
    metric = main_metric(d)
    ok = _ok_with(d, metric)
    if ok.empty or "tag_batch_size" not in ok:
        fig_.note = "needs finished runs tagged with batch_size"
        return fig_
    hue = other_tag(d, ok, "tag_batch_size")
    ok = ok.assign(_x=pd.to_numeric(ok["tag_batch_size"], errors="coerce"), _y=d.col(ok, metric))
    tcols = sorted((c for c in ok.columns if c.startswith("time_to_val_acc_") and d.has(ok, c)),
                   key=lambda c: int(c.split("_")[4]))
    groups = hue_groups(d, ok, hue)
    timed, note = timing_runs(ok)  # time to accuracy is a timing: exclusive-GPU runs only
    with style():
        fig, axes = panels(2, width=4.6, height=3.4)
        arms_by_group(axes[0], ok, "_x", "_y", hue=hue, groups=groups, arm_order=d.arm_order,
                      colour_of=d.palette.arm, bounds=metric_bounds(metric))
        if tcols:
            arms_by_group(axes[1], timed.assign(_t=d.col(timed, tcols[-1])), "_x", "_t", hue=hue,
                          groups=hue_groups(d, timed, hue), arm_order=d.arm_order, colour_of=d.palette.arm)
        axes[0].set_ylabel(metric_label(metric))
        if tcols:
            pct = tcols[-1].split("_")[4]
            axes[1].set_ylabel(f"time to {pct}% validation accuracy (s)")
            axes[1].set_title(f"runs that never reached {pct}% are left out", fontsize=8)
        else:
            not_measured(axes[1], "no run reached an accuracy threshold")
        for ax in axes:
            log2_axis(ax, ok["_x"].dropna().tolist())
            ax.set_xlabel("batch size (log2)")
        legend_outside(axes[-1], source=axes)
        fig_.png = to_png(fig)
    fig_.caption = ("Mean ± std over seeds (dots: seeds); one colour per arm, grey lines join an arm group."
                    + (note if tcols else ""))
    return fig_


def bubble(d: ReportData) -> Figure:
    """Test accuracy against multiply-adds (log x); bubble area = epoch time, else parameters."""
    fig_ = Figure("bubble", "Accuracy against compute")
    # conv + linear multiply-adds are what papers count (and what the architectures study names)
    macs = next((c for c in ("macs_conv_linear", "macs_fvcore_total") if d.has(d.ok, c)), None)
    ok = _ok_with(d, "final_test_acc")
    if ok.empty or macs is None:
        fig_.note = "needs finished runs with MACs and test accuracy"
        return fig_
    size_col, size_name = next(((c, n) for c, n in (("median_epoch_time_s", "median epoch time"),
                                                     ("params_total", "parameters")) if d.has(ok, c)),
                               (None, ""))
    g = ok.assign(_m=d.col(ok, macs) / 1e6, _a=100 * d.col(ok, "final_test_acc"),
                  _s=d.col(ok, size_col) if size_col else 1.0
                  ).groupby("arm_label", sort=False)[["_m", "_a", "_s"]].mean()
    smax = float(g["_s"].max()) or 1.0
    with style():
        fig, (ax,) = panels(1, width=6.4, height=4.2)
        for arm, r in g.iterrows():
            area = 40 + 900 * float(r["_s"]) / smax if size_col else 80
            ax.scatter([r["_m"]], [r["_a"]], s=area, color=d.palette.arm(str(arm)), alpha=0.6, edgecolor="k", lw=0.6)
            ax.annotate(short(str(arm), 22), (r["_m"], r["_a"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
        plain_log_axis(ax)
        ax.set_xlabel(f"MACs per image (M, {'fvcore total' if macs == 'macs_fvcore_total' else 'conv+linear'}, log)")
        ax.set_ylabel("final test accuracy (%)")
        ax.margins(0.15)
        fig_.png = to_png(fig)
    fig_.caption = (f"Mean over seeds per arm; bubble area ∝ {size_name or 'nothing (not measured)'}."
                    + (shared_note(d, ok["run_id"]) if size_col == "median_epoch_time_s" else ""))
    return fig_
