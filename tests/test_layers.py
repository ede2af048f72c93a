"""The shape of the code (docs/architecture.md): no import cycles, imports only go down.

Every `import` and `from … import` of the project's own modules is read from the source with
`ast`, including imports inside functions (a late import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("osai", "reports", "osai_dashboard")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The project's modules that `name` imports (each `from a import b` may name a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target in MODULES and target != name:
                yield target


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in GRAPH:
        if node not in index:
            visit(node)
    return cycles


def test_the_graph_sees_the_project() -> None:
    assert {"osai.client", "reports.pipeline", "reports.services", "reports.views.reports"} <= set(
        GRAPH
    )
    assert "reports.connections" in GRAPH["reports.pipeline"]


def test_there_are_no_import_cycles_late_imports_included() -> None:
    assert _cycles() == []


@pytest.mark.parametrize(
    ("importer", "forbidden"),
    [
        ("osai", ("reports", "osai_dashboard")),  # osai is plain Python
        ("reports.pipeline", ("reports.services", "reports.teams", "reports.pages")),
        ("reports.progress", ("reports.pipeline", "reports.services")),
        ("reports.connections", ("reports.pipeline", "reports.services")),
        ("reports.pages", ("reports.views",)),
        ("reports.metrics", ("reports.models",)),
    ],
)
def test_imports_only_go_down_the_layers(importer: str, forbidden: tuple[str, ...]) -> None:
    offenders = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name == importer or name.startswith(importer + ".")
        for target in targets
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    )
    assert offenders == []


def test_the_osai_package_imports_without_django() -> None:
    script = (
        "import sys, osai.client, osai.sandbox, osai.contract; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'reports', 'osai_dashboard')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
