"""The local backend: this process, or worker processes spread over this machine's GPUs.

Several cells train at once only in separate processes (``multiprocessing`` 'spawn' context, safe
with CUDA): packing runs into one process with CUDA streams corrupted memory in a probe. Each worker
is a :func:`bench.runner.work` loop over the same pending list; the store's claims decide who runs
what, so workers need no scheduler, and a worker that dies leaves a claim whose dead pid the next
claimant detects.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace

from bench.data.sources import input_shape
from bench.device import parse_device
from bench.errors import UserError
from bench.runner import (
    WorkSpec,
    Pace,
    cell_line,
    load_data,
    run_cells_inline,
    status_counts,
    work,
)
from bench.store import ResultsStore
from bench.study import Cell, Study

# The --parallel auto rule on a GPU (per GPU, from the largest model of the pending cells):
# fewer than SMALL_PARAMS parameters and inputs of at most SMALL_SIDE pixels -> 4 workers; fewer than
# MEDIUM_PARAMS -> 2; else 1. Small CIFAR/MNIST nets leave a big GPU mostly idle (kernel launches
# dominate), so several of them share it well; big ones already fill it. Always 1 on a CPU and for
# timing-critical studies, whose timings are results.
SMALL_PARAMS, SMALL_SIDE, MEDIUM_PARAMS = 2_000_000, 64, 30_000_000
POLL_S = 0.5


def parse_gpus_format(value: str | None) -> list[int] | None:
    """'0,2' -> [0, 2]; None or '' -> None; anything but distinct indices >= 0 is a UserError."""
    if value is None or str(value).strip() == "":
        return None
    parts = [v.strip() for v in str(value).split(",")]
    gpus = [int(v) for v in parts if v.isdigit()]
    if len(gpus) != len(parts) or len(set(gpus)) != len(gpus):
        raise UserError(f"malformed --gpus {value!r} (accepted: comma-separated distinct GPU indices, e.g. 0,2)")
    return gpus


def parse_gpus(value: str | None, count: int) -> list[int] | None:
    """'0,2' -> [0, 2] (indices among the ``count`` visible GPUs); None -> None (all of them)."""
    gpus = parse_gpus_format(value)
    if gpus is None:
        return None
    if count == 0:
        raise UserError(f"--gpus {value} asked for, but no CUDA GPU is visible")
    bad = [g for g in gpus if not 0 <= g < count]
    if bad:
        raise UserError(f"bad --gpus {value!r}: no GPU {bad[0]} (accepted: {', '.join(map(str, range(count)))})")
    return gpus


def _largest_model(cells: Sequence[Cell], data_dir: str | None) -> tuple[int, int]:
    """(parameters, input side in pixels) of the largest model among ``cells``."""
    import torch

    from bench.measure import count_params
    from bench.models import create_model

    seen: dict[str, tuple[int, int]] = {}
    for c in cells:
        cfg = c.config
        data = load_data(cfg.dataset, data_dir)  # already loaded by check_data: cached
        ch, h, w = input_shape(cfg, data.image_shape)
        key = repr((cfg.model, cfg.model_kwargs, ch, data.num_classes))
        if key not in seen:
            kwargs = dict(num_classes=data.num_classes, in_channels=ch, **cfg.model_kwargs)
            try:
                with torch.device("meta"):  # builds the model without allocating its weights
                    model = create_model(cfg.model, **kwargs)
            except Exception:  # noqa: BLE001 - a model whose init needs real tensors
                model = create_model(cfg.model, **kwargs)
            seen[key] = (count_params(model)["params_total"], max(h, w))
        else:
            seen[key] = (seen[key][0], max(seen[key][1], h, w))
    if not seen:
        return 0, 0
    return max(p for p, _ in seen.values()), max(s for _, s in seen.values())


def auto_parallel(study: Study, cells: Sequence[Cell], data_dir: str | None, on_gpu: bool) -> tuple[int, str]:
    """Cells trained at once per GPU for ``--parallel auto``, and why (see the rule above)."""
    if not on_gpu:
        return 1, "CPU"
    if study.timing_critical:
        return 1, "timing-critical study"
    params, side = _largest_model(cells, data_dir)
    if params < SMALL_PARAMS and side <= SMALL_SIDE:
        n = 4
    elif params < MEDIUM_PARAMS:
        n = 2
    else:
        n = 1
    return n, f"largest model {params / 1e6:.1f}M params, {side}px inputs"


def _physical_gpu(index: int) -> str:
    """The id to put in a worker's CUDA_VISIBLE_DEVICES for visible GPU ``index`` (respects ours)."""
    ours = os.environ.get("CUDA_VISIBLE_DEVICES")
    if ours:
        ids = [v.strip() for v in ours.split(",") if v.strip()]
        if index < len(ids):
            return ids[index]
    return str(index)


