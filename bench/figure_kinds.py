"""The names of the report's figure kinds, without the drawing: a study's ``figures`` are checked
against them when it registers (bench.study sits below the report), and ``bench.report.figures``
attaches one drawing function to each name (:func:`attach` refuses a name missing on either side)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

F = TypeVar("F")

FIGURE_KINDS: tuple[str, ...] = (
    "curves_iter",  # error against iterations
    "curves_epoch",  # error against epochs
    "curves_time",  # error against training time
    "error_vs_depth",  # final error against the depth tag
    "error_by_arm",  # test error by arm
    "error_vs_batch",  # error against the batch size tag, one line per other tag
    "lr_grid",  # validation accuracy over a learning-rate grid
    "bn_mode_gap",  # train-mode vs eval-mode accuracy on training data
    "batch_accuracy",  # accuracy and time to accuracy against batch size
    "bubble",  # accuracy against compute, area = epoch time
    "cost_by_arm",  # step time and peak memory by arm
    "epoch_time_by_arm",  # epoch time by arm
    "batch_time",  # epoch time and throughput against batch size
)


def attach(drawings: Mapping[str, F]) -> dict[str, F]:
    """``drawings`` (kind -> function) as a dict, when it draws exactly the kinds of
    :data:`FIGURE_KINDS`; a kind drawn but not named there, or named but not drawn, is a ValueError."""
    extra = sorted(set(drawings) - set(FIGURE_KINDS))
    missing = sorted(set(FIGURE_KINDS) - set(drawings))
    if extra or missing:
        raise ValueError(f"figure kinds out of step with bench.figure_kinds.FIGURE_KINDS: drawn but not named "
                         f"{', '.join(extra) or 'none'}; named but not drawn {', '.join(missing) or 'none'}")
    return {kind: drawings[kind] for kind in FIGURE_KINDS}
