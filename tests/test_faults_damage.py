"""Damaged records, every kind against every command: show, status, plan, claims, export and report
never give a traceback; each names the damaged file where it reads it, with what to do; a refusal
is one line with exit 2; no record file changes; the report builds with the damaged run listed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import locks, store as store_mod
from bench.cli import main
from bench.report.synthetic import write_synthetic_study
from bench.results import read_results
from bench.store import ResultsStore

STUDY = "residual"


def _cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _edit_summary(rd: Path, **changes: object) -> None:
    s = json.loads((rd / "summary.json").read_text())
    s.update(changes)
    (rd / "summary.json").write_text(json.dumps(s))


def _unfinish(rd: Path) -> None:
    (rd / "summary.json").unlink()


def _deep(depth: int = 100_000) -> str:
    """Valid JSON nested ``depth`` levels: a RecursionError in every reader before they were bounded."""
    return "[" * depth + "]" * depth


def _double_epochs(p: Path) -> None:
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] for _ in (0, 1)]) + "\n")


def _swap_epochs(p: Path) -> None:
    lines = p.read_text().splitlines()
    p.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")


def _other_study(sd: Path) -> None:
    d = json.loads((sd / "study.json").read_text())
    d["name"] = "normalization"
    (sd / "study.json").write_text(json.dumps(d))


# damage name -> (what it does to the first run folder / the study folder, the file it damages)
DAMAGE: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "summary-cut": (lambda rd, sd: _cut(rd / "summary.json"), "summary.json"),
    "summary-not-object": (lambda rd, sd: (rd / "summary.json").write_text("[1, 2]"), "summary.json"),
    "summary-bad-status": (lambda rd, sd: _edit_summary(rd, status="bogus"), "summary.json"),
    "summary-bad-config": (lambda rd, sd: _edit_summary(rd, config={"epochs": -1}), "summary.json"),
    "history-garbage": (lambda rd, sd: (rd / "history.csv").write_bytes(b"\x00\xff garbage\n\x01,\x02\n\""),
                        "history.csv"),
    "history-no-epochs": (lambda rd, sd: (rd / "history.csv").write_text("foo,bar\n1,2\n"), "history.csv"),
    "history-empty": (lambda rd, sd: (rd / "history.csv").write_text(""), "history.csv"),
    "cell-garbage": (lambda rd, sd: (rd / "cell.json").write_text("{x"), "cell.json"),
    "cell-of-unfinished": (lambda rd, sd: (_unfinish(rd), (rd / "cell.json").write_text("[")), "cell.json"),
    "config-of-unfinished": (lambda rd, sd: (_unfinish(rd), (rd / "config.json").write_text("{")), "config.json"),
    "artifacts-cut": (lambda rd, sd: _cut(rd / "artifacts.npz"), "artifacts.npz"),
    "study-garbage": (lambda rd, sd: (sd / "study.json").write_text("{ not json"), "study.json"),
    "measurements-garbage": (lambda rd, sd: [p.write_bytes(b"\xff{") for p in (sd / "measurements").glob("*.json")],
                             "measurements"),
    "claim-empty": (lambda rd, sd: (_unfinish(rd), (rd / "claim.lock").write_text("")), "claim.lock"),
    # valid JSON nested too deep, epochs recorded twice or out of order, another study's study.json,
    # checkpoints cut or empty
    "summary-deep": (lambda rd, sd: (rd / "summary.json").write_text(_deep()), "summary.json"),
    "summary-deep-1000": (lambda rd, sd: (rd / "summary.json").write_text(_deep(1000)), "summary.json"),
    "summary-deep-inside": (lambda rd, sd: _edit_summary(rd, metrics={"x": json.loads(_deep(200))}), "summary.json"),
    "history-doubled": (lambda rd, sd: _double_epochs(rd / "history.csv"), "history.csv"),
    "history-out-of-order": (lambda rd, sd: _swap_epochs(rd / "history.csv"), "history.csv"),
    "history-epoch-text": (lambda rd, sd: (rd / "history.csv").write_text("epoch,train_loss\none,1\n"),
                           "history.csv"),
    "cell-deep": (lambda rd, sd: (rd / "cell.json").write_text(_deep()), "cell.json"),
    "cell-wrong-shape": (lambda rd, sd: (rd / "cell.json").write_text('{"arm": 3, "tags": [1], "seed": "x"}'),
                         "cell.json"),
    "config-deep-of-unfinished": (lambda rd, sd: (_unfinish(rd), (rd / "config.json").write_text(_deep())),
                                  "config.json"),
    "study-deep": (lambda rd, sd: (sd / "study.json").write_text(_deep()), "study.json"),
    "study-of-another-study": (lambda rd, sd: _other_study(sd), "study.json"),
    "study-run-ids-not-a-list": (lambda rd, sd: (sd / "study.json").write_text('{"name": "residual", "run_ids": 3}'),
                                 "study.json"),
    "measurements-deep": (lambda rd, sd: [p.write_text(_deep()) for p in (sd / "measurements").glob("*.json")],
                          "measurements"),
    # JSON of another shape where an unfinished run's cell or claim is read
    "cell-list-of-unfinished": (lambda rd, sd: (_unfinish(rd), (rd / "cell.json").write_text("[1, 2]")), "cell.json"),
    "claim-list": (lambda rd, sd: (_unfinish(rd), (rd / "claim.lock").write_text('["token"]')), "claim.lock"),
    "checkpoint-empty": (lambda rd, sd: (_unfinish(rd), (rd / "checkpoint.pt").write_bytes(b"")), "checkpoint.pt"),
    "checkpoint-cut": (lambda rd, sd: (_unfinish(rd), (rd / "checkpoint.pt").write_bytes(b"PK\x03\x04" + b"\x00" * 60)),
                       "checkpoint.pt"),
}
SUMMARY_KINDS = ("summary-cut", "summary-not-object", "summary-bad-status", "summary-bad-config", "summary-deep",
                 "summary-deep-1000", "summary-deep-inside")
HISTORY_KINDS = ("history-garbage", "history-no-epochs", "history-empty", "history-doubled", "history-out-of-order",
                 "history-epoch-text")
STUDY_KINDS = ("study-garbage", "study-deep", "study-of-another-study", "study-run-ids-not-a-list")

COMMANDS = {
    "show": lambda rid: ["show", rid],
    "status": lambda rid: ["status", STUDY],
    "plan": lambda rid: ["plan", STUDY, "--profile", "smoke"],
    "claims": lambda rid: ["claims", STUDY],
    "export": lambda rid: ["export", "parquet", STUDY],
    "report": lambda rid: ["report", STUDY],
}

# (damage, command) -> what the output (or the report page) must say: the damaged file by its path,
# or for status/plan/claims the state word. Pairs not listed must only not fail.
NAMED = {
    **{(d, c): "path" for d in SUMMARY_KINDS for c in ("show", "report")},
    **{(d, c): "damaged" for d in SUMMARY_KINDS for c in ("status", "plan", "claims")},
    **{(d, c): "path" for d in HISTORY_KINDS for c in ("show", "claims", "export", "report")},
    **{(d, c): "path" for d in ("cell-garbage", "cell-deep", "cell-wrong-shape")
       for c in ("claims", "export", "report")},
    ("cell-of-unfinished", "report"): "path",
    **{(d, "show"): "path" for d in ("config-of-unfinished", "config-deep-of-unfinished")},
    ("artifacts-cut", "report"): "path",
    **{(d, c): "path" for d in STUDY_KINDS for c in ("status", "plan", "claims", "export", "report")},
    ("study-of-another-study", "status"): "the study.json of study 'normalization'",
    ("claim-empty", "status"): "unreadable claim.lock",
}
REFUSED = {(d, c) for d in STUDY_KINDS for c in ("status", "claims", "export", "report")}  # exit 2, one line


def _records(sd: Path) -> dict[str, str]:
    """Hashes of the record files (not what report and export write beside them)."""
    keep = [p for p in sd.rglob("*") if p.is_file() and ("runs" in p.relative_to(sd).parts
                                                          or p.name == "study.json" or p.parent.name == "measurements")]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(keep)}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,), failed=0, diverged=0)
    return root


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_command_with_a_damaged_record(damage: str, pristine: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = tmp_path / "results"
    shutil.copytree(pristine, root)
    sd = root / STUDY
    rd = sorted((sd / "runs").iterdir())[0]
    act, name = DAMAGE[damage]
    act(rd, sd)
    damaged = sd / name if name in ("study.json", "measurements") else rd / name
    if name == "checkpoint.pt":
        assert damaged.exists()
    before = _records(sd)
    for cmd, argv in COMMANDS.items():
        store_mod._warned.clear()  # each command is a process of its own on the command line
        rc = main(["--results-dir", str(root), *argv(rd.name)])
        out, err = capsys.readouterr()
        text = out + err
        assert "Traceback" not in text, (cmd, text[-2000:])
        if (damage, cmd) in REFUSED:
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("bench: error: "), (cmd, err)
            assert "bench run" in lines[0], lines[0]  # what to do
        else:
            assert rc == 0, (cmd, rc, err[-2000:])
        if cmd == "report" and rc == 0:
            text += (sd / "report.html").read_text()
            assert rd.name in text, "the damaged run is listed in the report"
        want = NAMED.get((damage, cmd))
        if want == "path":
            assert str(damaged) in text, (cmd, text[-3000:])
        elif want:
            assert want in text, (cmd, text[-3000:])
        assert _records(sd) == before, f"{cmd} changed a record"


def test_a_damaged_history_is_named_once_with_what_to_do(pristine: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    shutil.copytree(pristine, tmp_path / "r")
    store = ResultsStore(tmp_path / "r")
    rd = next(store.run_dirs(STUDY))
    (rd / "history.csv").write_text("garbage\x00\n")
    store_mod._warned.clear()
    h1, h2 = read_results(tmp_path / "r", STUDY).history_frame(), read_results(tmp_path / "r", STUDY).history_frame()
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln]
    assert len(err) == 1 and str(rd / "history.csv") in err[0] and "move the run folder away" in err[0], err
    assert rd.name not in set(h1["run_id"]) and len(h1) == len(h2) > 0  # the other runs' epochs are there


def test_run_sets_a_damaged_study_json_aside(pristine: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from bench.runner import prepare
    from bench.study import get_study

    shutil.copytree(pristine, tmp_path / "r")
    store = ResultsStore(tmp_path / "r")
    study_json = store.study_dir(STUDY) / "study.json"
    study_json.write_text("{ cut")
    prepare(get_study(STUDY), "smoke", store, None)
    assert (store.study_dir(STUDY) / "damaged" / "1" / "study.json").read_text() == "{ cut"
    assert json.loads(study_json.read_text())["profile"] == "smoke"
    err = capsys.readouterr().err
    assert f"{study_json} is damaged" in err and "damaged/1" in err


def test_a_temp_file_names_its_writer(tmp_path: Path) -> None:
    """The name write_atomic gives its temp file, read back: this process on this host; another
    host's file or a name it did not give names no writer here."""
    import os

    from bench.files import TEMP_GLOB, temp_writer_here, write_atomic

    seen: list[str] = []
    write_atomic(tmp_path / "x.json", lambda f: seen.extend(p.name for p in tmp_path.glob(TEMP_GLOB)))
    assert len(seen) == 1 and temp_writer_here(seen[0]) == os.getpid()
    assert temp_writer_here(".x.json~elsewhere~1~abc.tmp") is None
    assert temp_writer_here(".x.json.tmp") is None and temp_writer_here("x.json") is None

