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
    # every cell of every smoke profile trains: a failure here is a bug in the harness or the study
    bad = runs[runs["status"] != "ok"]
    assert bad.empty, bad[["arm_label", "status", "error"]].to_string()
    assert main(["--results-dir", str(results_dir), "report", name]) == 0
    html = (results_dir / name / "report.html").read_text()
    assert study.question in html.replace("&#39;", "'")
    for kind in study.figures:
        assert f'id="fig-{kind}"' in html, kind
    assert len(re.findall(r'src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)) >= len(study.figures)
    assert (results_dir / "index.html").exists()
