"""Tests of the graphed engine (bench.train.graphed).

CPU: the step that gets captured (feed + StaticStep over static buffers, tensor lr from the device
table, partial last batch) is run directly and compared with the eager loop; the warm-up / capture /
restore / replay logic is run with a CPU stand-in for the CUDA calls (its "capture" runs the body,
which the restore must then undo); engine='graph' on a CPU falls back with a reason and identical
results. CUDA (skipped here): graph vs eager trajectories, no host sync in a graphed epoch, in-graph
augmentation equal to the loader's batches, fallbacks.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from bench.config import RunConfig
from bench.data import GpuLoader, LoadedData, TorchLoader, load_dataset
from bench.models import create_model
from bench.train import engine as engine_mod
from bench.train import graphed
from bench.train import step as step_mod
from bench.train import train
from bench.train.engine import EagerEngine
from bench.train.graphed import AUTO_USES_GRAPH, GraphTrainer, GraphUnsupported, graph_decision, lr_table_values
from bench.device import Precision, resolve_precision
from bench.train.optim import Schedule, build_optimizer, build_schedule
from bench.train.step import TrainStep

SPEC = "synthetic:train=200,test=40,size=28,channels=1,noise=0.2"  # 200 = 3 x 64 + 8: a partial batch
TIMING_KEYS = {"epoch_time_s", "eval_time_s", "epoch_train_samples_per_s", "elapsed_train_time_s"}
CPU = torch.device("cpu")
cuda_only = pytest.mark.cuda  # skipped without a GPU (tests/conftest.py)


@pytest.fixture(scope="module")
def data() -> LoadedData:
    return load_dataset(SPEC)


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


class FakeOps:
    """CPU stand-in for :class:`bench.train.graphed.CudaGraphOps`.

    Its capture *runs* the body once (CUDA would only record it) and replays by calling it: a graphed
    run then matches eager only if the restore after capture undoes warm-up and capture entirely.
    """

    can_capture_generator = True

    def __init__(self, device: Any = None, fail: bool = False, check_sync: bool = True) -> None:
        self.fail = fail
        self.check_sync = check_sync  # off for CPU optimizers that read their step count on the host
        self.captures = 0
        self.pools: list[Any] = []  # the pool each capture was given
        self.guarded_steps = 0

    def synchronize(self) -> None:
        pass

    def side_stream(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def forbid_sync(self) -> Any:
        """What set_sync_debug_mode('error') does to ``.item()`` on CUDA, done on the CPU."""
        def item(t: torch.Tensor) -> Any:
            raise RuntimeError("called a synchronizing CUDA operation")

        self.guarded_steps += 1
        if not self.check_sync:
            yield
            return
        real = torch.Tensor.item
        torch.Tensor.item = item  # type: ignore[method-assign]
        try:
            yield
        finally:
            torch.Tensor.item = real  # type: ignore[method-assign]

    def capture(self, body: Any, generator: Any, pool: Any = None) -> Any:
        if self.fail:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore text")
        body()
        self.captures += 1
        self.pools.append(pool)
        handle = ("pool", self.captures)
        return SimpleNamespace(replay=body, pool=lambda: handle)

    def rng_state(self) -> None:
        return None

    def set_rng_state(self, state: None) -> None:
        pass


class FailingOps(FakeOps):
    def __init__(self, device: Any = None) -> None:
        super().__init__(device, fail=True)


# ---------------------------------------------------------------------------------- helpers


def make_loader(data: LoadedData, cfg: RunConfig, kind: str = "gpu") -> Any:
    kw = dict(device=CPU, train=True, mean=data.mean, std=data.std, crop_padding=2, hflip=True, seed=3)
    if kind == "gpu":
        return GpuLoader(data.train, cfg.batch_size, **kw)
    return TorchLoader(data.train, cfg.batch_size, num_workers=0, **kw)


def make_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: RunConfig, schedule: Schedule,
              crit: nn.Module | None = None, device: torch.device = CPU) -> TrainStep:
    """The run's step as the engine builds it (fp32, aux weight 0.3) around ``model`` and ``opt``."""
    return TrainStep(model, crit if crit is not None else nn.CrossEntropyLoss(), opt,
                     resolve_precision("fp32", device), device, channels_last=cfg.channels_last, aux_weight=0.3,
                     schedule=schedule, base_lr=cfg.lr)


