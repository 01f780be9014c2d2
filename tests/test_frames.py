"""Tidy tables of the records (bench.results) and their Parquet files (bench.frames), read back with pandas
and DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.frames import write_parquet
from bench.report.synthetic import write_synthetic_study
from bench.results import read_results


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("frames")
    write_synthetic_study(r, "residual", "smoke", seeds=(0, 1), failed=1, diverged=1, running=1, pending=1,
                          artifacts=False, epochs=4)
    write_synthetic_study(r, "optimizers", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False, epochs=3)
    return r


def _record_counts(root: Path, study: str) -> tuple[int, int, int]:
    """(run folders with a record, finished runs, history rows) counted from the files themselves."""
    folders = [d for d in (root / study / "runs").iterdir() if (d / "cell.json").exists()]
    finished = [d for d in folders if (d / "summary.json").exists()]
    rows = sum(len(pd.read_csv(d / "history.csv")) for d in folders if (d / "history.csv").exists())
    return len(folders), len(finished), rows


def _tables(root: Path, study: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    res = read_results(root, study)
    return res.runs_frame(), res.history_frame()


def test_tables_are_tidy_with_units(root: Path) -> None:
    runs, hist = _tables(root, "residual")
    n_folders, n_finished, n_rows = _record_counts(root, "residual")
    assert len(runs) == n_folders and runs["run_id"].is_unique
    assert int(runs["status"].notna().sum()) == n_finished
    assert set(runs["state"]) >= {"ok", "failed", "diverged", "running"}
    assert len(hist) == n_rows and not hist.duplicated(["run_id", "epoch"]).any()
    for col in ("study", "run_id", "arm", "seed", "state", "epoch", "lr", "train_loss", "test_acc", "epoch_time_s"):
        assert col in hist, col
    for col in ("final_test_error_pct", "median_epoch_time_s", "params_total", "macs_conv_linear", "cfg_model"):
        assert col in runs, col
    # one row per run: the values are the summary's own
    ok = runs[runs["state"] == "ok"].iloc[0]
    summary = json.loads((root / "residual" / "runs" / ok["run_id"] / "summary.json").read_text())
    assert ok["final_test_acc"] == pytest.approx(summary["metrics"]["final_test_acc"])
    assert ok["cfg_model"] == summary["config"]["model"]


def test_only_listed_cells_by_default(tmp_path: Path) -> None:
    r = tmp_path / "r"
    write_synthetic_study(r, "residual", "quick", seeds=(0,), failed=0, diverged=0, artifacts=False, epochs=2)
    quick = set(read_results(r, "residual").runs_frame()["run_id"])
    write_synthetic_study(r, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False, epochs=2)
    res = read_results(r, "residual")
    smoke = set(res.runs_frame()["run_id"])
    assert smoke and not smoke & quick  # the latest run's cells only, like the report
    assert set(res.history_frame()["run_id"]) == smoke and set(res.excluded) == quick


def test_parquet_read_back_by_pandas_and_duckdb(root: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra: pip install -e .[dev]")
    for study in ("residual", "optimizers"):
        runs_path, hist_path = write_parquet(read_results(root, study))
        runs, hist = _tables(root, study)
        back = pd.read_parquet(runs_path)
        assert list(back["run_id"]) == list(runs["run_id"])
        assert back["final_test_acc"].tolist() == pytest.approx(runs["final_test_acc"].tolist(), nan_ok=True)
        assert len(pd.read_parquet(hist_path)) == len(hist)
    # the README's one-liner: every study at once
    q = duckdb.sql(f"SELECT study, count(*) AS n, count(DISTINCT run_id) AS runs "
                   f"FROM read_parquet('{root}/*/history.parquet', union_by_name=true) GROUP BY study ORDER BY study")
    got = {s: (n, k) for s, n, k in q.fetchall()}
    for study in ("residual", "optimizers"):
        _, _, n_rows = _record_counts(root, study)
        n_runs = pd.read_parquet(root / study / "history.parquet")["run_id"].nunique()
        assert got[study] == (n_rows, n_runs)
    best = duckdb.sql(f"SELECT study, arm, avg(final_test_error_pct) AS err FROM "
                      f"read_parquet('{root}/*/runs.parquet', union_by_name=true) WHERE status = 'ok' "
                      f"GROUP BY ALL ORDER BY err").df()
    assert set(best["study"]) == {"residual", "optimizers"} and best["err"].notna().all()


def test_export_parquet_cli_and_errors(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (root / "optimizers" / "runs.parquet").unlink(missing_ok=True)
    assert main(["--results-dir", str(root), "export", "parquet", "optimizers"]) == 0
    assert (root / "optimizers" / "runs.parquet").exists()
    assert "runs.parquet" in capsys.readouterr().out
    assert main(["--results-dir", str(root), "export", "parquet", "batch-size"]) == 2
    assert "no results of study 'batch-size'" in capsys.readouterr().err
    assert main(["--results-dir", str(root), "export", "parqet", "residual"]) == 2
    assert "did you mean parquet" in capsys.readouterr().err


def test_report_writes_parquet_beside_csv(root: Path) -> None:
    from bench.report import build_report

    page = build_report("optimizers", root).read_text()
    assert (root / "optimizers" / "history.parquet").exists()
    assert 'href="runs.parquet"' in page and 'href="history.parquet"' in page
