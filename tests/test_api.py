"""bench.api on real smoke runs: it runs what ``bench run`` runs (same run ids, same records), reads the
same tables, builds the same report and shows it inline, and fails with the command's one-line errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
import pytest

from bench import api
from bench.cli import main
from bench.errors import UserError
from bench.results import read_results

STUDY = "residual-mnist"
ONLY = {"model": "mnist_cnn"}
SETS = {"epochs": 1, "batch_size": 64}  # a mapping here, `--set epochs=1 --set batch_size=64` there


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> api.StudyResult:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a busy machine: one thread is faster
    try:
        return api.run(STUDY, "smoke", only=ONLY, sets=SETS, device="cpu",
                       results_dir=tmp_path_factory.mktemp("api") / "results")
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_run_is_bench_run(ran: api.StudyResult, capsys: pytest.CaptureFixture[str]) -> None:
    assert ran.study == STUDY and ran.profile == "smoke" and ran.selection == "model=mnist_cnn"
    assert ran.counts == {"ok": 1, "pending": 2}
    assert "1 ok, 2 pending" in ran._repr_html_()
    summaries = {p: p.stat().st_mtime_ns for p in (ran.results_dir / STUDY / "runs").glob("*/summary.json")}
    assert len(summaries) == 1
    # the command line with the same selection and overrides finds the same cell done: same run id
    capsys.readouterr()
    assert main(["--results-dir", str(ran.results_dir), "run", STUDY, "--profile", "smoke", "--device", "cpu",
                 "--only", "model=mnist_cnn", "--set", "epochs=1", "--set", "batch_size=64"]) == 0
    assert "1 ok, 2 pending" in capsys.readouterr().out
    assert summaries == {p: p.stat().st_mtime_ns for p in summaries}, "the command line ran the cell again"


@pytest.mark.slow
def test_runs_and_histories_are_the_frames_tables(ran: api.StudyResult) -> None:
    runs, history = ran.runs(), ran.histories()
    res = read_results(ran.results_dir, STUDY)
    want_runs, want_history = res.runs_frame(), res.history_frame()
    pd.testing.assert_frame_equal(runs, want_runs)
    pd.testing.assert_frame_equal(history, want_history)
    assert list(runs["arm"]) == ["mnist_cnn"] and list(runs["state"]) == ["ok"]
    assert int(runs["cfg_epochs"].iloc[0]) == 1 and int(runs["cfg_batch_size"].iloc[0]) == 64
    assert {"final_test_error_pct", "params_total", "train_time_s"} <= set(runs.columns)
    assert list(history["epoch"]) == [1] and {"train_loss", "test_acc", "epoch_time_s"} <= set(history.columns)


@pytest.mark.slow
def test_report_shows_verdicts_tables_and_figures_inline(ran: api.StudyResult) -> None:
    rep = ran.report()
    assert rep.path == ran.results_dir / STUDY / "report.html" and rep.path.is_file()
    assert (ran.results_dir / "index.html").is_file() and (ran.results_dir / STUDY / "claims.csv").is_file()
    page = rep._repr_html_()
    assert 'id="claims-table"' in page and "<h4>Results per arm</h4>" in page and "<h4>Cost per arm</h4>" in page
    assert rep.verdicts.html() in page and rep.headline in page
    assert "data:image/png;base64," in page  # self-contained: no scripts, no outside resources
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    # what the page says, the objects hold: the claims as `bench claims` judges them, the CSV tables
    assert list(rep.claims.columns[:3]) == ["claim", "source", "compared"] and len(rep.claims) >= 1
    assert rep.table("results").to_csv(index=False) == (ran.results_dir / STUDY / "results.csv").read_text()
    fig = rep.figure()
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64encode(fig.png or b"").decode() in page
    with pytest.raises(UserError, match=r"unknown report table 'nope' \(accepted: results, cost"):
        rep.table("nope")
    with pytest.raises(UserError, match="no figure 'nope'"):
        rep.figure("nope")


@pytest.mark.slow
def test_measure_is_bench_measure(capsys: pytest.CaptureFixture[str], one_thread: None) -> None:
    m = api.measure("mnist_cnn", batch_size=8, device="cpu", speed=False, layers=True)
    capsys.readouterr()
    assert main(["measure", "mnist_cnn", "--batch-size", "8", "--device", "cpu", "--no-speed"]) == 0
    printed = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    for key in ("params_total", "macs_conv_linear", "input_shape", "batch_size"):
        assert printed[key].strip() == (f"{m[key]:,}" if isinstance(m[key], int) else str(m[key]))
    assert m["input_shape"] == "1x28x28" and "infer_samples_per_s" not in m.values  # speed=False: not timed
    assert m.layers is not None and int(m.layers["params"].sum()) == m["params_total"]
    frame = m.frame()
    assert list(frame.columns) == ["quantity", "value"] and "environment" not in set(frame["quantity"])
    html = m._repr_html_()
    assert "params_total" in html and printed["params_total"].strip() in html and html.count("<table") == 2


def _cli_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench: error: ") and "\n" not in err
    return err.removeprefix("bench: error: ")


@pytest.mark.parametrize("call, argv", [
    (lambda r: api.run("residul", "smoke", results_dir=r), ["run", "residul", "--profile", "smoke"]),
    (lambda r: api.run(STUDY, "tiny", results_dir=r), ["run", STUDY, "--profile", "tiny"]),
    (lambda r: api.run(STUDY, "smoke", only={"model": "nope"}, results_dir=r), ["run", STUDY, "--profile", "smoke",
                                                                        "--only", "model=nope"]),
    (lambda r: api.run(STUDY, "smoke", seeds=[7], results_dir=r), ["run", STUDY, "--profile", "smoke", "--seeds", "7"]),
    (lambda r: api.run(STUDY, "smoke", sets={"lrr": 1}, results_dir=r), ["run", STUDY, "--profile", "smoke",
                                                                 "--set", "lrr=1"]),
    (lambda r: api.run(STUDY, "smoke", device="tpu", results_dir=r), ["run", STUDY, "--profile", "smoke",
                                                              "--device", "tpu"]),
    (lambda r: api.runs(STUDY, results_dir=r), ["report", STUDY]),
    (lambda r: api.report("residul", results_dir=r), ["report", "residul"]),
    (lambda r: api.measure("resnet"), ["measure", "resnet"]),
    (lambda r: api.measure("mnist_cnn", batch_size=0), ["measure", "mnist_cnn", "--batch-size", "0"]),
], ids=["study", "profile", "only", "seeds", "set", "device", "no-results", "report-study", "model", "batch"])
def test_mistakes_are_the_commands_one_line_errors(call, argv: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    with pytest.raises(UserError) as exc:
        call(results)
    assert str(exc.value) == _cli_error(["--results-dir", str(results), *argv], capsys)
    assert not (results / STUDY / "runs").exists(), "a mistake writes no record"


def test_run_defaults_are_the_commands() -> None:
    """api.run and `bench run` take the same defaults (api.run once ran the smoke profile where the command
    ran auto): every api.run keyword that is also a `bench run` option has that option's default."""
    import argparse
    import inspect

    from bench.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest: a.default for a in sub.choices["run"]._actions}
    params = inspect.signature(api.run).parameters
    # --only/--set gather into a list that starts empty; the API's "none" for them is None
    lists = ("only", "sets")
    compared = {name: p.default for name, p in params.items() if name in options and name not in ("study", *lists)}
    assert all(params[name].default is None and options[name] == [] for name in lists)
    assert {"profile", "device", "executor", "parallel", "gpus_per_task", "timeout_min", "spending",
            "max_seeds"} <= set(compared)
    assert compared == {name: options[name] for name in compared}


def test_a_results_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        api.runs(STUDY, results_dir=tmp_path / "file")
    with pytest.raises(TypeError, match="only must be a mapping"):
        api.run(STUDY, only=5, results_dir=tmp_path / "r")  # type: ignore[arg-type]
