"""Worker processes (--parallel): the parent prints the same line per finished cell as an inline run
(arm, seed, final errors, time, what is left), also when stderr is a file, where no bar shows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main

pytestmark = pytest.mark.slow


def test_worker_processes_say_each_finished_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 one_thread: Any) -> None:
    rc = main(["--results-dir", str(tmp_path), "run", "residual", "--profile", "smoke", "--device", "cpu",
               "--parallel", "2", "--set", "epochs=1", "--set", "train_subset=64", "--set", "test_subset=64",
               "--no-measure", "--no-extras"])  # the lines are checked, not these
    assert rc == 0
    err = capsys.readouterr().err
    assert "4 cells on 2 worker processes" in err, err
    lines = [ln for ln in err.splitlines() if re.match(r"bench: (plain|resnet)\d+ seed 0: ", ln)]
    assert len(lines) == 4, err  # one per cell, none twice
    for i, ln in enumerate(lines, 1):
        assert re.search(r": ok, final training error \d+\.\d%, final test error \d+\.\d%, "
                         r"(\d+ s|[\d.]+ min|[\d.]+ h); ", ln), ln
        assert f"; {i}/4 done, " in ln, ln
    assert lines[-1].split("4/4 done, ")[1].startswith("all in ")
    assert len({ln.split(":")[1] for ln in lines}) == 4  # four different cells
