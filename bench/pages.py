"""P6 and P7: what pages and the status poll cost, on gunicorn (2 workers) under load.

Latencies come from `load.run` (wrk, 2 connections: as many as gunicorn has workers, so the
figure is service time, not queueing). Query counts come from Django's test client in this
process with CaptureQueriesContext, on the main bench database.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from functools import partial
from typing import Any

import requests
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bench import load, procs
from bench.context import Bench
from bench.data import (
    bulk_done_reports,
    make_connection,
    make_user,
    monthly_periods,
    signed_in_client,
)
from bench.env import BENCH_DIR, TEMPLATE_DB, child_env, copy_database
from bench.results import Results, fmt_ratios, interleaved

ROUNDS = 7  # short runs on a shared machine: more rounds steady the median
P6_SECONDS = 3.0
P7_SECONDS = 3.0
WARM_UP_SECONDS = 1.0
P6_EXTRA_REPORTS = 10_000


def _queries(client: Client, url: str, **headers: str) -> int:
    """Queries one GET makes, after one warm-up GET (one-time lookups are not counted)."""
    client.get(url, **headers)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, **headers)
    assert response.status_code in (200, 286), (url, response.status_code)
    return len(captured)


def warm_up(url: str, headers: dict[str, str] | None = None) -> None:
    """Check that `url` answers as intended (not a redirect to the login page), then load it
    for WARM_UP_SECONDS."""
    session = requests.Session()
    session.trust_env = False
    response = session.get(url, headers=headers, allow_redirects=False, timeout=30)
    if response.status_code not in (200, 286):
        raise RuntimeError(f"{url} answered {response.status_code}")
    load.run(url, WARM_UP_SECONDS, headers)


# --- P7 ---------------------------------------------------------------------------------------


def run_p7(bench: Bench, results: Results) -> None:
    """P7: the status poll. Queries per poll of a running report (test client, in-process);
    its p95 under load vs the login page (anonymous GET /accounts/login/, a trivial view),
    interleaved A B over 7 rounds of 3 s each, median of the per-round p95 ratios."""
    from reports.models import Report

    user = make_user(f"p7-{secrets.token_hex(3)}")
    conn, _ = make_connection(user, "P7")
    now = timezone.now()
    report = Report.objects.create(
        owner=user,
        period_start=now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
        period_end=now,
        granularity="month",
        state=Report.State.RUNNING,
        buckets_total=12,
        buckets_done=3,
        started_at=now,
    )
    report.connections.add(conn)
    status_path = f"/reports/{report.pk}/status/?seen=3"
    client = signed_in_client(user)
    queries = _queries(client, status_path, HTTP_HX_REQUEST="true")
    results.add("P7", "queries per status poll", str(queries), goal="≤ 2", met=queries <= 2)

    session = client.cookies["sessionid"].value
    status_url = f"{bench.base_url}{status_path}"
    status_headers = {"Cookie": f"sessionid={session}", "HX-Request": "true"}
    trivial_url = f"{bench.base_url}/accounts/login/"
    warm_up(status_url, status_headers)
    warm_up(trivial_url)
    status, trivial = interleaved(
        ROUNDS,
        lambda: load.run(status_url, P7_SECONDS, status_headers),
        lambda: load.run(trivial_url, P7_SECONDS),
    )
    per_round = load.p95_ratios(status, trivial)
    medians = "p50 / p95 (median of rounds)"
    results.add("P7", f"status poll {medians}", f"{load.p50_p95(status)} {load.tally(status)}")
    trivial_tally = load.tally(trivial, errors=False)
    results.add("P7", f"login page {medians}", f"{load.p50_p95(trivial)} {trivial_tally}")
    results.add("P7", "per-round p95 ratios", fmt_ratios(per_round))
    label = f"status poll p95 / login page p95 ({load.tool()}, median of {ROUNDS})"
    results.median_at_most("P7", label, per_round, 3)


# --- P6 ---------------------------------------------------------------------------------------


def _seed_p6(name: str, extra: int) -> tuple[Any, dict[str, Any]]:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / f"{name}.sqlite3")
    seeded = procs.json_answer(
        child_env(db), "bench.data", "p6", "--extra-reports", str(extra), timeout=300
    )
    return db, seeded


def _query_counts(results: Results) -> None:
    """Queries per page with 1 and with 50 finished reports of the user (N+1 check)."""
    user = make_user(f"p6q-{secrets.token_hex(3)}")
    conn, _ = make_connection(user, "P6q")
    now = timezone.now()
    first = bulk_done_reports(user, conn, [monthly_periods(12, now)], "month")[0]
    client = signed_in_client(user)
    pages = {"dashboard": "/", "history": "/reports/", "report page": f"/reports/{first}/"}
    at_one = {name: _queries(client, url) for name, url in pages.items()}
    more = [monthly_periods(12, now - timedelta(days=400 * (n + 1))) for n in range(49)]
    bulk_done_reports(user, conn, more, "month", requested_at=now - timedelta(days=1))
    at_fifty = {name: _queries(client, url) for name, url in pages.items()}
    for name in pages:
        results.add(
            "P6",
            f"queries, {name}: 1 vs 50 reports",
            f"{at_one[name]} vs {at_fifty[name]}",
            goal="equal",
            met=at_one[name] == at_fifty[name],
        )


def _figures_built(results: Results) -> None:
    """P14: Plotly figures built by a first and a repeat view of a finished report page (and
    of its cost view), counted in this process around the page's own builder."""
    from reports.pages import report as report_page

    user = make_user(f"p14-{secrets.token_hex(3)}")
    conn, _ = make_connection(user, "P14")
    report = bulk_done_reports(user, conn, [monthly_periods(12, timezone.now())], "month")[0]
    client = signed_in_client(user)
    built: list[int] = []
    real = report_page.build_figures

    def counting(*args: Any, **kwargs: Any) -> Any:
        figures = real(*args, **kwargs)
        built.append(len(figures))
        return figures

    report_page.build_figures = counting  # type: ignore[assignment]
    try:
        counts = []
        for url in (f"/reports/{report}/", f"/reports/{report}/?view=cost"):
            for _ in range(2):
                before = sum(built)
                assert client.get(url).status_code == 200
                counts.append(sum(built) - before)
    finally:
        report_page.build_figures = real  # type: ignore[assignment]
    results.add(
        "P14",
        "figures built: usage view first / repeat, cost view first / repeat",
        " / ".join(str(c) for c in counts),
        goal="0 on a repeat view",
        met=counts[1] == 0 and counts[3] == 0,
    )


