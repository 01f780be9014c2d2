"""Studies: a question, a base config, axes of overrides, seeds and profiles.

A study is data. ``Study.cells(profile)`` expands it into the grid of runs (axes x seeds), each a
:class:`Cell` holding a :class:`~bench.config.RunConfig`. Studies register like models
(``register_study``) and live in the ``experiments`` package, which registers all of them when
imported.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.config import RunConfig, apply_overrides
from bench.errors import UserError
from bench.record import Cell, _is_number, arm_label
from bench.registry import Registry

PROFILES = ("full", "quick", "smoke")


@dataclass(frozen=True)
class Arm:
    """One value of an axis: a label, the config overrides it applies, and tags for the report.

    ``tags`` are extra columns (e.g. ``depth=20, net='plain'``) that let the report plot one arm
    against a number even when the arm changes several config fields at once.
    """

    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A scaled version of a study: config overrides, optionally other axes, and the seeds."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, tuple[Arm, ...]] | None = None  # replaces the study's axes when given
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""


@dataclass(frozen=True)
class Published:
    """A published figure to show beside ours. ``match`` selects arms by axis label."""

    match: dict[str, str]
    metric: str  # a load_runs column, e.g. 'final_test_error_pct' or 'test_error_at_best_val_pct'
    value: float
    source: str  # paper, table or figure
    spread: float | None = None
    note: str = ""
    # False when even the full profile does not follow the source's protocol (another data set or
    # model, e.g. ImageNet figures for a CIFAR-10 study): then it is context, never compared.
    comparable: bool = True


DIRECTIONS = ("greater", "less", "within")
BOUNDS = ("<", ">")
SIDES = ("a", "b")


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
        return cls(**{k: (tuple(v) if k == "sides" else v) for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Claim:
    """What a study expects to see, stated so that a run can show it or not.

    Three kinds, by which field is set:

    * comparison (``b``): the mean of ``metric`` over the arms matching selector ``a`` minus that
      over ``b``; e.g. plain56 minus plain20 final training error, ``direction='greater'``.
    * trend (``trend``, a numeric tag): the slope of ``metric`` over that tag among the arms
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
    a: dict[str, Any] = field(default_factory=dict)
    b: dict[str, Any] | None = None
    trend: str | None = None
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
        if sum(x is not None for x in (self.b, self.trend, self.value)) != 1:
            raise ValueError(f"claim {self.sentence!r}: set exactly one of b, trend, value")
        if self.effect < 0:
            raise ValueError(f"claim {self.sentence!r}: effect must be >= 0, got {self.effect}")
        if self.requires is not None and "b" in self.requires.sides and self.b is None:
            raise ValueError(f"claim {self.sentence!r}: its precondition names side b, but the claim has no b "
                             "(a trend's or a level's arms are side a)")

    @property
    def kind(self) -> str:
        """'comparison', 'trend' or 'level'."""
        return "comparison" if self.b is not None else "trend" if self.trend is not None else "level"

    def applies_to(self, profile: str | None) -> bool:
        return self.profiles is None or profile in self.profiles

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        """Inverse of ``dataclasses.asdict`` (as stored in study.json)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("profiles") is not None:
            kw["profiles"] = tuple(kw["profiles"])
        if isinstance(kw.get("requires"), dict):
            kw["requires"] = Precondition.from_dict(kw["requires"])
        return cls(**kw)


@dataclass(frozen=True)
class Study:
    """A registered comparison: what it asks, what it varies, and how to run it at each scale."""

    name: str
    question: str
    base: RunConfig
    axes: dict[str, tuple[Arm, ...]]
    profiles: dict[str, Profile]
    published: tuple[Published, ...] = ()
    claims: tuple[Claim, ...] = ()
    figures: tuple[str, ...] = ()  # report figure kinds, see bench.report
    notes: str = ""
    # Timing is a result of this study (e.g. epoch time vs batch size): never pack its cells.
    timing_critical: bool = False
    # Overrides that depend on several axes at once (e.g. lr from batch size and scaling rule):
    # called with the cell's merged config and its arm labels, returns more overrides.
    derive: Callable[[RunConfig, dict[str, str]], dict[str, Any]] | None = None

    def profile(self, name: str) -> Profile:
        """The named profile; unknown names are a UserError listing the accepted ones."""
        if name not in self.profiles:
            raise UserError(
                f"unknown profile {name!r} for study {self.name!r} (accepted: {', '.join(self.profiles)})"
            )
        return self.profiles[name]

    def cells(self, profile: str, overrides: dict[str, Any] | None = None,
              extra_seeds: Mapping[str, Sequence[int]] | None = None) -> list[Cell]:
        """Expand the grid: every combination of axis arms, for every seed of the profile.

        ``overrides`` (from ``--set``) apply last, to every cell; they change the run ids.
        ``extra_seeds``: seeds beyond the profile's for some arms (arm label -> seeds, as
        ``bench run --until-decided`` adds them); their cells expand exactly like the profile's.
        """
        prof = self.profile(profile)
        axes = prof.axes if prof.axes is not None else self.axes
        base = apply_overrides(self.base, prof.overrides)
        names = list(axes)
        out = []
        for combo in itertools.product(*(axes[n] for n in names)):
            merged: dict[str, Any] = {}
            tags: dict[str, Any] = {}
            for arm in combo:
                merged.update(arm.overrides)
                tags.update(arm.tags)
            arm_labels = {n: a.label for n, a in zip(names, combo)}
            cfg0 = apply_overrides(base, merged)
            if self.derive is not None:
                merged.update(self.derive(cfg0, arm_labels))
            label = arm_label(arm_labels)
            more = [s for s in (extra_seeds or {}).get(label, ()) if s not in prof.seeds]
            for seed in (*prof.seeds, *dict.fromkeys(int(s) for s in more)):
                cfg = apply_overrides(base, {**merged, "seed": seed, **(overrides or {})})
                out.append(Cell(self.name, profile, arm_labels, tags, seed, cfg))
        from bench.checks import check_cells_configs

        check_cells_configs([c.config for c in out])  # one place: plan, run, status and workers agree
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready description stored with the results (read by the report)."""
        return {
            "name": self.name,
            "question": self.question,
            "notes": self.notes,
            "axes": {n: [a.label for a in arms] for n, arms in self.axes.items()},
            "profiles": {
                p.name: {
                    "description": p.description,
                    "seeds": list(p.seeds),
                    "axes": None if p.axes is None else {n: [a.label for a in v] for n, v in p.axes.items()},
                }
                for p in self.profiles.values()
            },
            "published": [dataclasses.asdict(p) for p in self.published],
            "claims": [dataclasses.asdict(c) for c in self.claims],
            "figures": list(self.figures),
            "timing_critical": self.timing_critical,
        }


