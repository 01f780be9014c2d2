"""RunConfig identity and overrides; study expansion; the study registry."""

from __future__ import annotations

import dataclasses

import pytest

from bench.config import RunConfig, apply_overrides, parse_set_args, split_fixed_varied
from bench.errors import UserError
from bench.registry import Registry
from bench.study import PROFILES, Arm, Profile, Study, load_studies


def test_run_id_is_sha256_of_canonical_json() -> None:
    import hashlib

    cfg = RunConfig()
    assert cfg.run_id == hashlib.sha256(cfg.to_json().encode()).hexdigest()[:16]
    assert RunConfig().run_id == cfg.run_id
    assert dataclasses.replace(cfg, lr=0.05).run_id != cfg.run_id
    # key order of model kwargs does not matter
    a = RunConfig(model_kwargs={"norm": "gn", "groups": 8})
    b = RunConfig(model_kwargs={"groups": 8, "norm": "gn"})
    assert a.run_id == b.run_id


def test_report_only_settings_leave_the_run_id() -> None:
    """acc_thresholds changes what the summary reports, not what trains: another value is the same run,
    and a config that never set it keeps the id it was recorded under."""
    from bench.config import REPORT_ONLY

    cfg = RunConfig()
    other = dataclasses.replace(cfg, acc_thresholds=(0.3, 0.99))
    assert other.run_id == cfg.run_id and other.to_json() != cfg.to_json()
    assert RunConfig(acc_thresholds=()).run_id == cfg.run_id
    assert dataclasses.replace(other, lr=0.05).run_id != cfg.run_id  # what trains still counts
    # the id of the default config as recorded before acc_thresholds left it (a changed id retrains everything)
    assert cfg.run_id == "a21ac7921196ddb7" and cfg.identity_json() == cfg.to_json()
    assert REPORT_ONLY["acc_thresholds"] == RunConfig().acc_thresholds
    # a stored config.json with its own thresholds still loads, as the same run
    assert RunConfig.from_dict({**cfg.to_dict(), "acc_thresholds": [0.25]}).run_id == cfg.run_id


def test_changed_acc_thresholds_retrain_nothing_and_the_tables_report_them(tmp_path) -> None:
    """Another --set acc_thresholds leaves every recorded cell finished (nothing to train) and the runs
    table reports time to the new thresholds, recomputed from each run's history."""
    from bench.report.synthetic import write_synthetic_study
    from bench.results import read_results
    from bench.runner import prepare
    from bench.store import ResultsStore

    write_synthetic_study(tmp_path, "residual", "smoke", seeds=(0,), failed=0, diverged=0, artifacts=False)
    study, store = load_studies().get("residual"), ResultsStore(tmp_path)
    cells, todo = prepare(study, "smoke", store, {"acc_thresholds": [0.3]})
    assert todo == [] and cells
    res = read_results(tmp_path, "residual")
    runs, hist = res.runs_frame(finished_only=True), res.history_frame()
    assert "time_to_val_acc_30_s" in runs and "time_to_val_acc_50_s" not in runs
    for _, r in runs.iterrows():
        h = hist[hist["run_id"] == r["run_id"]]
        hit = h[h["val_acc"] >= 0.3]
        want = hit["elapsed_train_time_s"].iloc[0] if len(hit) else float("nan")
        assert r["time_to_val_acc_30_s"] == pytest.approx(want, nan_ok=True)
    assert runs["time_to_val_acc_30_s"].notna().any()  # the synthetic nets reach 30%: the check bites
    prepare(study, "smoke", store, None)  # back to the study's own thresholds
    assert {"time_to_val_acc_50_s", "epochs_to_val_acc_90"} <= set(read_results(tmp_path, "residual").runs_frame())


def test_round_trip_through_dict() -> None:
    cfg = RunConfig(milestones=(3, 5), betas=(0.8, 0.99), model_kwargs={"norm": "gn"})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_dict(cfg.to_dict()).run_id == cfg.run_id


def test_overrides_coerce_types() -> None:
    cfg = apply_overrides(RunConfig(), parse_set_args(["lr=0.05", "epochs=3", "milestones=[1,2]",
                                                       "model_kwargs.norm=gn", "channels_last=true"]))
    assert cfg.lr == 0.05 and cfg.epochs == 3 and cfg.milestones == (1, 2)
    assert cfg.model_kwargs == {"norm": "gn"} and cfg.channels_last is True
    # 'none' is a value (no norm), not None; 'null' is None
    cfg = apply_overrides(RunConfig(), parse_set_args(["model_kwargs.norm=none", "model_kwargs.groups=8",
                                                       "train_subset=null", "dataset=none"]))
    assert cfg.model_kwargs == {"groups": 8, "norm": "none"} and cfg.train_subset is None
    assert cfg.dataset == "none"
    # study arms pass typed values through unchanged
    assert apply_overrides(RunConfig(), {"model_kwargs.norm": "none"}).model_kwargs == {"norm": "none"}


