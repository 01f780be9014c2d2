"""A study is checked when it registers: every registered study passes; a claim's unknown selector,
metric, profile or trend tag, an unknown figure or published arm, and a missing profile are each a
UserError at ``register_study`` naming the bad value. Claims are written with the constructor of
their kind and study.json keeps (and reads back) the layout it always had."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from bench.claim import Claim, Precondition
from bench.config import RunConfig
from bench.errors import UserError
from bench.figure_kinds import attach
from bench.study import PROFILES, STUDIES, Arm, Profile, Published, Study, register_study
from bench.study_checks import check_study, metric_names

SRC = "constructed"
METRIC = "final_test_error_pct"


def _arms() -> tuple[Arm, ...]:
    return tuple(Arm(f"{net}{d}", {"model": f"{'resnet' if net == 'res' else 'plain'}{d}"}, {"net": net, "depth": d})
                 for net in ("plain", "res") for d in (20, 32))


def _study(**change: Any) -> Study:
    """A study that passes every check; ``change`` replaces its fields."""
    fields: dict[str, Any] = dict(
        name="test-checked", question="?", base=RunConfig(epochs=1),
        axes={"model": _arms()},
        profiles={p: Profile(seeds=(0, 1)) for p in PROFILES},
        claims=(Claim.compare("res32 < plain32", metric=METRIC, a={"model": "res32"}, b={"model": "plain32"},
                              less_by=0.5, source=SRC),
                Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "plain"},
                            greater_by=0.0, source=SRC),
                Claim.level("about 8", metric=METRIC, a={"net": "res", "depth": 20}, value=8.0, within=1.0,
                            source=SRC, requires=Precondition("final_train_error_pct", "<", 20.0, SRC, sides=("a",)))),
        published=(Published({"model": "res*"}, METRIC, 7.0, SRC),),
        figures=("curves_epoch", "error_vs_depth"),
    )
    fields.update(change)
    return Study(**fields)


def _claim(**kw: Any) -> Callable[[], Study]:
    return lambda: _study(claims=(Claim.compare("x", **{**dict(metric=METRIC, a={"model": "res32"},
                                                                b={"model": "plain32"}, less_by=0.5, source=SRC),
                                                         **kw}),))


def test_a_good_study_registers() -> None:
    study = register_study(_study())
    try:
        assert STUDIES.get("test-checked") is study
    finally:
        STUDIES.remove("test-checked")


BAD: dict[str, tuple[Callable[[], Study], str]] = {
    "selector key": (_claim(a={"modle": "res32"}), "'modle'"),
    "selector value": (_claim(b={"model": "plain56"}), "'plain56'"),
    "tag value": (_claim(a={"net": "resnet"}), "'resnet'"),
    "selector picking no arm": (_claim(a={"net": "res", "model": "plain20"}), "picks no arm"),
    "metric": (_claim(metric="final_test_eror_pct"), "'final_test_eror_pct'"),
    "precondition metric": (_claim(requires=Precondition("final_train_err", "<", 20.0, SRC)), "'final_train_err'"),
    "claim profile": (_claim(profiles=("full", "fast")), "'fast'"),
    "trend tag": (lambda: _study(claims=(Claim.trend("x", metric=METRIC, over="width", among={"net": "plain"},
                                                     greater_by=0.0, source=SRC),)), "'width'"),
    "trend over text": (lambda: _study(claims=(Claim.trend("x", metric=METRIC, over="net", greater_by=0.0,
                                                           source=SRC),)), "'net'"),
    "figure": (lambda: _study(figures=("curves_epoch", "error_vs_dpeth")), "'error_vs_dpeth'"),
    "published metric": (lambda: _study(published=(Published({"model": "res20"}, "test_err", 7.0, SRC),)),
                         "'test_err'"),
    "published axis": (lambda: _study(published=(Published({"arch": "res20"}, METRIC, 7.0, SRC),)), "'arch'"),
    "published arm": (lambda: _study(published=(Published({"model": "vgg*"}, METRIC, 7.0, SRC),)), "'vgg*'"),
    "missing profile": (lambda: _study(profiles={p: Profile() for p in ("full", "quick")}), "'smoke'"),
}


@pytest.mark.parametrize("what", BAD)
def test_a_bad_study_is_refused_when_it_registers(what: str) -> None:
    make, named = BAD[what]
    with pytest.raises(UserError) as exc:
        register_study(make())
    msg = str(exc.value)
    assert named in msg and "accepted" in msg and "\n" not in msg, msg
    assert "test-checked" not in STUDIES


def test_a_selector_value_is_compared_as_the_report_compares_it() -> None:
    # depth 20 is the tag's number; '20' and 20.0 name it too (as the verdicts match them)
    for depth in ("20", 20.0):
        check_study(_study(claims=(Claim.level("x", metric=METRIC, a={"net": "res", "depth": depth}, value=8.0,
                                               within=1.0, source=SRC),)), PROFILES)


def test_a_profile_takes_its_name_from_its_key() -> None:
    study = _study(profiles={"full": Profile(), "quick": Profile(seeds=(0,)), "smoke": Profile(seeds=(0,))})
    assert [p.name for p in study.profiles.values()] == ["full", "quick", "smoke"]
    assert study.profile("quick").seeds == (0,)
    with pytest.raises(UserError, match="'quick' is named 'smoke'"):
        _study(profiles={"full": Profile(), "quick": Profile(name="smoke"), "smoke": Profile()})


def test_the_metric_catalogue_is_built_from_the_record_types() -> None:
    from bench.measure import measure_model
    from bench.measure.env import environment
    from bench.record import EpochRow

    known = metric_names()
    for f in dataclasses.fields(EpochRow):  # each field as the summary reads it
        how = f.metadata.get("summary")
        if how == "final":
            assert f"final_{f.name}" in known, f.name
        elif how in ("steady", "max"):
            assert (f.metadata.get("key") or f.name) in known, f.name
    assert {"test_error_at_best_val_pct", "params_total", "macs_conv_linear", "train_samples_per_s"} <= known
    assert "time_to_val_acc_30_s" in metric_names((0.3,)) and "time_to_val_acc_30_s" not in known
    # what a real measurement records is in the catalogue (its identity and environment aside)
    m = measure_model("simple_cnn", input_shape=(3, 16, 16), batch_size=4, warmup=0, repeats=1)
    numbers = set(m) - set(environment(__import__("torch").device("cpu"))) - {
        "model", "input_shape", "device", "batch_size", "precision", "channels_last"}
    assert numbers <= known, numbers - known


def test_figure_kinds_are_the_reports_drawings() -> None:
    from bench.report.figures import FIGURES  # attach() ran at its import: the names and drawings agree

    with pytest.raises(ValueError, match="drawn but not named extra"):
        attach({**FIGURES, "extra": FIGURES["bubble"]})
    with pytest.raises(ValueError, match="named but not drawn bubble"):
        attach({k: v for k, v in FIGURES.items() if k != "bubble"})


# A claim as study.json stored it before the kind constructors (every field, the tag under 'trend').
OLD_TREND = {"sentence": "rises", "metric": "final_train_error_pct", "direction": "greater", "effect": 0.02,
             "source": SRC, "a": {"net": "plain"}, "b": None, "trend": "depth", "value": None, "profiles": ["quick"],
             "best_on_val": False, "question": False, "exact": False, "note": "",
             "requires": {"metric": "final_train_error_pct", "bound": "<", "threshold": 20.0, "source": SRC,
                          "sides": ["a"]}}


def test_study_json_keeps_its_claim_layout_and_reads_older_files() -> None:
    new = Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "plain"}, greater_by=0.02,
                      source=SRC, profiles=("quick",),
                      requires=Precondition("final_train_error_pct", "<", 20.0, SRC, sides=("a",)))
    assert Claim.from_dict(OLD_TREND) == new
    assert new.to_dict() == {**OLD_TREND, "profiles": ("quick",),
                             "requires": {**OLD_TREND["requires"], "sides": ("a",)}}
    assert Claim.from_dict(new.to_dict()) == new
    stored = STUDIES.get("residual").describe()["claims"]
    assert stored[0]["trend"] == "depth" and "over" not in stored[0]
    assert [Claim.from_dict(c) for c in stored] == list(STUDIES.get("residual").claims)
