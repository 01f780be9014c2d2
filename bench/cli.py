"""Command line: ``python -m bench <command>`` (also installed as ``bench``).

User mistakes (unknown study, model, data set, key, bad value) print one line and exit with 2; any
other error is one line too (``bench.errors.error_line``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from bench import faults
from bench.errors import UserError, error_line

if TYPE_CHECKING:
    from bench.executors.options import RunOptions


def _common_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every cell (e.g. --set epochs=2 --set model_kwargs.norm=gn)")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                   help="only the arms with this axis label or tag (repeatable: different keys must all "
                        "match, a repeated key matches either value), e.g. --only model=plain56")
    p.add_argument("--seeds", default=None, metavar="0,1", help="only these seeds of the profile")


PROFILE_HELP = ("full | quick | cpu | smoke | auto (quick on a GPU; on a CPU the study's cpu profile when "
                "its real data set is in the data dir, else smoke)")


def default_results_dir() -> str:
    """Where records and reports go unless told: $BENCH_RESULTS_DIR, else ./results."""
    return os.environ.get("BENCH_RESULTS_DIR", "results")


SHARED_DATA_DIR = "../shared/data"  # a data folder shared by the checkouts beside this one


def default_data_dir() -> str:
    """Where data sets are found unless told, for the command line, ``make`` and the notebook API
    alike: $BENCH_DATA_DIR, else ../shared/data when that folder exists, else ./data."""
    env = os.environ.get("BENCH_DATA_DIR")
    if env:
        return env
    return SHARED_DATA_DIR if Path(SHARED_DATA_DIR).is_dir() else "data"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Benchmarking and ablation harness for CNN classifiers.")
    p.add_argument("--results-dir", default=default_results_dir(),
                   help="where records and reports go (env BENCH_RESULTS_DIR; default ./results)")
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="where data sets are found (env BENCH_DATA_DIR; default ../shared/data when it exists, "
                        "else ./data)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("list", help="studies, models and data sets")
    ls.add_argument("--studies", action="store_true")
    ls.add_argument("--models", action="store_true")
    ls.add_argument("--datasets", action="store_true")
    ls.add_argument("--names-only", action="store_true", help="one name per line, nothing else")

    pl = sub.add_parser("plan", help="the runs of a study, their status and estimated cost")
    pl.add_argument("study")
    pl.add_argument("--profile", default=None,
                    help=PROFILE_HELP + "; default: the profile last run (and its --set), else auto")
    _selection(pl)
    _common_set(pl)
    pl.add_argument("--prior-sd", type=float, default=None, metavar="STD",
                    help="seed-to-seed std of one run's metric (its units) for claims without recorded runs")

    rn = sub.add_parser("run", help="run a study's pending cells")
    rn.add_argument("study")
    rn.add_argument("--profile", default="auto", help=PROFILE_HELP)
    _selection(rn)
    rn.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    rn.add_argument("--retry-failed", action="store_true", help="run failed/oom cells again (old records kept)")
    rn.add_argument("--executor", default="local", help="local | slurm | debug")
    rn.add_argument("--parallel", default="auto",
                    help="cells trained at once per GPU (local executor); auto picks from the model size")
    rn.add_argument("--gpus", default=None, help="comma-separated GPU indices to use (default: all visible)")
    rn.add_argument("--slurm-partition", default=None, help="Slurm: partition to submit to")
    rn.add_argument("--gpus-per-task", type=int, default=1, help="Slurm: GPUs per array task (default 1)")
    rn.add_argument("--timeout-min", type=int, default=240, help="Slurm: time limit per task in minutes")
    rn.add_argument("--max-parallel", type=int, default=None, help="Slurm: array tasks running at once")
    _common_set(rn)
    rn.add_argument("--until-decided", action="store_true",
                    help="add seeds, one round at a time, to the arms of undecided claims until each is reproduced or "
                         "contradicted (group-sequential design; see README 'How many seeds')")
    rn.add_argument("--max-seeds", type=int, default=None,
                    help="--until-decided: seeds per arm at most (default: twice the profile's)")
    rn.add_argument("--spending", default="obrien-fleming",
                    help="--until-decided: alpha spending, obrien-fleming | pocock")

    sh = sub.add_parser("show", help="one run's config, summary and history")
    sh.add_argument("run_id")
    sh.add_argument("--study", default=None, help="limit the search to one study")

    st = sub.add_parser("status", help="done / running / pending / failed cells of a study")
    st.add_argument("study")
    st.add_argument("--profile", default=None, help="default: the profile last run")
    _common_set(st)

    md = sub.add_parser("models", help="the model zoo with parameters and MACs")
    md.add_argument("pattern", nargs="?", default="*")

    ms = sub.add_parser("measure", help="one model's measurement table")
    ms.add_argument("model")
    ms.add_argument("--batch-size", type=int, default=128)
    ms.add_argument("--image-size", type=int, default=None, help="default: the model's own input size")
    ms.add_argument("--in-channels", type=int, default=None)
    ms.add_argument("--num-classes", type=int, default=10)
    ms.add_argument("--device", default="auto")
    ms.add_argument("--precision", default="fp32")
    ms.add_argument("--layers", action="store_true", help="add the per-layer view (output shape, params, MACs)")
    ms.add_argument("--no-speed", action="store_true", help="skip the timed parts")
    _common_set(ms)

    cl = sub.add_parser("claims", help="the verdict table of a study's claims on its recorded runs")
    cl.add_argument("study")

    ex = sub.add_parser("export", help="a study's records as Parquet tables, or to TensorBoard / MLflow")
    ex.add_argument("target", help="parquet | tensorboard | mlflow")
    ex.add_argument("study")
    ex.add_argument("--logdir", default=None, help="tensorboard: where event files go (default <results>/<study>/tensorboard)")
    ex.add_argument("--tracking-uri", default=None,
                    help="mlflow: tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<results>/mlflow.db)")

    rp = sub.add_parser("report", help="build the HTML report of a study (and results/index.html)")
    rp.add_argument("study", nargs="?")
    rp.add_argument("--all", action="store_true", help="every study that has results")

    pf = sub.add_parser("perf", help="usual training loop vs the engine, side by side on one GPU")
    pf.add_argument("--models", default="resnet20,resnet56,resnet18")
    pf.add_argument("--batch-size", type=int, default=128)
    pf.add_argument("--epochs", type=int, default=2, help="timed epochs per variant (after one warm-up epoch)")
    pf.add_argument("--device", default="auto")
    pf.add_argument("--dataset", default="cifar10")
    pf.add_argument("--variants", default=None, help="comma-separated subset of variants ('step': the five "
                                                     "training-step variants)")
    pf.add_argument("--rounds", type=int, default=None, help="step variants: interleaved rounds (default 7)")
    pf.add_argument("--steps", type=int, default=None, help="step variants: back-to-back steps per variant per "
                                                           "round (default 5)")
    return p


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (a UserError), like every other mistake."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


# Commands that write under --results-dir; the others only read it.
WRITERS = ("run", "report")


def check_results_dir(path: str, write: bool) -> None:
    """A results folder that is a file, cannot be created or (for writers) cannot be written is one
    clear line before anything starts, not a traceback halfway."""
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise UserError(f"--results-dir {path!r} is a file, not a folder (accepted: a folder, made if missing)")
    above = next((p for p in root.absolute().parents if p.exists()), None)
    if not root.exists() and above is not None and not above.is_dir():
        raise UserError(f"--results-dir {path!r} is inside {str(above)!r}, a file (accepted: a folder, made if missing)")
    if not write:
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(f"--results-dir {path!r} cannot be written ({exc.strerror or exc}); "
                        "accepted: a writable folder") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        import experiments  # noqa: F401 - registers the studies (the top layer brings the registry in)

        faults.check_env()  # a bad BENCH_FAULT is one line before anything runs
        args = build_parser().parse_args(argv)
        if hasattr(args, "results_dir"):
            check_results_dir(args.results_dir, write=args.command in WRITERS)
        code = int(COMMANDS[args.command](args) or 0)
        sys.stdout.flush()  # a closed pipe (bench status | head -1) fails here, inside the handler
        return code
    except BrokenPipeError:
        # The reader went away: say nothing more, and keep Python's exit-time flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are kept, a rerun resumes the rest", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every other error is one line (bench.errors.error_line)
        line, code = error_line(exc)
        print(line, file=sys.stderr)
        return code


def resolve_profile(profile: str, study: Any = None, data_dir: str | None = None) -> str:
    """'auto' -> 'quick' on a CUDA machine; on a CPU the study's 'cpu' profile (real data, minutes)
    when its data set is in ``data_dir``, else 'smoke' (synthetic, seconds). Said on stderr."""
    if profile != "auto":
        return profile
    import torch

    if torch.cuda.is_available():
        chosen, why = "quick", "CUDA GPU found"
    elif study is not None and "cpu" in study.profiles:
        from bench.config import apply_overrides
        from bench.data import available_locally

        dataset = apply_overrides(study.base, study.profiles["cpu"].overrides).dataset
        where = data_dir or "./data"
        if available_locally(dataset, data_dir):
            chosen, why = "cpu", f"no CUDA GPU; {dataset} found in {where}"
        else:
            chosen, why = "smoke", f"no CUDA GPU and no {dataset} in {where} (synthetic data)"
    else:
        chosen, why = "smoke", "no CUDA GPU"
    print(f"bench: profile auto -> {chosen} ({why})", file=sys.stderr)
    return chosen


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from bench.config import parse_set_args

    return parse_set_args(getattr(args, "sets", []))


def cmd_list(args: argparse.Namespace) -> int:
    from bench.data import DATASETS
    from bench.models import list_models
    from bench.study import load_studies

    everything = not (args.studies or args.models or args.datasets)
    studies = load_studies()
    if args.names_only:
        names = (studies.names() if args.studies or everything else []) + (
            list_models() if args.models else []) + (DATASETS.names() if args.datasets else [])
        print("\n".join(names))
        return 0
    if args.studies or everything:
        print("Studies (make ablation-<name>, bench run <name>):")
        for n in studies.names():
            print(f"  {n:<16} {studies.get(n).question}")
    if args.models or everything:
        print("Models (bench models for params and MACs):")
        print("  " + ", ".join(list_models()))
    if args.datasets or everything:
        print("Data sets:")
        plain = [n for n in DATASETS.names() if n not in ("imagefolder", "synthetic")]
        print("  " + ", ".join(plain) + ", imagefolder:<path>, synthetic[:channels=,size=,classes=,train=,test=,noise=]")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.plan import plan_footer, plan_table
    from bench.study import get_study

    from bench.study import parse_selection

    study = get_study(args.study)
    profile, overrides = _recorded_or_auto(args, study)
    selection = parse_selection(args.only, args.seeds)
    df = plan_table(study, profile, args.results_dir, overrides, selection)
    print(f"{study.name} [{profile}]: {study.question}")
    if selection:
        print(f"selection: {selection.describe()} ({len(df)} of {df.attrs['cells_in_profile']} cells)")
    print(df.to_string(index=False))
    print("\n".join(plan_footer(df)))
    _print_power(study, profile, args, df)
    return 0


def _recorded_or_auto(args: argparse.Namespace, study: Any) -> tuple[str, dict[str, Any]]:
    """No --profile: the profile (and, without --set, the overrides) of the study's last ``bench run``,
    said on stderr; else 'auto' resolved. A given --profile is resolved as always."""
    from bench.executors.status import recorded_choice
    from bench.store import ResultsStore

    if args.profile is None:
        profile, overrides = recorded_choice(study.name, ResultsStore(args.results_dir), None, _overrides(args))
        if profile is not None:
            print(f"bench: profile {profile} (the last run's; --profile to choose another)", file=sys.stderr)
            return profile, overrides
    return resolve_profile(args.profile or "auto", study, args.data_dir), _overrides(args)


def _print_power(study: Any, profile: str, args: argparse.Namespace, df: Any) -> None:
    """The plan's power section: seeds per arm each claim needs (see bench.plan.power_table)."""
    from bench.plan import power_footer, power_table

    if args.prior_sd is not None and not args.prior_sd > 0:
        raise UserError(f"bad --prior-sd {args.prior_sd} (accepted: a standard deviation > 0, in the metric's units)")
    if args.only or args.seeds:
        print("how many seeds: shown for the whole profile (bench plan without --only/--seeds)")
        return
    power = power_table(study, profile, args.results_dir, df.attrs.get("overrides", {}), df, args.prior_sd)
    if power.empty:
        return
    print("\nhow many seeds (80% power at each claim's smallest effect):")
    print(power.to_string(index=False))
    print("\n".join(power_footer(power)))


