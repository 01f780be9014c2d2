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

from bench.claim import Claim
from bench.claim import Precondition as Precondition  # re-exported: a study imports its parts from here
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
    """A scaled version of a study: config overrides, optionally other axes, and the seeds. Its
    name is its key in ``Study.profiles`` (the study sets it)."""

    overrides: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, tuple[Arm, ...]] | None = None  # replaces the study's axes when given
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""
    name: str = ""


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

    def __post_init__(self) -> None:
        for key, prof in self.profiles.items():
            if prof.name not in ("", key):
                raise UserError(f"study {self.name!r}: profile {key!r} is named {prof.name!r} (accepted: "
                                f"no name, or its key {key!r})")
        named = {key: dataclasses.replace(p, name=key) for key, p in self.profiles.items()}
        object.__setattr__(self, "profiles", named)

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
            arm_labels = {n: a.label for n, a in zip(names, combo, strict=True)}
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
            "claims": [c.to_dict() for c in self.claims],
            "figures": list(self.figures),
            "timing_critical": self.timing_critical,
        }


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
    """Check ``study`` (:func:`bench.study_checks.check_study`: its profiles, claims, metrics, published
    figures and figure names) and add it to the registry (raises on a duplicate name); returns it.
    A mistake is a UserError naming the bad value and the accepted ones."""
    from bench.study_checks import check_study

    check_study(study, PROFILES)
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