def _worker_main(spec: WorkSpec, cuda_visible: str | None, threads: int | None) -> None:
    """Entry point of a worker process (module-level so that 'spawn' can import it)."""
    if cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible  # before CUDA starts in this process
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        work(spec)
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        # The file system refused (full, read-only, gone): one line, as the command line says it.
        where = f": {exc.filename}" if exc.filename else ""
        print(f"bench: error: worker {spec.worker}: {exc.strerror or exc}{where} "
              "(finished records are kept; fix this and rerun)", file=sys.stderr)
        sys.exit(2)
    except BaseException:  # noqa: BLE001 - the worker's last word: its traceback, then a failed exit
        traceback.print_exc()
        sys.exit(1)


def resolve_slots(device: str, gpus: str | None) -> tuple[str, list[int | None]]:
    """The device and where workers go: GPU indices, or ``[None]`` for the CPU (checked early, before
    anything is written)."""
    import torch

    device = parse_device(device)
    count = torch.cuda.device_count() if device.startswith("cuda") else 0
    parse_gpus_format(gpus)  # a malformed value is named as such whatever the device
    if device == "cpu":
        if gpus:
            raise UserError(f"--gpus {gpus} asked for with --device cpu (drop one of them)")
        return device, [None]
    if device.startswith("cuda:"):
        slots: list[int | None] = [int(device.split(":", 1)[1])]
        if gpus and parse_gpus(gpus, count) != slots:
            raise UserError(f"--gpus {gpus} and --device {device} disagree (drop one of them)")
        return device, slots
    return device, list(parse_gpus(gpus, count) or range(count))


def _measure_main(spec: WorkSpec, cuda_visible: str | None, threads: int | None) -> None:
    """Process entry: fill the measurement cache (speed, memory) for the spec's cells, alone on
    the device. Errors are left for the cell's own run to record."""
    if cuda_visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible
    if threads:
        import torch

        torch.set_num_threads(threads)
    from bench.runner import get_measurements

    store = ResultsStore(spec.results_dir)
    for c in spec.to_cells():
        try:
            get_measurements(c.config, load_data(c.config.dataset, spec.data_dir), store, c.study, spec.device)
        except Exception:  # noqa: BLE001
            traceback.print_exc()


def _measure_alone(spec: WorkSpec, slot: int | None) -> None:
    """Measure each model before the workers start: speed and memory measured while other runs
    share the device would be wrong, and the cache makes the workers skip them."""
    import torch

    visible = None if slot is None else _physical_gpu(slot)
    threads = torch.get_num_threads() if slot is None else None
    p = mp.get_context("spawn").Process(
        target=_measure_main, args=(replace(spec, device="cpu" if slot is None else "cuda"), visible, threads),
        name="measure")
    _start_pinned(p, visible)
    p.join()


