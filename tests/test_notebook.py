"""The example notebook runs top to bottom in a real Jupyter kernel (ipykernel, started by nbclient)
on the CPU, and its outputs hold the tables and a figure it promises."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "smoke_study.ipynb"


def _kernel(tmp_path: Path, results: Path) -> KernelManager:
    """A kernel of this test's own Python (a kernelspec in a temp folder, so no installed 'python3'
    spec of another environment is picked), importing this checkout's ``bench``."""
    kernels = tmp_path / "kernels"
    spec = kernels / "bench-test"
    spec.mkdir(parents=True)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
           "BENCH_RESULTS_DIR": str(results),
           # one intra-op thread, as the one_thread fixture: tiny models on a busy machine train faster so
           "OMP_NUM_THREADS": "1"}
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "bench test", "language": "python", "env": env}))
    return KernelManager(kernel_name="bench-test", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.slow
def test_example_notebook_runs_in_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Jupyter's and IPython's own state (connection files, profiles, startup scripts) in the temp folder.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    results = tmp_path / "results"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not _outputs(nb) and all(c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook with its outputs cleared"
    probe = ("import sys, bench, matplotlib\n"
             "for x in (sys.executable, bench.__file__, matplotlib.get_backend()): print(x)")
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    km = _kernel(tmp_path, results)
    client = NotebookClient(nb, km=km, timeout=300, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError naming the cell on any error
    finally:  # a kernel manager handed in is not shut down by nbclient: the kernel would outlive the test
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    print(f"notebook executed in {time.perf_counter() - start:.1f} s")

    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    warned = [o.text for o in outputs if o.output_type == "stream" and "Warning" in o.text]
    assert not warned, f"a lecture notebook shows no warnings: {warned}"
    html = [o.data["text/html"] for o in outputs if "data" in o and "text/html" in o.data]
    pngs = [o.data["image/png"] for o in outputs if "data" in o and "image/png" in o.data]
    assert any('id="claims-table"' in h for h in html), "the report's verdict table is shown"
    assert sum("<table" in h for h in html) >= 4, "runs, history, report and measurement tables are shown"
    assert any("data:image/png;base64," in h for h in html), "the report shows its figures inline"
    assert pngs, "the figure cell shows a PNG"
    report_cell = next(c for c in nb.cells if c.cell_type == "code" and c.source.rstrip().endswith("\nreport"))
    assert [o.output_type for o in report_cell.outputs] == ["execute_result"], "no stray figures beside the report"
    # the kernel ran this Python and this checkout's bench, and building a report left the notebook's
    # own plots showing (the inline backend, not switched to Agg)
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs).split("\n")
    assert printed[0] == sys.executable and Path(printed[1]).is_relative_to(REPO / "bench")
    assert "inline" in printed[2]
    # and it wrote where it was told: the records and the report under BENCH_RESULTS_DIR, nothing beside it
    assert (results / "residual-mnist" / "report.html").is_file() and (results / "index.html").is_file()
    summaries = list((results / "residual-mnist" / "runs").glob("*/summary.json"))
    assert len(summaries) == 3
    assert not (tmp_path / "results" / "results").exists() and not (NOTEBOOK.parent / "results").exists()
