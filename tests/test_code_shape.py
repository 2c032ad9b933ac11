"""Habits the maintainers keep, checked: the floors of the house, no import cycles, small folders, short functions."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "analysis", "experiments")
MAX_LINES = 80
MAX_MODULES = 12

FLOORS = {  # module prefix -> floor; a module may import only from its own floor or below
    "flows.validate": 0, "flows.progress": 0, "flows.records": 0, "flows.objective": 0,
    "flows.curvature": 1, "flows.dynamics": 2, "flows": 2, "analysis": 3, "experiments": 4,
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The first-party modules an ``import`` / ``from … import`` names (TYPE_CHECKING and function-level included)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = [target]
    found += [f"{target}.{alias.name}" for alias in node.names]  # `from pkg import submodule`
    return found


def _graph() -> dict[str, set[str]]:
    """module -> the first-party modules it imports anywhere in its source."""
    paths = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = _resolve(node, module, path.name == "__init__.py")
                if all(name in paths for name in names[1:]):
                    names = names[1:]  # `from package import submodule, …`: the submodules, not the face
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            targets.update(name for name in names if name in paths)
        graph[module] = targets - {module}
    return graph


def _floor(module: str) -> int:
    best = max((prefix for prefix in FLOORS if module == prefix or module.startswith(prefix + ".")), key=len)
    return FLOORS[best]


def test_every_module_imports_only_its_floor_or_below():
    """validate/progress/records/objective < curvature < dynamics < analysis < experiments (``flows/__init__``, the
    public face, may gather every floor of flows)."""
    upward = [(m, t) for m, targets in _graph().items() for t in targets if _floor(t) > _floor(m)]
    assert not upward, upward


def test_flows_never_imports_analysis_or_experiments():
    bad = [(m, t) for m, ts in _graph().items() if m.startswith("flows") for t in ts
           if t.split(".")[0] in ("analysis", "experiments")]
    assert not bad, bad


def test_analysis_never_imports_experiments():
    bad = [(m, t) for m, ts in _graph().items() if m.startswith("analysis") for t in ts if t.startswith("experiments")]
    assert not bad, bad


def test_no_import_cycle_counting_type_only_imports():
    """A package's ``__init__`` importing its own modules is not a cycle (Python loads the package first); a module
    importing its own package's face is, and so is any other loop."""
    graph = {m: {t for t in ts if not (t.startswith(m + ".") and _is_package(m))} for m, ts in _graph().items()}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if seen.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in seen:
                visit(nxt)
        stack.pop()
        seen[node] = 2

    for module in sorted(graph):
        if module not in seen:
            visit(module)


def test_no_module_imports_its_own_package_face():
    """``from .. import X`` inside a package runs while that package's ``__init__`` is still loading: a cycle."""
    inward = [(m, t) for m, ts in _graph().items() for t in ts if m.startswith(t + ".")]
    assert not inward, inward


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").exists()


@pytest.mark.parametrize("package", [*PACKAGES, "tests"])
def test_no_folder_holds_more_than_12_modules(package):
    crowded = {str(folder.relative_to(ROOT)): n for folder in [ROOT / package, *(ROOT / package).rglob("*")]
               if folder.is_dir() and folder.name != "__pycache__"
               and (n := len([p for p in folder.glob("*.py") if p.name != "__init__.py"])) > MAX_MODULES}
    assert not crowded, crowded


def _function_lengths(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1  # signature, docstring and body


@pytest.mark.parametrize("package", ["flows", "analysis"])
def test_no_function_has_more_than_80_lines(package):
    long = [(path.name, name, n) for path in (ROOT / package).rglob("*.py")
            for name, n in _function_lengths(path) if n > MAX_LINES]
    assert not long, long


@pytest.mark.parametrize("module", ["flows.objective", "flows.curvature.operators", "flows.records.trajectory",
                                    "flows.objective.modules", "flows.objective.distributed", "flows.validate"])
def test_lower_floors_import_on_their_own(module):
    """Each low module imports in a fresh interpreter without the packages above it being loaded first."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_tests_of_flows_and_analysis_never_import_experiments():
    """Nor does anything every test loads (the shared conftest and models)."""
    shared = [ROOT / "tests" / "conftest.py", ROOT / "tests" / "models.py"]
    for folder in ("flows", "analysis"):
        for path in [*(ROOT / "tests" / folder).rglob("*.py"), *shared]:
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                         else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                assert not any(n.split(".")[0] == "experiments" for n in names), f"{path.name} imports {names}"