def run_epochs(data: LoadedData, cfg: RunConfig, mode: str, *, kind: str = "gpu", ops: Any = None,
               plateau_drop_after: int | None = None, make_model: Any = None,
               ) -> tuple[list[tuple], list[torch.Tensor], Any]:
    """Train cfg.epochs epochs with the eager loop ('eager') or GraphTrainer ('direct' | 'fake')."""
    loader = make_loader(data, cfg, kind)
    torch.manual_seed(0)
    model = make_model() if make_model else create_model("mnist_cnn", num_classes=10, in_channels=1, norm="bn")
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg, model.parameters())
    spe = len(loader)
    total = cfg.iterations or cfg.epochs * spe
    sched = build_schedule(cfg, spe, total)
    step = make_step(model, opt, cfg, sched, nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing))
    trainer = None
    if mode != "eager":
        trainer = GraphTrainer(step, loader, total_steps=total, capture=mode == "fake", ops=ops)
        trainer.setup(0)
    torch.manual_seed(1)  # the augmentation RNG of in-process PIL transforms (TorchLoader)
    out, it = [], 0
    for e in range(math.ceil(total / spe)):
        if plateau_drop_after is not None and e == plateau_drop_after:
            sched.plateau_factor *= 0.1
        if trainer is not None:
            st = trainer.train_epoch(e, it, total)
        else:
            loader.set_epoch(e)
            st = EagerEngine(step, loader).train_epoch(e, it, total)
        it += st.steps
        out.append((*st.read(), st.last_lr, st.steps, st.samples, st.diverged))
    weights = [t.detach().clone() for t in model.state_dict().values()]
    return out, weights, trainer


SGD = RunConfig(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="multistep",
                schedule_unit="iter", milestones=(3, 7), epochs=3, batch_size=64)
ADAM = RunConfig(optimizer="adam", lr=3e-3, schedule="cosine", warmup=1, epochs=3, batch_size=64)


def assert_same(a: tuple, b: tuple) -> None:
    (ra, wa), (rb, wb) = a, b
    assert ra == rb
    assert all(torch.equal(x, y) for x, y in zip(wa, wb, strict=True))


# ------------------------------------------------------------------------- the captured step


def test_lr_table_is_the_eager_lr_in_float32() -> None:
    s = build_schedule(dataclasses.replace(SGD, warmup=1), 4, 12)
    vals = lr_table_values(s, 0.05, 12)
    assert vals == [0.05 * s(i) for i in range(12)]
    table = torch.tensor(vals, dtype=torch.float32)
    # the float32 value eager's kernels use (they cast the double lr to float)
    assert all(table[i].item() == torch.tensor(0.05 * s(i), dtype=torch.float32).item() for i in range(12))


def test_direct_static_step_is_bitwise_eager_sgd_multistep(data: LoadedData) -> None:
    eager = run_epochs(data, SGD, "eager")
    direct = run_epochs(data, SGD, "direct")
    assert_same(eager[:2], direct[:2])
    rows = direct[0]
    assert [r[3] for r in rows] == [4, 4, 4] and [r[4] for r in rows] == [200] * 3  # 3 x 64 + a batch of 8
    assert rows[0][2] == pytest.approx(0.005) and rows[-1][2] == pytest.approx(0.0005)  # multistep in iterations
    trainer = direct[2]
    assert trainer.step.step.item() == 12  # the device step counter
    assert trainer.step.lr.item() == torch.tensor(0.0005, dtype=torch.float32).item()
    assert all(g["lr"] is trainer.step.lr for g in trainer.optimizer.param_groups)


def test_direct_static_step_matches_eager_adam_warmup_cosine(data: LoadedData) -> None:
    eager = run_epochs(data, ADAM, "eager")
    direct = run_epochs(data, ADAM, "direct")
    # Adam's step size lr/(1-beta1^t) is float32 with a tensor lr, double with a float one: close, not bitwise
    for ra, rb in zip(eager[0], direct[0], strict=True):
        assert ra[0] == pytest.approx(rb[0], rel=1e-5) and ra[1] == rb[1] and ra[2:] == rb[2:]
    # Elementwise tolerances are machine-dependent here: where a gradient is near zero, Adam's
    # m / (sqrt(v) + eps) amplifies the rounding of the two step sizes. Judge the weights against how
    # far training moved them instead: the paths agree to within 2% of each tensor's displacement
    # (measured: at most 0.7%, conv weights).
    torch.manual_seed(0)
    init = create_model("mnist_cnn", num_classes=10, in_channels=1, norm="bn").state_dict().values()
    for x, y, x0 in zip(eager[1], direct[1], init, strict=True):
        if not x.is_floating_point():
            assert torch.equal(x, y)  # BN's num_batches_tracked
            continue
        moved = (x - x0).abs().max().item()
        assert moved > 0 and (x - y).abs().max().item() <= 0.02 * moved
    assert eager[0][-1][2] == 0.0  # cosine ends at 0


