"""Seeds beyond a profile's: ordinary cells (own run ids, listed in study.json, seen by status and the
report, reused by a later plain run), added by ``bench run --until-decided`` to the arms of undecided
claims only, under a group-sequential design that the report names with the looks taken."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.executors.sequential import undecided_arms
from bench.report.claims import Verdict
from bench.study import Claim, get_study

STUDY = "residual-mnist"
ARM = "mnist_resnet_identity"
SETS = ["--set", "epochs=1", "--set", "batch_size=64"]


def test_extra_seeds_expand_like_the_profiles_own_for_the_arms_named() -> None:
    study = get_study("residual")
    plain = study.cells("cpu")
    more = study.cells("cpu", None, {"plain20": (2, 3), "plain56": (2,)})
    assert {c.run_id for c in plain} <= {c.run_id for c in more}
    added = [c for c in more if c.run_id not in {p.run_id for p in plain}]
    assert sorted((c.label, c.seed) for c in added) == [("plain20", 2), ("plain20", 3), ("plain56", 2)]
    assert all(c.config.seed == c.seed for c in added) and len({c.run_id for c in more}) == len(more)
    # the profile's own seeds are not doubled when named again
    assert len(study.cells("cpu", None, {"plain20": (0, 1)})) == len(plain)


def _o(sentence: str, verdict: str, a: tuple[str, ...], b: tuple[str, ...] = ()) -> Verdict:
    if b:
        claim = Claim.compare(sentence, metric="final_test_error_pct", a={"model": a[0]}, b={"model": b[0]},
                              greater_by=0.1, source="constructed")
    else:
        claim = Claim.level(sentence, metric="final_test_error_pct", a={"model": a[0]}, value=1.0, greater_by=0.1,
                            source="constructed")
    return Verdict(claim, verdict, None, a, b)


def test_seeds_go_to_undecided_claims_and_the_claims_paired_with_them_not_to_untested_ones() -> None:
    verdicts = [_o("x", "inconclusive", ("p56",), ("p20",)),
                _o("y", "reproduced", ("r56",), ("p56",)),      # shares p56: kept paired with x
                _o("z", "reproduced", ("r20",), ("q",)),        # unrelated and decided
                _o("w", "not tested", ("r110",), ("p20",))]     # precondition not met: drives nothing
    assert undecided_arms(verdicts) == {"p56", "p20", "r56"}
    assert undecided_arms(verdicts[1:]) == set()


def _run(root: Path, *extra: str) -> int:
    return main(["--results-dir", str(root), "run", STUDY, "--profile", "smoke", "--device", "cpu",
                 "--only", f"model={ARM}", *SETS, *extra])


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")  # restored afterwards: later tests keep their thread count
def test_until_decided_adds_seeds_as_cells_and_stops_at_max_seeds(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "results"
    # the seeds, looks and verdicts are checked, not the measurements or the end-of-run steps
    assert _run(root, "--until-decided", "--max-seeds", "3", "--no-measure", "--no-extras") == 0
    err = capsys.readouterr().err
    desc = json.loads((root / STUDY / "study.json").read_text())
    added = desc["extra_seeds"].get(ARM, [])
    assert added and set(added) <= {1, 2}, desc["extra_seeds"]
    assert set(desc["extra_seeds"]) == {ARM}  # the arms outside --only got none
    assert desc["sequential"]["n_max"] == 3 and desc["sequential"]["n0"] == 1
    assert "seed 1 added to " + ARM in err and "--until-decided stops after" in err
    seeds = sorted(c["seed"] for c in desc["cells"] if c["arm_label"] == ARM)
    assert seeds == [0, *added]
    done = {p.parent.name: p.stat().st_mtime_ns for p in (root / STUDY / "runs").glob("*/summary.json")}
    assert len(done) == len(seeds)
    # status and the verdict table see the added cells; the table names the procedure and the looks
    assert main(["--results-dir", str(root), "status", STUDY]) == 0
    out = capsys.readouterr().out
    assert all(rid in out for rid in done)
    assert main(["--results-dir", str(root), "claims", STUDY]) == 0
    out = capsys.readouterr().out
    assert "procedure: group-sequential, O'Brien-Fleming alpha spending" in out
    assert f"looks taken: {len(seeds)} of 3" in out
    # a later plain run of the same profile keeps and reuses them: nothing trained again
    assert _run(root) == 0
    assert json.loads((root / STUDY / "study.json").read_text())["extra_seeds"] == desc["extra_seeds"]
    assert done == {p.parent.name: p.stat().st_mtime_ns for p in (root / STUDY / "runs").glob("*/summary.json")}
    # the design was fixed before the first look: another budget is refused in one line
    assert _run(root, "--until-decided", "--max-seeds", "5") == 2
    assert "designed with --max-seeds 3" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "says"), [
    (["--until-decided", "--max-seeds", "0"], "--max-seeds 0: the profile 'smoke' already runs 1 seed"),
    (["--until-decided", "--spending", "haybittle"],
     "unknown alpha spending 'haybittle' (accepted: obrien-fleming, pocock)"),
    (["--until-decided", "--seeds", "0"], "--seeds with --until-decided"),
    (["--max-seeds", "3"], "--max-seeds 3 without --until-decided"),
])
def test_bad_sequential_options_are_one_line_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   extra: list[str], says: str) -> None:
    root = tmp_path / "results"
    assert _run(root, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not list(root.glob(f"{STUDY}/runs/*"))


def test_a_rerun_keeps_the_recorded_design_unless_it_names_another(tmp_path: Path) -> None:
    """No --spending (None) and no --max-seeds: the design recorded by the first --until-decided, Pocock
    included (a default of obrien-fleming once refused a plain rerun of a Pocock design); naming another
    is refused; with nothing recorded the defaults apply."""
    from bench.errors import UserError
    from bench.executors.options import RunOptions
    from bench.executors.sequential import resolve_design
    from bench.report.power import Design

    study, opts = get_study(STUDY), RunOptions(results_dir=str(tmp_path))
    recorded = {"profile": "smoke", "overrides": {}, "sequential": Design(1, 4, "pocock").to_dict()}
    assert resolve_design(study, "smoke", opts, None, None, recorded) == Design(1, 4, "pocock")
    assert resolve_design(study, "smoke", opts, 4, "pocock", recorded) == Design(1, 4, "pocock")
    with pytest.raises(UserError, match="designed with --max-seeds 4 and --spending pocock"):
        resolve_design(study, "smoke", opts, None, "obrien-fleming", recorded)
    assert resolve_design(study, "smoke", opts, None, None, {}) == Design(1, 2, "obrien-fleming")


def test_a_bad_prior_sd_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results-dir", str(tmp_path), "plan", STUDY, "--profile", "smoke", "--prior-sd", "-1"]) == 2
    assert "bad --prior-sd -1.0 (accepted: a standard deviation > 0" in capsys.readouterr().err


def test_the_report_names_the_procedure_and_each_verdicts_look(tmp_path: Path) -> None:
    from bench.report import build_report
    from bench.report.power import Design
    from bench.report.synthetic import write_synthetic_study

    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0, 1, 2), artifacts=False)
    path = tmp_path / "residual" / "study.json"
    desc = json.loads(path.read_text())
    design = Design(3, 5)
    path.write_text(json.dumps({**desc, "sequential": design.to_dict()}))
    page = Path(build_report("residual", str(tmp_path))).read_text()
    assert html.escape(f"procedure: {design.name()}; looks taken: 1 of 3") in page
    level = f"look 1 of 3 ({100 * design.level(3):.3g}% interval)"
    assert level in page


def test_a_study_json_belongs_to_one_profile_and_overrides() -> None:
    """store.recorded_for, the one rule by which the runner, results, plan and the sequential design
    decide that study.json's cells, extra seeds and design are those of this run."""
    from bench.store import recorded_for

    desc = {"profile": "smoke", "overrides": {"epochs": 2}}
    assert recorded_for(desc, "smoke", {"epochs": 2})
    assert not recorded_for(desc, "smoke", None) and not recorded_for(desc, "quick", {"epochs": 2})
    assert recorded_for({"profile": "smoke"}, "smoke", None) and recorded_for({"profile": "smoke"}, "smoke", {})
    assert not recorded_for({}, "smoke", None)
