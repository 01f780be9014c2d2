"""A study checked when it registers, so that a typo is an error at import instead of a 'not tested'
verdict or a note on the page: its profiles, every claim's selectors against the arms and tags of
each profile it applies to, the metrics of claims, preconditions and published figures against the
catalogue of what a run records (:func:`metric_names`), and the figure names against
:data:`bench.figure_kinds.FIGURE_KINDS`. Each mistake is a UserError naming the bad value and the
accepted ones.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from bench.claim import Claim, Selector, same_value
from bench.config import RunConfig, apply_overrides
from bench.errors import UserError, unknown_value
from bench.figure_kinds import FIGURE_KINDS
from bench.record import _is_number

if TYPE_CHECKING:
    from bench.study import Arm, Study

@functools.lru_cache(maxsize=8)
def metric_names(acc_thresholds: tuple[float, ...] = RunConfig().acc_thresholds) -> frozenset[str]:
    """The runs-table columns a run's metrics and measurements bring (the error percentages derived
    from accuracies included), built from the record types: the summary of an
    :class:`~bench.record.EpochRow` history (``summarise``, with the time-to-accuracy keys of
    ``acc_thresholds``) and the measurement keys (``measurement_keys``), through ``RunRecord.to_row``."""
    from bench.measure import measurement_keys
    from bench.record import Cell, Outcome, Placement, RunRecord
    from bench.train.summary import summarise

    cfg = RunConfig(acc_thresholds=acc_thresholds)
    metrics = summarise(cfg, [], extra={}, iterations_done=0, steps_per_epoch=0, train_time_s=0.0,
                        precision_used=cfg.precision, classes=[], sizes=(0, 0, 0), data_source="")
    measurements = {k: 0.0 for k in measurement_keys()}
    cell, where = Cell("catalogue", "smoke", {}, {}, 0, cfg), Placement(0.0, 0.0, 0.0, "", "")
    bare = RunRecord(cell, Outcome("ok"), where).to_row()
    full = RunRecord(cell, Outcome("ok"), where, metrics=metrics, measurements=measurements).to_row()
    return frozenset(full) - frozenset(bare)


def check_study(study: Study, required: Sequence[str]) -> None:
    """Raise a UserError on the first mistake of ``study`` (see the module docstring); ``required``: the
    profiles every study has (``bench.study.PROFILES``, passed in: this module reads no study module)."""
    missing = [p for p in required if p not in study.profiles]
    if missing:
        raise UserError(f"study {study.name!r} lacks the {missing[0]!r} profile (accepted: a study has the "
                        f"profiles {', '.join(required)}, and any others)")
    for kind in study.figures:
        if kind not in FIGURE_KINDS:
            raise _in(study, "figures", unknown_value("figure", kind, FIGURE_KINDS))
    known = _metrics_of(study)
    for claim in study.claims:
        where = f"claim {claim.sentence!r}"
        for metric in (claim.metric, *([claim.requires.metric] if claim.requires else [])):
            if metric not in known:
                raise _in(study, where, unknown_value("metric", metric, known))
        for name in claim.profiles or ():
            if name not in study.profiles:
                raise _in(study, where, unknown_value("profile", name, study.profiles))
        for name in study.profiles:
            if claim.applies_to(name):
                _check_claim(claim, name, _arm_rows(study, name), where, study)
    full = _axes(study, "full")  # published figures are compared under the full profile only
    for pub in study.published:
        where = f"published {pub.source!r}"
        if pub.metric not in known:
            raise _in(study, where, unknown_value("metric", pub.metric, known))
        for key, pattern in pub.match.items():  # arm labels, shell patterns allowed ('sgd*')
            if key not in full:
                raise _in(study, where, unknown_value("axis", key, full))
            labels = [a.label for a in full[key]]
            if not any(fnmatchcase(label, str(pattern)) for label in labels):
                raise _in(study, where, unknown_value(f"arm of {key}", pattern, labels))


def _in(study: Study, where: str, err: UserError) -> UserError:
    return UserError(f"study {study.name!r}, {where}: {err}")


def _metrics_of(study: Study) -> frozenset[str]:
    """:func:`metric_names` for the time-to-accuracy thresholds of every profile of ``study``."""
    thresholds = {apply_overrides(study.base, p.overrides).acc_thresholds for p in study.profiles.values()}
    return frozenset().union(*(metric_names(t) for t in thresholds))


def _axes(study: Study, profile: str) -> dict[str, tuple[Arm, ...]]:
    prof = study.profiles[profile]
    return prof.axes if prof.axes is not None else study.axes


@dataclass(frozen=True)
class _Cell:
    """One combination of arms of a profile: what a selector can name (each axis and tag -> its
    values: an axis's label, a tag's value, both when a tag shares an axis's name, as the report
    matches them) and the tags alone (what a trend runs over)."""

    names: dict[str, list[Any]]
    tags: dict[str, Any]


def _arm_rows(study: Study, profile: str) -> list[_Cell]:
    """One :class:`_Cell` per combination of arms of ``profile``."""
    axes = _axes(study, profile)
    rows = []
    for combo in itertools.product(*axes.values()):
        names: dict[str, list[Any]] = {axis: [arm.label] for axis, arm in zip(axes, combo, strict=True)}
        tags = {tag: value for arm in combo for tag, value in arm.tags.items()}
        for tag, value in tags.items():
            names.setdefault(tag, []).append(value)
        rows.append(_Cell(names, tags))
    return rows


def _picks(rows: list[_Cell], sel: Selector) -> list[_Cell]:
    return [r for r in rows if all(any(same_value(v, want) for v in r.names.get(k, ())) for k, want in sel.items())]


def _check_claim(claim: Claim, profile: str, rows: list[_Cell], where: str, study: Study) -> None:
    """Each selector of ``claim`` names axes or tags of ``profile``'s arms, values they have, and picks
    at least one arm; a trend's tag is numeric with two values or more among its group."""
    names = sorted({k for r in rows for k in r.names})
    for side, sel in claim.sides().items():
        for key, want in sel.items():
            if key not in names:
                raise _in(study, where, unknown_value(f"selector key (side {side}, profile {profile})", key, names))
            have = _texts(v for r in rows for v in r.names.get(key, ()))
            if not any(same_value(v, want) for v in have):
                raise _in(study, where, unknown_value(f"{key} (side {side}, profile {profile})", want, have))
        if not _picks(rows, sel):
            raise _in(study, where, UserError(
                f"selector {side} {sel} picks no arm of profile {profile!r} (accepted: a combination its arms have)"))
    if claim.over is not None:
        group = _picks(rows, claim.a)
        values = [r.tags[claim.over] for r in group if claim.over in r.tags]
        if not values:
            tags = sorted({k for r in group for k in r.tags})
            raise _in(study, where, unknown_value(f"trend tag (profile {profile})", claim.over, tags))
        if not all(_is_number(v) for v in values) or len({float(v) for v in values}) < 2:
            raise _in(study, where, UserError(
                f"trend over {claim.over!r} in profile {profile!r} has values {', '.join(_texts(values))} "
                "(accepted: numbers, two or more of them)"))


def _texts(values: Iterable[Any]) -> list[str]:
    return sorted({str(v) for v in values})
