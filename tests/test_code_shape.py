"""Habits the maintainers keep, checked: layering, no import cycles, short functions."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_flows_never_imports_analysis_or_experiments():
    for path in (ROOT / "flows").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] in ("analysis", "experiments")}
        assert not bad, f"{path.name} imports {bad}"


def test_analysis_never_imports_experiments():
    for path in (ROOT / "analysis").rglob("*.py"):
        bad = {m for m in _imports(path) if m.split(".")[0] == "experiments"}
        assert not bad, f"{path.name} imports {bad}"


def _function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1  # signature, docstring and body


@pytest.mark.parametrize("package", ["flows", "analysis"])
def test_no_function_has_more_than_80_lines(package):
    long = [(path.name, name, n) for path in (ROOT / package).rglob("*.py")
            for name, n in _function_lengths(path) if n > MAX_LINES]
    assert not long, long


def test_objective_and_operators_import_in_one_direction_only():
    """operators needs Objective only for type hints; each module imports on its own (a fresh interpreter)."""
    source = (ROOT / "flows" / "operators.py").read_text()
    runtime = source.split("if TYPE_CHECKING:")[0]
    assert "from .objective import" not in runtime
    for module in ("flows.operators", "flows.objective", "flows.layout", "flows.modules", "flows.distributed"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
