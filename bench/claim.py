"""What a study expects to see: :class:`Claim` (a comparison, a trend or a level) and the
:class:`Precondition` a claim about trained networks carries.

Studies write claims with the constructor that says their kind, every part by keyword::

    Claim.compare("plain56 ends with a higher training error than plain20", metric="final_train_error_pct",
                  a={"model": "plain56"}, b={"model": "plain20"}, greater_by=1.0, source=HE2016)
    Claim.trend("Training error rises with depth among plain nets", metric="final_train_error_pct",
                over="depth", among={"net": "plain"}, greater_by=0.02, source=HE2016)
    Claim.level("ResNet-20 has 0.27M parameters", metric="params_total", a={"arch": "resnet20"},
                value=270_000, within=5_000, exact=True, source=HE2016)

The stored form (:meth:`Claim.to_dict`, in study.json) is the layout study.json has always had:
:meth:`Claim.from_dict` reads every study.json written so far.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

DIRECTIONS = ("greater", "less", "within")
BOUNDS = ("<", ">")
SIDES = ("a", "b")

Selector = dict[str, Any]  # axis label or tag -> the value an arm must have, e.g. {'model': 'plain56'}


@dataclass(frozen=True)
class Precondition:
    """What must hold before a claim about trained networks is judged, stated with the claim (before
    any run) and taken from the claim's source, never from the results.

    Every arm on ``sides`` (the claim's selector ``a`` and/or ``b``; for a trend, ``a`` is its group)
    must end with the mean of ``metric`` over its finished seeds ``bound`` ``threshold``, e.g.
    ``Precondition('final_train_error_pct', '<', 20.0)``: the nets compared have trained. When it
    does not hold the verdict is 'not tested' with the numbers; a claim that holds at every stage of
    training has none.
    """

    metric: str
    bound: str
    threshold: float
    source: str
    sides: tuple[str, ...] = SIDES

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise ValueError(f"precondition on {self.metric}: bad bound {self.bound!r} (accepted: {', '.join(BOUNDS)})")
        if not self.sides or any(s not in SIDES for s in self.sides):
            raise ValueError(f"precondition on {self.metric}: bad sides {self.sides!r} (accepted: a, b)")
        object.__setattr__(self, "sides", tuple(self.sides))

    def holds(self, value: float) -> bool:
        """Whether one arm's mean ``value`` meets the bound (NaN never does)."""
        return value < self.threshold if self.bound == "<" else value > self.threshold

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Precondition:
        """Inverse of ``dataclasses.asdict`` (as stored in study.json)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {k: (tuple(v) if k == "sides" else v) for k, v in d.items() if k in names}
        return cls(**kw)


@dataclass(frozen=True, kw_only=True)
class Claim:
    """What a study expects to see, stated so that a run can show it or not. Made with
    :meth:`compare`, :meth:`trend` or :meth:`level`; the fields, by kind:

    * comparison (``b``): the mean of ``metric`` over the arms matching selector ``a`` minus that
      over ``b``; e.g. plain56 minus plain20 final training error, ``direction='greater'``.
    * trend (``over``, a numeric tag): the slope of ``metric`` over that tag among the arms
      matching ``a`` (the group, e.g. ``{'net': 'plain'}``); units of the metric per unit of tag.
    * level (``value``): the mean over ``a`` minus a reference value.

    ``direction`` is the claimed sign of that difference ('greater': positive, 'less': negative) or
    'within' (its size stays under ``effect``). ``effect`` is the smallest difference that counts, in
    the metric's units (for 'within': the margin). Selectors match arm axis labels or tags
    (``{'model': 'plain56'}``, ``{'norm': 'bn', 'batch_size': 2}``). ``best_on_val``: a selector that
    matches several arms (an lr grid) takes the one with the best mean validation accuracy.
    ``profiles``: where the claim applies (None: every profile). ``question``: a question the study
    asks, not a published claim. ``exact``: the metric does not depend on the seed (a parameter
    count), so one run suffices. ``requires``: a :class:`Precondition` that must hold before the
    claim is judged (None: the claim holds at every stage of training).
    """

    sentence: str
    metric: str
    direction: str
    effect: float
    source: str
    a: Selector = field(default_factory=dict)
    b: Selector | None = None
    over: str | None = None  # stored as 'trend' (study.json's key)
    value: float | None = None
    profiles: tuple[str, ...] | None = None
    best_on_val: bool = False
    question: bool = False
    exact: bool = False
    note: str = ""
    requires: Precondition | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"claim {self.sentence!r}: bad direction {self.direction!r} (accepted: "
                             f"{', '.join(DIRECTIONS)})")
        if sum(x is not None for x in (self.b, self.over, self.value)) != 1:
            raise ValueError(f"claim {self.sentence!r}: set exactly one of b, over, value")
        if self.effect < 0:
            raise ValueError(f"claim {self.sentence!r}: effect must be >= 0, got {self.effect}")
        if self.requires is not None and "b" in self.requires.sides and self.b is None:
            raise ValueError(f"claim {self.sentence!r}: its precondition names side b, but the claim has no b "
                             "(a trend's or a level's arms are side a)")
        if self.profiles is not None:
            object.__setattr__(self, "profiles", tuple(self.profiles))

    @classmethod
    def compare(cls, sentence: str, *, metric: str, a: Selector, b: Selector, source: str,
                greater_by: float | None = None, less_by: float | None = None, within: float | None = None,
                **options: Any) -> Claim:
        """``metric`` over the arms of ``a`` minus over those of ``b`` is positive by at least
        ``greater_by``, negative by at least ``less_by``, or ``within`` ± that margin (one of the three).
        ``options``: ``profiles``, ``best_on_val``, ``question``, ``exact``, ``note``, ``requires``."""
        direction, effect = _direction(sentence, greater_by, less_by, within)
        return cls(sentence=sentence, metric=metric, direction=direction, effect=effect, source=source,
                   a=dict(a), b=dict(b), **options)

    @classmethod
    def trend(cls, sentence: str, *, metric: str, over: str, source: str, among: Selector | None = None,
              greater_by: float | None = None, less_by: float | None = None, within: float | None = None,
              **options: Any) -> Claim:
        """The per-seed slope of ``metric`` over the numeric tag ``over``, among the arms of ``among``
        (None: every arm), is positive by at least ``greater_by`` per unit of the tag, negative by at
        least ``less_by``, or ``within`` ± that margin."""
        direction, effect = _direction(sentence, greater_by, less_by, within)
        return cls(sentence=sentence, metric=metric, direction=direction, effect=effect, source=source,
                   a=dict(among or {}), over=over, **options)

    @classmethod
    def level(cls, sentence: str, *, metric: str, a: Selector, value: float, source: str,
              greater_by: float | None = None, less_by: float | None = None, within: float | None = None,
              **options: Any) -> Claim:
        """``metric`` over the arms of ``a`` minus the reference ``value`` is positive by at least
        ``greater_by``, negative by at least ``less_by``, or ``within`` ± that margin."""
        direction, effect = _direction(sentence, greater_by, less_by, within)
        return cls(sentence=sentence, metric=metric, direction=direction, effect=effect, source=source,
                   a=dict(a), value=float(value), **options)

    @property
    def kind(self) -> str:
        """'comparison', 'trend' or 'level'."""
        return "comparison" if self.b is not None else "trend" if self.over is not None else "level"

    def sides(self) -> dict[str, Selector]:
        """The claim's selectors by side: ``a`` (a trend's group) and, for a comparison, ``b``."""
        return {"a": self.a} if self.b is None else {"a": self.a, "b": self.b}

    def applies_to(self, profile: str | None) -> bool:
        return self.profiles is None or profile in self.profiles

    def to_dict(self) -> dict[str, Any]:
        """The stored form (study.json): the fields, a trend's tag under its key ``trend``."""
        d = dataclasses.asdict(self)
        d["trend"] = d.pop("over")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        """Inverse of :meth:`to_dict`; reads every study.json written so far."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {("over" if k == "trend" else k): v for k, v in d.items()}
        kw = {k: v for k, v in d.items() if k in names}
        if isinstance(kw.get("requires"), dict):
            kw["requires"] = Precondition.from_dict(kw["requires"])
        return cls(**kw)


def _direction(sentence: str, greater_by: float | None, less_by: float | None,
               within: float | None) -> tuple[str, float]:
    """(direction, effect) from the one of ``greater_by``, ``less_by``, ``within`` that is given."""
    given = {k: v for k, v in (("greater", greater_by), ("less", less_by), ("within", within)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"claim {sentence!r}: give exactly one of greater_by, less_by, within "
                         f"(got {', '.join(f'{k}' for k in given) or 'none'})")
    direction, effect = next(iter(given.items()))
    return direction, float(effect)


def same_value(have: Any, want: Any) -> bool:
    """Whether an arm's label or tag ``have`` is the selector's ``want``: numbers compare as numbers
    (``2`` is ``'2'`` is ``2.0``), anything else as text; a missing value (None, NaN) is nothing."""
    if have is None or (isinstance(have, float) and math.isnan(have)):
        return False
    try:
        return float(have) == float(want)
    except (TypeError, ValueError):
        return str(have) == str(want)
