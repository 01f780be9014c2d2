"""Faults: a kill at each named step (bench.faults), then a rerun, must finish the study without
training anything finished again and without leaving temporary files; damaged records are named
and set aside, never silently overwritten."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench import faults
from bench.faults import POINTS
from bench.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
STUDY = "residual"
TINY = ["--profile", "smoke", "--set", "epochs=2", "--set", "dataset=synthetic:size=8,train=96,test=32",
        "--set", "val_size=16", "--set", "batch_size=32"]


def _run(results: Path, fault: str | None, *extra: str) -> subprocess.CompletedProcess[str]:
    """``bench run`` of the tiny study in a process of its own (which a fault point may kill)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("BENCH_FAULT", None)
    if fault:
        env["BENCH_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "bench", "--results-dir", str(results), "run", STUDY, *TINY, *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.endswith(".tmp"))]


# the epoch a rerun resumes from after a kill at each point (first cell, 2 epochs)
RESUMED_FROM = {"checkpoint": 1, "write:checkpoint.pt": 0, "before-summary": 2, "write:summary.json": 2,
                "measure": 0, "write:study.json": 0}


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_kill_at_fault_point_then_rerun(point: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       one_thread: None) -> None:
    root = tmp_path / "results"
    # records, resumes and temp files are checked, not the measurements (taken only where the kill
    # point is theirs) nor the end-of-run steps; neither flag changes the run ids
    bare = ("--no-extras",) if point == "measure" else ("--no-measure", "--no-extras")
    first = _run(root, point, *bare)
    assert first.returncode == -9, (first.returncode, first.stderr[-2000:])  # killed itself at the point
    store = ResultsStore(root)
    assert not store.records(STUDY), "the first cell was killed before any record was finished"
    if point.startswith("write:"):
        assert _temp_files(root), "the kill should leave the file's temp file behind"
    # the reruns in this process: only the killed one needs a process of its own
    assert main(["--results-dir", str(root), "run", STUDY, *TINY, *bare]) == 0, capsys.readouterr().err[-2000:]
    records = store.records(STUDY)
    assert len(records) == 4 and {r.outcome.status for r in records} == {"ok"}
    resumed = sorted(r.metrics.get("resumed_from_epoch") for r in records)
    assert resumed == [0, 0, 0, RESUMED_FROM[point]], resumed  # finished epochs were not trained again
    for rd in store.run_dirs(STUDY):
        hist = (rd / "history.csv").read_text().splitlines()
        assert len(hist) == 1 + 2, (rd, hist)  # the resumed run kept its recorded epochs
        assert not (rd / "checkpoint.pt").exists()
    assert not _temp_files(root), _temp_files(root)
    before = {p: p.read_bytes() for p in root.rglob("summary.json")}
    # nothing to do (the same run ids without the flags): records untouched
    assert main(["--results-dir", str(root), "run", STUDY, *TINY]) == 0
    assert {p: p.read_bytes() for p in root.rglob("summary.json")} == before


def _finished(tmp_path: Path) -> tuple[Path, ResultsStore, list[Path]]:
    from bench.report.synthetic import write_synthetic_study

    root = tmp_path / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0)
    store = ResultsStore(root)
    return root, store, list(store.run_dirs(STUDY))