def test_temp_files_of_killed_writers_are_removed(tmp_path: Path) -> None:
    """In the study and measurement folders (shared by all runners): a temp file whose writer is gone
    from this host, or that is older than any write, goes; another host's young one stays."""
    import os
    import subprocess
    import time

    from bench.files import _HOST

    store = ResultsStore(tmp_path)
    meas = store.study_dir(STUDY) / "measurements"
    meas.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone_pid = store.study_dir(STUDY) / f".study.json~{_HOST}~{dead.pid}~abc123.tmp"
    old = meas / ".k.json~elsewhere~1~def456.tmp"
    young_other_host = meas / ".k.json~elsewhere~1~ghi789.tmp"
    mine = meas / f".k.json~{_HOST}~{os.getpid()}~jkl012.tmp"  # this very process: a write in progress
    for p in (gone_pid, old, young_other_host, mine):
        p.write_text("partial")
    os.utime(old, (time.time() - locks.STALE_AFTER_S - 1,) * 2)
    store.write_study(STUDY, {"name": STUDY})
    assert not gone_pid.exists() and not old.exists()
    assert young_other_host.exists() and mine.exists()
    assert [p.name for p in store.study_dir(STUDY).glob(".*.tmp")] == []


def test_run_counts_name_an_unreadable_claim(tmp_path: Path) -> None:
    from bench.runner import status_counts
    from bench.study import get_study

    store = ResultsStore(tmp_path)
    cells = get_study(STUDY).cells("smoke")
    rd = store.run_dir(STUDY, cells[0].run_id)
    rd.mkdir(parents=True)
    (rd / "claim.lock").write_bytes(b"")
    counts = status_counts(STUDY, cells, store)
    assert counts == {"running (unreadable claim.lock, retaken when 10 s old)": 1, "pending": len(cells) - 1}


