"""Stratified, seeded train/validation splits and subsets.

Indices come from a NumPy generator seeded only by ``seed`` (never the global torch or NumPy RNG),
so a study's cells share the same validation images whatever ran before them.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.data.dataset import ArrayDataset
from bench.errors import UserError


def val_count(n: int, val_size: float) -> int:
    """Validation images held out of ``n``: ``val_size`` itself when ``>= 1`` (whole), the fraction
    ``val_size`` of ``n`` rounded when ``< 1``, none when 0. The one rule, for the split and for the
    plan's estimates (:mod:`bench.measure.estimate`); a size that leaves no training or no validation
    image is a UserError."""
    if val_size < 0:
        raise UserError(f"val_size must be >= 0, got {val_size}")
    if val_size == 0:
        return 0
    if val_size >= 1:
        if float(val_size) != int(val_size):
            raise UserError(f"val_size >= 1 is a number of images and must be whole, got {val_size}")
        n_val = int(val_size)
    else:
        n_val = int(round(val_size * n))
    if not 1 <= n_val < n:
        raise UserError(f"val_size {val_size} leaves no {'validation' if n_val < 1 else 'training'} images of {n}")
    return n_val


def split_train_val(ds: ArrayDataset, val_size: float, seed: int) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Hold out a stratified validation set of :func:`val_count` images.

    E.g. ``val_size=5000`` on CIFAR-10 gives the 45k/5k split of He et al. (2016), 500 per class.
    """
    n_val = val_count(len(ds), val_size)
    if n_val == 0:
        return ds, None
    val_idx, train_idx = _stratified_pick(ds.labels, n_val, seed)
    return ds.subset(train_idx), ds.subset(val_idx)


def stratified_subset(ds: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """``n`` images keeping the class proportions (the whole set, unchanged, when ``n >= len(ds)``)."""
    if n < 1:
        raise UserError(f"subset size must be >= 1, got {n}")
    if n >= len(ds):
        return ds
    picked, _ = _stratified_pick(ds.labels, n, seed)
    return ds.subset(picked)


def mixed_sample(ds: ArrayDataset, n: int, seed: int) -> ArrayDataset:
    """``n`` images (class proportions kept, as :func:`stratified_subset`) in a fixed, seeded,
    class-mixed order. Data sets are often stored sorted by class (an image-folder cache is), so
    anything that takes "some images" in stored order, e.g. batches for a train-mode BN pass, would
    see one class at a time; a measurement takes this sample instead."""
    sub = stratified_subset(ds, n, seed) if n < len(ds) else ds
    order = np.random.default_rng([seed, 1]).permutation(len(sub))
    return sub.subset(torch.from_numpy(order).long())


def mixed_order(n: int, seed: int) -> np.ndarray:
    """A fixed, seeded permutation of ``range(n)``: the order in which a sample is taken from a
    stored (possibly class-sorted) array, e.g. which misclassified test images are shown."""
    return np.random.default_rng([seed, 2]).permutation(n)


def _stratified_pick(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = labels.cpu().numpy()
    classes, counts = np.unique(y, return_counts=True)
    # Largest-remainder allocation: per-class quotas sum to exactly n and never exceed a class's count.
    quota = counts * (n / len(y))
    take = np.floor(quota).astype(np.int64)
    short = n - int(take.sum())
    if short:
        order = np.lexsort((classes, -(quota - take)))  # biggest remainder first, ties by class id
        take[order[:short]] += 1
    rng = np.random.default_rng(seed)
    picked = []
    for c, k in zip(classes, take, strict=True):
        members = np.flatnonzero(y == c)  # ascending, so the result depends only on labels and seed
        picked.append(rng.permutation(members)[:k])
    chosen = np.sort(np.concatenate(picked))
    mask = np.ones(len(y), dtype=bool)
    mask[chosen] = False
    return torch.from_numpy(chosen).long(), torch.from_numpy(np.flatnonzero(mask)).long()
