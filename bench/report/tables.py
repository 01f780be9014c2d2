"""Report tables: results per arm (with published figures), lr selection, cost, failures, progress.

Each builder returns a :class:`Table`: the raw numbers (written as CSV) and the HTML of a pandas
Styler over a formatted copy (missing values shown as '—', never 'nan'). Every cell and header is
HTML-escaped; only :class:`Html` values (our own markup, built with escaped parts) pass as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup, escape

from bench.measure.env import under_load
from bench.report.analysis import arm_spreads, main_metric, metric_label, select_lr
from bench.report.data import FAILED, ReportData
from bench.report.plotting import metric_bounds
from bench.store import write_atomic

MIB = 2.0**20
RESULT_METRICS = ("final_test_error_pct", "test_error_at_best_val_pct", "best_val_error_pct")
SHARED_MARK = "†"
LOAD_MARK = "‡"


@dataclass(frozen=True)
class Html:
    """A table cell of our own markup; build it with :func:`html_cell` so that its parts are escaped.

    Not a ``str`` subclass on purpose: pandas turns strings into its string dtype, which would drop
    ``markupsafe.Markup`` and with it the mark that the text is already safe."""

    text: str


def html_cell(template: str, *parts: Any) -> Html:
    """``template`` (trusted) with ``parts`` HTML-escaped into its ``{}`` slots."""
    return Html(str(Markup(template).format(*parts)))


def _cell_html(v: Any) -> str:
    return v.text if isinstance(v, Html) else str(escape(str(v)))


@dataclass
class Table:
    """A named table: raw frame for CSV, rendered HTML for the page."""

    name: str
    csv: pd.DataFrame
    html: str

    def write_csv(self, folder: Path) -> Path:
        path = folder / f"{self.name}.csv"
        write_atomic(path, self.csv.to_csv(index=False))  # a reader never sees half a table
        return path


def num(v: Any, digits: int = 2) -> str:
    """A number for display: fixed digits, '—' for missing / non-finite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—" if v is None else str(v)
    return "—" if not math.isfinite(f) else f"{f:.{digits}f}"


