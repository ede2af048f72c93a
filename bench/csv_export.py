"""P10: the CSV export streamed for 10,000 and 100,000 rows.

Each measurement is a fresh process (`python -m bench.csv_export --report N`) that
calls the export view itself (reports.views.exports.report_export_csv, with its default of
costs included) and consumes its StreamingHttpResponse to the end, as gunicorn would. It
prints the rows, bytes, seconds, its RSS before streaming and its peak RSS (VmHWM of
/proc/self/status: unlike ru_maxrss, it does not count the parent's pages from the fork).
A fresh process per run makes peak RSS a clean measure of what the export held at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench import procs
from bench.context import Bench
from bench.env import BENCH_DIR, TEMPLATE_DB, child_env, copy_database
from bench.results import Results, fmt_ratios, interleaved, median, ratios

ROUNDS = 5
SIZES = (10_000, 100_000)


def _status_kb(field: str) -> int:
    """A memory line of /proc/self/status in kB: VmRSS now, VmHWM the peak of this image."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(report_id: int) -> dict[str, float]:
    """Stream one report's CSV through the view, in this process."""
    import django

    django.setup()
    from django.test import RequestFactory

    from reports.models import Report
    from reports.views.exports import report_export_csv

    report = Report.objects.select_related("owner").get(pk=report_id)
    request = RequestFactory().get(f"/reports/{report_id}/export.csv", SERVER_NAME="127.0.0.1")
    request.user = report.owner
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    response = report_export_csv(request, report_id)
    lines = size = 0
    for chunk in response.streaming_content:
        lines += 1
        size += len(chunk)
    seconds = time.perf_counter() - started
    peak = _status_kb("VmHWM")
    return {
        "lines": lines,
        "bytes": size,
        "seconds": seconds,
        "rss_before_kb": before,
        "peak_kb": peak,
    }


def _build() -> tuple[Path, dict[int, int]]:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / "p10.sqlite3")
    rows = [arg for n in SIZES for arg in ("--rows", str(n))]
    built = procs.json_answer(child_env(db), "bench.data", "p10", *rows)
    return db, {int(k): v for k, v in built.items()}


def _one(db: Path, report_id: int) -> dict[str, float]:
    result: dict[str, float] = procs.json_answer(
        child_env(db), "bench.csv_export", "--report", str(report_id)
    )
    return result


def run_p10(bench: Bench, results: Results) -> None:
    """P10: bulk-create 100,000 finished daily buckets in a report (and a report of the first
    10,000 of them) in a copy of the migrated database; stream each report's CSV in a fresh
    process, 10k and 100k interleaved over 5 rounds. Time ratio and peak-RSS ratio, medians
    of per-round ratios. Goal: time ≈ 10 (≤ 12), peak memory ≤ 1.2."""
    small_n, big_n = SIZES
    started = time.monotonic()
    db, reports = _build()
    results.add(
        "P10",
        "set-up: bulk_create of the rows",
        f"{big_n:,} buckets + {small_n + big_n:,} report links "
        f"in {time.monotonic() - started:.1f} s",
    )
    small, big = interleaved(
        ROUNDS, lambda: _one(db, reports[small_n]), lambda: _one(db, reports[big_n])
    )
    time_ratios = ratios([b["seconds"] for b in big], [s["seconds"] for s in small])
    memory_ratios = ratios([b["peak_kb"] for b in big], [s["peak_kb"] for s in small])
    for n, runs in ((small_n, small), (big_n, big)):
        results.add(
            "P10",
            f"{n:,} rows, with costs (the export's default): time, peak RSS (median)",
            f"{median([r['seconds'] for r in runs]):.2f} s, "
            f"{median([r['peak_kb'] for r in runs]) / 1024:.1f} MB (before streaming "
            f"{median([r['rss_before_kb'] for r in runs]) / 1024:.1f} MB; "
            f"{int(runs[0]['lines']):,} CSV lines, {int(runs[0]['bytes']):,} B)",
        )
    results.add("P10", "per-round time ratios", fmt_ratios(time_ratios))
    label = f"ratio 100k / 10k (median of {ROUNDS})"
    results.median_at_most("P10", f"time {label}", time_ratios, 12, goal="≈ 10, ≤ 12")
    results.median_at_most("P10", f"peak RSS {label}", memory_ratios, 1.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--report", type=int, required=True)
    print(json.dumps(measure(parser.parse_args().report)))


if __name__ == "__main__":
    main()
