"""``bench plan``: the cells of a study, their status and an estimated cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import RunConfig
from bench.data.sources import input_shape, stored_shape, stored_train_size
from bench.store import ResultsStore
from bench.study import Selection, Study


def estimate_samples(cfg: RunConfig) -> int | None:
    """Training samples the run processes (epochs x train size, or iterations x batch)."""
    if cfg.iterations:
        return cfg.iterations * cfg.batch_size
    n = stored_train_size(cfg.dataset)
    if n is None:
        return None
    n = cfg.train_subset or n - (int(cfg.val_size) if cfg.val_size >= 1 else int(n * cfg.val_size))
    return int(n * (cfg.epochs or 0))


def estimate_shape(cfg: RunConfig) -> tuple[int, int, int] | None:
    """The model's input shape, without loading the data (CIFAR-sized when only loading can tell)."""
    return input_shape(cfg, stored_shape(cfg.dataset) or (3, 32, 32))


def plan_table(study: Study, profile: str, results_dir: str | Path, overrides: dict[str, Any] | None,
               selection: Selection | None = None) -> pd.DataFrame:
    """One row per selected cell: run id, arm, seed, status, length and estimated training compute
    (MACs); ``attrs`` holds the total and the number of cells in the whole profile."""
    from bench.measure import count_compute
    from bench.models import create_model

    store = ResultsStore(results_dir)
    macs_cache: dict[str, float] = {}
    rows = []
    every = study.cells(profile, overrides)
    for c in selection.apply(every) if selection else every:
        cfg = c.config
        shape = estimate_shape(cfg)
        key = f"{cfg.model}{sorted(cfg.model_kwargs.items())}{shape}"
        if key not in macs_cache and shape is not None:
            model = create_model(cfg.model, in_channels=shape[0], **cfg.model_kwargs)
            macs_cache[key] = count_compute(model, shape)["macs_conv_linear"]
        samples = estimate_samples(cfg)
        # forward + backward ~ 3x the forward multiply-adds
        train_macs = 3 * macs_cache.get(key, float("nan")) * samples if samples else float("nan")
        rows.append({
            "run_id": c.run_id,
            "arm": c.label,
            "seed": c.seed,
            "status": store.state(study.name, c.run_id),
            "length": f"{cfg.iterations} it" if cfg.iterations else f"{cfg.epochs} ep",
            "train_samples": samples,
            "est_train_TMACs": round(train_macs / 1e12, 2),
        })
    df = pd.DataFrame(rows)
    total = df["est_train_TMACs"].sum()
    df.attrs["total_TMACs"] = total
    df.attrs["cells_in_profile"] = len(every)
    return df