def test_copy_feed_static_buffers_match_eager(data: LoadedData) -> None:
    cfg = dataclasses.replace(SGD, epochs=2)
    eager = run_epochs(data, cfg, "eager", kind="torch")
    direct = run_epochs(data, cfg, "direct", kind="torch")
    assert_same(eager[:2], direct[:2])
    assert sorted(direct[2].feed.static) == [8, 64]  # one static input pair per batch size


def test_iteration_budget_and_plateau_table_refresh(data: LoadedData) -> None:
    cfg = dataclasses.replace(SGD, schedule="plateau", iterations=10, epochs=None)
    eager = run_epochs(data, cfg, "eager", plateau_drop_after=1)
    direct = run_epochs(data, cfg, "direct", plateau_drop_after=1)
    assert_same(eager[:2], direct[:2])
    assert [r[3] for r in direct[0]] == [4, 4, 2]  # the last epoch stops at the budget
    assert direct[0][1][2] == pytest.approx(0.005)
    assert torch.allclose(direct[2].lr_table, torch.full((10,), 0.005))


class AuxNet(nn.Module):
    """(logits, aux) in train mode like GoogLeNet, with dropout on the aux head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(128, 10)
        self.aux = nn.Sequential(nn.Dropout(0.5), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> Any:
        h = torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1)
        return (self.fc(h), self.aux(h)) if self.training else self.fc(h)


@pytest.mark.parametrize("mode", ["direct", "fake"])
def test_tuple_outputs_and_dropout(data: LoadedData, mode: str) -> None:
    cfg = dataclasses.replace(SGD, epochs=2)
    eager = run_epochs(data, cfg, "eager", make_model=AuxNet)
    other = run_epochs(data, cfg, mode, ops=FakeOps() if mode == "fake" else None, make_model=AuxNet)
    assert_same(eager[:2], other[:2])


# ------------------------------------------------------------------ warm-up, capture, restore


def test_fake_capture_restores_warmup_and_replays_the_eager_trajectory(data: LoadedData) -> None:
    ops = FakeOps()
    eager = run_epochs(data, SGD, "eager")
    graph = run_epochs(data, SGD, "fake", ops=ops)
    assert ops.captures == 2 and sorted(graph[2].graphs) == [8, 64]  # full batches and the tail
    assert ops.pools == [None, ("pool", 1)]  # the tail graph allocates from the full batches' pool
    assert ops.guarded_steps == 2  # the last warm-up step of each size ran with host syncs forbidden
    assert_same(eager[:2], graph[:2])
    sd = graph[2].optimizer_state_dict()
    assert sd["param_groups"][0]["lr"] == SGD.lr  # checkpoints keep a float lr


def test_fake_capture_copy_feed(data: LoadedData) -> None:
    cfg = dataclasses.replace(SGD, epochs=2)
    eager = run_epochs(data, cfg, "eager", kind="torch")
    graph = run_epochs(data, cfg, "fake", kind="torch", ops=FakeOps())
    assert_same(eager[:2], graph[:2])


OPTIMIZER_CASES = {
    "sgd_plain": dataclasses.replace(SGD, momentum=0.0, nesterov=False),
    "sgd_momentum": dataclasses.replace(SGD, nesterov=False),
    "sgd_nesterov": SGD,
    "adam_warmup_cosine": ADAM,
    "adamw": RunConfig(optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="cosine", epochs=3, batch_size=64),
    "rmsprop_momentum": RunConfig(optimizer="rmsprop", lr=1e-3, momentum=0.9, epochs=3, batch_size=64),
}


def _bn_net(data: LoadedData, cfg: RunConfig) -> tuple[Any, Any, nn.Module, dict[str, torch.Tensor],
                                                        torch.optim.Optimizer]:
    """fp32 on the CPU, the loader, a seeded BN net, its state before anything runs, its optimizer."""
    loader = make_loader(data, cfg)
    torch.manual_seed(0)
    model = create_model("mnist_cnn", num_classes=10, in_channels=1, norm="bn")
    before = copy.deepcopy(model.state_dict())
    return resolve_precision("fp32", CPU), loader, model, before, build_optimizer(cfg, model.parameters())


@pytest.mark.parametrize("case", sorted(OPTIMIZER_CASES))
def test_warmup_is_undone_and_new_optimizer_state_is_zero(data: LoadedData, case: str) -> None:
    """After warm-up and (stand-in) capture: weights and BN buffers as before, every optimizer state
    tensor the warm-up created zero (fresh), the RNG where it was, the lr a device tensor."""
    cfg = OPTIMIZER_CASES[case]
    prec, loader, model, before, opt = _bn_net(data, cfg)
    total = 3 * len(loader)
    ops = FakeOps(check_sync=cfg.optimizer == "sgd")  # CPU Adam/RMSprop read their step on the host
    trainer = GraphTrainer(make_step(model, opt, cfg, build_schedule(cfg, len(loader), total)), loader,
                           total_steps=total, ops=ops)
    rng = torch.get_rng_state()
    trainer.setup(0)
    assert ops.captures == 2  # the warm-up and both captures ran the step: 3 x 2 + 2 updates undone
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "weights or BN buffers not restored"
    state = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    assert bool(state) == (case != "sgd_plain")  # plain SGD keeps no tensors
    assert all(not t.any() for t in state), "optimizer state left by the warm-up"
    assert torch.equal(torch.get_rng_state(), rng)


def test_each_step_uses_the_schedules_lr_including_the_tail(data: LoadedData) -> None:
    """The lr every update reads, step by step over three epochs with a partial last batch each, is
    float32(cfg.lr * schedule(i)) for global step i: an off-by-one in the table fails here."""
    cfg = dataclasses.replace(ADAM, warmup=1, schedule="cosine")
    loader = make_loader(data, cfg)
    torch.manual_seed(0)
    model = create_model("mnist_cnn", num_classes=10, in_channels=1, norm="bn")
    opt = build_optimizer(cfg, model.parameters())
    spe = len(loader)
    total = 3 * spe
    sched = build_schedule(cfg, spe, total)
    trainer = GraphTrainer(make_step(model, opt, cfg, sched), loader, total_steps=total,
                           ops=FakeOps(check_sync=False))
    trainer.setup(0)
    seen: list[torch.Tensor] = []
    real_step = opt.step
    opt.step = lambda *a, **k: (seen.append(opt.param_groups[0]["lr"].clone()), real_step(*a, **k))[1]
    sizes: list[int] = []
    for e in range(3):
        st = trainer.train_epoch(e, e * spe, total)
        sizes.append(st.samples)
    expected = [torch.tensor(cfg.lr * sched(i), dtype=torch.float32) for i in range(total)]
    assert len(seen) == total == 12 and sizes == [200] * 3
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    assert len({float(x) for x in expected}) > 4  # the schedule moves: a shifted table would differ


def test_failed_capture_puts_everything_back(data: LoadedData) -> None:
    prec, loader, model, before, opt = _bn_net(data, SGD)
    sched = build_schedule(SGD, len(loader), 12)
    trainer = GraphTrainer(make_step(model, opt, SGD, sched), loader, total_steps=12, ops=FailingOps())
    rng = torch.get_rng_state()
    with pytest.raises(GraphUnsupported, match=r"^capture failed \(RuntimeError: CUDA error: operation not permitted"):
        trainer.setup(0)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. BN running stats and counters
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == SGD.lr
    assert torch.equal(torch.get_rng_state(), rng)


class SyncingNet(nn.Module):
    """A forward that reads a device value on the host (``.item()``): cannot be captured."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 16, 10)
        self.big = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        if h.abs().max().item() > 1e6:  # data-dependent host control flow
            self.big += 1
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 4), 1))


