"""Claims and verdicts: constructed runs tables with known effects give each verdict; every study's
claims name arms and tags its profiles have; report and ``bench claims`` agree; published figures
are compared with ours only under the published protocol."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from bench.cli import main
from bench.config import RunConfig
from bench.measure import count_compute, count_params
from bench.models import create_model
from bench.report import build_index, build_report
from bench.report.claims import VERDICTS, evaluate, matches
from bench.report.stats import against, difference, slope, spread
from bench.report.synthetic import write_synthetic_study
from bench.record import Cell, Outcome, Placement, RunRecord
from bench.study import Claim, load_studies
from bench.train.summary import HISTORY_KEYS, summarise

STUDIES = load_studies().names()
SRC = "constructed"


def table(arms: dict[str, list[float | None]], *, states: dict[str, list[str]] | None = None,
          metric: str = "final_test_error_pct", tags: dict[str, dict] | None = None,
          seeds: dict[str, list[int]] | None = None,
          extra: dict[str, dict[str, list[float]]] | None = None) -> pd.DataFrame:
    """One row per (arm, seed): arm_model = the arm, state ok unless given, the metric's values."""
    rows = []
    for arm, vals in arms.items():
        for i, v in enumerate(vals):
            seed = (seeds or {}).get(arm, list(range(len(vals))))[i]
            state = (states or {}).get(arm, ["ok"] * len(vals))[i]
            row = {"run_id": f"{arm}-{seed}", "arm_label": arm, "arm_model": arm, "seed": seed, "state": state,
                   metric: v if state == "ok" else math.nan}
            for k, t in ((tags or {}).get(arm) or {}).items():
                row[f"tag_{k}"] = t
            for col, per_arm in (extra or {}).items():
                row[col] = per_arm[arm][i]
            rows.append(row)
    return pd.DataFrame(rows)


def less(a: str, b: str, effect: float = 0.5, **kw: object) -> Claim:
    return Claim.compare(f"{a} < {b}", metric="final_test_error_pct", a={"model": a}, b={"model": b}, less_by=effect,
                         source=SRC, **kw)


# --------------------------------------------------------------------------- statistics


def test_paired_difference_matches_scipy_and_is_used_when_seeds_agree() -> None:
    a, b = [7.1, 7.5, 6.9], [8.0, 8.6, 7.7]
    est = difference(a, b, [0, 1, 2], [0, 1, 2])
    ref = st.ttest_rel(a, b)
    ci = ref.confidence_interval()
    assert est.method == "paired" and est.n == "3"
    assert (est.value, est.lo, est.hi, est.p) == pytest.approx((np.mean(a) - np.mean(b), ci.low, ci.high, ref.pvalue))
    # seeds in another order pair by seed, not by position
    assert difference(a, b[::-1], [0, 1, 2], [2, 1, 0]).value == pytest.approx(est.value)
    assert difference(a, b[::-1], [0, 1, 2], [2, 1, 0]).lo == pytest.approx(est.lo)


def test_welch_when_seeds_differ() -> None:
    a, b = [7.1, 7.5, 6.9], [8.0, 8.6]
    est = difference(a, b, [0, 1, 2], [0, 1])
    ref = st.ttest_ind(a, b, equal_var=False)
    assert est.method == "Welch" and est.n == "3 vs 2"
    assert (est.lo, est.hi, est.p) == pytest.approx((ref.confidence_interval().low, ref.confidence_interval().high,
                                                     ref.pvalue))
    with pytest.raises(ValueError):
        difference([1.0], [2.0, 3.0])


def test_slope_interval_and_one_sample() -> None:
    x, y = [20, 20, 56, 56, 110, 110], [9.0, 9.4, 13.1, 12.7, 16.4, 16.0]
    est = slope(x, y)
    res = st.linregress(x, y)
    half = st.t.ppf(0.975, 4) * res.stderr
    assert (est.value, est.lo, est.hi) == pytest.approx((res.slope, res.slope - half, res.slope + half))
    one = against([269_722, 269_722], 270_000)
    assert (one.value, one.lo, one.hi) == (-278, -278, -278)  # no spread: exact
    s = spread([1.0, 2.0, 3.0])
    assert s.lo == pytest.approx(2.0 - st.t.ppf(0.975, 2) / math.sqrt(3))


# --------------------------------------------------------------------------- verdicts