@pytest.mark.parametrize(
    "items, fragment",
    [
        (["lrr=0.1"], "unknown config key 'lrr'"),
        (["epochs=abc"], "epochs must be a number"),
        (["epochs=2.5"], "epochs must be an integer"),
        (["precision=fp8"], "bad precision 'fp8' (accepted: fp32, tf32, bf16, fp16)"),
        (["lr"], "expected key=value"),
        (["batch_size=0"], "bad batch_size 0 (accepted: an integer >= 1)"),
    ],
)
def test_bad_overrides_are_user_errors(items: list[str], fragment: str) -> None:
    with pytest.raises(UserError, match=None) as exc:
        apply_overrides(RunConfig(), parse_set_args(items))
    assert fragment in str(exc.value)


def test_registry_rejects_duplicates_and_suggests() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    with pytest.raises(ValueError, match="duplicate thing name 'alpha'"):
        reg.add("alpha", 2)
    with pytest.raises(UserError, match="did you mean alpha"):
        reg.get("alpah")
    assert reg.names("al*") == ["alpha"]


def _toy_study() -> Study:
    return Study(
        name="toy",
        question="?",
        base=RunConfig(epochs=1),
        axes={"a": (Arm("x", {"lr": 0.1}), Arm("y", {"lr": 0.2})), "b": (Arm("1", {"batch_size": 8}),)},
        profiles={p: Profile(seeds=(0, 1)) for p in PROFILES},
        derive=lambda cfg, arm: {"weight_decay": 0.0} if arm["a"] == "y" else {},
    )


def test_cells_are_the_grid_times_seeds() -> None:
    cells = _toy_study().cells("smoke")
    assert len(cells) == 2 * 1 * 2
    assert len({c.run_id for c in cells}) == 4
    y = [c for c in cells if c.arm["a"] == "y"]
    assert all(c.config.lr == 0.2 and c.config.weight_decay == 0.0 and c.config.batch_size == 8 for c in y)
    assert {c.seed for c in cells} == {0, 1}
    fixed, varied = split_fixed_varied([c.config.to_dict() for c in cells])
    assert varied == ["lr", "weight_decay"] and fixed["batch_size"] == 8


def test_unknown_profile_is_a_user_error() -> None:
    with pytest.raises(UserError, match="accepted: full, quick, smoke"):
        _toy_study().cells("fast")


STUDIES = load_studies()


@pytest.mark.parametrize("name", STUDIES.names())
def test_registered_studies_expand_in_every_profile(name: str) -> None:
    from bench.models import list_models

    study = STUDIES.get(name)
    models = set(list_models())
    for profile in PROFILES:
        cells = study.cells(profile)
        assert cells, profile
        assert len({c.run_id for c in cells}) == len(cells), "two cells share a run id"
        assert all(c.config.model in models for c in cells)
        seeds = {c.seed for c in cells}
        assert len(seeds) >= (1 if profile == "smoke" else 3)
    # every published figure matches at least one arm of the full profile
    from fnmatch import fnmatchcase

    labels = [c.arm for c in study.cells("full")]
    for pub in study.published:
        assert any(all(fnmatchcase(arm.get(k, ""), v) for k, v in pub.match.items()) for arm in labels), pub


@pytest.mark.parametrize("name", STUDIES.names())
def test_every_profile_builds_its_models_and_names_known_parts(name: str) -> None:
    """Catches a bad model argument, optimiser, schedule or data set in full/quick before a GPU does."""
    import json

    import torch

    from bench.data import DATASETS
    from bench.models import create_model
    from bench.train.optim import OPTIMIZERS, SCHEDULES

    study = STUDIES.get(name)
    built: set[tuple[str, str, int]] = set()
    for profile in PROFILES:
        for c in study.cells(profile):
            cfg = c.config
            assert cfg.optimizer in OPTIMIZERS and cfg.schedule in SCHEDULES, cfg
            base = cfg.dataset.split(":", 1)[0]
            assert base in DATASETS or base in ("synthetic", "imagefolder"), cfg.dataset
            channels = 1 if cfg.dataset == "mnist" or "channels=1" in cfg.dataset else 3
            key = (cfg.model, json.dumps(cfg.model_kwargs, sort_keys=True), channels)
            if key in built:
                continue
            built.add(key)
            with torch.device("meta"):  # structure only: no memory, no init cost
                create_model(cfg.model, num_classes=10, in_channels=channels, **cfg.model_kwargs)


def test_aux_loss_weight_default_is_the_shared_constant() -> None:
    from bench.models.outputs import AUX_LOSS_WEIGHT, split_outputs

    assert RunConfig().aux_loss_weight == AUX_LOSS_WEIGHT
    import torch

    t, a = torch.zeros(2, 3), torch.ones(2, 3)
    assert split_outputs(t)[1] == []
    main, aux = split_outputs((t, a, None))
    assert main is t and len(aux) == 1 and aux[0] is a
    main, aux = split_outputs({"aux": a, "out": t})
    assert main is t and aux[0] is a
