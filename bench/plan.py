"""``bench plan``: the cells of a study, their status and an estimated cost.

The cost of each cell is its optimizer steps, training samples and training compute (3 x the
forward multiply-adds of convolutions and matrix products, counted on the meta device: no weights,
no images, so ``image_size=100000`` is planned, not allocated) and, once any run of the study has
been recorded, an estimated time at the speed those runs trained at. Values that are legal but
absurd (``epochs=1e9``) are planned like any other: the footer says what they would cost.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import RunConfig
from bench.data.sources import input_shape, stored_shape, stored_train_size
from bench.store import ResultsStore
from bench.study import Selection, Study

# A cell estimated to take longer than this is called out under the table.
LONG_CELL_S = 30 * 86400.0


def train_size(cfg: RunConfig) -> int | None:
    """Training images one epoch goes through (after the validation split and subset), or None."""
    n = stored_train_size(cfg.dataset)
    if n is None:
        return None
    return cfg.train_subset or n - (int(cfg.val_size) if cfg.val_size >= 1 else int(n * cfg.val_size))


def estimate_steps(cfg: RunConfig) -> int | None:
    """Optimizer steps of the run: ``iterations``, else epochs x batches per epoch (last one partial)."""
    if cfg.iterations:
        return cfg.iterations
    n = train_size(cfg)
    if n is None:
        return None
    return int(cfg.epochs or 0) * -(-n // cfg.batch_size)


def estimate_samples(cfg: RunConfig) -> int | None:
    """Training samples the run processes (epochs x train size, or iterations x batch)."""
    if cfg.iterations:
        return cfg.iterations * cfg.batch_size
    n = train_size(cfg)
    return None if n is None else int(n * (cfg.epochs or 0))


def estimate_shape(cfg: RunConfig) -> tuple[int, int, int] | None:
    """The model's input shape, without loading the data (CIFAR-sized when only loading can tell)."""
    return input_shape(cfg, stored_shape(cfg.dataset) or (3, 32, 32))