def test_reproduced_contradicted_inconclusive_not_tested() -> None:
    t = table({"res": [6.9, 7.1, 7.0], "plain": [9.0, 9.3, 8.8]})
    assert evaluate(less("res", "plain"), t).verdict == "reproduced"
    out = evaluate(less("plain", "res"), t)
    assert out.verdict == "contradicted" and "other side" in out.why
    assert out.estimate is not None and out.estimate.method == "paired"
    # right side of zero but smaller than the smallest effect: inconclusive, said so
    out = evaluate(less("res", "plain", effect=5.0), t)
    assert out.verdict == "inconclusive" and "smallest effect" in out.why
    noisy = table({"res": [6.0, 9.5, 7.0], "plain": [9.0, 7.3, 8.8]})
    out = evaluate(less("res", "plain"), noisy)
    assert out.verdict == "inconclusive" and "includes zero" in out.why
    one = table({"res": [6.0], "plain": [9.0]})
    out = evaluate(less("res", "plain"), one)
    assert out.verdict == "inconclusive" and "fewer than 2 seeds" in out.why and out.estimate is None
    out = evaluate(less("res", "deep"), t)
    assert out.verdict == "not tested" and "no arm model=deep" in out.why


def test_failed_and_unfinished_arms_are_not_tested_and_named() -> None:
    t = table({"res": [7.0, 7.1], "plain": [None, None]}, states={"plain": ["failed", "pending"]})
    out = evaluate(less("res", "plain"), t)
    assert out.verdict == "not tested" and "plain: 1 failed, 1 pending" in out.why
    # one failed seed of three: judged on the rest (Welch), and the failure is said
    t = table({"res": [6.9, 7.1, 7.0], "plain": [9.0, 9.3, None]}, states={"plain": ["ok", "ok", "diverged"]})
    out = evaluate(less("res", "plain"), t)
    assert out.verdict == "reproduced" and out.estimate is not None and out.estimate.method == "Welch"
    assert "plain: 1 seed(s) diverged left out" in out.why


def test_within_margin() -> None:
    claim = Claim.compare("gn flat", metric="final_test_error_pct", a={"model": "b2"}, b={"model": "b32"}, within=1.0,
                          source=SRC)
    assert evaluate(claim, table({"b2": [24.1, 24.3, 24.0], "b32": [24.0, 24.2, 24.1]})).verdict == "reproduced"
    assert evaluate(claim, table({"b2": [27.1, 27.3, 27.0], "b32": [24.0, 24.2, 24.1]})).verdict == "contradicted"
    assert evaluate(claim, table({"b2": [24.1, 25.9, 24.0], "b32": [24.0, 24.2, 24.1]})).verdict == "inconclusive"


def test_trend_within_a_group() -> None:
    tags = {f"{n}{d}": {"net": n, "depth": d} for n in ("plain", "resnet") for d in (20, 56, 110)}
    vals = {"plain20": [9.0, 9.2], "plain56": [13.0, 13.4], "plain110": [16.2, 16.0],
            "resnet20": [8.7, 8.8], "resnet56": [7.0, 6.9], "resnet110": [6.5, 6.6]}
    t = table(vals, tags=tags, metric="final_train_error_pct")
    up = Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "plain"}, greater_by=0.02,
                     source=SRC)
    out = evaluate(up, t)
    assert out.verdict == "reproduced" and out.estimate is not None and out.estimate.method == "per-seed slopes"
    assert out.estimate.n == "2"  # one slope per seed over the plain nets; the residual nets are not in the group
    assert evaluate(Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "resnet"},
                                greater_by=0.0, source=SRC), t).verdict == "contradicted"
    assert evaluate(Claim.trend("x", metric="final_train_error_pct", over="width", among={"net": "plain"},
                                greater_by=0.0, source=SRC), t).verdict == "not tested"


def test_level_claims_and_exact_counts() -> None:
    t = table({"r20": [269_722]}, metric="params_total")
    claim = Claim.level("0.27M", metric="params_total", a={"model": "r20"}, value=270_000, within=5_000, exact=True,
                        source=SRC)
    assert evaluate(claim, t).verdict == "reproduced"  # exact: one run suffices
    t = table({"mnist": [7.6, 8.3, 8.1]})
    about = Claim.level("about 92%", metric="final_test_error_pct", a={"model": "mnist"}, value=8.0, within=2.0,
                        source=SRC)
    assert evaluate(about, t).verdict == "reproduced"
    assert evaluate(about, table({"mnist": [1.1, 1.0, 1.2]})).verdict == "contradicted"
    assert evaluate(about, table({"mnist": [7.9]})).verdict == "inconclusive"


