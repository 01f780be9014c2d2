"""Bad input, table-driven: every mistake is caught before any cell starts, as one line naming the
value and what is accepted, exit code 2, no traceback, and every record file byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.config import RunConfig
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
    # a keyword the harness sets itself (it would be given twice), a model argument no run id can hold
    ("model_kwargs.num_classes=3", "num_classes"), ("model_kwargs.in_channels=1", "in_channels"),
    ("model_kwargs.num_classes=1000000000", "num_classes"), ("model_kwargs.width=NaN", "nan"),
    ("model_kwargs.width=-Infinity", "-inf"), ("model_kwargs.x=" + "[" * 12 + "1" + "]" * 12, "nested deeper"),
    # data-set specs: an option given twice, a rule broken by a default, values out of their field
    ("dataset=synthetic:size=8,size=16", "size given twice"),
    ("dataset=synthetic:train=64,train=64", "train given twice"),
    ("dataset=synthetic:classes=3000", "classes=3000"), ("dataset=synthetic:classes=20,train=10", "train=10"),
    ("dataset=synthetic:seed=99999999999999999999999", "seed=99999999999999999999999"),
    ("dataset=synthetic:size=1.5", "size='1.5'"), ("dataset=synthetic:noise=NaN", "noise='nan'"),
    ("dataset=synthetic:size=4", "size=4"), ("dataset=synthetic:classes=1", "classes=1"),
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
    (["perf", "--device", "cpu", "--rounds", "0"], "--rounds 0"),
    (["perf", "--device", "cpu", "--steps", "-2"], "--steps -2"),
    (["measure", "resnet20", "--batch-size", "abc"], "abc"),
    (["measure", "nosuchmodel"], "nosuchmodel"),
    (["measure", "resnet20", "--set", "model_kwargs.norm=xx"], "xx"),
    (["measure", "resnet20", "--set", "lr=1"], "lr"),
    (["show", "0123456789abcdef"], "0123456789abcdef"),
    (["report"], "study"), (["models", "nosuch*"], "nosuch*"), (["nosuchcommand"], "nosuchcommand"),
    (["run", STUDY, "--profile", "smoke", "--gpus-per-task", "x"], "'x'"),
    # an image too small for the model, found on the meta device before any cell starts
    *[([cmd, STUDY, "--profile", "smoke", "--set", "model=alexnet_cifar", "--set", f"{key}={side}"], f"{key} {side}")
      for cmd in ("plan", "run") for key, side in (("image_size", 8), ("image_size", 16), ("crop_size", 8))],
    # --set seed on a profile of several seeds would make every seed one run
    *[([cmd, STUDY, "--profile", prof, "--set", f"seed={seed}"], f"--set seed={seed} makes every seed")
      for cmd in ("plan", "run", "status") for prof, seed in (("quick", 5), ("full", 0))],
    # bench measure: sizes that do not fit are refused before anything is allocated (--no-speed counts
    # them on the meta device); a model that cannot take the input; a keyword given twice
    (["measure", "resnet20", "--image-size", "100000"], "3x100000x100000"),
    (["measure", "resnet20", "--batch-size", "1000000000"], "batch 1000000000"),
    (["measure", "resnet20", "--num-classes", "1000000000"], "1000000000 classes"),
    (["measure", "resnet20", "--image-size", "100000", "--no-speed", "--layers"], "--layers"),
    (["measure", "alexnet_cifar", "--image-size", "8"], "--image-size 8"),
    (["measure", "alexnet_cifar", "--image-size", "16", "--no-speed"], "--image-size 16"),
    (["measure", "resnet20", "--set", "model_kwargs.num_classes=3"], "num_classes"),
    (["measure", "resnet20", "--set", "model_kwargs.in_channels=3"], "in_channels"),
    # a --set key given twice: one of them would go unused
    *[([cmd, STUDY, "--profile", "smoke", "--set", a, "--set", b], "given twice")
      for cmd in ("plan", "run", "status") for a, b in (("lr=1", "lr=2"), ("epochs=1", " epochs=1"),
                                                       ("model_kwargs.norm=bn", "model_kwargs.norm=gn"))],
    (["measure", "resnet20", "--set", "model_kwargs.norm=bn", "--set", "model_kwargs.norm=gn"], "given twice"),
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
                                  ["list"], ["models", "plain[25]*"]])  # two models: counting all takes a minute
@pytest.mark.slow
def test_closed_pipe_is_quiet(argv: list[str], records: tuple[Path, dict[str, str]]) -> None:
    root, before = records
    r = _bench("--results-dir", str(root), *argv, shell_tail=" | head -1")
    assert len(r.stdout.splitlines()) == 1, r.stdout
    assert r.returncode in (0, 141), r.returncode  # 141: killed by the closed pipe, as a shell says
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
    assert _snapshot(root) == before


@pytest.mark.slow
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
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["bench: error: bad epochs nan (accepted: a finite number)"]
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
    assert re.search(r"about [0-9.e+]+ y of training at the speed of [1-9] recorded run\(s\) on ", cost), cost  # years
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


# -- every entry point: one line, never a traceback ---------------------------------------------------

BAD_FAULTS = ["bogus", "checkpoint:explode", "measure:pause=-1", "measure:pause=abc", "write:", "before-summary:",
              "write:a:b:kill", ":raise", "checkpoint:pause=inf"]


@pytest.mark.parametrize("spec", BAD_FAULTS)
def test_a_bad_bench_fault_is_one_line_before_anything_runs(spec: str, records: tuple[Path, dict[str, str]],
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Also for commands that reach no fault point (list, measure --no-speed), where it went unseen."""
    monkeypatch.setenv("BENCH_FAULT", spec)
    for argv in (["list"], ["plan", STUDY, "--profile", "smoke"], ["measure", "resnet20", "--no-speed"]):
        test_bad_input(argv, "BENCH_FAULT=" + spec, records, capsys, monkeypatch)