def run_p6(bench: Bench, results: Results) -> None:
    """P6: page scaling. Two copies of the migrated database: one user with one finished
    12-month report (empty), and the same plus 10,000 finished one-day reports (bulk_create;
    1,000 of them the user's, 9,000 of 9 other users, newer than the user's: see
    data.seed_p6). Each served by its own gunicorn (2 workers). p95 of
    the dashboard and of the report page (the 12-month report), interleaved empty / 10k
    over 7 rounds of 3 s; median of per-round p95 ratios."""
    _query_counts(results)
    _figures_built(results)
    small_db, small = _seed_p6("p6-empty", 0)
    big_db, big = _seed_p6("p6-10k", P6_EXTRA_REPORTS)
    small_web, small_base = procs.start_gunicorn(small_db, "gunicorn-p6-empty")
    big_web, big_base = procs.start_gunicorn(big_db, "gunicorn-p6-10k")
    try:
        paths = {"dashboard": "/", "report page": "/reports/{report}/"}
        targets = [  # per page: the empty database, then the 10k one
            (f"{base}{path.format(**seed)}", {"Cookie": f"sessionid={seed['session']}"})
            for path in paths.values()
            for base, seed in ((small_base, small), (big_base, big))
        ]
        for url, headers in targets:
            warm_up(url, headers)
        runs = interleaved(
            ROUNDS, *(partial(load.run, url, P6_SECONDS, headers) for url, headers in targets)
        )
        for page, empty, full in zip(paths, runs[::2], runs[1::2], strict=True):
            per_round = load.p95_ratios(full, empty)
            results.add(
                "P6",
                f"{page} p50 / p95, empty vs 10k reports (median of rounds)",
                f"{load.p50_p95(empty)} vs {load.p50_p95(full)}",
            )
            results.add("P6", f"{page} per-round p95 ratios", fmt_ratios(per_round))
            label = f"p95 10k / empty ({load.tool()}, median of {ROUNDS})"
            if page == "report page":
                results.median_at_most("P14", f"finished report page {label}", per_round, 1.2)
                why = "see the notes on the previous-period lookup and the figures"
            else:
                why = "see the note on the recent-reports query"
            results.median_at_most("P6", f"{page} {label}", per_round, 1.5, why=why)
        results.note(
            "P6",
            "the dashboard reads its five recent reports with two index walks limited to 5 "
            "(own, team-admin); other users' newer reports before the user's fifth: "
            f"{small['rows_before_fifth_own']} in the empty database, "
            f"{big['rows_before_fifth_own']:,} with 10k reports",
        )
        results.note(
            "P6",
            "the report page reads the finished buckets of the previous period for its "
            f"change figures: {small['previous_period_buckets']} in the empty database, "
            f"{big['previous_period_buckets']} with 10k reports (their usage columns, not the "
            "JSON), even when they cannot cover that period; its Plotly figures come from the "
            "cache after the first view (P14)",
        )
    finally:
        small_web.stop()
        big_web.stop()
