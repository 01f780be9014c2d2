"""Per-model detail for the best run of each arm: confusion matrix, misclassified test images and
first-layer filters before and after training (from ``artifacts.npz``, when the run saved one)."""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

from bench.report.analysis import best_runs
from bench.report.data import ReportData
from bench.report.plotting import array_png

MAX_MISCLASSIFIED = 12  # per arm: enough to see the kind of mistakes, few enough to keep the page light
MAX_FILTERS = 64
MAX_TABLE_CLASSES = 20  # confusion matrices up to this size are tables; larger ones an image


@dataclass
class Detail:
    """What the page shows for one arm's best run."""

    arm: str
    run_id: str
    seed: Any
    val_acc: float
    test_acc: float
    note: str = ""
    confusion_html: str = ""
    confusion_png: str | None = None
    misclassified: list[dict[str, str]] = field(default_factory=list)
    filters: list[dict[str, str]] = field(default_factory=list)


def _load(path: Any) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # missing, truncated or not an npz
        return None


def confusion_matrix(true: np.ndarray, pred: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Counts [true, predicted] and the class names (padded with indices when names are missing)."""
    k = max(len(names), int(max(true.max(initial=0), pred.max(initial=0))) + 1)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (true.astype(np.int64), pred.astype(np.int64)), 1)
    return cm, list(names) + [str(i) for i in range(len(names), k)]


def confusion_html(cm: np.ndarray, names: list[str]) -> str:
    """Heatmap as a Styler table (counts, coloured by share of the true class): crisp, searchable and
    far cheaper than a matplotlib heatmap with annotations (which dominated the report's build time)."""
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    df = pd.DataFrame(cm, index=pd.Index(names, name="true \\ predicted"), columns=names)
    # class names come from image-folder directories: escaped like any text from a file system
    sty = (df.style.background_gradient(cmap="Blues", axis=None, gmap=rate, vmin=0, vmax=1)
           .format_index(escape="html", axis=0).format_index(escape="html", axis=1)
           .set_table_attributes('class="tbl confusion"'))
    return sty.to_html()


def confusion_png(cm: np.ndarray) -> str:
    """Many classes: the row-normalised matrix as a plain image, one block per cell, no labels."""
    rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    rgb = matplotlib.colormaps["Blues"](rate)[..., :3]
    return array_png(rgb, scale=max(1, 400 // cm.shape[0]))


def image_hwc(img: np.ndarray) -> np.ndarray:
    """[C, H, W] -> [H, W] (1 channel) or [H, W, 3]; other channel counts are averaged to gray."""
    if img.ndim == 2:
        return img
    if img.shape[0] == 1:
        return img[0]
    if img.shape[0] == 3:
        return np.transpose(img, (1, 2, 0))
    return img.mean(axis=0)


def filter_montage(w: np.ndarray) -> np.ndarray:
    """First-layer weights [out, in, kh, kw] as one image: each filter min-max normalised on its own
    (so weak filters are visible too), RGB for 3 input channels, else gray (channel mean)."""
    w = np.asarray(w, dtype=np.float32)[:MAX_FILTERS]
    n, cin, kh, kw = w.shape
    lo = w.reshape(n, -1).min(axis=1)[:, None, None, None]
    hi = w.reshape(n, -1).max(axis=1)[:, None, None, None]
    w = (w - lo) / np.maximum(hi - lo, 1e-12)
    tiles = np.transpose(w, (0, 2, 3, 1)) if cin == 3 else w.mean(axis=1)[..., None].repeat(3, axis=3)
    cols = min(16, n)
    rows = math.ceil(n / cols)
    pad = 1
    out = np.ones((rows * (kh + pad) + pad, cols * (kw + pad) + pad, 3), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (kh + pad): pad + r * (kh + pad) + kh, pad + c * (kw + pad): pad + c * (kw + pad) + kw] = tiles[i]
    return out


def arm_detail(d: ReportData, arm: str, run: Any) -> Detail:
    """Detail of one run; ``note`` says what is missing."""
    rid = str(run["run_id"])
    det = Detail(arm, rid, run.get("seed"), float(run.get("best_val_acc", math.nan) or math.nan),
                 float(run.get("final_test_acc", math.nan) or math.nan))
    art = _load(d.run_dir(rid) / "artifacts.npz")
    if art is None:
        path = d.run_dir(rid) / "artifacts.npz"
        det.note = (f"artifacts.npz of this run is damaged (cannot be read): {path}" if path.exists()
                    else "no artifacts.npz saved for this run")
        return det
    rec = d.records.get(rid)
    names = list((rec.metrics.get("class_names") if rec else None) or [])
    if "test_pred" in art and "test_true" in art and art["test_true"].size:
        cm, labels = confusion_matrix(art["test_true"], art["test_pred"], names)
        if len(labels) <= MAX_TABLE_CLASSES:
            det.confusion_html = confusion_html(cm, labels)
        else:
            det.confusion_png = confusion_png(cm)
    imgs = art.get("misclassified_images")
    if imgs is not None and len(imgs):
        true, pred = art.get("misclassified_true"), art.get("misclassified_pred")
        for i in range(min(len(imgs), MAX_MISCLASSIFIED)):
            im = image_hwc(np.asarray(imgs[i]))
            scale = max(1, 64 // max(im.shape[0], 1))  # tiny images are upscaled (pixelated) to ~64 px
            det.misclassified.append({
                "png": array_png(im.astype(np.uint8), scale=scale),
                "true": _name(names, true[i]) if true is not None else "?",
                "pred": _name(names, pred[i]) if pred is not None else "?",
            })
    for key, title in (("filters_init", "before training"), ("filters_final", "after training")):
        w = art.get(key)
        if w is not None and np.asarray(w).ndim == 4 and np.asarray(w).size:
            m = filter_montage(w)
            scale = max(1, 24 // max(np.asarray(w).shape[2], 1))
            det.filters.append({"title": title, "png": array_png(m, scale=scale),
                                "shape": "×".join(str(s) for s in np.asarray(w).shape)})
    return det


def _name(names: list[str], idx: Any) -> str:
    i = int(idx)
    return names[i] if 0 <= i < len(names) else str(i)


def details(d: ReportData) -> list[Detail]:
    """Detail for the best run (by validation accuracy) of each arm that has a finished ok run."""
    return [arm_detail(d, arm, run) for arm, run in best_runs(d).items()]
