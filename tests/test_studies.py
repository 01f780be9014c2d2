"""Every registered study's smoke profile runs end to end on CPU and produces its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.results import read_results
from bench.study import load_studies

STUDIES = load_studies().names()
# The figures drawn from the model measurements (MACs, step time, throughput) and from an end-of-run
# step (the BN gap): a study that draws none of them runs with --no-measure / --no-extras, as its
# report checked here reads neither.
MEASURED_FIGURES = {"bubble", "cost_by_arm", "batch_time"}
END_STEP_FIGURES = {"bn_mode_gap"}


def _bare(figures: tuple[str, ...]) -> list[str]:
    """The flags that leave out what none of ``figures`` draws."""
    return ([] if MEASURED_FIGURES & set(figures) else ["--no-measure"]) + \
        ([] if END_STEP_FIGURES & set(figures) else ["--no-extras"])


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_smoke_profile_end_to_end(name: str, results_dir: Path) -> None:
    study = load_studies().get(name)
    assert main(["--results-dir", str(results_dir), "run", name, "--profile", "smoke", *_bare(study.figures)]) == 0
    cells = study.cells("smoke")
    runs = read_results(results_dir, name).runs_frame(finished_only=True)
    assert len(runs) == len(cells)
    # every cell of every smoke profile trains: a failure here is a bug in the harness or the study
    bad = runs[runs["status"] != "ok"]
    assert bad.empty, bad[["arm", "status", "error"]].to_string()
    assert main(["--results-dir", str(results_dir), "report", name]) == 0
    html = (results_dir / name / "report.html").read_text()
    assert study.question in html.replace("&#39;", "'")
    for kind in study.figures:
        assert f'id="fig-{kind}"' in html, kind
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)) >= len(study.figures)
    assert (results_dir / "index.html").exists()


def _said(description: str, unit: str) -> list[int]:
    """Lengths a description gives in ``unit`` ('200 iterations', '64k iterations'), not the parts of
    a schedule ('over the first 40 iterations') nor another protocol's ("the paper's 64k iterations")."""
    out = []
    for num, k in re.findall(rf"(?<!first )(?<!paper's )(?<![\d,])(\d[\d,]*)(k?) {unit}", description):
        out.append(int(num.replace(",", "")) * (1000 if k else 1))
    return out


@pytest.mark.parametrize("name", STUDIES)
def test_profile_descriptions_state_the_real_length(name: str) -> None:
    """A profile's description that names its length in iterations, epochs or steps per epoch says
    what its cells run (the plan's optimizer steps), so it cannot drift from the profile again."""
    from bench.measure.estimate import estimate_steps, train_size

    study = load_studies().get(name)
    for pname, prof in study.profiles.items():
        cells = study.cells(pname)
        steps = {estimate_steps(c.config) for c in cells}
        for n in _said(prof.description, "iterations"):
            assert steps == {n}, (pname, prof.description, steps)
        for m in re.finditer(r"(\d+) epochs of (\d+) steps", prof.description):
            epochs, per = int(m.group(1)), int(m.group(2))
            # every cell's epoch: its training images over its batch size, rounded up
            sizes = [(train_size(c.config), c.config.batch_size) for c in cells]
            assert all(s is not None and -(-s // b) == per for s, b in sizes), (pname, sizes)
            assert steps == {epochs * per}, (pname, steps)


@pytest.mark.parametrize("val_size", [0, 0.29, 0.1234, 100])
@pytest.mark.parametrize("train_subset", [None, 500, 5000])
def test_the_plans_train_size_is_the_trainers(val_size: float, train_subset: int | None) -> None:
    """The plan's estimates count the training images the trainer takes: the validation split rounds a
    fraction (0.29 of 1,234 is 358, where the estimate once truncated to 357) and a subset larger than
    what the split leaves takes it all."""
    from bench.config import RunConfig
    from bench.measure.estimate import train_size
    from bench.train.engine import prepare_splits

    cfg = RunConfig(model="mnist_cnn", dataset="synthetic:train=1234,test=10,size=8,channels=1",
                    val_size=val_size, train_subset=train_subset)
    assert train_size(cfg) == len(prepare_splits(cfg, None, None).train.labels)