def sig(v: Any) -> str:
    """Three significant digits without scientific notation (0.566, 42.1, 168, 1,234), '—' if missing."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(f):
        return "—"
    return f"{f:,.0f}" if abs(f) >= 100 else f"{f:.3g}"


def styled(df: pd.DataFrame, *, bold_rows: list[int] | None = None, table_id: str = "") -> str:
    """Styler HTML for a display frame, index hidden; text is escaped (names, errors and values come
    from records, file systems and the command line), ``Markup`` cells are kept as they are."""
    if df.empty:
        return '<p class="empty">nothing to show</p>'
    df = df.reset_index(drop=True).astype(object)
    df = df.where(df.notna(), "—")
    sty = (df.style.hide(axis="index").format(_cell_html).format_index(escape="html", axis=1)
           .set_table_attributes(f'class="tbl" id="{escape(table_id)}"'))
    if bold_rows:
        rows = set(bold_rows)
        sty = sty.apply(lambda r: ["font-weight:bold" if r.name in rows else "" for _ in r], axis=1)
    return sty.to_html()


def results_table(d: ReportData, comparable: bool = False) -> Table:
    """Per arm: seeds, failures, mean ± std and 95% CI of the errors, and the published figure: with
    the difference ours - published only when ``comparable`` (the run follows the published protocol)
    and the entry is for this setting; else as a reference value."""
    main = main_metric(d)
    metrics = list(dict.fromkeys([*RESULT_METRICS, main]))
    spreads = {m: arm_spreads(d, m) for m in metrics}
    raw, shown = [], []
    sources: list[str] = []  # numbered below the table: the full citation per row made it unreadable
    for arm in d.arm_order:
        cells = d.cells[d.cells["arm_label"] == arm]
        r: dict[str, Any] = {"arm": arm, **{f"arm_{k}": v for k, v in d.arm_dict(arm).items()},
                             "n_ok": int((cells["state"] == "ok").sum()),
                             "n_not_ok": int(cells["state"].isin(FAILED).sum()),
                             "n_unfinished": int((~cells["state"].isin(FAILED + ("ok",))).sum())}
        s: dict[str, Any] = {"arm": arm, "seeds ok": str(r["n_ok"]),
                             "failed": str(r["n_not_ok"]) if r["n_not_ok"] else "",
                             "unfinished": str(r["n_unfinished"]) if r["n_unfinished"] else ""}
        for m in metrics:
            sp = spreads[m][arm]
            r.update({f"{m}_mean": sp.mean, f"{m}_std": sp.std, f"{m}_ci95_lo": sp.lo, f"{m}_ci95_hi": sp.hi})
            # One cell per metric (mean ± std, 95% CI below it) keeps the table narrow enough to read.
            s[f"{metric_label(m)}: mean ± std [95% CI]"] = (
                html_cell('{}<br><span class="ci">{}</span>', sp.fmt(), ci_text(sp.lo, sp.hi, m))
                if sp.lo is not None else sp.fmt())
        p = d.published_for(d.arm_dict(arm))
        if p is not None:
            pm = str(p.get("metric"))
            r.update({"published_value": p["value"], "published_spread": p.get("spread"), "published_metric": pm,
                      "published_source": p.get("source"), "published_note": p.get("note")})
            spread_txt = f" ± {p['spread']:g}" if p.get("spread") else ""
            shown_value = f"{float(p['value']):.2f}{spread_txt}" + ("" if pm == main else f" ({metric_label(pm)})")
            if comparable and p.get("comparable", True):
                ours = (spreads[pm][arm].mean if pm in spreads
                        else float(d.col(d.ok[d.ok["arm_label"] == arm], pm).mean()))
                diff = ours - float(p["value"]) if ours == ours else math.nan
                r["ours_minus_published"] = diff
                s["published (%)"] = shown_value
                s["ours − published"] = "—" if diff != diff else f"{diff:+.2f}"
            else:
                s["reference (%)"] = shown_value
            src = str(p.get("source", ""))
            if src not in sources:
                sources.append(src)
            s["source"] = f"[{sources.index(src) + 1}]" + (f" {p['note']}" if p.get("note") else "")
        raw.append(r)
        shown.append(s)
    # Bold the arm one would choose, on validation error: bolding the best test error would read as
    # choosing on the test set (e.g. one point of an lr grid). Studies without validation use `main`.
    means = [r.get("best_val_error_pct_mean", math.nan) for r in raw]
    if not any(v == v for v in means):
        means = [r.get(f"{main}_mean", math.nan) for r in raw]
    finite = [(v, i) for i, v in enumerate(means) if v == v]
    best = [min(finite)[1]] if finite else []
    notes = "".join(html_cell("<li>{}</li>", s).text for s in sources)
    page = styled(pd.DataFrame(shown), bold_rows=best, table_id="results-table")
    if any(CLIP_MARK in str(getattr(v, "text", v)) for row in shown for v in row.values()):
        page += (f'<p class="muted" id="clip-note">{CLIP_MARK} interval cut at the metric\'s range (0-100% error): '
                 "the t interval over few seeds ran past it; the CSV keeps the uncut bounds.</p>")
    if notes:
        page += f'<ol class="sources">{notes}</ol>'
    return Table("results", pd.DataFrame(raw), page)


CLIP_MARK = "◆"


def ci_text(lo: float | None, hi: float | None, metric: str, digits: int = 2) -> str:
    """'[6.40, 7.80]'; a bound past the metric's range (an error below 0% or above 100%: the t
    interval of few seeds can reach there) is cut at it and marked ◆, explained under the table."""
    if lo is None or hi is None:
        return "—"
    bounds = metric_bounds(metric)
    if bounds is None or (bounds[0] <= lo and hi <= bounds[1]):
        return f"[{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"[{max(lo, bounds[0]):.{digits}f}, {min(hi, bounds[1]):.{digits}f}]{CLIP_MARK}"


def selection_table(d: ReportData) -> Table | None:
    """For lr-grid studies: per optimiser the lr chosen on mean validation accuracy, and its test error."""
    sel = select_lr(d)
    if sel.empty:
        return None
    def with_std(means: pd.Series, stds: pd.Series) -> list[str]:
        return [num(m) + ("" if s != s else f" ± {s:.2f}") for m, s in zip(means, stds, strict=True)]

    shown = pd.DataFrame({
        "optimizer": sel["optimizer"], "lr grid": sel["grid"], "chosen lr": [f"{v:g}" for v in sel["chosen lr"]],
        "seeds": sel["n seeds"].astype(str),
        "validation accuracy (%)": with_std(sel["val acc (%)"], sel["val acc std"]),
        "test error at best-val epoch (%)": with_std(sel["test error at best val (%)"], sel["test error std"]),
        "95% CI": sel["test error 95% CI"], "final test error (%)": [num(v) for v in sel["final test error (%)"]],
    })
    return Table("selection", sel, styled(shown, table_id="selection-table"))


def cost_table(d: ReportData) -> Table:
    """Per arm: size, compute, speed, memory and time; timings from shared GPUs flagged."""
    runs = d.runs
    raw, shown = [], []
    for arm in d.arm_order:
        sub = runs[runs["arm_label"] == arm] if not runs.empty else runs
        if sub.empty:
            continue
        med = {c: float(d.col(sub, c).median()) for c in (
            "params_total", "macs_fvcore_total", "macs_conv_linear", "flops_torch", "train_samples_per_s",
            "infer_samples_per_s", "epoch_train_samples_per_s", "train_peak_allocated_bytes",
            "peak_allocated_bytes", "median_epoch_time_s")}
        total_min = float(d.col(sub, "train_time_s").sum()) / 60.0
        n_shared = int(sub["shared_gpu"].fillna(False).astype(bool).sum()) if "shared_gpu" in sub else 0
        mem = med["train_peak_allocated_bytes"]
        mem = med["peak_allocated_bytes"] if mem != mem else mem
        named = "env_device_name" in sub and sub["env_device_name"].notna().any()
        dev = sub["env_device_name"].dropna().iloc[0] if named else ""
        # The runner records a failed measurement as measure_error instead of failing the run.
        merr = next((str(e) for e in sub.get("measure_error", pd.Series(dtype=object)).dropna()), "")
        load = _timing_load(d, sub)
        repeats = d.col(sub, "train_repeats").median()
        raw.append({"arm": arm, "model": sub["model"].iloc[0] if "model" in sub else "", **med, "measure_error": merr,
                    "peak_memory_mib": mem / MIB, "total_train_time_min": total_min, "runs": len(sub),
                    "shared_gpu_runs": n_shared, "device_name": dev, "step_timing_repeats": repeats, **load})
        t = SHARED_MARK if n_shared else ""
        step_mark = t + (LOAD_MARK if load["step_runs_under_load"] else "")
        epoch_mark = t + (LOAD_MARK if load["epoch_runs_under_load"] else "")
        shown.append({
            "arm": arm, "params (M)": sig(med["params_total"] / 1e6),
            "MACs (M, fvcore total)": sig(med["macs_fvcore_total"] / 1e6),
            "MACs (M, conv+linear)": sig(med["macs_conv_linear"] / 1e6),
            "FLOPs (M, torch)": sig(med["flops_torch"] / 1e6),
            "train samples/s (steps)": num(med["train_samples_per_s"], 0) + step_mark,
            "train samples/s (epochs)": num(med["epoch_train_samples_per_s"], 0) + epoch_mark,
            "inference samples/s": num(med["infer_samples_per_s"], 0) + step_mark,
            "peak memory (MiB)": "not measured" if mem != mem else num(mem / MIB, 1),
            "median epoch time (s)": sig(med["median_epoch_time_s"]) + epoch_mark,
            "total train time (min)": sig(total_min),
            "rests on": _rests_on(repeats, d.col(sub, "train_steps_per_repeat").median(), len(sub)),
            "load during timings": _load_text(load, len(sub)),
            "shared GPU": f"yes ({n_shared}/{len(sub)} runs) {SHARED_MARK}" if n_shared else "no",
            "device": dev or "—",
            "measurement error": merr,
        })
    shown_df = pd.DataFrame(shown)
    if not shown_df.empty and shown_df["device"].nunique() <= 1:
        shown_df = shown_df.drop(columns=["device"])  # one device: already in the page header
    if not shown_df.empty and not shown_df["measurement error"].astype(bool).any():
        shown_df = shown_df.drop(columns=["measurement error"])
    if not shown_df.empty and not (shown_df["shared GPU"] != "no").any():
        shown_df = shown_df.drop(columns=["shared GPU"])  # nothing shared (a CPU run): no column of "no"
    return Table("cost", pd.DataFrame(raw), styled(shown_df, table_id="cost-table"))


def _timing_load(d: ReportData, sub: pd.DataFrame) -> dict[str, Any]:
    """How many of an arm's runs had their step timings (measurement) and their epoch timings (the
    run itself) taken under load (:func:`bench.measure.env.under_load`), how many are unknown (records
    from before the load was recorded), and the largest share of CPU time other processes took."""
    cpus = d.col(sub, "env_cpu_count")
    step, epoch = [], []
    for i in range(len(sub)):
        step.append(max((v for v in (under_load(d.col(sub, f"{m}_other_cpu_pct").iloc[i],
                                                d.col(sub, f"{m}_load_avg_1min").iloc[i], cpus.iloc[i])
                                     for m in ("train", "infer")) if v is not None), default=None))
        epoch.append(under_load(d.col(sub, "env_other_cpu_pct").iloc[i], d.col(sub, "env_load_avg_1min").iloc[i],
                                cpus.iloc[i]))
    others = pd.concat([d.col(sub, c) for c in ("train_other_cpu_pct", "infer_other_cpu_pct")])
    return {"step_runs_under_load": sum(v is True for v in step),
            "step_runs_load_unknown": sum(v is None for v in step),
            "epoch_runs_under_load": sum(v is True for v in epoch),
            "epoch_runs_load_unknown": sum(v is None for v in epoch),
            "step_other_cpu_pct_max": float(others.max()),
            "epoch_other_cpu_pct_max": float(d.col(sub, "env_other_cpu_pct").max())}


def _load_text(load: dict[str, Any], runs: int) -> str:
    """'quiet', or which timings were taken under load (other processes' largest CPU share), or unknown."""
    parts = []
    for what, key in (("steps", "step"), ("epochs", "epoch")):
        n, unknown = load[f"{key}_runs_under_load"], load[f"{key}_runs_load_unknown"]
        top = load[f"{key}_other_cpu_pct_max"]
        if n:
            parts.append(f"{what}: {n}/{runs} runs under load {LOAD_MARK}"
                         + (f" (others up to {top:.0f}% CPU)" if top == top else ""))
        elif unknown == runs:
            parts.append(f"{what}: not recorded")
        elif top == top:
            parts.append(f"{what}: quiet (others ≤ {top:.0f}% CPU)")
        else:
            parts.append(f"{what}: quiet")
    return "; ".join(parts)


def _rests_on(repeats: float, per_repeat: float, runs: int) -> str:
    """What the timing figures rest on: the step timing's blocks (one measurement per model and
    input, shared by the arm's runs) and the number of runs whose epochs give the epoch figures."""
    steps = "steps: —" if repeats != repeats else (
        f"steps: {repeats:.0f} timed block{'s' if repeats != 1 else ''}"
        + (f" of {per_repeat:.0f} steps" if per_repeat == per_repeat and per_repeat > 1 else ""))
    return f"{steps}; epochs: {runs} run{'s' if runs != 1 else ''}"


def failures_table(d: ReportData) -> Table:
    """Every failed, diverged or out-of-memory cell with its error."""
    rows = []
    for _, c in d.cells[d.cells["state"].isin(FAILED)].iterrows():
        r = d.records.get(c["run_id"])
        log = d.run_dir(c["run_id"]) / "log.txt"
        rows.append({"arm": c["arm_label"], "seed": c["seed"], "status": c["state"],
                     "error": (r.outcome.error if r else None)
                     or ("diverged (loss not finite)" if c["state"] == "diverged" else "—"),
                     "epochs done": r.metrics.get("epochs_done") if r else None,
                     "host": r.placement.host if r else None,
                     "run_id": c["run_id"], "log": f"runs/{c['run_id']}/log.txt" if log.exists() else ""})
    raw = pd.DataFrame(rows, columns=["arm", "seed", "status", "error", "epochs done", "host", "run_id", "log"])
    shown = raw.copy()
    shown["epochs done"] = [num(v, 0) for v in shown["epochs done"]]
    shown["log"] = [html_cell('<a href="{}">log.txt</a>', p) if p else "" for p in shown["log"]]
    return Table("failures", raw, styled(shown, table_id="failures-table"))


def progress_table(d: ReportData) -> Table:
    """Every cell with its state; unfinished ones show how far their history got."""
    cells = d.cells.copy()
    epochs = d.history.groupby("run_id")["epoch"].max() if not d.history.empty and "epoch" in d.history else {}
    cells["epochs_recorded"] = [epochs.get(r) if hasattr(epochs, "get") else None for r in cells["run_id"]]
    keep = [c for c in ("arm_label", "seed", "state", "epochs_recorded", "run_id", "error") if c in cells]
    raw = cells[keep]
    open_ = raw[~raw["state"].isin(FAILED + ("ok",))]
    shown = open_.rename(columns={"arm_label": "arm", "epochs_recorded": "epochs so far"}).drop(columns=["error"],
                                                                                                  errors="ignore")
    if "epochs so far" in shown:
        shown["epochs so far"] = [num(v, 0) for v in shown["epochs so far"]]
    return Table("cells", raw, styled(shown, table_id="progress-table"))


def _has_aux_heads(model: Any) -> bool:
    """Whether ``model`` returns auxiliary logits in training (an unknown model: assumed so)."""
    from bench.models import model_info

    try:
        return bool(model_info(str(model)).get("returns_aux_in_train"))
    except Exception:  # noqa: BLE001 - a model this checkout does not know: keep its settings shown
        return True


# Config keys that matter only under a condition on a run's config and whether it ran on a GPU; the
# held-fixed table leaves a key out when it applies to none of the runs (one rule per key, here only).
APPLIES: dict[str, Any] = {
    "betas": lambda c, _gpu: c.get("optimizer") in ("adam", "adamw"),
    "momentum": lambda c, _gpu: c.get("optimizer") in ("sgd", "rmsprop"),
    "nesterov": lambda c, _gpu: c.get("optimizer") == "sgd",
    "milestones": lambda c, _gpu: c.get("schedule") == "multistep",
    "gamma": lambda c, _gpu: c.get("schedule") in ("multistep", "plateau"),
    "aux_loss_weight": lambda c, _gpu: _has_aux_heads(c.get("model")),
    "loader": lambda c, gpu: gpu or c.get("loader") != "gpu",
    "crop_padding": lambda c, _gpu: bool(c.get("augment", True)),
    "hflip": lambda c, _gpu: bool(c.get("augment", True)),
    "epochs": lambda c, _gpu: c.get("epochs") is not None or c.get("iterations") is None,
    "iterations": lambda c, _gpu: c.get("iterations") is not None,
}


def applicable_settings(d: ReportData, fixed: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the held-fixed settings that apply to at least one run, the keys left out): Adam's betas are
    not shown for SGD runs, aux_loss_weight not for models without auxiliary heads, the GPU loader
    not for runs on a CPU... (:data:`APPLIES`). Without records (nothing finished) all are kept."""
    runs = [(r.cell.config.to_dict(), str(r.placement.device or "").startswith("cuda")) for r in d.records.values()]
    if not runs:
        return dict(fixed), []
    keep, dropped = {}, []
    for k, v in fixed.items():
        rule = APPLIES.get(k.split(".")[0])
        if rule is None or any(rule(c, gpu) for c, gpu in runs):
            keep[k] = v
        else:
            dropped.append(k)
    return keep, dropped


def config_tables(varied: pd.DataFrame, fixed: dict[str, Any], left_out: list[str] | None = None) -> tuple[str, str]:
    """HTML of the varied-keys-per-arm table and the fixed keys table (with the keys left out as not
    applying to these runs named under it)."""
    v = styled(varied.reset_index(), table_id="varied-table") if not varied.empty else \
        '<p class="empty">no config key differs between the runs</p>'
    items = [{"key": k, "value": _fmt_value(val)} for k, val in fixed.items()]
    f = styled(pd.DataFrame(items), table_id="fixed-table")
    if left_out:
        f += str(Markup('<p class="muted" id="fixed-left-out">Not shown, as they do not apply to these runs: {}.</p>')
                 .format(", ".join(left_out)))
    return v, f


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    return "—" if v is None else str(v)
