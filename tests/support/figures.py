"""The figures the suite prints at the end (docs/requirements.md names each code).

Tests call `record(...)`; conftest's pytest_terminal_summary prints the totals.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

FAULTS: dict[str, dict[str, float]] = defaultdict(
    lambda: {"injected": 0, "survived": 0, "lost": 0, "duplicated": 0}
)
FIGURES: dict[str, Any] = {}
RECOVERY_SECONDS: list[tuple[str, float]] = []


def fault(
    kind: str,
    *,
    injected: int = 1,
    survived: int = 0,
    lost: int = 0,
    duplicated: int = 0,
    recovery_seconds: float | None = None,
) -> None:
    row = FAULTS[kind]
    row["injected"] += injected
    row["survived"] += survived
    row["lost"] += lost
    row["duplicated"] += duplicated
    if recovery_seconds is not None:
        RECOVERY_SECONDS.append((kind, recovery_seconds))


def figure(name: str, value: Any) -> None:
    """Set a named figure (counters add up if both are numbers)."""
    old = FIGURES.get(name)
    if isinstance(old, int | float) and isinstance(value, int | float):
        FIGURES[name] = old + value
    else:
        FIGURES[name] = value


def matrix(name: str, cells: int, failures: list[str], capsys: Any) -> None:
    """Record an authorization matrix's size and failed cells as the figures `{name} cells` and
    `{name} failures`, and print them at once (capsys: the test's fixture)."""
    figure(f"{name} cells", cells)
    figure(f"{name} failures", len(failures))
    with capsys.disabled():
        print(f"\n{name}: {cells} cells, {len(failures)} failures")


def summary_lines() -> list[str]:
    lines: list[str] = []
    if FAULTS:
        total = {"injected": 0.0, "survived": 0.0, "lost": 0.0, "duplicated": 0.0}
        for kind in sorted(FAULTS):
            row = FAULTS[kind]
            for key in total:
                total[key] += row[key]
            lines.append(
                f"faults {kind}: injected {row['injected']:.0f}, survived {row['survived']:.0f}, "
                f"lost {row['lost']:.0f}, duplicated {row['duplicated']:.0f}"
            )
        lines.append(
            f"faults total: injected {total['injected']:.0f}, survived {total['survived']:.0f}, "
            f"lost {total['lost']:.0f}, duplicated {total['duplicated']:.0f}"
        )
    if RECOVERY_SECONDS:
        kind, worst = max(RECOVERY_SECONDS, key=lambda item: item[1])
        lines.append(f"worst recovery time: {worst:.1f} s ({kind})")
    for name in sorted(FIGURES):
        lines.append(f"{name}: {FIGURES[name]}")
    return lines