def arms(axis: str, values: list[Any] | tuple[Any, ...]) -> tuple[Arm, ...]:
    """Arms that set one config field (``axis``) to each value, labelled by the value."""
    return tuple(Arm(str(v), {axis: v}, {axis: v}) for v in values)


@dataclass(frozen=True)
class Selection:
    """Part of a study's cells: arm selectors (``{'model': ('plain56',)}``: every key must match, any
    of its values may) and seeds (None: all). Made by :func:`parse_selection` from ``--only`` and
    ``--seeds``."""

    only: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] | None = None

    def __bool__(self) -> bool:
        return bool(self.only) or self.seeds is not None

    def describe(self) -> str:
        """'model=plain56; seeds 0, 1' (or 'all cells')."""
        parts = [f"{k}={'|'.join(v)}" for k, v in self.only.items()]
        if self.seeds is not None:
            parts.append("seeds " + ", ".join(map(str, self.seeds)))
        return "; ".join(parts) or "all cells"

    def apply(self, cells: list[Cell]) -> list[Cell]:
        """The cells selected; a key or value that no cell has, or a seed the profile does not run,
        is a UserError naming the accepted ones."""
        for key, values in self.only.items():
            accepted = sorted({str(c.arm[key]) for c in cells if key in c.arm}
                              | {str(c.tags[key]) for c in cells if key in c.tags}, key=_natural)
            if not accepted:
                keys = sorted({k for c in cells for k in (*c.arm, *c.tags)})
                raise UserError(f"--only: unknown key {key!r} (accepted: {', '.join(keys)})")
            for v in values:
                if not any(_same(v, a) for a in accepted):
                    raise UserError(f"--only {key}={v}: no such arm (accepted values of {key}: {', '.join(accepted)})")
        if self.seeds is not None:
            have = sorted({c.seed for c in cells})
            bad = [s for s in self.seeds if s not in have]
            if bad:
                raise UserError(f"--seeds: seed(s) {', '.join(map(str, bad))} not in this profile "
                                f"(accepted: {', '.join(map(str, have))})")
        return [c for c in cells if self._keeps(c)]

    def _keeps(self, cell: Cell) -> bool:
        if self.seeds is not None and cell.seed not in self.seeds:
            return False
        for key, values in self.only.items():
            have = [str(x) for x in (cell.arm.get(key), cell.tags.get(key)) if x is not None]
            if not any(_same(v, h) for v in values for h in have):
                return False
        return True


def parse_selection(only: list[str] | None, seeds: str | None) -> Selection:
    """``--only key=value`` (repeatable; repeated keys mean either value) and ``--seeds 0,1``."""
    sel: dict[str, tuple[str, ...]] = {}
    for item in only or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise UserError(f"--only expects key=value (an axis or tag and its value), got {item!r}")
        sel[key.strip()] = (*sel.get(key.strip(), ()), value.strip())
    parsed: tuple[int, ...] | None = None
    if seeds is not None:
        try:
            parsed = tuple(dict.fromkeys(int(s) for s in seeds.split(",") if s.strip()))
        except ValueError:
            raise UserError(f"--seeds expects comma-separated integers (e.g. 0,1), got {seeds!r}") from None
        if not parsed:
            raise UserError(f"--seeds expects comma-separated integers (e.g. 0,1), got {seeds!r}")
    return Selection(sel, parsed)


def _same(a: object, b: object) -> bool:
    try:
        return float(str(a)) == float(str(b))
    except ValueError:
        return str(a) == str(b)


def _natural(v: str) -> tuple[int, float, str]:
    return (0, float(v), "") if _is_number(v) else (1, 0.0, v)


STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study) -> Study:
    """Add a study to the registry (raises on a duplicate name); returns it."""
    for p in PROFILES:
        if p not in study.profiles:
            raise ValueError(f"study {study.name!r} lacks the {p!r} profile")
    return STUDIES.add(study.name, study)


def load_studies() -> Registry[Study]:
    """The study registry. Studies register themselves when their package is imported: the command
    line (the top layer) imports ``experiments``; this module never imports a layer above it."""
    return STUDIES


def get_study(name: str) -> Study:
    """The registered study called ``name`` (UserError with close matches if none)."""
    if not STUDIES.names():
        raise UserError(f"unknown study {name!r}: no study is registered (import experiments first, "
                        "as the bench command does)")
    return STUDIES.get(name)