def forward_macs(cfg: RunConfig, shape: tuple[int, int, int]) -> float:
    """Multiply-adds of convolutions and matrix products for one image (as ``macs_conv_linear``),
    counted on the meta device; NaN for a model that cannot run there."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models import create_model

    try:
        with torch.device("meta"), torch.no_grad():
            model = create_model(cfg.model, in_channels=shape[0], **cfg.model_kwargs).eval()
            counter = FlopCounterMode(display=False)
            with counter:
                model(torch.zeros(1, *shape))
    except Exception:  # noqa: BLE001 - an estimate only: unknown, not a failed plan
        return math.nan
    return counter.get_total_flops() / 2  # FLOPs count 2 per multiply-add


def _model_key(cfg: RunConfig, shape: tuple[int, int, int] | None) -> str:
    return json.dumps([cfg.model, cfg.model_kwargs, shape], sort_keys=True, default=str)


class SpeedBook:
    """Training speeds recorded in a study, in training multiply-adds per second.

    A cell of a model that has been trained is estimated at that model's recorded speed; any other
    at the median speed of every recorded run (compute-scaled). Estimates, for scale: they say
    nothing about a different device than the one the records came from.
    """

    def __init__(self, store: ResultsStore, study: str, macs: Any) -> None:
        self.by_model: dict[str, list[float]] = {}
        self.devices: set[str] = set()
        self.runs = 0
        for rec in store.records(study):
            sps = rec.metrics.get("epoch_train_samples_per_s")
            if rec.outcome.status != "ok" or not isinstance(sps, (int, float)) or not sps > 0:
                continue
            shape = estimate_shape(rec.cell.config)
            per_image = macs(rec.cell.config, shape)
            if not per_image > 0:
                continue
            self.by_model.setdefault(_model_key(rec.cell.config, shape), []).append(3 * per_image * float(sps))
            self.devices.add(rec.placement.device)
            self.runs += 1
        every = [r for rates in self.by_model.values() for r in rates]
        self.median = statistics.median(every) if every else math.nan

    def seconds(self, cfg: RunConfig, shape: tuple[int, int, int] | None, train_macs: float) -> float:
        """Estimated training time of ``cfg`` (NaN when nothing has been recorded)."""
        rates = self.by_model.get(_model_key(cfg, shape))
        rate = statistics.median(rates) if rates else self.median
        return train_macs / rate if rate > 0 and train_macs == train_macs else math.nan


def human_duration(seconds: float) -> str:
    """'42 s', '3.5 min', '2.1 h', '4.0 d', '1.2e+06 y'; '?' when unknown."""
    if not seconds == seconds:
        return "?"
    for unit, size in (("y", 365.25 * 86400), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            v = seconds / size
            return f"{v:.3g} {unit}" if v < 1e4 else f"{v:.2g} {unit}"
        continue
    return f"{seconds:.0f} s"


def plan_table(study: Study, profile: str, results_dir: str | Path, overrides: dict[str, Any] | None,
               selection: Selection | None = None) -> pd.DataFrame:
    """One row per selected cell: run id, arm, seed, status, length, optimizer steps, training
    samples, estimated training compute (T multiply-adds) and time; ``attrs`` holds the totals, the
    number of cells in the whole profile and where the speed estimate came from."""
    store = ResultsStore(results_dir)
    macs_cache: dict[str, float] = {}

    def macs(cfg: RunConfig, shape: tuple[int, int, int] | None) -> float:
        key = _model_key(cfg, shape)
        if key not in macs_cache:
            macs_cache[key] = forward_macs(cfg, shape) if shape is not None else math.nan
        return macs_cache[key]

    speeds = SpeedBook(store, study.name, macs)
    rows = []
    every = study.cells(profile, overrides)
    for c in selection.apply(every) if selection else every:
        cfg = c.config
        shape = estimate_shape(cfg)
        samples = estimate_samples(cfg)
        # forward + backward ~ 3x the forward multiply-adds
        train_macs = 3 * macs(cfg, shape) * samples if samples else math.nan
        seconds = speeds.seconds(cfg, shape, train_macs)
        rows.append({
            "run_id": c.run_id,
            "arm": c.label,
            "seed": c.seed,
            "status": store.state(study.name, c.run_id),
            "length": f"{cfg.iterations} it" if cfg.iterations else f"{cfg.epochs} ep",
            "train_steps": estimate_steps(cfg),
            "train_samples": samples,
            "est_train_TMACs": round(train_macs / 1e12, 2),
            "est_time": human_duration(seconds),
            "_seconds": seconds,
        })
    df = pd.DataFrame(rows)
    secs = df.pop("_seconds") if "_seconds" in df else pd.Series(dtype=float)
    df.attrs["total_TMACs"] = float(df["est_train_TMACs"].sum()) if len(df) else 0.0
    df.attrs["total_steps"] = sum(int(s) for s in df["train_steps"] if s == s and s is not None) if len(df) else 0
    df.attrs["total_seconds"] = float(secs.sum()) if len(secs) and secs.notna().all() else math.nan
    df.attrs["long_cells"] = int((secs > LONG_CELL_S).sum())
    df.attrs["speed_from"] = (f"the speed of {speeds.runs} recorded run(s) on {', '.join(sorted(speeds.devices))}"
                              if speeds.runs else "")
    df.attrs["cells_in_profile"] = len(every)
    return df


def _number(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 1e6 else f"{v:.3g}"


def plan_footer(df: pd.DataFrame) -> list[str]:
    """The lines under the plan's table: counts, total compute, steps and time, and a note on cells
    whose cost is out of all proportion (legal values are planned, never refused)."""
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    lines = [f"{len(df)} cells ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
             f"estimated training compute {_number(df.attrs.get('total_TMACs', math.nan))} T multiply-adds "
             "(3 x forward conv+linear MACs per training image)"]
    when = (f"about {human_duration(df.attrs['total_seconds'])} at {df.attrs['speed_from']}"
            if df.attrs.get("speed_from") and df.attrs.get("total_seconds") == df.attrs.get("total_seconds")
            else "time unknown until a run of this study is recorded")
    lines.append(f"estimated cost: {df.attrs.get('total_steps', 0):,} optimizer steps; {when}")
    if df.attrs.get("long_cells"):
        lines.append(f"note: {df.attrs['long_cells']} cell(s) would each train for more than "
                     f"{LONG_CELL_S / 86400:.0f} days; the values are legal, so `bench run` would start them")
    return lines
