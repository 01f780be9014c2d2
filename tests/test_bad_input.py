"""Bad input, table-driven: every mistake is caught before any cell starts, as one line naming the
value and what is accepted, exit code 2, no traceback, and every record file byte-identical."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.report.synthetic import write_synthetic_study

REPO = Path(__file__).resolve().parents[1]
STUDY = "residual"

# (--set value, a piece of the error line that names it). Each is tried with plan, run and status.
BAD_SETS = [
    ("model=nosuch", "nosuch"), ("optimizer=nosuch", "nosuch"), ("schedule=nosuch", "nosuch"),
    ("model_kwargs.norm=nosuch", "nosuch"), ("model_kwargs.bogus=1", "bogus"), ("model_kwargs.=3", "empty"),
    ("model_kwargs.norm=", "''"), ("model_kwargs.shortcut=Z", "shortcut"),
    ("dataset=nosuch", "nosuch"), ("dataset=synthetic:bogus=1", "bogus"), ("dataset=cifar10:x", "cifar10:x"),
    ("dataset=imagefolder:", "imagefolder"), ("dataset=", "dataset"),
    ("val_size=100000", "100000"), ("val_size=1.5", "1.5"), ("val_size=-1", "-1"),
    ("image_size=2", "2"), ("image_size=-5", "-5"), ("crop_size=1000", "1000"), ("crop_size=2", "crop_size"),
    ("crop_padding=-1", "-1"), ("train_subset=0", "train_subset 0"), ("train_subset=-1", "-1"),
    ("train_subset=100000", "100000"), ("test_subset=0", "test_subset 0"),
    ("lr=NaN", "nan"), ("lr=0", "lr 0"), ("lr=-1", "-1"), ("lr=Infinity", "inf"), ("lr=abc", "abc"),
    ("label_smoothing=2", "2"), ("label_smoothing=-0.1", "-0.1"), ("weight_decay=-1", "-1"),
    ("momentum=-1", "-1"), ("seed=1e30", "1000000000000000019884624838656"), ("seed=-1", "-1"),
    ("seed=1.5", "1.5"), ("betas=[0.9]", "0.9"), ("betas=[0.9,1.5]", "1.5"), ("betas=abc", "abc"),
    ("epochs=0", "epochs 0"), ("epochs=-3", "-3"), ("epochs=NaN", "nan"), ("epochs=Infinity", "inf"),
    ("epochs=1.5", "1.5"), ("epochs=abc", "abc"), ("iterations=-1", "-1"), ("iterations=0", "iterations 0"),
    ("gamma=-1", "-1"), ("gamma=0", "gamma 0"), ("warmup=-5", "-5"), ("milestones=[-1]", "-1"),
    ("milestones=[0]", "milestones"), ("milestones=abc", "abc"), ("batch_size=0", "batch_size 0"),
    ("batch_size=1e400", "inf"), ("batch_size=-1", "-1"), ("eval_batch_size=0", "eval_batch_size 0"),
    ("precision=fp8", "fp8"), ("loader=nope", "nope"), ("engine=nope", "nope"), ("schedule_unit=week", "week"),
    ("hflip=maybe", "maybe"), ("augment=2", "2"), ("nosuchkey=1", "nosuchkey"), ("epochs", "epochs"),
    ("acc_thresholds=[2]", "2"), ("aux_loss_weight=-1", "-1"), ("model_kwargs=3", "model_kwargs"),
]

OTHER = [
    (["run", STUDY, "--profile", "smoke", "--gpus", "abc"], "malformed --gpus 'abc'"),
    (["run", STUDY, "--profile", "smoke", "--gpus", "0,0"], "malformed --gpus '0,0'"),
    (["run", STUDY, "--profile", "smoke", "--gpus", "-1"], "malformed --gpus '-1'"),
    (["run", STUDY, "--profile", "smoke", "--device", "tpu"], "tpu"),
    (["run", STUDY, "--profile", "smoke", "--executor", "nope"], "nope"),
    (["run", STUDY, "--profile", "smoke", "--parallel", "0"], "'0'"),
    (["run", STUDY, "--profile", "smoke", "--parallel", "x"], "'x'"),
    (["run", STUDY, "--profile", "smoke", "--set", "dataset=imagefolder:/nonexistent/set"], "/nonexistent/set"),
    (["run", "nosuchstudy"], "nosuchstudy"), (["plan", "nosuchstudy"], "nosuchstudy"),
    (["status", "nosuchstudy"], "nosuchstudy"), (["report", "nosuchstudy"], "nosuchstudy"),
    (["run", STUDY, "--profile", "nope"], "nope"), (["plan", STUDY, "--profile", "nope"], "nope"),
    (["status", STUDY, "--profile", "nope"], "nope"),
    (["measure", "resnet20", "--image-size", "0"], "--image-size 0"),
    (["measure", "resnet20", "--batch-size", "0"], "--batch-size 0"),
    (["measure", "resnet20", "--batch-size", "-4"], "--batch-size -4"),
    (["measure", "resnet20", "--precision", "fp8"], "fp8"),
    (["measure", "resnet20", "--in-channels", "0"], "--in-channels 0"),
    (["measure", "resnet20", "--num-classes", "0"], "--num-classes 0"),
    (["measure", "resnet20", "--batch-size", "abc"], "abc"),
    (["measure", "nosuchmodel"], "nosuchmodel"),
    (["measure", "resnet20", "--set", "model_kwargs.norm=xx"], "xx"),
    (["measure", "resnet20", "--set", "lr=1"], "lr"),
    (["show", "0123456789abcdef"], "0123456789abcdef"),
    (["report"], "study"), (["models", "nosuch*"], "nosuch*"), (["nosuchcommand"], "nosuchcommand"),
    (["run", STUDY, "--profile", "smoke", "--gpus-per-task", "x"], "'x'"),
    # every executor checks through the same expansion, before anything is written or submitted
    *[(["run", STUDY, "--profile", "smoke", "--executor", ex, "--set", item], needle)
      for ex in ("debug", "slurm") for item, needle in (("epochs=NaN", "nan"), ("model=nosuch", "nosuch"))],
]


def _cases() -> list[tuple[list[str], str]]:
    cases = []
    for item, needle in BAD_SETS:
        cases += [(["plan", STUDY, "--profile", "smoke", "--set", item], needle),
                  (["run", STUDY, "--profile", "smoke", "--set", item], needle),
                  (["status", STUDY, "--profile", "smoke", "--set", item], needle)]
    cases.append((["plan", STUDY, "--profile", "smoke", "--set", "image_size=16", "--set", "crop_size=20"],
                  "crop_size 20"))
    return cases + OTHER


CASES = _cases()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("results")
    write_synthetic_study(root, STUDY, "smoke", seeds=(0,))
    return root, _snapshot(root)


def test_the_table_is_large() -> None:
    assert len(CASES) >= 100
    assert len({tuple(a) for a, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input(argv: list[str], needle: str, records: tuple[Path, dict[str, str]],
                   capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, before = records
    monkeypatch.setenv("BENCH_DATA_DIR", str(root / "no-data-here"))
    rc = main(["--results-dir", str(root), *argv])
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert "Traceback" not in err and out == "", (out, err)
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), err
    assert needle.lower() in lines[0].lower(), (needle, lines[0])
    assert any(w in lines[0] for w in ("accepted", "did you mean", "expected", "see ", "no ", "needs", "missing",
                                       "not found", "cannot", "must", "takes only", "or pass")), lines[0]
    assert _snapshot(root) == before, "a rejected command changed the records"
    assert not (root / "no-data-here").exists()


SLURM_CASES = [(a, n) for a, n in OTHER if "slurm" in a]


@pytest.mark.parametrize("argv,needle", SLURM_CASES, ids=[" ".join(a) for a, _ in SLURM_CASES])
def test_bad_values_are_named_before_slurm_is_looked_for(argv: list[str], needle: str,
                                                          records: tuple[Path, dict[str, str]],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    """On a machine without Slurm the bad value is named, not the missing sbatch."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no sbatch on PATH
    test_bad_input(argv, needle, records, capsys, monkeypatch)