def test_syncing_model_is_rejected_before_capture(data: LoadedData) -> None:
    ops = FakeOps()
    loader = make_loader(data, SGD)
    torch.manual_seed(0)
    model = SyncingNet()
    before = copy.deepcopy(model.state_dict())
    opt = build_optimizer(SGD, model.parameters())
    trainer = GraphTrainer(make_step(model, opt, SGD, build_schedule(SGD, len(loader), 12)), loader,
                           total_steps=12, ops=ops)
    with pytest.raises(GraphUnsupported, match=r"^the training step synchronises with the host "
                                                r"\(RuntimeError: called a synchronizing CUDA operation\); "
                                                r"rejected before capture"):
        trainer.setup(0)
    assert ops.captures == 0 and ops.guarded_steps == 1  # capture never began
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == SGD.lr


def test_other_warmup_errors_are_not_called_host_syncs(data: LoadedData) -> None:
    class ThirdCallFails(SyncingNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.big += 1
            if self.big == WARMUP_CALLS:
                raise RuntimeError("shape mismatch in the third warm-up step")
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 4), 1))

    WARMUP_CALLS = graphed.WARMUP_STEPS
    loader = make_loader(data, SGD)
    torch.manual_seed(0)
    model = ThirdCallFails()
    step = make_step(model, build_optimizer(SGD, model.parameters()), SGD, build_schedule(SGD, len(loader), 12))
    trainer = GraphTrainer(step, loader, total_steps=12, ops=FakeOps())
    with pytest.raises(GraphUnsupported, match=r"^capture failed \(RuntimeError: shape mismatch in the third"):
        trainer.setup(0)


