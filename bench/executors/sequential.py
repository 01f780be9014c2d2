"""``bench run --until-decided``: run the profile's seeds, judge the claims, and add seeds one round
at a time to the arms of the claims still undecided, under a group-sequential design fixed before
the first look (:class:`bench.report.power.Design`), until every claim is reproduced or contradicted
or the arms reach ``--max-seeds``.

Added seeds are ordinary cells: :meth:`bench.study.Study.cells` expands them from
``RunOptions.extra_seeds`` (arm label -> seeds), they get their own run ids, claims and records,
study.json lists them (so ``bench status``, the report and a later plain ``bench run`` see and reuse
them) and any executor runs them. A claim that is 'not tested' (its precondition not met, arms
missing or failed) drives no seeds: more seeds do not make untrained nets trained.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bench.errors import UserError
from bench.executors.options import RunOptions
from bench.report.claims import Verdict
from bench.report.power import Design
from bench.store import ResultsStore, recorded_extra_seeds, recorded_for
from bench.study import Selection, Study

POLL_S = 30.0  # how often a submitted (Slurm) round is checked for finished cells


def undecided_arms(verdicts: list[Verdict]) -> set[str]:
    """The arms that get the next seed: those of inconclusive claims, and, so that every claim on
    them stays paired by seed, the arms of any judged claim sharing an arm with them (repeated to a
    fixed point). 'not tested' claims pull in nothing."""
    judged = [o for o in verdicts if o.verdict != "not tested" and not o.claim.exact]
    arms = {a for o in judged if o.verdict == "inconclusive" for a in (*o.arms_a, *o.arms_b)}
    grown = True
    while grown:
        grown = False
        for o in judged:
            mine = {*o.arms_a, *o.arms_b}
            if mine & arms and not mine <= arms:
                arms |= mine
                grown = True
    return arms


def resolve_design(study: Study, profile: str, opts: RunOptions, max_seeds: int | None,
                   spending: str | None, recorded: dict[str, Any] | None = None) -> Design:
    """The design of this study's sequential run: the one recorded by an earlier ``--until-decided``
    of the same profile and overrides (a design is fixed before the first look: a different
    ``--max-seeds`` or spending is refused; None: not given), else a new one with ``max_seeds`` (default
    twice the profile's seeds) and ``spending`` (default :class:`Design`'s). ``recorded``: the study.json
    already read (read here when None)."""
    n0 = len(study.profile(profile).seeds)
    if recorded is None:
        recorded = ResultsStore(opts.results_dir).read_study(study.name) or {}
    same = recorded_for(recorded, profile, opts.overrides)
    old = recorded.get("sequential") if same and isinstance(recorded.get("sequential"), dict) else None
    if old:
        design = Design.from_dict(old)
        if (max_seeds is not None and max_seeds != design.n_max) or spending not in (None, design.spending):
            raise UserError(f"--max-seeds {max_seeds} / --spending {spending}: this study's sequential run was "
                            f"designed with --max-seeds {design.n_max} and --spending {design.spending} before its "
                            f"first look (accepted: those; another design needs another --results-dir)")
        return design
    if max_seeds is not None and max_seeds < n0:
        raise UserError(f"--max-seeds {max_seeds}: the profile {profile!r} already runs {n0} seeds "
                        f"(accepted: an integer >= {n0})")
    n_max = max_seeds if max_seeds is not None else 2 * n0
    return Design(n0, n_max) if spending is None else Design(n0, n_max, spending)


def run_until_decided(study: Study, profile: str, opts: RunOptions, max_seeds: int | None = None,
                      spending: str | None = None) -> dict[str, Any]:
    """Run rounds until every claim is decided or the budget is spent; returns ``design`` (its
    name), ``looks`` (rounds judged), ``seeds`` (per arm, at the end), ``verdicts`` (claim ->
    verdict) and ``counts`` (cells by state of the last round)."""
    from bench.executors import run_with_executor
    from bench.report.data import load
    from bench.report.verdicts import verdicts

    if opts.selection is not None and opts.selection.seeds is not None:
        raise UserError("--seeds with --until-decided: the design starts from every seed of the profile "
                        "(accepted: --only to pick arms, no --seeds)")
    store = ResultsStore(opts.results_dir)
    recorded = store.read_study(study.name) or {}
    design = resolve_design(study, profile, opts, max_seeds, spending, recorded)
    extra = recorded_extra_seeds(recorded, profile, opts.overrides)
    only = opts.selection.only if opts.selection is not None else {}
    selection: Selection | None = opts.selection
    print(f"bench: --until-decided: {design.name()}", file=sys.stderr)
    looks = 0
    while True:
        round_opts = opts.replace(extra_seeds=extra, sequential=design.to_dict(), selection=selection)
        counts = run_with_executor(study, profile, round_opts)
        _wait_for(study, profile, round_opts, store)
        v = verdicts(load(study.name, opts.results_dir))
        looks += 1
        seeds_of = _seeds_per_arm(study, profile, opts, extra)
        undecided = [o for o in v.per_claim if o.verdict == "inconclusive"]
        arms = undecided_arms(v.per_claim)
        chosen = {c.label for c in Selection(only).apply(study.cells(profile, opts.overrides, extra))} if only else arms
        grow = sorted(a for a in arms & chosen if seeds_of.get(a, 0) < design.n_max)
        state = ", ".join(f"{n} {k}" for k, n in v.counts.items() if n)
        print(f"bench: look {looks} of at most {design.looks}: {state}", file=sys.stderr)
        if not undecided or not grow:
            why = ("every claim decided or not tested" if not undecided else
                   f"--max-seeds {design.n_max} reached" if arms & chosen else
                   "the undecided claims' arms are outside --only" if arms else "no undecided claim can be sized")
            print(f"bench: --until-decided stops after {looks} look(s): {why}", file=sys.stderr)
            return {"design": design.name(), "looks": looks, "seeds": seeds_of, "counts": counts,
                    "verdicts": {o.claim.sentence: o.verdict for o in v.per_claim}}
        used = {c.seed for c in study.cells(profile, opts.overrides, extra)}
        seed = max(used) + 1
        for a in grow:
            extra[a] = (*extra.get(a, ()), seed)
        print(f"bench: {len(undecided)} claim(s) undecided: seed {seed} added to {', '.join(grow)}", file=sys.stderr)
        selection = Selection(dict(only), (seed,))


def _seeds_per_arm(study: Study, profile: str, opts: RunOptions, extra: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """Seeds each arm has cells for (the profile's and those added)."""
    out: dict[str, int] = {}
    for c in study.cells(profile, opts.overrides, extra):
        out[c.label] = out.get(c.label, 0) + 1
    return out


def _wait_for(study: Study, profile: str, opts: RunOptions, store: ResultsStore) -> None:
    """Until every selected cell has a record: a submitted (Slurm) round finishes elsewhere; the local
    executor returns with its cells done, so this returns at once."""
    cells = study.cells(profile, opts.overrides, opts.extra_seeds)
    cells = opts.selection.apply(cells) if opts.selection else cells
    said = False
    while True:
        left = [c for c in cells if store.summary(study.name, c.run_id) is None]
        if not left:
            return
        if not said:
            print(f"bench: --until-decided waits for {len(left)} submitted cell(s) to finish "
                  f"(checked every {POLL_S:.0f} s; interrupt and rerun to resume)", file=sys.stderr)
            said = True
        time.sleep(POLL_S)
