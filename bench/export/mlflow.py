"""``bench export mlflow <study> [--tracking-uri URI]``: one MLflow run per finished cell.

Each run carries the config as params, the per-epoch history as metrics (step = epoch), the summary's
final metrics, the summary and the study's report as artifacts, and the run id as the tag
``bench.run_id``: a second export finds that tag and skips the run. The experiment is the study.

The default tracking URI is ``$MLFLOW_TRACKING_URI`` or a local SQLite database,
``sqlite:///<results>/mlflow.db`` (MLflow 3 no longer takes a plain folder as its store unless
``MLFLOW_ALLOW_FILE_STORE`` is set); artifacts go to ``<results>/mlflow-artifacts/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from bench.errors import UserError, reason
from bench.export import EXPORTS
from bench.results import Run, read_results

INSTALL = "pip install -e '.[track]'  (or: pip install mlflow)"
RUN_ID_TAG = "bench.run_id"
HISTORY_METRICS = ("train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "lr",
                   "epoch_time_s", "eval_time_s", "epoch_train_samples_per_s", "elapsed_train_time_s")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise UserError(f"bench export mlflow needs the mlflow package: {INSTALL}") from None
    return mlflow


def default_tracking_uri(results_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def params(config: dict[str, Any]) -> dict[str, str]:
    """Config fields as MLflow params (text; nested values as JSON)."""
    out = {}
    for k, v in sorted(config.items()):
        text = json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)
        out[k] = text[:MAX_PARAM_CHARS]
    return out


def _experiment(client: Any, study: str, artifact_root: Path) -> str:
    exp = client.get_experiment_by_name(study)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(study, artifact_location=(artifact_root / study).resolve().as_uri()))


def exported_ids(client: Any, experiment_id: str) -> set[str]:
    """Run ids (``bench.run_id`` tags) already in the experiment."""
    found: set[str] = set()
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        found |= {r.data.tags[RUN_ID_TAG] for r in page if RUN_ID_TAG in r.data.tags}
        token = page.token
        if not token:
            return found


def log_run(client: Any, experiment_id: str, run: Run, report: Path | None) -> str:
    """Create one MLflow run for the finished ``run``; returns the MLflow run id."""
    from mlflow.entities import Metric, Param

    rec = run.record
    if rec is None:
        raise ValueError(f"run {run.run_id} has not finished: only finished runs are logged")
    status = rec.status
    tags = {RUN_ID_TAG: run.run_id, "bench.study": run.study, "bench.arm": str(run.cell.get("arm_label", "")),
            "bench.seed": str(run.cell.get("seed")), "bench.status": status,
            "bench.profile": str(run.cell.get("profile"))}
    if rec.outcome.error:
        tags["bench.error"] = str(rec.outcome.error)[:5000]
    started, finished = (t if math.isfinite(t) else time.time() for t in (rec.placement.started_at,
                                                                           rec.placement.finished_at))
    mlrun = client.create_run(experiment_id, run_name=f"{run.cell.get('arm_label', '')} seed {run.cell.get('seed')}",
                              tags=tags, start_time=int(1000 * started))
    rid = mlrun.info.run_id
    now = int(1000 * finished)
    metrics = []
    for _, row in run.history.iterrows():
        step = int(row["epoch"]) if "epoch" in row and _finite(row["epoch"]) else 0
        metrics += [Metric(k, float(row[k]), now, step) for k in HISTORY_METRICS if k in row and _finite(row[k])]
    flat = {**rec.metrics, **rec.measurements}
    metrics += [Metric(f"summary.{k}", float(v), now, 0) for k, v in sorted(flat.items()) if _finite(v)]
    ps = [Param(k, v) for k, v in params(run.config or {}).items()]
    # MLflow takes at most 1000 metrics and 100 params per batch
    for i in range(0, len(ps), 100):
        client.log_batch(rid, params=ps[i:i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[i:i + 1000])
    client.log_artifact(rid, str(run.path / "summary.json"))
    if (run.path / "history.csv").exists():
        client.log_artifact(rid, str(run.path / "history.csv"))
    if report is not None and report.exists():
        client.log_artifact(rid, str(report))
    client.set_terminated(rid, status="FINISHED" if status == "ok" else "FAILED", end_time=now)
    return rid


# MLflow's own tracking-store schemes (its registry is asked first: plugins add schemes there)
SCHEMES = ("", "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc")
HTTP_TIMEOUT_S = 20  # per request to a tracking server; MLflow's default retries for minutes


def tracking_schemes() -> list[str]:
    """The URI schemes this MLflow can track to."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        return sorted(_tracking_store_registry._registry)
    except (ImportError, AttributeError):
        return list(SCHEMES)


def check_tracking_uri(uri: str) -> None:
    """UserError for a URI of a scheme MLflow has no store for, or an http(s) server that does not
    answer in seconds (so that the export fails at once, not after MLflow's retries)."""
    from urllib.parse import urlsplit

    from bench.data.sources import reachable

    scheme = urlsplit(uri).scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter is a path
        scheme = ""
    accepted = tracking_schemes()
    if scheme not in accepted:
        raise UserError(f"bad --tracking-uri {uri!r}: MLflow has no store for {scheme + '://'!r} "
                        f"(accepted: {', '.join(a + '://' for a in accepted if a)} or a folder path)")
    if scheme in ("http", "https"):
        ok, why = reachable(uri)
        if not ok:
            raise UserError(f"--tracking-uri {uri!r}: no MLflow server answers ({why}) (accepted: the URI of a "
                            "running tracking server, or sqlite:///<file>)")


@EXPORTS.register("mlflow")
def export_mlflow(study: str, results_dir: Path, args: argparse.Namespace) -> list[str]:
    """Log every finished run not yet in the tracking store; returns report lines. A tracking store
    that refuses (bad URI, a server that is not MLflow, a database error) is one UserError."""
    mlflow = _mlflow()
    uri = getattr(args, "tracking_uri", None) or default_tracking_uri(results_dir)
    check_tracking_uri(uri)
    for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", str(HTTP_TIMEOUT_S))):
        os.environ.setdefault(var, value)  # fail fast unless the user asked otherwise
    runs = read_results(results_dir, study).finished
    report = Path(results_dir) / study / "report.html"
    written = 0
    try:
        client = mlflow.MlflowClient(tracking_uri=uri)
        exp = _experiment(client, study, Path(results_dir) / "mlflow-artifacts")
        have = exported_ids(client, exp)
        for run in runs:
            if run.run_id in have:
                continue
            log_run(client, exp, run, report)
            written += 1
    except (mlflow.exceptions.MlflowException, ConnectionError, TimeoutError) as exc:
        raise UserError(f"MLflow at {uri} refused the export after {written} run(s): "
                        f"{reason(exc)} (finished records are kept; "
                        "a rerun skips the runs already logged)") from None
    return [f"mlflow: {written} run(s) logged, {len(runs) - written} already there -> {uri} (experiment {study!r})",
            f"  view: mlflow ui --backend-store-uri {uri}"]