def test_engine_trains_a_syncing_model_eagerly_with_the_reason(engine_data: LoadedData,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.models import MODELS

    cfg = engine_cfg(model="syncing_test", model_kwargs={})
    MODELS.add("syncing_test", lambda num_classes=10, in_channels=1: SyncingNet())
    try:
        eager = train(dataclasses.replace(cfg, engine="eager"), data=engine_data, end_steps=())
        monkeypatch.setattr(engine_mod, "graph_decision", lambda cfg, device, prec: (cfg.engine != "eager", None))
        ops = FakeOps()
        monkeypatch.setattr(graphed, "CudaGraphOps", lambda device: ops)
        graph = train(dataclasses.replace(cfg, engine="graph"), data=engine_data, end_steps=())
    finally:
        MODELS.remove("syncing_test")
    s = graph.summary
    assert s["engine_used"] == "eager" and "synchronises with the host" in s["engine_fallback_reason"]
    assert ops.captures == 0 and graph.status == "ok"
    assert strip(graph.history) == strip(eager.history)


def test_graph_decision_reasons() -> None:
    gpu = torch.device("cuda", 0)
    fp32 = Precision("fp32", None, False, False)
    fp16 = Precision("fp16", torch.float16, True, False)
    assert graph_decision(RunConfig(engine="eager"), gpu, fp32) == (False, None)
    assert graph_decision(RunConfig(engine="graph"), gpu, fp32) == (True, None)
    assert graph_decision(RunConfig(engine="auto"), gpu, fp32) == (AUTO_USES_GRAPH, None)
    ok, why = graph_decision(RunConfig(engine="graph", precision="fp16"), gpu, fp16)
    assert not ok and "GradScaler" in why
    ok, why = graph_decision(RunConfig(engine="graph"), CPU, fp32)
    assert not ok and "CUDA device" in why
    ok, why = graph_decision(RunConfig(engine="graph", optimizer="lamb"), gpu, fp32)  # e.g. a study's own
    assert not ok and "lamb" in why


# -------------------------------------------------------------------------------- the engine

ENGINE_SPEC = "synthetic:train=400,test=80,size=28,channels=1,noise=0.2"


@pytest.fixture(scope="module")
def engine_data() -> LoadedData:
    return load_dataset(ENGINE_SPEC)


def engine_cfg(**kw: Any) -> RunConfig:
    base = dict(model="mnist_cnn", model_kwargs={"norm": "bn"}, dataset=ENGINE_SPEC, val_size=80, epochs=2,
                batch_size=64, eval_batch_size=80, lr=0.02, schedule="multistep", milestones=(1,),
                crop_padding=2, hflip=True)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def strip(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def test_engine_graph_on_cpu_falls_back_with_identical_results(engine_data: LoadedData) -> None:
    eager = train(engine_cfg(engine="eager"), data=engine_data)
    graph = train(engine_cfg(engine="graph"), data=engine_data)
    assert eager.summary["engine_used"] == "eager" and eager.summary["engine_fallback_reason"] is None
    assert graph.summary["engine_used"] == "eager" and "CUDA device" in graph.summary["engine_fallback_reason"]
    assert graph.summary["capture_time_s"] == 0.0
    assert strip(graph.history) == strip(eager.history)
    assert (graph.artifacts["test_pred"] == eager.artifacts["test_pred"]).all()


def test_engine_graph_path_with_stand_in_capture(engine_data: LoadedData, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Any) -> None:
    eager = train(engine_cfg(engine="eager"), data=engine_data)
    monkeypatch.setattr(engine_mod, "graph_decision", lambda cfg, device, prec: (cfg.engine != "eager", None))
    monkeypatch.setattr(graphed, "CudaGraphOps", FakeOps)
    graph = train(engine_cfg(engine="graph"), data=engine_data, run_dir=tmp_path)  # checkpoints too
    s = graph.summary
    assert s["engine_used"] == "graph" and s["engine_fallback_reason"] is None and s["capture_time_s"] > 0
    assert strip(graph.history) == strip(eager.history)
    assert s["final_train_acc_trainmode"] == eager.summary["final_train_acc_trainmode"]

    monkeypatch.setattr(graphed, "CudaGraphOps", FailingOps)
    failed = train(engine_cfg(engine="graph"), data=engine_data, end_steps=())
    assert failed.summary["engine_used"] == "eager"
    assert failed.summary["engine_fallback_reason"].startswith("capture failed")
    assert strip(failed.history) == strip(eager.history)


def test_memory_peaks_are_reset_and_read_around_the_training_steps(engine_data: LoadedData,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Per epoch: cached blocks released, peaks reset, the training steps, peaks read, then evaluation
    (not in them); warm-up + capture have their own window, read into the summary."""
    log: list[str] = []
    reads = iter(range(1, 100))

    def peaks(device: Any) -> tuple[int, int]:
        n = next(reads)
        log.append(f"read{n}")
        return n, 1000 + n

    real_eval, real_epoch = engine_mod.evaluate, GraphTrainer.train_epoch
    monkeypatch.setattr(step_mod, "memory_peaks", peaks)
    monkeypatch.setattr(step_mod, "reset_memory_peaks", lambda device: log.append("reset"))
    monkeypatch.setattr(step_mod, "release_cached_memory", lambda device: log.append("release"))
    monkeypatch.setattr(engine_mod, "evaluate", lambda *a, **k: (log.append("eval"), real_eval(*a, **k))[1])
    monkeypatch.setattr(GraphTrainer, "train_epoch", lambda *a, **k: (log.append("train"), real_epoch(*a, **k))[1])
    monkeypatch.setattr(engine_mod, "graph_decision", lambda cfg, device, prec: (True, None))
    monkeypatch.setattr(graphed, "CudaGraphOps", FakeOps)
    res = train(engine_cfg(engine="graph", epochs=2), data=engine_data, end_steps=())
    assert res.summary["engine_used"] == "graph"
    first = log.index("eval")
    assert log[:first] == ["reset", "read1", "release", "reset", "train", "read2"]  # capture, then epoch 1
    second = log[first:]
    i = second.index("release")
    assert second[i:i + 4] == ["release", "reset", "train", "read3"] and set(second[:i]) == {"eval"}
    assert [(r["peak_allocated_bytes"], r["peak_reserved_bytes"]) for r in res.history] == [(2, 1002), (3, 1003)]
    assert res.summary["peak_reserved_bytes"] == 1003  # the run's largest epoch peak
    assert (res.summary["capture_peak_allocated_bytes"], res.summary["capture_peak_reserved_bytes"]) == (1, 1001)


def test_memory_columns_are_none_on_a_cpu(engine_data: LoadedData) -> None:
    res = train(engine_cfg(engine="eager", epochs=1), data=engine_data, end_steps=())
    assert res.history[0]["peak_allocated_bytes"] is None and res.history[0]["peak_reserved_bytes"] is None
    assert res.summary["capture_peak_reserved_bytes"] is None and res.summary["peak_reserved_bytes"] is None


# ------------------------------------------------------------------------------- CUDA only

CUDA_SPEC = "synthetic:train=1000,test=200,size=32,channels=3,noise=0.3"


def cuda_cfg(**kw: Any) -> RunConfig:
    base = dict(model="resnet20", dataset=CUDA_SPEC, val_size=0, epochs=3, batch_size=128, eval_batch_size=200,
                lr=0.05, schedule="multistep", milestones=(2,), weight_decay=5e-4)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def strict_cuda(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Deterministic cuDNN, no autotuning (both engines get the same algorithms), no TF32 (fp32 runs)."""
    from bench import device as device_mod

    monkeypatch.setattr(engine_mod, "numerics",
                        lambda prec, device, autotune=True: device_mod.numerics(prec, device, autotune=False))
    before = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    yield
    torch.backends.cudnn.deterministic = before


STRICT_CASES = {
    "sgd_plain": {"momentum": 0.0},
    "sgd_momentum": {},
    "sgd_nesterov": {"nesterov": True},
    "adam_warmup_cosine": {"optimizer": "adam", "lr": 2e-3, "schedule": "cosine", "warmup": 1},
    "adamw": {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.05, "schedule": "cosine"},
    "rmsprop_momentum": {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.9},
    "dropout_model": {"model": "simple_cnn"},
}


def _final_state(cfg: RunConfig, data: LoadedData, run_dir: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    res = train(cfg, device="cuda", data=data, run_dir=run_dir, drop_checkpoint=False, end_steps=())
    ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    return res, ckpt["model"]


@cuda_only
@pytest.mark.parametrize("case", sorted(STRICT_CASES))
def test_cuda_graph_is_equivalent_to_eager(case: str, strict_cuda: Any, tmp_path: Any) -> None:
    """Two epochs of 1000 images at batch 128 (7 full batches and a tail of 104): the same lr every
    step, the first update and BN buffers equal to eager's, final weights within 1e-3 relative."""
    data = load_dataset(CUDA_SPEC)
    kw = STRICT_CASES[case]
    cfg = cuda_cfg(epochs=2, milestones=(1,), **kw)
    adaptive = cfg.optimizer != "sgd"  # float32 step sizes from a tensor lr: close, not bitwise
    one = dataclasses.replace(cfg, iterations=1, epochs=None)
    (tmp_path / "e1").mkdir(), (tmp_path / "g1").mkdir(), (tmp_path / "e").mkdir(), (tmp_path / "g").mkdir()
    _, first_eager = _final_state(dataclasses.replace(one, engine="eager"), data, tmp_path / "e1")
    g1, first_graph = _final_state(dataclasses.replace(one, engine="graph"), data, tmp_path / "g1")
    assert g1.summary["engine_used"] == "graph", g1.summary["engine_fallback_reason"]
    for k, a in first_eager.items():  # weights after one update, BN running stats and counters
        b = first_graph[k]
        if adaptive and a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7, msg=f"first update: {k}")
        else:
            assert torch.equal(a, b), f"first update: {k}"
    eager, w_eager = _final_state(dataclasses.replace(cfg, engine="eager"), data, tmp_path / "e")
    graph, w_graph = _final_state(dataclasses.replace(cfg, engine="graph"), data, tmp_path / "g")
    assert graph.summary["engine_used"] == "graph", graph.summary["engine_fallback_reason"]
    assert [r["iteration"] for r in graph.history] == [r["iteration"] for r in eager.history] == [8, 16]
    assert [r["lr"] for r in graph.history] == [r["lr"] for r in eager.history]
    for k, a in w_eager.items():
        b = w_graph[k]
        if not a.is_floating_point():
            assert torch.equal(a, b), k
            continue
        rel = ((a - b).norm() / a.norm().clamp_min(1e-12)).item()
        assert rel <= 1e-3, f"{k}: relative difference {rel:.2e}"


@cuda_only
def test_cuda_graphed_epoch_makes_no_host_sync() -> None:
    """An epoch longer than DIVERGENCE_CHECK_EVERY steps (the divergence watch copies its flag)
    with a partial last batch, and a plateau table refresh, under sync debug mode 'error'."""
    from bench.train.loop import DIVERGENCE_CHECK_EVERY

    data = load_dataset(CUDA_SPEC)
    dev = torch.device("cuda", torch.cuda.current_device())
    cfg = cuda_cfg(schedule="plateau")
    loader = GpuLoader(data.train, 16, device=dev, train=True, mean=data.mean, std=data.std, seed=0)
    assert len(loader) > DIVERGENCE_CHECK_EVERY and 1000 % 16
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).to(dev)
    opt = build_optimizer(cfg, model.parameters())
    total = 3 * len(loader)
    sched = build_schedule(cfg, len(loader), total)
    trainer = GraphTrainer(make_step(model, opt, cfg, sched, device=dev), loader, total_steps=total)
    trainer.setup(0)
    assert trainer.device_feed and sorted(trainer.graphs) == [1000 % 16, 16]
    torch.cuda.synchronize()
    sched.plateau_factor *= 0.1  # the next epoch rebuilds the lr table (pinned, non-blocking copy)
    torch.cuda.set_sync_debug_mode("error")
    try:
        stats = trainer.train_epoch(0, 0, total)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    loss, acc = stats.read()
    assert math.isfinite(loss) and stats.steps == len(loader) and stats.samples == 1000
    assert trainer.lr_table[0].item() == pytest.approx(cfg.lr * 0.1)


@cuda_only
def test_cuda_syncing_model_is_rejected_before_capture_and_the_process_stays_usable() -> None:
    """A forward with .item(): eager with the reason, no capture begun; the next run in the same
    process still captures, and empty_cache() works."""
    from bench.models import MODELS

    data = load_dataset("synthetic:train=256,test=64,size=28,channels=1")
    MODELS.add("syncing_test", lambda num_classes=10, in_channels=1: SyncingNet())
    try:
        cfg = cuda_cfg(model="syncing_test", dataset="synthetic:train=256,test=64,size=28,channels=1",
                       engine="graph", epochs=1, batch_size=64, eval_batch_size=64)
        res = train(cfg, device="cuda", data=data, end_steps=())
    finally:
        MODELS.remove("syncing_test")
    assert res.status == "ok" and res.summary["engine_used"] == "eager"
    assert "synchronises with the host" in res.summary["engine_fallback_reason"]
    torch.cuda.empty_cache()
    ok = train(cuda_cfg(model="mnist_cnn", dataset="synthetic:train=256,test=64,size=28,channels=1",
                        engine="graph", epochs=1, batch_size=64, eval_batch_size=64), device="cuda", data=data,
               end_steps=())
    assert ok.summary["engine_used"] == "graph", ok.summary["engine_fallback_reason"]
    torch.cuda.empty_cache()


@cuda_only
def test_cuda_in_graph_augmentation_equals_the_loader() -> None:
    data = load_dataset(CUDA_SPEC)
    dev = torch.device("cuda", torch.cuda.current_device())
    loader = GpuLoader(data.train, 128, device=dev, train=True, mean=data.mean, std=data.std, seed=5)
    feed = graphed.DeviceFeed(loader)
    feed.prepare(128)
    out_x = torch.empty(128, 3, 32, 32, device=dev)
    out_y = torch.empty(128, dtype=torch.int64, device=dev)

    def body() -> None:
        x, y = feed.batch(128)
        out_x.copy_(x)
        out_y.copy_(y)

    tail = 1000 % 128
    feed.prepare(tail)
    tail_x = torch.empty(tail, 3, 32, 32, device=dev)
    tail_y = torch.empty(tail, dtype=torch.int64, device=dev)

    def tail_body() -> None:
        x, y = feed.batch(tail)
        tail_x.copy_(x)
        tail_y.copy_(y)

    feed.begin_epoch(0)
    body()  # warm-up
    tail_body()
    torch.cuda.synchronize()
    ops = graphed.CudaGraphOps(dev)
    graph = ops.capture(body, feed.gen)
    tail_graph = ops.capture(tail_body, feed.gen, pool=graph.pool())
    feed.begin_epoch(2)
    loader.set_epoch(2)
    seen = 0
    for k, (x, y) in enumerate(loader):
        if y.shape[0] == 128:
            graph.replay()
            assert torch.equal(out_y, y) and torch.equal(out_x, x), f"batch {k}"
        else:
            tail_graph.replay()
            assert torch.equal(tail_y, y) and torch.equal(tail_x, x), f"tail batch {k}"
        seen += y.shape[0]
    assert seen == 1000


@cuda_only
def test_cuda_fp16_falls_back_with_reason() -> None:
    data = load_dataset(CUDA_SPEC)
    res = train(cuda_cfg(engine="graph", precision="fp16", epochs=1), device="cuda", data=data, end_steps=())
    assert res.summary["engine_used"] == "eager" and "GradScaler" in res.summary["engine_fallback_reason"]


@cuda_only
def test_cuda_googlenet_tuple_outputs_are_graphed() -> None:
    data = load_dataset("synthetic:train=256,test=64,size=32,channels=3")
    res = train(cuda_cfg(model="googlenet", dataset="synthetic:train=256,test=64,size=32,channels=3",
                         engine="graph", epochs=1, batch_size=64, eval_batch_size=64), device="cuda", data=data,
                end_steps=())
    assert res.summary["engine_used"] == "graph", res.summary["engine_fallback_reason"]
    assert math.isfinite(res.history[-1]["train_loss"])