def run_options(args: argparse.Namespace) -> RunOptions:
    """The ``bench run`` options, parsed and checked once (the executors never see ``args``)."""
    from bench.executors.options import parse_run_options

    return parse_run_options(
        results_dir=args.results_dir, data_dir=args.data_dir, sets=getattr(args, "sets", []),
        only=getattr(args, "only", None) or [], seeds=getattr(args, "seeds", None), executor=args.executor,
        device=args.device, parallel=args.parallel, gpus=args.gpus, retry_failed=bool(args.retry_failed),
        slurm_partition=args.slurm_partition, gpus_per_task=args.gpus_per_task, timeout_min=args.timeout_min,
        max_parallel=args.max_parallel,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from bench.executors import run_with_executor
    from bench.study import get_study

    study = get_study(args.study)
    profile = resolve_profile(args.profile, study, args.data_dir)
    if args.until_decided:
        from bench.executors.sequential import run_until_decided

        done = run_until_decided(study, profile, run_options(args), args.max_seeds, args.spending)
        print(f"{study.name} [{profile}]: {done['looks']} look(s), {done['design']} -> "
              f"{args.results_dir}/{study.name}/")
        return 0
    if args.max_seeds is not None:
        raise UserError(f"--max-seeds {args.max_seeds} without --until-decided (accepted: with --until-decided)")
    counts = run_with_executor(study, profile, run_options(args))
    if counts is not None:
        done = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        print(f"{study.name} [{profile}]: {done} -> {args.results_dir}/{study.name}/")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bench.show import show_run

    print(show_run(args.results_dir, args.run_id, args.study))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench.executors import status_table

    print(status_table(args.study, args.results_dir, args.profile, _overrides(args)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from bench.zoo import zoo_table

    df = zoo_table(args.pattern)
    print(df.to_string(index=False))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from bench.zoo import measure_table

    print(measure_table(args, _overrides(args)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import build_index, build_report
    from bench.results import read_results, require_results, studies_with_results

    if not args.study and not args.all:
        raise UserError("name a study or pass --all")
    names = studies_with_results(args.results_dir) if args.all else [args.study]
    if args.study:
        require_results(args.study, args.results_dir)
    if not names:
        raise UserError(f"no study has results under {args.results_dir}/ (`bench run <study>` makes them)")
    for name in names:
        path = build_report(name, args.results_dir)
        print(f"report: {path}")
        if not any(r.finished for r in read_results(args.results_dir, name).runs):
            print(f"bench: {name} has no finished run yet: its report shows the cells and their progress only "
                  f"(`bench run {name}` trains them)", file=sys.stderr)
    print(f"index:  {build_index(args.results_dir)}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from bench.report.data import load
    from bench.report.verdicts import verdicts
    from bench.results import require_results
    from bench.study import get_study

    study = get_study(args.study)
    require_results(study.name, args.results_dir)
    v = verdicts(load(study.name, args.results_dir))
    print(f"{study.name} [{v.profile or '?'}]: {study.question}")
    print(f"data set {v.dataset}; seeds {', '.join(map(str, v.seeds)) or '—'}")
    print(v.text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench.export import export

    for line in export(args.target, args.study, args.results_dir, args):
        print(line)
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from bench.perf import run_perf

    return run_perf(args)


COMMANDS = {
    "list": cmd_list,
    "plan": cmd_plan,
    "run": cmd_run,
    "show": cmd_show,
    "status": cmd_status,
    "models": cmd_models,
    "measure": cmd_measure,
    "claims": cmd_claims,
    "export": cmd_export,
    "report": cmd_report,
    "perf": cmd_perf,
}
