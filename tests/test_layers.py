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
    assert {
        "osai.client",
        "reports.pipeline.dispatcher",
        "reports.pipeline.steps",
        "reports.spend.pricing",
        "reports.views.reports",
    } <= set(GRAPH)
    assert "reports.pipeline.connections" in GRAPH["reports.pipeline.steps"]
    assert "reports.pipeline.steps" in GRAPH["reports.tasks"]  # a late import counts too


def test_there_are_no_import_cycles_late_imports_included() -> None:
    assert _cycles() == []


# The layers of docs/architecture.md, top first: a module may import its own layer and the
# layers below it, never one above. Inside a package, its modules are layered the same way.
LAYERS: list[tuple[str, ...]] = [
    ("osai_dashboard", "reports.tasks", "reports.urls", "reports.apps", "reports.checks"),
    ("reports.admin",),
    ("reports.management",),
    ("reports.views", "reports.templatetags"),
    ("reports.pages",),
    ("reports.retention",),
    ("reports.teams", "reports.integrations"),
    ("reports.spend",),
    ("reports.pipeline",),
    (
        "reports.access",
        "reports.periods",
        "reports.formatting",
        "reports.schedules",
        "reports.audit",
    ),
    ("reports.models",),
    ("reports.metrics", "reports.crypto"),
    ("osai",),
]
INSIDE: dict[str, list[tuple[str, ...]]] = {
    "reports.pipeline": [
        ("report_requests",),
        ("steps",),
        ("dispatcher", "rollups"),
        ("buckets", "connections"),
        ("progress", "eta", "failpoints"),
    ],
    "reports.spend": [
        ("budgets", "digests", "anomaly_alerts"),
        ("monthly", "exports", "tracking", "notify", "period_spend", "channels"),
        ("ledger", "outbound", "discrepancies", "messages", "anomalies"),
        ("pricing",),
        ("usage",),
    ],
    "reports.teams": [
        ("invitations",),
        ("team_reports", "roster", "price_books"),
        ("sharing", "member_spend"),
    ],
    "reports.pages": [
        ("team", "overview", "downloads"),
        ("report", "price_book", "team_spend"),
        ("members", "history", "activity", "tiles", "links", "anomalies"),
        ("blocks",),
        ("charts",),
    ],
}


def _rank(name: str, layers: list[tuple[str, ...]], prefix: str = "") -> int | None:
    for rank, members in enumerate(layers):
        for member in members:
            full = prefix + member
            if name == full or name.startswith(full + "."):
                return rank
    return None


def test_imports_only_go_down_the_layers() -> None:
    offenders = []
    for name, targets in GRAPH.items():
        for target in targets:
            if target == "reports":  # `from reports import crypto` names the package too
                continue
            mine, theirs = _rank(name, LAYERS), _rank(target, LAYERS)
            if mine is None or theirs is None:
                offenders.append(f"{name} -> {target} (a module of no layer)")
            elif theirs < mine:
                offenders.append(f"{name} -> {target}")
            for package, inner in INSIDE.items():
                prefix = package + "."
                if name.startswith(prefix) and target.startswith(prefix):
                    a, b = _rank(name, inner, prefix), _rank(target, inner, prefix)
                    if a is not None and b is not None and b < a:
                        offenders.append(f"{name} -> {target} (inside {package})")
    assert sorted(offenders) == []


def test_the_layers_name_every_module() -> None:
    unplaced = sorted(name for name in GRAPH if name != "reports" and _rank(name, LAYERS) is None)
    assert unplaced == []
    for package, inner in INSIDE.items():
        modules = [n for n in GRAPH if n.startswith(package + ".")]
        assert sorted(n for n in modules if _rank(n, inner, package + ".") is None) == []


def test_the_osai_package_is_plain_python() -> None:
    assert not [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if name.startswith("osai.") or name == "osai"
        for target in targets
        if not target.startswith("osai")
    ]


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