def test_a_bad_bench_fault_via_subprocess(records: tuple[Path, dict[str, str]]) -> None:
    root, before = records
    env_cmd = "BENCH_FAULT=checkpoint:explode " + " ".join([sys.executable, "-m", "bench", "--results-dir", str(root),
                                                             "status", STUDY])
    r = subprocess.run(["bash", "-c", env_cmd], capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        "bench: error: BENCH_FAULT=checkpoint:explode: 'explode' is not an action; "
        "accepted: kill, raise, pause=<seconds>"]
    assert _snapshot(root) == before


@pytest.mark.parametrize("exc", [ValueError("bad\nsecond line"), KeyError("k"), RecursionError("deep"),
                                 AssertionError(), ZeroDivisionError("x"), TypeError("t")])
def test_a_bug_is_one_line_saying_where_and_to_report_it(exc: Exception, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench import cli

    def broken(args: object) -> int:
        raise exc

    monkeypatch.setitem(cli.COMMANDS, "list", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert main(["list"]) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"bench: internal error: {type(exc).__name__}") and "bench/cli.py:" in lines[0]
    assert "report it" in lines[0]
    [saved] = list(tmp_path.glob("bench-error-*.txt"))  # the traceback is kept for the report
    assert "Traceback" in saved.read_text() and saved.name in lines[0]


def test_out_of_memory_is_a_users_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import cli

    def greedy(args: object) -> int:
        raise MemoryError()

    monkeypatch.setitem(cli.COMMANDS, "list", greedy)
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench: error: out of memory") and "accepted" in err[0], err


@pytest.mark.parametrize("uri, needle", [
    ("bogus://x", "'bogus://'"), ("ftp://example.org/mlflow", "'ftp://'"), ("s3://bucket/x", "'s3://'"),
    ("http://127.0.0.1:9", "no MLflow server answers"), ("https://127.0.0.1:9/api", "no MLflow server answers"),
])
def test_export_mlflow_refuses_a_bad_tracking_uri_at_once(uri: str, needle: str, records: tuple[Path, dict[str, str]],
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An unknown scheme or a server that does not answer: one line in seconds, not MLflow's retries
    for minutes; nothing written."""
    import time

    pytest.importorskip("mlflow")
    t0 = time.monotonic()
    test_bad_input(["export", "mlflow", STUDY, "--tracking-uri", uri], needle, records, capsys, monkeypatch)
    assert time.monotonic() - t0 < 30


# -- every value that enters a run id is canonical ---------------------------------------------------------


def _run_ids(*sets: str, profile: str = "smoke") -> list[str]:
    from bench.config import parse_set_args
    from bench.study import get_study

    return [c.run_id for c in get_study(STUDY).cells(profile, parse_set_args(list(sets)))]


@pytest.mark.parametrize("same", [
    ("val_size=0", "val_size=-0.0", "val_size=0.0", "val_size=-0", "val_size=0e5"),
    ("val_size=16", "val_size=16.0", "val_size=1.6e1"),
    ("lr=0.05", "lr=5e-2", "lr=0.050"),
    ("epochs=2", "epochs=2.0", "epochs=2e0"),
    ("model_kwargs.width=0.0", "model_kwargs.width=-0.0", "model_kwargs.width=0e0"),  # 0 is an int: its own
    ("dataset=synthetic:size=16,train=384,test=128", "dataset=synthetic:test=128,train=384,size=16",
     "dataset=synthetic: size=16.0 , train=384,test=128,classes=10", "dataset=synthetic:size=16,train=3.84e2,test=128"),
])
def test_equal_values_give_one_run_id(same: tuple[str, ...]) -> None:
    """Two spellings of one value are one run (before: val_size=-0.0 and 0 were two)."""
    ids = [_ids_of(item) for item in same]
    assert all(i == ids[0] for i in ids), same


def _ids_of(item: str) -> list[str]:
    """The run ids of the smoke cells with ``item`` set; a model argument on the default config."""
    from bench.config import apply_overrides, parse_set_args

    if item.startswith("model_kwargs."):  # not every model of the study takes it
        return [apply_overrides(RunConfig(), parse_set_args([item])).run_id]
    return _run_ids(item)


@pytest.mark.parametrize("item", ["epochs=100000000000000000000000", "iterations=99999999999999999999999",
                                  "batch_size=1e20"])
def test_an_integer_too_large_for_a_float_is_still_an_integer(item: str, capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """Legal but absurd: planned (before: 'must be an integer' for 10**23 epochs)."""
    assert main(["--results-dir", str(tmp_path), "plan", STUDY, "--profile", "smoke", "--set", item]) == 0, \
        capsys.readouterr().err


def test_set_seed_on_a_multi_seed_profile_is_refused_and_seeds_picks_one(tmp_path: Path) -> None:
    from bench.errors import UserError

    with pytest.raises(UserError, match="seed=5 makes every seed of the profile seed 5; pick among the profile's "
                                        "seeds with --seeds"):
        _run_ids("seed=5", profile="quick")
    assert len(set(_run_ids(profile="quick"))) == len(_run_ids(profile="quick"))  # distinct without it
    assert len(_run_ids("seed=5")) == len(set(_run_ids("seed=5")))  # one seed per arm: a seed override is fine
    assert main(["--results-dir", str(tmp_path), "plan", STUDY, "--profile", "quick", "--seeds", "0"]) == 0


# -- property-based: any --set value is refused in one line or gives a canonical, distinct run id ------

_FIELDS = sorted(RunConfig.__dataclass_fields__)
_NUMBERS = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([-0.0, 0.0, 1e308, 5e-324, 2**63, 2**64, -1]))
_TEXT = st.one_of(
    _NUMBERS.map(lambda v: repr(v) if isinstance(v, float) else str(v)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "null", "true", "false", "[]", "{}", "[1,2]", "[0.9,0.999]",
                     "\"x\"", "nosuch", "", " ", "1e400", "-0", "0x10", "[[[[1]]]]", "{\"a\": 1}", "1,2", "∞"]),
    st.text(max_size=12),
    st.lists(_NUMBERS, max_size=3).map(lambda xs: "[" + ",".join(repr(x) if isinstance(x, float) else str(x)
                                                                   for x in xs) + "]"),
)


CONFIG_EXAMPLES, PLAN_EXAMPLES = 300, 40  # Hypothesis examples per run (the README quotes them)
# The same examples on every run (no flaky suite) and no example database left in the checkout;
# a wider search: HYPOTHESIS_PROFILE=explore (random examples).
settings.register_profile("suite", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@settings(max_examples=CONFIG_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(_FIELDS + ["model_kwargs.norm", "model_kwargs.width", "model_kwargs.num_classes"]),
       text=_TEXT)
def test_any_set_value_is_refused_in_one_line_or_canonical(key: str, text: str) -> None:
    """A --set value is either a UserError (one line) or a config whose run id its own JSON gives
    back; no other exception reaches the user."""
    from bench.config import apply_overrides, parse_set_args
    from bench.errors import UserError, error_line

    try:
        cfg = apply_overrides(RunConfig(), parse_set_args([f"{key}={text}"]))
    except UserError as exc:
        line, code = error_line(exc)
        assert code == 2 and "\n" not in line and line.startswith("bench: error: ")
        return
    again = RunConfig.from_dict(cfg.to_dict())
    assert again.run_id == cfg.run_id and again.to_json() == cfg.to_json()
    json.loads(cfg.to_json(), parse_constant=_no_constant)  # the run id's input is JSON: no bare NaN/Infinity


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} in a run id's JSON")


@settings(max_examples=PLAN_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["seed", "val_size", "lr", "epochs", "batch_size", "model_kwargs.norm", "image_size",
                            "dataset", "momentum", "train_subset"]), text=_TEXT)
def test_any_set_value_through_plan_is_one_line_or_distinct_cells(key: str, text: str,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """Through the command line on a profile of 3 seeds: exit 0 with one run id per cell, or exit 2
    with one line; never a traceback, never two cells sharing a run."""
    from bench.config import parse_set_args
    from bench.errors import UserError
    from bench.study import get_study

    root = tmp_path_factory.mktemp("plan")
    rc = main(["--results-dir", str(root), "plan", STUDY, "--profile", "quick", "--set", f"{key}={text}"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and rc in (0, 2), (rc, err)
    if rc == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("bench: error: "), err
        return
    try:
        cells = get_study(STUDY).cells("quick", parse_set_args([f"{key}={text}"]))
    except UserError:
        pytest.fail("plan accepted what the expansion refuses")
    assert len({c.run_id for c in cells}) == len(cells)
    assert list(root.iterdir()) == []  # plan writes nothing


@pytest.mark.parametrize("copies", [2, 3])
def test_the_statistics_refuse_to_count_one_run_twice(copies: int) -> None:
    """A study.json written before seeds were checked can list one run id for several cells (three
    "seeds" that are one run): the claim is not tested instead of counting that run three times."""
    import pandas as pd

    from bench.report.claims import evaluate
    from bench.study import Claim

    def rows(arm: str, values: list[float], ids: list[str]) -> list[dict[str, object]]:
        return [{"run_id": rid, "arm_label": arm, "arm_model": arm, "seed": i, "state": "ok",
                 "final_test_error_pct": v} for i, (v, rid) in enumerate(zip(values, ids, strict=True))]

    claim = Claim.compare("res < plain", metric="final_test_error_pct", a={"model": "res"}, b={"model": "plain"},
                          less_by=0.5, source="constructed")
    plain = rows("plain", [8.0, 8.6, 7.7], ["p0", "p1", "p2"])
    distinct = pd.DataFrame(rows("res", [7.1, 7.5, 6.9], ["r0", "r1", "r2"]) + plain)
    assert evaluate(claim, distinct).verdict == "reproduced"
    one_run = pd.DataFrame(rows("res", [7.1] * copies + [6.9] * (3 - copies), ["r0"] * copies + ["r2"] * (3 - copies))
                           + plain)
    out = evaluate(claim, one_run)
    assert out.verdict == "not tested" and out.estimate is None
    assert f"run r0 is listed as {copies} cells" in out.why and "counted once" in out.why