def _whole_checkpoint() -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"run_id": "x", "epoch": 1, "model": {"w": torch.zeros(64)}}, buf)
    return buf.getvalue()


def _crc_broken() -> bytes:
    data = bytearray(_whole_checkpoint())
    i = data.find(b"\x00" * 64)  # inside the tensor's bytes: the zip's directory stays readable
    data[i:i + 8] = b"\xff" * 8
    return bytes(data)


CHECKPOINTS = {
    "empty": lambda: b"",
    "cut-in-half": lambda: _whole_checkpoint()[: len(_whole_checkpoint()) // 2],
    "one-byte": lambda: b"P",
    "garbage": lambda: b"\x00\xff not a zip file" * 20,
    "member-fails-its-crc": _crc_broken,
}


@pytest.mark.parametrize("kind", list(CHECKPOINTS))
def test_run_sets_a_damaged_checkpoint_aside_and_trains_again(kind: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Before: a truncated or empty checkpoint.pt made the run start again from epoch 1, without a
    word and without keeping the file. Now it goes to damaged/<n>/ with the history it belongs to,
    one line says so, and the cell trains from the start."""
    from bench.runner import execute_cell
    from bench.study import get_study

    store = ResultsStore(tmp_path)
    cell = get_study(STUDY).cells("smoke")[0]
    rd = store.run_dir(STUDY, cell.run_id)
    rd.mkdir(parents=True)
    store.write_cell(cell)
    bad = CHECKPOINTS[kind]()
    (rd / "checkpoint.pt").write_bytes(bad)
    history = "epoch,train_loss\n1,2.5\n"
    (rd / "history.csv").write_text(history)
    assert store.checkpoint_damage(STUDY, cell.run_id) is not None
    record = execute_cell(cell, store, measure=False, end_steps=())
    err = [ln for ln in capsys.readouterr().err.splitlines() if "damaged" in ln]
    assert len(err) == 1 and f"{rd / 'checkpoint.pt'} is damaged" in err[0] and "damaged/1" in err[0], err
    assert (rd / "damaged" / "1" / "checkpoint.pt").read_bytes() == bad
    assert (rd / "damaged" / "1" / "history.csv").read_text() == history
    assert record is not None and record.outcome.status == "ok" and record.metrics["resumed_from_epoch"] == 0
    assert not (rd / "checkpoint.pt").exists() and store.state(STUDY, cell.run_id) == "ok"


def test_a_whole_checkpoint_is_not_damage(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    rd = store.run_dir(STUDY, "r")
    rd.mkdir(parents=True)
    assert store.checkpoint_damage(STUDY, "r") is None  # absent
    import torch

    from bench.train.checkpoint import rng_state, save_checkpoint

    save_checkpoint(rd / "checkpoint.pt", {"run_id": "r", "epoch": 1, "rng": rng_state(), "w": torch.ones(3)})
    assert store.checkpoint_damage(STUDY, "r") is None and store.set_aside_damaged(STUDY, "r") is None
    assert (rd / "checkpoint.pt").exists()


@pytest.mark.parametrize("limit", [10, 100])
def test_record_readers_are_bounded_in_size_and_depth(limit: int, tmp_path: Path) -> None:
    from bench.files import RecordTooLarge, read_json

    p = tmp_path / "x.json"
    p.write_text(json.dumps({"a": "x" * limit}))
    with pytest.raises(RecordTooLarge, match="larger than"):
        read_json(p, max_bytes=limit)
    p.write_text(json.dumps(json.loads("[" * limit + "]" * limit)))
    assert read_json(p, max_depth=limit) == json.loads("[" * limit + "]" * limit)
    with pytest.raises(RecordTooLarge, match="nested deeper"):
        read_json(p, max_depth=limit - 1)
    p.write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError):
        read_json(p)


def test_run_sets_a_deep_summary_aside_and_reruns(pristine: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A valid but deeply nested summary.json: before, a RecursionError in every command, run included."""
    import shutil

    shutil.copytree(pristine, tmp_path / "r")
    store = ResultsStore(tmp_path / "r")
    rd = next(store.run_dirs(STUDY))
    (rd / "summary.json").write_text(_deep())
    assert main(["--results-dir", str(tmp_path / "r"), "run", STUDY, "--profile", "smoke"]) == 0
    err = capsys.readouterr().err
    assert f"{rd / 'summary.json'} is damaged (RecordTooLarge: nested deeper than" in err and "damaged/1" in err
    assert (rd / "damaged" / "1" / "summary.json").read_text() == _deep()
    assert store.state(STUDY, rd.name) == "ok"


def test_run_sets_another_studys_study_json_aside(pristine: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    shutil.copytree(pristine, tmp_path / "r")
    sd = tmp_path / "r" / STUDY
    _other_study(sd)
    foreign = (sd / "study.json").read_text()
    assert main(["--results-dir", str(tmp_path / "r"), "run", STUDY, "--profile", "smoke"]) == 0
    err = capsys.readouterr().err
    assert "the study.json of study 'normalization', not of 'residual'" in err and "damaged/1" in err, err
    assert (sd / "damaged" / "1" / "study.json").read_text() == foreign
    assert json.loads((sd / "study.json").read_text())["name"] == STUDY