def test_a_good_slurm_run_without_slurm_says_sbatch_is_missing(records: tuple[Path, dict[str, str]],
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    test_bad_input(["run", STUDY, "--profile", "smoke", "--executor", "slurm"], "sbatch", records, capsys,
                   monkeypatch)


def _bench(*args: str, shell_tail: str = "") -> subprocess.CompletedProcess[str]:
    cmd = " ".join([sys.executable, "-m", "bench", *args]) + shell_tail
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(["bash", "-c", f"set -o pipefail; {cmd}"], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=env)


@pytest.mark.parametrize("argv", [["status", STUDY], ["plan", STUDY, "--profile", "smoke"], ["claims", STUDY],
                                  ["list"], ["models"]])
def test_closed_pipe_is_quiet(argv: list[str], records: tuple[Path, dict[str, str]]) -> None:
    root, before = records
    r = _bench("--results-dir", str(root), *argv, shell_tail=" | head -1")
    assert len(r.stdout.splitlines()) == 1, r.stdout
    assert r.returncode in (0, 141), r.returncode  # 141: killed by the closed pipe, as a shell says
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert _snapshot(root) == before


@pytest.mark.parametrize("where", ["file", "proc"])
def test_results_dir_unusable_via_subprocess(where: str, tmp_path: Path) -> None:
    target = tmp_path / "a-file" if where == "file" else Path("/proc/nonexistent/results")
    if where == "file":
        target.write_text("not a folder")
    cmds = [["run", STUDY, "--profile", "smoke"], ["report", STUDY]]
    if where == "file":  # reading a folder that does not exist is fine (nothing recorded yet)
        cmds.append(["status", STUDY, "--profile", "smoke"])
    for cmd in cmds:
        r = _bench("--results-dir", str(target), *cmd)
        assert r.returncode == 2, (cmd, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(target) in lines[0] and "Traceback" not in r.stderr, r.stderr
    if where == "file":
        assert target.read_text() == "not a folder"


def test_bad_set_via_subprocess(records: tuple[Path, dict[str, str]]) -> None:
    root, before = records
    r = _bench("--results-dir", str(root), "run", STUDY, "--profile", "smoke", "--set", "epochs=NaN")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["bench: error: bad epochs nan (accepted: a finite number)"]
    assert _snapshot(root) == before


def test_absurd_but_legal_is_planned_with_its_cost(records: tuple[Path, dict[str, str]],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, before = records
    assert main(["--results-dir", str(root), "plan", STUDY, "--profile", "smoke", "--set", "epochs=1e9"]) == 0
    out = capsys.readouterr().out
    assert "1000000000 ep" in out
    total = float(out.rsplit("estimated training compute", 1)[1].split()[0].replace(",", ""))
    assert total > 1e6  # T multiply-adds: a billion epochs of ResNet-20 on 320 images
    # optimizer steps: 320 training images in batches of 64 -> 5 per epoch, 4 cells
    assert "20,000,000,000 optimizer steps" in out and "5000000000" in out
    cost = next(ln for ln in out.splitlines() if ln.startswith("estimated cost:"))
    assert re.search(r"about [0-9.e+]+ y at the speed of [1-9] recorded run\(s\) on ", cost), cost  # years
    assert "note: 4 cell(s) would each train for more than 30 days" in out
    assert _snapshot(root) == before


@pytest.mark.parametrize("item", ["image_size=100000", "iterations=1e20", "batch_size=1000000"])
def test_absurd_sizes_are_planned_without_allocating(item: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Counted on the meta device: a 100000-pixel input is planned in no memory; no records yet,
    so the time is unknown and said to be."""
    assert main(["--results-dir", str(tmp_path), "plan", STUDY, "--profile", "smoke", "--set", item]) == 0
    out = capsys.readouterr().out
    assert "time unknown until a run of this study is recorded" in out
    rows = [ln.split() for ln in out.splitlines()[2:6]]
    assert len(rows) == 4 and all(float(r[-2]) > 0 for r in rows), out  # est_train_TMACs known
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["plan", STUDY, "--profile", "smoke"], ["status", STUDY], ["show", "0123"],
                                  ["claims", STUDY], ["export", "parquet", STUDY], ["report", STUDY],
                                  ["run", STUDY, "--profile", "smoke"]])
def test_results_dir_inside_a_file(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    target = tmp_path / "a-file" / "sub" / "results"
    assert main(["--results-dir", str(target), *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().splitlines() == [
        f"bench: error: --results-dir {str(target)!r} is inside {str(tmp_path / 'a-file')!r}, a file "
        "(accepted: a folder, made if missing)"]
    assert (tmp_path / "a-file").read_text() == "not a folder"