def test_best_on_validation_never_looks_at_test() -> None:
    arms = {"sgd lr=0.1": [7.0, 7.2], "sgd lr=0.3": [5.0, 5.1], "adam lr=0.001": [9.0, 9.1]}
    val = {"sgd lr=0.1": [0.93, 0.93], "sgd lr=0.3": [0.90, 0.90], "adam lr=0.001": [0.91, 0.91]}
    tags = {a: {"optimizer": a.split()[0]} for a in arms}
    t = table(arms, tags=tags, metric="test_error_at_best_val_pct", extra={"best_val_acc": val})
    claim = Claim.compare("sgd < adam", metric="test_error_at_best_val_pct", a={"optimizer": "sgd"},
                          b={"optimizer": "adam"}, less_by=0.5, source=SRC, best_on_val=True)
    out = evaluate(claim, t)
    assert out.arms_a == ("sgd lr=0.1",)  # best validation accuracy, although lr=0.3 has the lower test error
    assert out.verdict == "reproduced"


def test_questions_are_answered_in_words() -> None:
    from bench.report.verdicts import Verdicts

    t = table({"res": [6.9, 7.1, 7.0], "plain": [9.0, 9.3, 8.8]})
    outs = [evaluate(less("plain", "res", question=True), t), evaluate(less("res", "plain"), t)]
    v = Verdicts(outs, "quick", "cifar10", [0, 1, 2])
    frame = v.frame()
    assert frame["why"][0].startswith("answer in this run: no") and frame["claim"][0].startswith("[question]")
    assert v.headline == "1 of 1 claims reproduced (and 1 question(s))"


def test_claim_definition_errors() -> None:
    with pytest.raises(ValueError, match="direction"):
        Claim(sentence="x", metric="m", direction="bigger", effect=0.0, source=SRC, b={})
    with pytest.raises(ValueError, match="exactly one of b, over, value"):
        Claim(sentence="x", metric="m", direction="less", effect=0.0, source=SRC, b={"a": 1}, value=1.0)
    with pytest.raises(ValueError, match="effect"):
        Claim.compare("x", metric="m", a={}, b={"a": 1}, less_by=-1.0, source=SRC)
    with pytest.raises(ValueError, match="exactly one of greater_by, less_by, within"):
        Claim.compare("x", metric="m", a={}, b={"a": 1}, less_by=1.0, within=1.0, source=SRC)
    with pytest.raises(ValueError, match="exactly one of greater_by, less_by, within"):
        Claim.level("x", metric="m", a={}, value=1.0, source=SRC)
    with pytest.raises(TypeError):  # five positional parts are gone: every part is named
        Claim("x", "m", "less", 0.5, SRC)  # type: ignore[misc]


# --------------------------------------------------------------------------- the registry's claims


def _known_metrics() -> set[str]:
    cfg = RunConfig(model="resnet20", dataset="cifar10", epochs=1)
    history = [{**{k: math.nan for k in HISTORY_KEYS}, "epoch": 1, "val_acc": 0.7, "test_acc": 0.69,
                "train_acc": 0.6, "peak_allocated_bytes": None, "elapsed_train_time_s": 1.0, "epoch_time_s": 1.0}]
    s = summarise(cfg, history, extra={}, iterations_done=1, steps_per_epoch=1,
                  train_time_s=1.0, precision_used="fp32", classes=["a", "b"], sizes=(1, 1, 1),
                  data_source="x")
    model = create_model("resnet20")
    measured = {**count_params(model), **count_compute(model, (3, 32, 32))}
    cell, where = Cell("x", "smoke", {}, {}, 0, cfg), Placement(0.0, 1.0, 1.0, "h", "cpu")
    bare = RunRecord(cell, Outcome("ok"), where).to_row()
    return set(RunRecord(cell, Outcome("ok"), where, metrics=s, measurements=measured).to_row()) - set(bare)


