"""Figures: printed one per line as they are measured, then written to BENCHMARKS.md."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from bench.env import ROOT

T = TypeVar("T")


@dataclass
class Figure:
    target: str
    label: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: a figure for context, no goal of its own
    why: str = ""


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(
        self,
        target: str,
        label: str,
        value: str,
        *,
        goal: str = "",
        met: bool | None = None,
        why: str = "",
    ) -> Figure:
        figure = Figure(target, label, value, goal, met, why)
        self.figures.append(figure)
        print(format_line(figure), flush=True)
        if why and met is False:
            print(f"{target:<4}   why: {why}", flush=True)
        return figure

    def median_at_most(
        self,
        target: str,
        label: str,
        values: Sequence[float],
        limit: float,
        *,
        goal: str = "",
        digits: int = 2,
        detail: str = "",
        why: str = "",
    ) -> Figure:
        """The median of `values` (per-round ratios, mostly) against an upper bound: met when
        it is ≤ `limit`. The goal reads "≤ <limit>" unless given; `detail` follows the value."""
        value = median(values)
        return self.add(
            target,
            label,
            f"{value:.{digits}f}{detail}",
            goal=goal or f"≤ {limit:g}",
            met=value <= limit,
            why=why,
        )

    def note(self, target: str, text: str) -> None:
        """A line of explanation under a target, printed and kept (not a figure)."""
        self.add(target, "note", text)

    def error(self, target: str, text: str) -> None:
        self.errors.append(f"{target}: {text}")
        print(f"{target:<4} ERROR: {text}", flush=True)


def format_line(f: Figure) -> str:
    if f.label == "note":
        return f"{f.target:<4}   note: {f.value}"
    verdict = ""
    if f.goal:
        state = {True: "met", False: "MISSED", None: "info"}[f.met]
        verdict = f"   [goal {f.goal}: {state}]"
    return f"{f.target:<4} {f.label}: {f.value}{verdict}"


# --- Statistics ---------------------------------------------------------------------------


def interleaved(rounds: int, *measures: Callable[[], T]) -> list[list[T]]:
    """Every measure once per round, in turn (A B A B ...); each measure's results."""
    runs: list[list[T]] = [[] for _ in measures]
    for _ in range(rounds):
        for results, measure in zip(runs, measures, strict=True):
            results.append(measure())
    return runs


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    return [a / b for a, b in zip(numerators, denominators, strict=True) if b]


def fmt_ratios(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


# --- BENCHMARKS.md -------------------------------------------------------------------------


def _run(*argv: str) -> str:
    try:
        return subprocess.run(
            argv, cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
        ).stdout.strip()
    except OSError:
        return "?"


def _commit() -> str:
    head = _run("git", "rev-parse", "--short", "HEAD")
    dirty = _run("git", "status", "--porcelain", "--untracked-files=no")
    return f"{head} (with uncommitted changes)" if dirty else head


def _order(target: str) -> tuple[int, str]:
    """P1 < P2 < ... < P19, then anything else."""
    digits = target[1:]
    return (int(digits), target) if target.startswith("P") and digits.isdigit() else (99, target)


def machine_facts() -> list[tuple[str, str]]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    total_kb = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    return [
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("commit", _commit()),
        ("nproc", _run("nproc")),
        ("cpu", cpu),
        ("memory", f"{total_kb / 1024 / 1024:.1f} GiB"),
        ("python", platform.python_version()),
        ("os", f"{platform.system()} {platform.release()}"),
        ("chromium", _run("/usr/bin/chromium", "--version") or "?"),
        ("wrk", (_run("wrk", "--version") or "not installed").splitlines()[0]),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


def write_markdown(
    path: Path,
    results: Results,
    *,
    facts: list[tuple[str, str]],
    setup: list[str],
    wall_seconds: float,
) -> None:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); overwritten on every run. Targets",
        "and method: docs/requirements.md (counts over times; timings interleaved A B A B, the",
        "median of per-round ratios).",
        "",
        "## Machine",
        "",
        *(f"- {name}: {value}" for name, value in facts),
        f"- wall time of the run: {wall_seconds / 60:.1f} min ({wall_seconds:.0f} s)",
        "",
        "## Set-up",
        "",
        *(f"- {line}" for line in setup),
        "",
        "## Summary",
        "",
        "| Target | Goal | Result |",
        "|---|---|---|",
    ]
    ordered = sorted(results.figures, key=lambda f: _order(f.target))  # stable within a target
    for f in ordered:
        if f.goal:
            state = {True: "met", False: "**missed**", None: "info"}[f.met]
            lines.append(f"| {f.target} {f.label} | {f.goal} | {f.value} ({state}) |")
    lines += ["", "## Every figure"]
    current = ""
    for f in ordered:
        if f.target != current:
            current = f.target
            lines += ["", f"### {current}", ""]
        lines.append(f"- {format_line(f)[5:].strip()}")
        if f.why and f.met is False:
            lines.append(f"  - why: {f.why}")
    if results.errors:
        lines += ["", "## Errors", "", *(f"- {e}" for e in results.errors)]
    path.write_text("\n".join(lines) + "\n")
