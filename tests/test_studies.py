"""Every registered study's smoke profile runs end to end on CPU and produces its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.cli import main
from bench.store import ResultsStore
from bench.study import load_studies

STUDIES = load_studies().names()


@pytest.mark.slow
@pytest.mark.parametrize("name", STUDIES)
def test_smoke_profile_end_to_end(name: str, results_dir: Path) -> None:
    assert main(["--results-dir", str(results_dir), "run", name, "--profile", "smoke"]) == 0
    store = ResultsStore(results_dir)
    study = load_studies().get(name)
    cells = study.cells("smoke")
    runs = store.load_runs(name)
    assert len(runs) == len(cells)
    # smoke runs may diverge or fail honestly, but every cell must be finished and recorded
    assert set(runs["status"]) <= {"ok", "diverged", "oom", "failed"}
    assert (runs["status"] == "ok").sum() >= len(cells) // 2, runs[["arm_label", "status", "error"]]
    assert main(["--results-dir", str(results_dir), "report", name]) == 0
    html = (results_dir / name / "report.html").read_text()
    assert study.question in html.replace("&#39;", "'")
    for kind in study.figures:
        assert f'id="fig-{kind}"' in html, kind
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)) >= len(study.figures)
    assert (results_dir / "index.html").exists()
