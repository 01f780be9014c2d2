"""Page context (header facts, progress counts) and Jinja2 rendering of the report and the index."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from bench.report.data import FAILED, ReportData

TEMPLATES = Path(__file__).parent / "templates"
SECTIONS = (("claims", "claims"), ("overview", "overview"), ("design", "design"), ("figures", "figures"),
            ("results", "results"), ("cost", "cost"), ("details", "detail"), ("failures", "failures"),
            ("progress", "progress"), ("files", "files"))
STATE_CLASS = {"ok": "ok", "failed": "failed", "running": "running", "stale": "running", "pending": "pending",
               "damaged": "failed"}


def env() -> jinja2.Environment:
    """Autoescaping environment; values marked ``| safe`` are Styler/our own HTML."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "—"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(f) else f"{100 * f:.2f}%"


def state_counts(cells: pd.DataFrame) -> dict[str, int]:
    """ok / failed (failed, diverged, oom) / running (fresh or stale claim) / pending."""
    st = cells["state"] if "state" in cells else pd.Series(dtype=str)
    return {"ok": int((st == "ok").sum()), "failed": int(st.isin(FAILED).sum()),
            "running": int(st.isin(("running", "stale")).sum()), "pending": int((st == "pending").sum()),
            "damaged": int((st == "damaged").sum())}  # summary.json unreadable: listed in the progress table


def last_update(d: ReportData) -> float | None:
    """Latest finish time, or the newest history/claim file when nothing finished yet."""
    times = [r.placement.finished_at for r in d.records.values() if math.isfinite(r.placement.finished_at)]
    for rid in d.cells["run_id"]:
        for name in ("history.csv", "claim.lock"):
            p = d.run_dir(str(rid)) / name
            if p.exists():
                times.append(p.stat().st_mtime)
    return max(times) if times else None


def _distinct(d: ReportData, col: str) -> str:
    if d.runs.empty or col not in d.runs:
        return ""
    vals = [str(v) for v in dict.fromkeys(d.runs[col].dropna().tolist()) if str(v) not in ("", "None")]
    return ", ".join(vals) + (" (mixed)" if len(vals) > 1 else "")


def used_gpu(d: ReportData) -> bool:
    """Whether any finished run trained on a CUDA device (the placement's device, e.g. ``cuda:0``)."""
    if d.runs.empty or "device" not in d.runs:
        return False
    return any(str(v).startswith("cuda") for v in d.runs["device"].dropna())


GPU_ONLY_ROWS = ("GPUs", "driver", "CUDA / cuDNN")  # facts of the GPU software stack: not shown for a CPU run


def environment_rows(d: ReportData) -> list[tuple[str, str]]:
    """Device, software versions and the code's commit (with dirty flag) of the finished runs; the
    GPU count, driver and CUDA / cuDNN versions only when a run used a GPU (torch's build reports
    CUDA on a CPU machine too)."""
    rows = [("device", _distinct(d, "env_device_name") or _distinct(d, "device")),
            ("GPUs", _distinct(d, "env_gpu_count")), ("driver", _distinct(d, "env_driver_version")),
            ("CPU", _distinct(d, "env_cpu_model")), ("python", _distinct(d, "env_python_version")),
            ("torch", _distinct(d, "env_torch_version")), ("torchvision", _distinct(d, "env_torchvision_version")),
            ("CUDA / cuDNN", " / ".join(x for x in (_distinct(d, "env_cuda_version"), _distinct(d, "env_cudnn_version"))
                                        if x)),
            ("hosts", _distinct(d, "host"))]
    if not d.runs.empty and "env_git_commit" in d.runs:
        commits = [f"{str(c)[:10]}{' (dirty: uncommitted changes)' if dirty else ''}"
                   for c, dirty in _commit_pairs(d.runs)]
        rows.append(("commit", ", ".join(commits) + (" (mixed)" if len(commits) > 1 else "")))
    gpu = used_gpu(d)
    return [(k, v) for k, v in rows if v and (gpu or k not in GPU_ONLY_ROWS)]


def _commit_pairs(runs: pd.DataFrame) -> list[tuple[Any, bool]]:
    dirty = runs["env_git_dirty"] if "env_git_dirty" in runs else pd.Series(False, index=runs.index)
    pairs = {(c, bool(x) if x == x else False)
             for c, x in zip(runs["env_git_commit"], dirty, strict=True) if c is not None}
    return sorted(pairs, key=str)


def dataset_line(d: ReportData) -> str:
    """Data set name(s) with split sizes and source, from the finished runs (else the cells)."""
    names = _distinct(d, "dataset") or _distinct(d, "cfg_dataset")
    if not d.runs.empty and {"train_size", "val_size", "test_size"} <= set(d.runs.columns):
        r = d.runs.iloc[0]
        sizes = f"train {num0(r['train_size'])} / val {num0(r['val_size'])} / test {num0(r['test_size'])}"
        src = _distinct(d, "data_source")
        return f"{names} — {sizes}" + (f" ({src})" if src else "")
    return names


def num0(v: Any) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return "—"


def render(template: str, **ctx: Any) -> str:
    """Render a template with the helpers the templates use."""
    return env().get_template(template).render(pct=pct, state_class=STATE_CLASS, sections=SECTIONS, **ctx)
