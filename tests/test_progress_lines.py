"""Progress in any output: one line per finished cell (arm, seed, final errors, time, what is left),
also when stderr is a file, where no progress bar shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bench.cli import main


@pytest.mark.slow
def test_a_run_whose_output_goes_to_a_file_says_each_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--results-dir", str(tmp_path), "run", "residual", "--profile", "smoke", "--set", "epochs=1"])
    assert rc == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if re.match(r"bench: (plain|resnet)\d+ seed 0: ", ln)]
    assert len(lines) == 4, err
    for i, ln in enumerate(lines, 1):
        assert re.search(r": ok, final training error \d+\.\d%, final test error \d+\.\d%, (\d+ s|[\d.]+ min|[\d.]+ h); ", ln), ln
        assert f"; {i}/4 done, " in ln
    assert "left at this pace" in lines[0] and lines[-1].split("4/4 done, ")[1].startswith("all in ")
    # --device auto (the default) falling back to the CPU says so once, before the cells
    said = "bench: --device auto: no CUDA GPU is visible, running on the CPU"
    assert (err.count(said) == 1) == (not torch.cuda.is_available()), err