@pytest.mark.parametrize("point", ["checkpoint", "write:summary.json"])
def test_pause_waits_at_its_point_each_time(point: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``<point>:pause=<s>`` sleeps there on every visit and nowhere else; a bad pause is one message."""
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    monkeypatch.setenv("BENCH_FAULT", f"{point}:pause=0.25")
    faults.fault_point(point)
    faults.fault_point(point)
    faults.fault_point("before-summary")
    assert slept == [0.25, 0.25]
    for bad in ("x", "-1", "inf", "nan"):
        monkeypatch.setenv("BENCH_FAULT", f"{point}:pause={bad}")
        with pytest.raises(ValueError, match=f"pause={bad}: pause takes a finite number of seconds"):
            faults.fault_point("before-summary")  # a bad value is named wherever it is first seen
    assert slept == [0.25, 0.25]


@pytest.mark.parametrize("spec, point, action", [
    ("checkpoint", "checkpoint", "kill"), ("checkpoint:raise", "checkpoint", "raise"),
    ("write:summary.json", "write:summary.json", "kill"), ("write:history.csv:raise", "write:history.csv", "raise"),
    ("write:summary.json:pause=2", "write:summary.json", "pause=2.0"), ("measure:kill", "measure", "kill")])
def test_fault_specs_parse(spec: str, point: str, action: str) -> None:
    assert faults.parse(spec) == (point, action)


@pytest.mark.parametrize("spec, named", [
    ("checkpoint:bogus", "'bogus' is not an action; accepted: kill, raise, pause=<seconds>"),
    ("chekpoint", "'chekpoint' is not a fault point; accepted: checkpoint, before-summary, measure, write:<file name>"),
    ("chekpoint:raise", "'chekpoint' is not a fault point"), ("write:", "'write' is not a fault point")])
def test_a_bad_fault_spec_is_one_error_naming_it(spec: str, named: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_FAULT", spec)
    with pytest.raises(ValueError, match="^" + re.escape(f"BENCH_FAULT={spec}: {named}")):
        faults.fault_point("checkpoint")


@pytest.mark.slow
def test_damaged_records_are_named_and_the_report_builds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, store, rds = _finished(tmp_path)
    summary = rds[0] / "summary.json"
    summary.write_text(summary.read_text()[: len(summary.read_text()) // 2])  # cut in half
    (rds[1] / "history.csv").write_bytes(b"\x00\xff garbage \x00\n\x01,\x02\n\"")
    art = rds[2] / "artifacts.npz"
    art.write_bytes(art.read_bytes()[:100])  # truncated
    assert store.state(STUDY, rds[0].name) == "damaged"
    assert main(["--results-dir", str(root), "status", STUDY]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and "1 damaged" in out
    assert main(["--results-dir", str(root), "show", rds[0].name]) == 0
    out = capsys.readouterr().out
    assert f"{summary} is damaged" in out
    assert main(["--results-dir", str(root), "show", rds[1].name]) == 0
    assert "history.csv is damaged" in capsys.readouterr().out
    assert main(["--results-dir", str(root), "report", STUDY]) == 0
    page = (root / STUDY / "report.html").read_text()
    assert rds[0].name in page and "damaged" in page
    assert "artifacts.npz of this run is damaged" in page or rds[2].name not in page
    # the next run sets the damaged record aside instead of overwriting it
    cut = summary.read_bytes()
    from bench.runner import execute_cell
    from bench.study import get_study

    cell = next(c for c in get_study(STUDY).cells("smoke") if c.run_id == rds[0].name)
    execute_cell(cell, store, measure=False, end_steps=())
    err = capsys.readouterr().err
    assert f"{summary} is damaged" in err and "damaged/1" in err
    assert (rds[0] / "damaged" / "1" / "summary.json").read_bytes() == cut
    assert store.state(STUDY, rds[0].name) == "ok"


def test_damaged_study_json_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _, _ = _finished(tmp_path)
    (root / STUDY / "study.json").write_text("{ not json")
    for cmd in (["status", STUDY], ["report", STUDY]):
        assert main(["--results-dir", str(root), *cmd]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "study.json is damaged" in err[0] and "bench run" in err[0], err


@pytest.mark.slow
def test_corrupt_measurement_cache_is_a_miss(tmp_path: Path) -> None:
    from bench.data import load_dataset
    from bench.runner import get_measurements
    from bench.study import get_study

    store = ResultsStore(tmp_path)
    cfg = get_study(STUDY).cells("smoke")[0].config
    data = load_dataset(cfg.dataset)
    m = get_measurements(cfg, data, store, STUDY, "cpu")
    [path] = list((tmp_path / STUDY / "measurements").glob("*.json"))
    path.write_text('{"params_total": 12')  # truncated
    again = get_measurements(cfg, data, store, STUDY, "cpu")
    assert again["params_total"] == m["params_total"] == json.loads(path.read_text())["params_total"]


def test_empty_claim_judged_by_age(tmp_path: Path) -> None:
    from bench import locks

    store = ResultsStore(tmp_path)
    rd = store.run_dir(STUDY, "abc")
    rd.mkdir(parents=True)
    (rd / "claim.lock").write_text("")
    assert store.state(STUDY, "abc") == "running"  # may be being written right now
    old = time.time() - locks.UNREADABLE_CLAIM_S - 1
    os.utime(rd / "claim.lock", (old, old))
    assert store.state(STUDY, "abc") == "stale"
    claim = store.claim(STUDY, "abc")
    assert claim is not None and claim.held()
    claim.release()


def test_artifacts_are_ordinary_files(tmp_path: Path) -> None:
    import numpy as np

    from bench.train.evaluate import save_artifacts

    p = save_artifacts(tmp_path / "artifacts.npz", {"a": np.zeros(3)})
    (tmp_path / "other").write_text("x")
    assert p.stat().st_mode & 0o777 == (tmp_path / "other").stat().st_mode & 0o777


def test_report_of_a_study_without_results_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--results-dir", str(tmp_path), "report", STUDY]) == 2
    err = capsys.readouterr().err
    assert "no results of study 'residual'" in err and not (tmp_path / STUDY / "report.html").exists()


def test_report_of_a_study_without_finished_runs_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """study.json written (the first run was killed before any cell finished): the report is the
    cells and their progress, and says so."""
    from bench.runner import prepare
    from bench.study import get_study

    prepare(get_study(STUDY), "smoke", ResultsStore(tmp_path), None)
    assert main(["--results-dir", str(tmp_path), "report", STUDY]) == 0
    err = capsys.readouterr().err
    assert "residual has no finished run yet" in err and (tmp_path / STUDY / "report.html").exists()


@pytest.fixture
def small_fs(tmp_path: Path):
    """A 4 MiB tmpfs, unmounted afterwards; skipped where this machine does not allow mounting."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _snap(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("bench: profile")]
    assert len(err) == 1 and err[0].startswith("bench: error: ") and "Traceback" not in err[0], err
    return err[0]


def test_read_only_results_folder(small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.report.synthetic import write_synthetic_study

    root = small_fs / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0)
    before = _snap(root)
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    for cmd in (["run", STUDY, "--profile", "smoke"], ["report", STUDY]):
        assert main(["--results-dir", str(root), *cmd]) == 2
        assert "cannot be written" in _one_line(capsys)
    assert main(["--results-dir", str(root), "status", STUDY]) == 0  # reading still works
    capsys.readouterr()
    assert _snap(root) == before


def test_full_file_system(small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.report.synthetic import write_synthetic_study

    root = small_fs / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0, pending=1)
    before = _snap(root)
    with open(small_fs / "filler", "wb") as f:  # fill the file system to the last block
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    for cmd in (["report", STUDY], ["run", STUDY, "--profile", "smoke", "--set", "epochs=1"]):
        rc = main(["--results-dir", str(root), *cmd])
        line = _one_line(capsys)
        assert rc == 2 and "No space left" in line, line
    assert _snap(root) == before  # nothing half-written, nothing lost


def test_disk_filling_mid_run_records_the_cell_as_failed(small_fs: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Room for the small records but not for a checkpoint: the cell is recorded as failed with the
    file system's own words and the file's name, the rest is untouched, and --retry-failed trains it
    once there is room again (the failed record kept under attempts/)."""
    from bench.report.synthetic import write_synthetic_study

    root = small_fs / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0)
    before = _snap(root)
    stat = os.statvfs(small_fs)
    with open(small_fs / "filler", "wb") as f:  # leave 600 KiB: a smoke checkpoint is about 500 KiB
        f.write(b"\0" * (stat.f_bavail * stat.f_frsize - 600 * 1024))
    monkeypatch.setenv("BENCH_DATA_DIR", str(small_fs / "no-data"))
    one = ["run", STUDY, "--profile", "smoke", "--only", "model=plain20", "--set", "epochs=1"]
    assert main(["--results-dir", str(root), *one]) == 0
    capsys.readouterr()
    store = ResultsStore(root)
    new = [r for r in store.records(STUDY) if r.cell.config.epochs == 1]
    assert len(new) == 1 and new[0].outcome.status == "failed", new
    assert "No space left on device" in str(new[0].outcome.error) and str(root) in str(new[0].outcome.error)
    kept = {k: v for k, v in before.items() if not k.endswith("study.json")}  # study.json: the new overrides
    assert {k: v for k, v in _snap(root).items() if k in kept} == kept
    assert not _temp_files(root)
    (small_fs / "filler").unlink()
    assert main(["--results-dir", str(root), *one, "--retry-failed"]) == 0
    capsys.readouterr()
    rd = store.run_dir(STUDY, new[0].run_id)
    assert store.read_record(STUDY, new[0].run_id).outcome.status == "ok"
    assert "No space left" in (rd / "attempts" / "1" / "summary.json").read_text()


def test_worker_on_a_read_only_folder_says_one_line(small_fs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A worker process that the file system refuses prints what the command line prints, not a traceback."""
    from bench.executors.local import _worker_main
    from bench.report.synthetic import write_synthetic_study
    from bench.runner import WorkSpec
    from bench.study import get_study

    root = small_fs / "results"
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0, pending=1)
    store = ResultsStore(root)
    todo = [c for c in get_study(STUDY).cells("smoke") if store.summary(STUDY, c.run_id) is None]
    assert todo
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    spec = WorkSpec.of(todo, str(root), None, "cpu", worker="vm/cpu/w0", measure=False)
    with pytest.raises(SystemExit) as stop:
        _worker_main(spec, None, None)
    assert stop.value.code == 2
    assert _one_line(capsys).startswith("bench: error: worker vm/cpu/w0: Read-only file system")


@pytest.mark.slow
def test_retry_failed_after_a_corrupt_measurement_cache(tmp_path: Path) -> None:
    """A cell that failed on a damaged cache entry (as it did before such an entry was a miss) is
    retried with the entry still damaged: measured again, trained, ok."""
    root = tmp_path / "results"
    tiny = [*TINY, "--only", "model=plain20"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "bench", "--results-dir", str(root), "run", STUDY, *tiny]
    assert subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600).returncode == 0
    store = ResultsStore(root)
    [rec] = store.records(STUDY)
    summary = store.run_dir(STUDY, rec.run_id) / "summary.json"
    s = json.loads(summary.read_text())
    s.update(status="failed", error="JSONDecodeError: Expecting ',' delimiter: line 1 column 20 (char 19)")
    summary.write_text(json.dumps(s))
    [cache] = list((root / STUDY / "measurements").glob("*.json"))
    cache.write_text('{"params_total": 12')  # cut short
    r = subprocess.run([*cmd, "--retry-failed"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    again = store.read_record(STUDY, rec.run_id)
    assert again.outcome.status == "ok" and again.measurements["params_total"] == rec.measurements["params_total"]
    assert json.loads(cache.read_text())["params_total"] == rec.measurements["params_total"]


def test_readme_figures() -> None:
    """The README's "What survives what" table quotes these tests' own figures."""
    from bench.locks import UNREADABLE_CLAIM_S
    from tests.test_bad_input import BAD_FAULTS, CASES, CONFIG_EXAMPLES, PLAN_EXAMPLES
    from tests.test_data import BAD_ARCHIVES
    from tests.test_faults_damage import CHECKPOINTS, COMMANDS, DAMAGE
    from tests.test_faults_races import test_concurrent_runners_never_run_a_cell_twice as race

    text = (REPO / "README.md").read_text()
    table = text[text.index("## What survives what"):text.index("## Tests")]
    rounds = {r: n for r, n in next(m.args[1] for m in race.pytestmark if m.name == "parametrize")}
    for figure in (f"each of these {len(POINTS)} points", f"{len(POINTS)} kill + rerun trials",
                   f"bad input ({len(CASES)} cases", f"{len(DAMAGE)} kinds", f"against {len(COMMANDS)} commands",
                   f"stale after {UNREADABLE_CLAIM_S:.0f} s", f"({rounds[8]} rounds at 8)",
                   f"{', '.join(map(str, sorted(rounds)[:-1]))} and {max(rounds)} runners", "600 KiB left",
                   f"`checkpoint.pt` ({len(CHECKPOINTS)} kinds", f"`BENCH_FAULT` ({len(BAD_FAULTS)} values)",
                   f"Hypothesis: {CONFIG_EXAMPLES} values on the config, {PLAN_EXAMPLES} through `plan`",
                   f"a bad archive ({', '.join(BAD_ARCHIVES).replace('-', ' ')})"):
        assert figure in table, figure
    for point in POINTS:
        assert f"`{point}`" in table or f"BENCH_FAULT={point}" in table, point
