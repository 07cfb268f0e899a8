"""The shape of the package: subpackages, no import circle, modules of readable size, and every
third-party import declared in pyproject.toml."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "translate"
MAX_LINES = 400
# import name -> distribution name, where they differ
DISTRIBUTIONS = {"yaml": "pyyaml"}


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def module_level_imports(path: Path, name: str, known: dict) -> list[tuple[str, int]]:
    """(module imported, line) for the imports that run when ``name`` is imported: those at
    the top level of the file (not in functions, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # ``from . import x`` may name a module
                full = f"{base}.{alias.name}"
                found.append((full if full in known else base, node.lineno))
    return found


def third_party(path: Path) -> set[str]:
    """Top-level names of the modules a file imports anywhere, other than its own package's."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    ours = {"translate", "tests", "bench"}
    return {n for n in names if n not in ours and n not in sys.stdlib_module_names}


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """The required distributions and each extra's, by normalised name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]

    def names(requirements: list[str]) -> set[str]:
        return {
            req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip()
            for req in requirements
        }

    extras = {k: names(v) for k, v in project.get("optional-dependencies", {}).items()}
    return names(project["dependencies"]), extras


def test_the_package_is_grouped_into_subpackages():
    packages = {p.parent.name for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert {"data", "model", "train", "serve"} <= packages
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(top) <= 14, top  # the rest lives in the subpackages


def test_no_module_is_longer_than_the_limit():
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_circle():
    known = modules()
    graph = {
        name: {dep for dep, _ in module_level_imports(path, name, known) if dep in known}
        for name, path in known.items()
    }
    # a module's package is imported before it; that edge is no circle of ours
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not name.startswith(dep + ".")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                circle = path[path.index(dep) :] + [dep]
                pytest.fail("import circle: " + " -> ".join(circle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_circle_check_finds_a_circle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import x\n")
    b.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import y\n")
    known = {"p.a": a, "p.b": b}
    assert [d for d, _ in module_level_imports(a, "p.a", known)] == ["p.b"]
    assert [d for d, _ in module_level_imports(b, "p.b", known)] == ["typing"]  # not run


def test_every_third_party_import_is_declared():
    required, extras = declared()
    optional = set().union(*extras.values())
    for path in PACKAGE.rglob("*.py"):
        for name in third_party(path):
            dist = DISTRIBUTIONS.get(name, name)
            assert dist in required | optional, f"{path.relative_to(ROOT)} imports {name}"
    # what the package imports at its core must not hide in an extra
    core = set()
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name not in ("serve", "export") and path.name != "plots.py":
            core |= {DISTRIBUTIONS.get(n, n) for n in third_party(path)}
    assert core <= required, f"imported but optional: {core - required}"


def test_tests_import_only_what_dev_declares():
    required, extras = declared()
    allowed = required | extras.get("dev", set()) | extras.get("plots", set())
    for path in (ROOT / "tests").glob("*.py"):
        for name in third_party(path):
            assert DISTRIBUTIONS.get(name, name) in allowed, f"{path.name} imports {name}"
