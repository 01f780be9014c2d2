"""Command line: ``python -m bench <command>`` (also installed as ``bench``).

User mistakes (unknown study, model, data set, key, bad value) print one line and exit with 2; any
other error is one line too (``bench.errors.error_line``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from bench import faults
from bench.commands.defaults import DEFAULT_PROFILE, check_results_dir, default_data_dir, default_results_dir
from bench.errors import UserError, error_line
from bench.executors.options import EXECUTORS, RunOptions



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
    rn.add_argument("--profile", default=DEFAULT_PROFILE, help=PROFILE_HELP)
    _selection(rn)
    rn.add_argument("--device", default=RunOptions.device, help="auto | cpu | cuda | cuda:N")
    rn.add_argument("--retry-failed", action="store_true", help="run failed/oom cells again (old records kept)")
    rn.add_argument("--no-measure", action="store_true",
                    help="skip the model measurements (params, MACs, speed, memory): the records lack them")
    rn.add_argument("--no-extras", action="store_true",
                    help="skip the end-of-run steps (BN gap, artifacts): the records lack them")
    rn.add_argument("--executor", default=RunOptions.executor, help=" | ".join(EXECUTORS))
    rn.add_argument("--parallel", default="auto",
                    help="cells trained at once per GPU (local executor); auto picks from the model size")
    rn.add_argument("--gpus", default=None, help="comma-separated GPU indices to use (default: all visible)")
    rn.add_argument("--slurm-partition", default=None, help="Slurm: partition to submit to")
    rn.add_argument("--gpus-per-task", type=int, default=RunOptions.gpus_per_task,
                    help="Slurm: GPUs per array task (default %(default)s)")
    rn.add_argument("--timeout-min", type=int, default=RunOptions.timeout_min,
                    help="Slurm: time limit per task in minutes (default %(default)s)")
    rn.add_argument("--max-parallel", type=int, default=None, help="Slurm: array tasks running at once")
    _common_set(rn)
    rn.add_argument("--until-decided", action="store_true",
                    help="add seeds, one round at a time, to the arms of undecided claims until each is reproduced or "
                         "contradicted (group-sequential design; see README 'How many seeds')")
    rn.add_argument("--max-seeds", type=int, default=None,
                    help="--until-decided: seeds per arm at most (default: twice the profile's)")
    rn.add_argument("--spending", default=None,
                    help="--until-decided: alpha spending, obrien-fleming (default) | pocock; a rerun keeps the "
                         "recorded one")

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
    ex.add_argument("--logdir", default=None,
                    help="tensorboard: where event files go (default <results>/<study>/tensorboard)")
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
        print("  " + ", ".join(plain)
              + ", imagefolder:<path>, synthetic[:channels=,size=,classes=,train=,test=,noise=]")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from bench import api

    plan = api.plan(args.study, args.profile, only=args.only, seeds=args.seeds, sets=args.sets,
                    prior_sd=args.prior_sd, results_dir=args.results_dir, data_dir=args.data_dir)
    print("\n".join(plan.lines()))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench import api

    done = api.run(args.study, args.profile, only=args.only, seeds=args.seeds, sets=args.sets, device=args.device,
                   executor=args.executor, parallel=args.parallel, gpus=args.gpus,
                   retry_failed=bool(args.retry_failed), results_dir=args.results_dir, data_dir=args.data_dir,
                   until_decided=args.until_decided, max_seeds=args.max_seeds, spending=args.spending,
                   slurm_partition=args.slurm_partition, gpus_per_task=args.gpus_per_task,
                   timeout_min=args.timeout_min, max_parallel=args.max_parallel,
                   measure=not args.no_measure, extras=not args.no_extras)
    if args.until_decided:
        print(f"{done.study} [{done.profile}]: {done.looks} look(s), {done.design} -> "
              f"{args.results_dir}/{done.study}/")
    elif done.counts is not None:
        counts = ", ".join(f"{v} {k}" for k, v in sorted(done.counts.items()))
        print(f"{done.study} [{done.profile}]: {counts} -> {args.results_dir}/{done.study}/")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from bench import api

    print(api.show(args.run_id, study=args.study, results_dir=args.results_dir))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from bench import api

    print(api.status(args.study, profile=args.profile, sets=args.sets, results_dir=args.results_dir).text)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from bench import api

    print(api.models(args.pattern).to_string(index=False))
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    from bench import api
    from bench.commands.zoo import model_kwargs_from_sets

    kwargs = model_kwargs_from_sets(api.overrides_of(args.sets))
    print(api.measure(args.model, batch_size=args.batch_size, image_size=args.image_size,
                      in_channels=args.in_channels, num_classes=args.num_classes, device=args.device,
                      precision=args.precision, model_kwargs=kwargs, speed=not args.no_speed,
                      layers=args.layers).text())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import api

    if not args.study and not args.all:
        raise UserError("name a study or pass --all")
    names = api.studies_with_results(results_dir=args.results_dir) if args.all else [args.study]
    if not names:
        raise UserError(f"no study has results under {args.results_dir}/ (`bench run <study>` makes them)")
    for name in names:
        page = api.report(name, results_dir=args.results_dir, index=False)
        print(f"report: {page.path}")
        if not page.finished_runs:
            print(f"bench: {name} has no finished run yet: its report shows the cells and their progress only "
                  f"(`bench run {name}` trains them)", file=sys.stderr)
    print(f"index:  {api.report_index(results_dir=args.results_dir)}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    from bench import api
    from bench.study import get_study

    v = api.claims(args.study, results_dir=args.results_dir)
    study = get_study(args.study)
    print(f"{study.name} [{v.profile or '?'}]: {study.question}")
    print(f"data set {v.dataset}; seeds {', '.join(map(str, v.seeds)) or '—'}")
    print(v.text())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bench import api

    for line in api.export(args.target, args.study, results_dir=args.results_dir, logdir=args.logdir,
                           tracking_uri=args.tracking_uri):
        print(line)
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from bench import api

    return api.perf(args.models, batch_size=args.batch_size, epochs=args.epochs, device=args.device,
                    dataset=args.dataset, variants=args.variants, rounds=args.rounds, steps=args.steps,
                    results_dir=args.results_dir, data_dir=args.data_dir)


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
