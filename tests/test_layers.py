"""The floors of cmce: imports only flow down (the contract in pyproject.toml), and no circles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_imports_only_flow_down() -> None:
    """`lint-imports` keeps the layers contract: a break names the import that climbs."""
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "1 kept, 0 broken" in run.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), lazy imports included."""
    adj = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for m in sorted(adj):
        if m not in index:
            visit(m)
    return found


def test_no_import_circles() -> None:
    graph = grimp.build_graph("cmce", include_external_packages=False)
    assert _cycles(graph) == []


def test_a_climbing_import_is_caught(tmp_path) -> None:
    """The check can fail: a lower floor importing a higher one breaks the contract."""
    pkg = tmp_path / "cmce"
    import shutil

    shutil.copytree(ROOT / "cmce", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (pkg / "search" / "index.py").write_text((pkg / "search" / "index.py").read_text()
                                             + "\n\ndef _climb():\n    from cmce.gallery.memory import Gallery  # noqa: F401\n")
    run = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                          "lint_imports_command()"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode != 0
    assert "cmce.search.index -> cmce.gallery.memory" in run.stdout