@pytest.mark.parametrize("name", STUDIES)
def test_claims_name_arms_and_tags_of_every_profile_they_list(name: str) -> None:
    study = load_studies().get(name)
    assert study.claims, f"{name} states no claim"
    known = _known_metrics()
    for claim in study.claims:
        assert claim.metric in known, (claim.sentence, claim.metric)
        assert claim.source
        profiles = claim.profiles or tuple(study.profiles)
        assert set(profiles) <= set(study.profiles), claim.sentence
        for p in profiles:
            cells = study.cells(p)
            t = pd.DataFrame([{"arm_label": c.label, **{f"arm_{k}": v for k, v in c.arm.items()},
                               **{f"tag_{k}": v for k, v in c.tags.items()}} for c in cells])
            for side in [claim.a] + ([claim.b] if claim.b is not None else []):
                picked = t[matches(t, side)]["arm_label"].unique()
                assert len(picked) >= 1, (name, p, claim.sentence, side)
                if claim.kind != "trend" and not claim.best_on_val:
                    assert len(picked) == 1, (name, p, claim.sentence, side, picked)
            if claim.kind == "trend":
                group = t[matches(t, claim.a)]
                values = pd.to_numeric(group[f"tag_{claim.over}"], errors="raise")
                assert values.nunique() >= 2, (name, p, claim.sentence)
        # a claim a profile cannot test must not list it... and one it can should (or say why not)
        for p in set(study.profiles) - set(profiles):
            cells = study.cells(p)
            t = pd.DataFrame([{"arm_label": c.label, **{f"arm_{k}": v for k, v in c.arm.items()},
                               **{f"tag_{k}": v for k, v in c.tags.items()}} for c in cells])
            sides = [claim.a] + ([claim.b] if claim.b is not None else [])
            assert not all(matches(t, s).any() for s in sides), (name, p, claim.sentence, "could be listed")


# --------------------------------------------------------------------------- report, index, CLI


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("claims")
    write_synthetic_study(root, "residual", "quick", seeds=(0, 1, 2), artifacts=False)
    write_synthetic_study(root, "normalization", "smoke", seeds=(0, 1), artifacts=False)
    return root


