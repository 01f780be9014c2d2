"""Progress in any output: one line per finished cell (arm, seed, final errors, time, what is left),
also when stderr is a file, where no progress bar shows."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.store import ResultsStore


@pytest.mark.slow
def test_a_run_whose_output_goes_to_a_file_says_each_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the lines are checked, not the measurements or the end-of-run steps: both left out
    rc = main(["--results-dir", str(tmp_path), "run", "residual", "--profile", "smoke", "--set", "epochs=1",
               "--no-measure", "--no-extras"])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if re.match(r"bench: (plain|resnet)\d+ seed 0: ", ln)]
    assert len(lines) == 4, err
    for i, ln in enumerate(lines, 1):
        assert re.search(r": ok, final training error \d+\.\d%, final test error \d+\.\d%, "
                         r"(\d+ s|[\d.]+ min|[\d.]+ h); ", ln), ln
        assert f"; {i}/4 done, " in ln
    assert "left at this pace" in lines[0] and lines[-1].split("4/4 done, ")[1].startswith("all in ")
    # --device auto (the default) falling back to the CPU says so once, before the cells
    said = "bench: --device auto: no CUDA GPU is visible, running on the CPU"
    assert (err.count(said) == 1) == (not torch.cuda.is_available()), err
    # --no-measure / --no-extras: the records lack the measurements, the BN gap and the artifacts
    records = ResultsStore(tmp_path).records("residual")
    assert len(records) == 4 and all(not r.measurements for r in records)
    gaps = [r.metrics.get("final_train_acc_evalmode") for r in records]
    assert all(g is None or math.isnan(g) for g in gaps), gaps
    assert not list(tmp_path.rglob("artifacts.npz"))


def test_time_left_weights_the_cells_by_their_training_multiply_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two 20-layer cells done in 60 s leave two 56-layer ones (3.1x the multiply-adds each): about
    3 min 6 s, where counting cells would say 60 s."""
    import bench.runner as runner
    from bench.measure.estimate import train_macs
    from bench.study import STUDIES

    cells = STUDIES.get("residual").cells("cpu")  # two seeds per arm
    small = [c for c in cells if c.config.model == "resnet20"]
    big = [c for c in cells if c.config.model == "resnet56"]
    assert len(small) == len(big) == 2
    ratio = train_macs(big[0].config) / train_macs(small[0].config)
    assert 3.0 < ratio < 3.2, ratio  # 125.5 vs 40.6 M multiply-adds per image, same length
    pace = runner.Pace([*small, *big])
    for c in small:
        pace.done.add(c.run_id)
    assert pace.left(60.0) == f"about {runner.human_duration(60.0 * ratio)} left at this pace"
    # a cell whose size cannot be known before it runs: every cell counts the same
    monkeypatch.setattr(runner, "train_macs", lambda cfg: float("nan"))
    even = runner.Pace([*small, *big])
    even.done.update(c.run_id for c in small)
    assert even.left(60.0) == f"about {runner.human_duration(60.0)} left at this pace"
