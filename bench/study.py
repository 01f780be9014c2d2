"""Studies: a question, a base config, axes of overrides, seeds and profiles.

A study is data. ``Study.cells(profile)`` expands it into the grid of runs (axes x seeds), each a
:class:`Cell` holding a :class:`~bench.config.RunConfig`. Studies register like models
(``@register_study`` or ``STUDIES.add``) and live in the ``experiments`` package.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import pkgutil
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from bench.config import RunConfig, apply_overrides, split_fixed_varied
from bench.errors import UserError
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


@dataclass(frozen=True)
class Cell:
    """One run of a study: its arm labels, tags, seed and full config."""

    study: str
    profile: str
    arm: dict[str, str]
    tags: dict[str, Any]
    seed: int
    config: RunConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def label(self) -> str:
        """The arm as people name it, without the seed: ``'plain20'``, ``'bn, batch 2'``."""
        return arm_label(self.arm)


@dataclass(frozen=True)
class Study:
    """A registered comparison: what it asks, what it varies, and how to run it at each scale."""

    name: str
    question: str
    base: RunConfig
    axes: dict[str, tuple[Arm, ...]]
    profiles: dict[str, Profile]
    published: tuple[Published, ...] = ()
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

    def cells(self, profile: str, overrides: dict[str, Any] | None = None) -> list[Cell]:
        """Expand the grid: every combination of axis arms, for every seed of the profile.

        ``overrides`` (from ``--set``) apply last, to every cell; they change the run ids.
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
            for seed in prof.seeds:
                cfg = apply_overrides(base, {**merged, "seed": seed, **(overrides or {})})
                out.append(Cell(self.name, profile, arm_labels, tags, seed, cfg))
        return out

    def fixed_and_varied(self, profile: str) -> tuple[dict[str, Any], list[str]]:
        """Config fields held fixed across the profile's cells (with values) and those that vary."""
        return split_fixed_varied([c.config.to_dict() for c in self.cells(profile)])

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
            "figures": list(self.figures),
            "timing_critical": self.timing_critical,
        }


def arm_label(arm: dict[str, str]) -> str:
    """Arm labels joined with ', '; a bare number gets its axis name (``{'norm': 'bn', 'batch': '2'}``
    -> ``'bn, batch 2'``), since '2' alone says nothing."""
    return ", ".join(f"{axis} {v}" if _is_number(v) else str(v) for axis, v in arm.items())


def _is_number(v: object) -> bool:
    try:
        float(str(v))
    except ValueError:
        return False
    return True


def arms(axis: str, values: list[Any] | tuple[Any, ...]) -> tuple[Arm, ...]:
    """Arms that set one config field (``axis``) to each value, labelled by the value."""
    return tuple(Arm(str(v), {axis: v}, {axis: v}) for v in values)


STUDIES: Registry[Study] = Registry("study")


def register_study(study: Study) -> Study:
    """Add a study to the registry (raises on a duplicate name); returns it."""
    for p in PROFILES:
        if p not in study.profiles:
            raise ValueError(f"study {study.name!r} lacks the {p!r} profile")
    return STUDIES.add(study.name, study)


_loaded = False


def load_studies() -> Registry[Study]:
    """Import every module of the ``experiments`` package once, registering its studies."""
    global _loaded
    if not _loaded:
        import experiments

        for mod in pkgutil.iter_modules(experiments.__path__):
            if not mod.name.startswith("_"):
                importlib.import_module(f"experiments.{mod.name}")
        _loaded = True
    return STUDIES


def get_study(name: str) -> Study:
    """The registered study called ``name`` (UserError with close matches if none)."""
    return load_studies().get(name)
