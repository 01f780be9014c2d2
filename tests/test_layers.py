"""The import layers hold: no module imports one from a higher layer (lazy imports inside functions
included), the report and the data exports read records without the runner or the executors, and
only the entry points (the command line and bench.api) bring the study registry (``experiments``) in."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# bottom to top; a module may import its own layer and those below
LAYERS: list[tuple[str, ...]] = [
    ("errors", "text", "faults", "registry", "files", "locks", "device", "config", "record", "figure_kinds", "models",
     "data"),
    ("measure", "train", "checks"),
    ("study", "claim", "study_checks", "store", "results"),
    ("runner",),
    ("executors", "report", "frames", "export"),
    ("commands",),
    ("api",),
    ("cli", "__main__"),
]
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}
READERS = ("report", "frames", "export")  # read records only
ENTRY = ("cli", "api")  # the entry points (command line, notebook API): the only importers of experiments


def _part(module: str) -> str:
    """'bench.report.data' -> 'report'; 'bench.runner' -> 'runner'."""
    return module.split(".")[1] if module.startswith("bench.") else module


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


MODULES = sorted(BENCH.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(BENCH)))
def test_no_import_from_a_higher_layer(path: Path) -> None:
    rel = path.relative_to(BENCH)
    me = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "bench"
    if me == "bench":
        return  # the package's own __init__
    assert me in LEVEL, f"{rel}: place this module in LAYERS"
    for mod in _imports(path):
        if mod == "experiments" or mod.startswith("experiments."):
            assert me in ENTRY, f"{rel} imports the study registry {mod}: only the command line and bench.api do"
        if not mod.startswith("bench."):
            continue
        other = _part(mod)
        assert LEVEL.get(other, -1) <= LEVEL[me], f"{rel} imports {mod}, a higher layer"
        if me in READERS:
            assert other not in ("runner", "executors"), f"{rel} imports {mod}: readers see records only"