def _cli_verdicts(root: Path, study: str, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    assert main(["--results-dir", str(root), "claims", study]) == 0
    out = capsys.readouterr().out
    return re.findall(r"^\[(reproduced|contradicted|inconclusive|not tested)\] ", out, re.M), out


@pytest.mark.parametrize("study", ["residual", "normalization"])
def test_report_and_cli_agree(study: str, records: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = build_report(study, records).read_text()
    in_report = re.findall(r'<tr data-verdict="([a-z ]+)">', html)
    in_cli, out = _cli_verdicts(records, study, capsys)
    assert in_report and in_report == in_cli
    assert set(in_cli) <= set(VERDICTS)
    headline = re.search(r"(\d+ of \d+ claims reproduced)", out)
    assert headline and headline.group(1) in html
    # the verdict table comes first: before the overview and the results
    assert html.index('id="claims-table"') < html.index('id="overview"') < html.index('id="results"')
    csv = pd.read_csv(records / study / "claims.csv")
    assert csv["verdict"].tolist() == in_cli
    build_index(records)
    index = (records / "index.html").read_text()
    assert headline.group(1) in index


@pytest.mark.slow
def test_published_only_under_the_published_protocol(records: Path, tmp_path: Path) -> None:
    # quick profile (synthetic records): reference values only, with the reason
    build_report("residual", records)
    res = pd.read_csv(records / "residual" / "results.csv")
    assert "ours_minus_published" not in res and res["published_value"].notna().any()
    html = (records / "residual" / "report.html").read_text()
    assert "ours − published" not in html and "reference (%)" in html
    assert "profile quick" in html and "synthetic" in html
    assert "Published figures not drawn (profile quick" in html and "Hollow stars" not in html
    # full profile on the original data: compared
    write_synthetic_study(tmp_path, "residual", "full", seeds=(0, 1), artifacts=False, failed=0, diverged=0)
    for summary in (tmp_path / "residual" / "runs").glob("*/summary.json"):
        s = json.loads(summary.read_text())
        s["metrics"]["data_source"] = "torchvision CIFAR10 from data (md5-verified by torchvision)"
        summary.write_text(json.dumps(s))
    build_report("residual", tmp_path)
    res = pd.read_csv(tmp_path / "residual" / "results.csv")
    r20 = res[res["arm"] == "resnet20"].iloc[0]
    assert r20["ours_minus_published"] == pytest.approx(r20["final_test_error_pct_mean"] - 8.75)
    html = (tmp_path / "residual" / "report.html").read_text()
    assert "ours − published" in html and "Hollow stars: published figures" in html
    # the JPEG copy of CIFAR-10 is not the original data set
    for summary in (tmp_path / "residual" / "runs").glob("*/summary.json"):
        s = json.loads(summary.read_text())
        s["metrics"]["data_source"] = "imagefolder cifar10-jpeg.tar.gz; lossy JPEG copy of CIFAR-10"
        summary.write_text(json.dumps(s))
    html = build_report("residual", tmp_path).read_text()
    assert "ours − published" not in html and "JPEG copy of CIFAR-10" in html


def test_smoke_normalization_never_compares(records: Path) -> None:
    html = build_report("normalization", records).read_text()
    assert "ours − published" not in html and 'id="reference-note"' in html


# --------------------------------------------------------------------------- selection and profiles


def test_only_and_seeds_select_cells(results_dir: Path, capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    base = ["--results-dir", str(results_dir)]
    assert main([*base, "plan", "residual", "--profile", "quick", "--only", "model=plain56", "--only",
                 "model=resnet56", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "selection: model=plain56|resnet56; seeds 0, 1 (4 of 24 cells)" in out
    assert "plain20" not in out and len(re.findall(r"\splain56\s", out)) == 2
    assert main([*base, "plan", "residual", "--profile", "quick", "--only", "net=plain", "--only", "depth=20"]) == 0
    assert "(3 of 24 cells)" in capsys.readouterr().out
    for bad, msg in ((["--only", "modle=plain56"], "unknown key 'modle'"),
                     (["--only", "model=plain57"], "accepted values of model: "),
                     (["--only", "plain56"], "expects key=value"),
                     (["--seeds", "0,7"], "seed(s) 7 not in this profile (accepted: 0, 1, 2)"),
                     (["--seeds", "x"], "comma-separated integers")):
        assert main([*base, "plan", "residual", "--profile", "quick", *bad]) == 2
        assert msg in capsys.readouterr().err
    assert main([*base, "run", "residual-mnist", "--profile", "smoke", "--only", "model=mnist_cnn",
                 "--seeds", "0"]) == 0
    err = capsys.readouterr().err
    assert "selection model=mnist_cnn; seeds 0: 1 of 3 cells, 1 to run" in err
    assert main([*base, "status", "residual-mnist"]) == 0
    status = capsys.readouterr().out
    assert "1 done" in status and "2 pending" in status
    assert not (results_dir / "residual-mnist" / "runs").exists() or len(
        list((results_dir / "residual-mnist" / "runs").glob("*/summary.json"))) == 1


def test_auto_profile_on_a_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from bench.commands.defaults import resolve_profile

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    study = load_studies().get("residual")
    assert resolve_profile("auto", study, str(tmp_path)) == "smoke"
    assert "no cifar10 in" in capsys.readouterr().err
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"")  # empty: not CIFAR-10 found
    assert resolve_profile("auto", study, str(tmp_path)) == "smoke"
    (tmp_path / "cifar10-jpeg.tar.gz").write_bytes(b"\x1f\x8b\x08\x00")  # a gzip file's start: looked at, not read
    assert resolve_profile("auto", study, str(tmp_path)) == "cpu"
    assert resolve_profile("auto", load_studies().get("bn-placement"), str(tmp_path)) == "smoke"
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for n in names:
        (raw / f"{n}.gz").write_bytes(b"")  # empty: not MNIST found
    assert resolve_profile("auto", load_studies().get("residual-mnist"), str(tmp_path)) == "smoke"
    for n in names:
        (raw / f"{n}.gz").write_bytes(b"\x1f\x8b\x08\x00")  # a gzip file's start: looked at, not read
    assert resolve_profile("auto", load_studies().get("residual-mnist"), str(tmp_path)) == "cpu"
    (raw / names[0]).write_bytes(b"")  # an empty decompressed file beside its .gz: the .gz still counts
    assert resolve_profile("auto", load_studies().get("residual-mnist"), str(tmp_path)) == "cpu"
    assert resolve_profile("smoke", study, str(tmp_path)) == "smoke"


# --------------------------------------------------------------------------- preconditions

TRAINED = "final_train_error_pct"


def _with_train_error(arms: dict[str, list[float]], train_err: dict[str, list[float]]) -> pd.DataFrame:
    return table(arms, extra={TRAINED: train_err})


@pytest.mark.parametrize("sides", [("a", "b"), ("a",)])
def test_a_claim_whose_nets_have_not_trained_is_not_tested_with_the_numbers(sides: tuple[str, ...]) -> None:
    from bench.report.verdicts import precondition_text
    from bench.study import Precondition

    req = Precondition(TRAINED, "<", 40.0, "constructed source", sides=sides)
    claim = less("r56", "r20", requires=req)
    # a large, clean effect that would be 'reproduced' (or 'contradicted') if judged
    t = _with_train_error({"r56": [70.0, 71.0, 72.0], "r20": [50.0, 50.5, 51.0]},
                          {"r56": [89.0, 90.0, 90.1], "r20": [30.0, 31.0, 29.0]})
    o = evaluate(claim, t)
    assert o.verdict == "not tested" and o.estimate is None and o.precondition_held is False
    assert "precondition not met" in o.why and "r56 89.7%" in o.why and "< 40%" in o.why
    # side b alone trained: with sides=('a',) it is still a's failure that counts
    assert ("r20 30.0%" in o.why) == ("b" in sides)
    text = precondition_text(o)
    assert text.startswith("final training error < 40% on r56") and "not met" in text and "89.7%" in text


def test_a_claim_whose_nets_have_trained_is_judged_and_says_the_precondition_held() -> None:
    from bench.report.verdicts import precondition_text
    from bench.study import Precondition

    claim = less("r56", "r20", requires=Precondition(TRAINED, "<", 40.0, "constructed source"))
    t = _with_train_error({"r56": [7.0, 7.2, 6.9], "r20": [8.6, 8.9, 8.7]},
                          {"r56": [2.0, 2.5, 2.1], "r20": [5.0, 5.5, 5.2]})
    o = evaluate(claim, t)
    assert o.verdict == "reproduced" and o.precondition_held is True
    assert "r56 2.2%" in o.checked and "r20 5.2%" in o.checked
    assert "held" in precondition_text(o)
    # the same table without the precondition: the same verdict and estimate
    plain = evaluate(less("r56", "r20"), t)
    assert plain.verdict == o.verdict and plain.estimate == o.estimate and plain.precondition_held is None
    assert precondition_text(plain).startswith("none")


def test_a_trend_precondition_reads_its_group() -> None:
    from bench.study import Precondition

    req = Precondition(TRAINED, "<", 50.0, "constructed source", sides=("a",))
    claim = Claim.trend("rises", metric="final_test_error_pct", over="depth", among={"net": "plain"}, greater_by=0.0,
                        source=SRC, requires=req)
    tags = {"p20": {"depth": 20, "net": "plain"}, "p56": {"depth": 56, "net": "plain"}}
    good = table({"p20": [10.0, 10.5], "p56": [14.0, 14.6]}, tags=tags,
                 extra={TRAINED: {"p20": [5.0, 6.0], "p56": [9.0, 8.0]}})
    bad = table({"p20": [10.0, 10.5], "p56": [14.0, 14.6]}, tags=tags,
                extra={TRAINED: {"p20": [5.0, 6.0], "p56": [80.0, 90.0]}})
    assert evaluate(claim, good).precondition_held is True
    o = evaluate(claim, bad)
    assert o.verdict == "not tested" and "p56 85.0%" in o.why


def test_a_precondition_survives_study_json_and_a_bad_one_is_refused() -> None:
    import dataclasses

    from bench.study import Precondition

    c = less("a", "b", requires=Precondition(TRAINED, "<", 20.0, "He et al."))
    assert Claim.from_dict(json.loads(json.dumps(dataclasses.asdict(c)))) == c
    with pytest.raises(ValueError, match="bound"):
        Precondition(TRAINED, "<=", 20.0, "x")
    with pytest.raises(ValueError, match="side b"):
        Claim.trend("t", metric=TRAINED, over="depth", among={"net": "plain"}, greater_by=0.0, source=SRC,
                    requires=Precondition(TRAINED, "<", 20.0, "x"))


def test_the_verdict_table_shows_the_precondition_in_every_form(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """bench claims, the report's verdict table and results/index.html all show it."""
    write_synthetic_study(tmp_path, "residual", "quick", seeds=(0, 1))
    assert main(["--results-dir", str(tmp_path), "claims", "residual"]) == 0
    out = capsys.readouterr().out
    assert out.count("precondition: ") >= 4 and "precondition: none" in out
    assert "final training error < 20% on resnet56 and resnet20 (" in out
    build_report("residual", tmp_path)
    page = (tmp_path / "residual" / "report.html").read_text()
    assert "precondition: final training error &lt; 20% on resnet56 and resnet20 (" in page
    # the verdict is the first column: it shows at a glance however wide the other columns are
    head = page[page.index('id="claims-table"'):]
    assert head.index("<th>verdict</th>") < head.index("<th>claim</th>") < head.index("<th>our estimate")
    assert re.search(r'<tr data-verdict="[^"]+"><td class="verdict ', head)
    index = build_index(tmp_path).read_text()
    assert "not tested" in index and "inconclusive" in index


# --------------------------------------------------------------------------- one contrast, one verdict


def test_a_two_arm_trend_is_the_paired_test_of_its_arms_and_is_marked_as_the_same_test() -> None:
    from bench.report.claims import evaluate_all

    tags = {"plain20": {"net": "plain", "depth": 20}, "plain56": {"net": "plain", "depth": 56}}
    rng = np.random.default_rng(0)
    base = rng.normal(20.0, 1.0, size=3)
    t = table({"plain20": list(base), "plain56": list(base + 1.0 + rng.normal(0, 0.5, 3))}, tags=tags,
              metric="final_train_error_pct")
    trend = Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "plain"}, greater_by=0.02,
                        source=SRC)
    pair = Claim.compare("56 > 20", metric="final_train_error_pct", a={"model": "plain56"}, b={"model": "plain20"},
                         greater_by=1.0, source=SRC)
    o_trend, o_pair = evaluate_all([trend, pair], t, None)
    assert o_trend.estimate is not None and o_pair.estimate is not None
    assert o_pair.estimate.method == "paired" and o_trend.estimate.method == "per-seed slopes"
    assert o_trend.estimate.p == pytest.approx(o_pair.estimate.p)
    assert o_trend.estimate.lo * 36 == pytest.approx(o_pair.estimate.lo)
    assert o_pair.same_test_as == "rises" and o_trend.same_test_as == ""
    # a trend's interval has the seeds' degrees of freedom, not the runs': 3 seeds, 2 df
    slopes = (t[t.arm_label == "plain56"]["final_train_error_pct"].to_numpy()
              - t[t.arm_label == "plain20"]["final_train_error_pct"].to_numpy()) / 36
    half = st.t.isf(0.025, 2) * slopes.std(ddof=1) / math.sqrt(3)
    assert o_trend.estimate.hi - o_trend.estimate.lo == pytest.approx(2 * half)


def test_a_trend_leaves_out_a_seed_without_every_level_and_says_so() -> None:
    tags = {"p20": {"net": "plain", "depth": 20}, "p56": {"net": "plain", "depth": 56}}
    t = table({"p20": [9.0, 9.2, 9.1], "p56": [13.0, 13.4, 13.1]}, tags=tags, metric="final_train_error_pct",
              states={"p56": ["ok", "ok", "failed"]})
    out = evaluate(Claim.trend("rises", metric="final_train_error_pct", over="depth", among={"net": "plain"},
                               greater_by=0.02, source=SRC), t)
    assert out.estimate is not None and out.estimate.n == "2" and "seed(s) 2 without every depth" in out.why


def test_an_inconclusive_verdict_says_how_many_seeds_80_percent_power_needs() -> None:
    from bench.report.power import seeds_needed

    t = table({"a": [7.0, 7.9], "b": [7.5, 7.8]})
    out = evaluate(less("a", "b", effect=0.5), t)
    d = np.array([7.0, 7.9]) - np.array([7.5, 7.8])
    assert out.verdict == "inconclusive" and out.spread_sd == pytest.approx(d.std(ddof=1))
    assert out.seeds_needed == seeds_needed("paired", 0.5, float(d.std(ddof=1)))
    # a claim whose precondition is not met is not tested: it sizes nothing
    from bench.study import Precondition

    req = Precondition("final_test_error_pct", "<", 1.0, SRC)
    held_not = evaluate(less("a", "b", requires=req), t)
    assert held_not.verdict == "not tested" and held_not.seeds_needed is None
