"""Measurements that take "some images" draw a fixed, seeded, class-mixed sample, never the first
images of a data set stored sorted by class (an image-folder cache is)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from bench.config import RunConfig
from bench.data import ArrayDataset, mixed_order, mixed_sample
from bench.data.sources import LoadedData
from bench.train import engine
from bench.train import evaluate as evaluate_mod
from bench.train.evaluate import MAX_MISCLASSIFIED, prediction_artifacts

CLASSES = 10


def _sorted_by_class(per_class: int, side: int = 4) -> ArrayDataset:
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = (labels.view(-1, 1, 1, 1).expand(-1, 3, side, side) * 20).to(torch.uint8).contiguous()
    return ArrayDataset(images, labels, [f"c{i}" for i in range(CLASSES)])


@pytest.mark.parametrize("n", [100, 500, 1000])
def test_a_mixed_sample_is_stratified_seeded_and_mixed(n: int) -> None:
    ds = _sorted_by_class(100)
    a, b = mixed_sample(ds, n, 0), mixed_sample(ds, n, 0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)  # fixed for a seed
    counts = torch.bincount(a.labels, minlength=CLASSES)
    assert counts.tolist() == [n // CLASSES] * CLASSES  # class proportions kept
    first = a.labels[:32]
    assert len(first.unique()) >= 6, first  # a batch of 32 sees most classes, not one
    assert not torch.equal(mixed_sample(ds, n, 1).labels, a.labels)  # another seed, another order


def test_mixed_order_is_a_fixed_permutation() -> None:
    o = mixed_order(1000, 0)
    assert sorted(o.tolist()) == list(range(1000)) and np.array_equal(o, mixed_order(1000, 0))
    assert not np.array_equal(o, np.arange(1000))


def test_misclassified_images_come_from_every_class_of_a_sorted_test_set() -> None:
    ds = _sorted_by_class(50)
    wrong_pred = (ds.labels + 1) % CLASSES  # every prediction wrong
    art = prediction_artifacts(wrong_pred, ds.labels, ds.images, CLASSES)
    shown = art["misclassified_true"]
    assert len(shown) == MAX_MISCLASSIFIED
    assert len(np.unique(shown)) >= 8, shown  # not 36 images of the first class
    # each shown image is the one its labels say (the images encode their class)
    assert np.all(art["misclassified_images"][:, 0, 0, 0] == shown * 20)
    assert np.all(art["misclassified_pred"] == (shown + 1) % CLASSES)
    again = prediction_artifacts(wrong_pred, ds.labels, ds.images, CLASSES)
    assert np.array_equal(again["misclassified_true"], shown)


def test_the_bn_gap_pass_runs_on_class_mixed_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Train a tiny run on a class-sorted data set and look at the batches the train-mode BN pass gets."""
    train = _sorted_by_class(40, side=8)
    test = _sorted_by_class(10, side=8)
    data = LoadedData("sorted", train, test, (0.5,) * 3, (0.25,) * 3, "class-sorted test data")
    seen: list[torch.Tensor] = []
    real = evaluate_mod.evaluate

    def spy(model, batches, **kw):  # type: ignore[no-untyped-def]
        if kw.get("train_mode"):
            batches = list(batches)
            seen.extend(y for _, y in batches)
        return real(model, batches, **kw)

    monkeypatch.setattr(evaluate_mod, "evaluate", spy)  # the BN-gap end-of-run step's passes
    cfg = RunConfig(model="resnet20", dataset="synthetic", val_size=0, epochs=1, batch_size=32,
                    eval_batch_size=64, crop_padding=0, hflip=False, augment=False, schedule="constant")
    result = engine.train(cfg, data=data)
    assert result.status == "ok" and seen, "no train-mode pass was made"
    for y in seen:
        assert len(y.unique()) >= 5, y  # never one class per batch
