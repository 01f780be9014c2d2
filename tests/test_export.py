"""bench export tensorboard | mlflow, read back with the real libraries (TensorBoard's event reader,
mlflow.MlflowClient on a local SQLite store). The records come from real training of a shrunk smoke
study (3 epochs on 64 images per cell)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.executors import run_with_executor
from bench.executors.options import RunOptions
from bench.study import get_study

pytestmark = pytest.mark.slow
STUDY = "residual"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("export")
    opts = RunOptions(results_dir=str(r), device="cpu", parallel=1, measure=False, end_steps=(),
                      overrides={"epochs": 3, "train_subset": 64, "test_subset": 64})
    counts = run_with_executor(get_study(STUDY), "smoke", opts)
    assert counts and counts.get("ok", 0) >= 2
    from bench.report import build_report

    build_report(STUDY, r)
    return r


def finished(root: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    out = {}
    for rd in (root / STUDY / "runs").iterdir():
        if (rd / "summary.json").exists():
            out[rd.name] = (json.loads((rd / "summary.json").read_text()), pd.read_csv(rd / "history.csv"))
    return out


def test_tensorboard_events_read_back(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is in the track extra: pip install -e .[track]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    assert main(["--results-dir", str(root), "export", "tensorboard", STUDY, "--logdir", str(logdir)]) == 0
    runs = finished(root)
    assert f"tensorboard: {len(runs)} run(s) written, 0 already there" in capsys.readouterr().out
    assert {p.name for p in logdir.iterdir()} == set(runs)
    for rid, (summary, hist) in runs.items():
        acc = EventAccumulator(str(logdir / rid))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"loss/train", "loss/test", "accuracy/val", "lr", "time/epoch_time_s"} <= tags
        loss = acc.Scalars("loss/train")
        assert [e.step for e in loss] == hist["epoch"].tolist()
        assert [e.value for e in loss] == pytest.approx(hist["train_loss"].tolist(), rel=1e-6)
        assert [e.value for e in acc.Scalars("lr")] == pytest.approx(hist["lr"].tolist(), rel=1e-6)
        final = acc.Scalars("hparam/final_test_acc")
        assert final[0].value == pytest.approx(summary["metrics"]["final_test_acc"], rel=1e-6)
        # the config went in as hparams (the plugin's session-start summary names them)
        from tensorboard.plugins.hparams import plugin_data_pb2

        content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert info.hparams["model"].string_value == summary["config"]["model"]
        assert info.hparams["lr"].number_value == pytest.approx(summary["config"]["lr"])
    # a second export adds nothing
    assert main(["--results-dir", str(root), "export", "tensorboard", STUDY, "--logdir", str(logdir)]) == 0
    assert f"0 run(s) written, {len(runs)} already there" in capsys.readouterr().out


def test_mlflow_runs_read_back_and_second_export_skips(root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is in the track extra: pip install -e .[track]")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--results-dir", str(root), "export", "mlflow", STUDY, "--tracking-uri", uri]
    assert main(argv) == 0
    runs = finished(root)
    assert f"mlflow: {len(runs)} run(s) logged, 0 already there" in capsys.readouterr().out
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(STUDY)
    got = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["bench.run_id"] for r in got) == sorted(runs)
    for r in got:
        summary, hist = runs[r.data.tags["bench.run_id"]]
        assert r.data.params["model"] == summary["config"]["model"]
        assert float(r.data.params["lr"]) == pytest.approx(summary["config"]["lr"])
        assert r.data.tags["bench.status"] == summary["status"]
        curve = client.get_metric_history(r.info.run_id, "train_loss")
        assert [m.step for m in sorted(curve, key=lambda m: m.step)] == hist["epoch"].tolist()
        assert [m.value for m in sorted(curve, key=lambda m: m.step)] == pytest.approx(hist["train_loss"].tolist())
        assert r.data.metrics["summary.final_test_acc"] == pytest.approx(summary["metrics"]["final_test_acc"])
        names = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"summary.json", "history.csv", "report.html"} <= names
        back = json.loads(Path(client.download_artifacts(r.info.run_id, "summary.json", str(tmp_path))).read_text())
        assert back["run_id"] == summary["run_id"]
    assert main(argv) == 0
    assert f"0 run(s) logged, {len(runs)} already there" in capsys.readouterr().out
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_missing_tracker_says_how_to_install(root: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    for target in ("mlflow", "tensorboard"):
        assert main(["--results-dir", str(root), "export", target, STUDY]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"bench: error: bench export {target} needs") and "pip install -e '.[track]'" in err
        assert len(err.splitlines()) == 1