def _start_pinned(p: mp.process.BaseProcess, visible: str | None) -> None:
    """Start ``p`` with CUDA_VISIBLE_DEVICES=``visible``: a spawned child's environment is ours
    at start, so the GPU is pinned before anything in it can start CUDA."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        if visible is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible
        p.start()
    finally:
        if visible is not None:
            if old is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = old


def run_local(
    study: Study,
    cells: Sequence[Cell],
    todo: Sequence[Cell],
    store: ResultsStore,
    *,
    parallel: int | None,
    gpus: str | None,
    device: str,
    data_dir: str | None,
    measure: bool = True,
    end_steps: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Run ``todo`` on this machine; returns counts by state over all ``cells``."""
    device, slots = resolve_slots(device, gpus)
    if not todo:
        return status_counts(study.name, cells, store)
    per_slot = parallel
    if per_slot is None:
        per_slot, why = auto_parallel(study, todo, data_dir, on_gpu=slots != [None])
        if per_slot > 1:
            print(f"bench: --parallel auto -> {per_slot} per GPU ({why})", file=sys.stderr)
    # No more workers per slot than cells for them: an idle worker would only mark its GPU shared.
    per_slot = max(1, min(per_slot, -(-len(todo) // len(slots))))
    if len(slots) * per_slot == 1:
        # One CPU or one GPU, one cell at a time: in this process (plain tracebacks, one progress bar).
        one = device if slots == [None] or device != "cuda" or not gpus else f"cuda:{slots[0]}"
        run_cells_inline(todo, store, device=one, data_dir=data_dir, progress=True, measure=measure,
                         end_steps=end_steps)
        return status_counts(study.name, cells, store)
    spec = WorkSpec.of(todo, str(store.root), data_dir, "cpu", measure=measure, end_steps=end_steps)
    if measure and per_slot > 1:
        _measure_alone(spec, slots[0])
    crashed = _run_workers(spec, slots, per_slot, todo, store)
    # Cells nobody runs now: a dead worker's (stale claim) or one given up by another runner.
    left = [c for c in todo if store.state(c.study, c.run_id) in ("stale", "pending")]
    if crashed and left:
        # A worker died (segfault, OOM kill): its cell's claim names a dead pid, so one more round
        # retakes it. Only one: a cell that kills its worker every time is left for the next run.
        print(f"bench: {crashed} worker(s) died; retrying the {len(left)} unfinished cell(s) once",
              file=sys.stderr)
        spec = replace(spec, cells=[c.to_dict() for c in left])
        _run_workers(spec, slots, per_slot, left, store)
    return status_counts(study.name, cells, store)


def _run_workers(spec: WorkSpec, slots: Sequence[int | None], per_slot: int, todo: Sequence[Cell],
                 store: ResultsStore) -> int:
    """Start ``per_slot`` workers per slot (a GPU index, or None for the CPU), show a progress bar
    over finished cells (on a terminal) and one line per finished cell (in any output) until all
    workers exit; returns how many exited abnormally."""
    import torch
    # the plain bar: it shows on a terminal only, and tqdm.auto warns in a Jupyter kernel without ipywidgets
    from tqdm import tqdm

    ctx = mp.get_context("spawn")
    host = socket.gethostname()
    per_slot = max(1, min(per_slot, -(-len(todo) // len(slots))))  # a second pass may have few cells
    n_workers = len(slots) * per_slot
    # CPU workers use this process's intra-op thread count: another count changes the float
    # reduction order, and the numbers would differ from an inline run's.
    threads = torch.get_num_threads() if slots == [None] else None
    procs: list[tuple[str, mp.process.BaseProcess]] = []
    for slot in slots:
        for k in range(per_slot):
            name = f"{host}/{'cpu' if slot is None else f'gpu{slot}'}/w{k}"
            wspec = replace(spec, worker=name, device="cpu" if slot is None else "cuda",
                            shared_gpu=slot is not None and per_slot > 1)
            visible = None if slot is None else _physical_gpu(slot)
            proc = ctx.Process(target=_worker_main, args=(wspec, visible, threads), name=name, daemon=False)
            _start_pinned(proc, visible)
            procs.append((name, proc))
    print(f"bench: {len(todo)} cells on {n_workers} worker processes "
          f"({per_slot} per {'CPU' if slots == [None] else 'GPU'})", file=sys.stderr)
    bar = tqdm(total=len(todo), desc="cells", unit="run", disable=not sys.stderr.isatty())
    seen: set[str] = set()
    pace = Pace(todo)

    def report_finished() -> None:
        """One line per cell a worker finished since the last look (any output: a log shows no bar)."""
        for c in todo:
            if c.run_id in seen or store.summary(c.study, c.run_id) is None:
                continue
            seen.add(c.run_id)
            try:
                r = store.read_record(c.study, c.run_id)
            except Exception:  # noqa: BLE001 - a record this version cannot read: its state only
                r = None
            line = cell_line(r) if r is not None else f"{c.label} seed {c.seed}: {store.state(c.study, c.run_id)}"
            tqdm.write(f"bench: {line}; {pace.finished(c.run_id)}", file=sys.stderr)
            sys.stderr.flush()
        bar.update(len(seen) - bar.n)

    try:
        while any(p.is_alive() for _, p in procs):
            report_finished()
            time.sleep(POLL_S)
        report_finished()
    except KeyboardInterrupt:
        # The workers got the same Ctrl-C (one process group); let them release their claims.
        for _, p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    finally:
        bar.close()
    crashed = 0
    for name, p in procs:
        p.join()
        if p.exitcode != 0:
            crashed += 1
            print(f"bench: worker {name} exited with code {p.exitcode}", file=sys.stderr)
    return crashed
