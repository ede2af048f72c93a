"""P18: the overview page (`/`) with 1 and with 50 connections and budgets.

Two people on the main bench database: one with 1 connection, the other with 50, each
connection with its own monthly budget and a month of tracked spend (every bucket tracking
keeps, today's open day included, as bench/data.py's tracked_buckets writes them). Queries
per page come from Django's test client in this process (CaptureQueriesContext); p95 comes
from wrk against the bench's gunicorn, interleaved with the login page (a trivial view)
over ROUNDS rounds, as P7 does.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.test import Client
from django.utils import timezone

from bench import load
from bench.context import Bench
from bench.data import make_connection, make_user, session_cookie, tracked_buckets
from bench.pages import P7_SECONDS, ROUNDS, WARM_UP_SECONDS, _check, _queries
from bench.results import Results, fmt_ratios, median, ratios

SIZES = (1, 50)


def _person(size: int) -> Any:
    """A person with `size` connections, each with a month of tracked spend and a budget."""
    from reports.models import Bucket
    from reports.spend.budgets import budget_set

    user = make_user(f"p18-{size}-{secrets.token_hex(3)}")
    now = timezone.now()
    buckets = []
    for n in range(size):
        connection, _ = make_connection(user, f"P18 {n:02d}")
        buckets += tracked_buckets(connection, now, with_open_day=True)
        budget_set(
            actor=user,
            scope="connection",
            connection=connection,
            amount="100000",
            emails=[f"p18-{n}@example.com"],
        )
    Bucket.objects.bulk_create(buckets, batch_size=2000)
    return user


def run_p18(bench: Bench, results: Results) -> None:
    people = {size: _person(size) for size in SIZES}
    queries = {}
    for size, user in people.items():
        client = Client(SERVER_NAME="127.0.0.1")
        client.force_login(user)
        queries[size] = _queries(client, "/")
    one, fifty = (queries[s] for s in SIZES)
    results.add(
        "P18",
        "queries, overview: 1 vs 50 connections and budgets",
        f"{one} vs {fifty}",
        goal="equal",
        met=one == fifty,
    )

    overview = {
        size: (f"{bench.base_url}/", {"Cookie": f"sessionid={session_cookie(user)}"})
        for size, user in people.items()
    }
    trivial = f"{bench.base_url}/accounts/login/"
    _check(trivial, {})
    load.run(trivial, WARM_UP_SECONDS)
    for url, headers in overview.values():
        _check(url, headers)
        load.run(url, WARM_UP_SECONDS, headers)
    measured: dict[int, list[load.Load]] = {size: [] for size in SIZES}
    login: list[load.Load] = []
    for _ in range(ROUNDS):
        login.append(load.run(trivial, P7_SECONDS))
        for size, (url, headers) in overview.items():
            measured[size].append(load.run(url, P7_SECONDS, headers))
    results.add(
        "P18",
        "login page p50 / p95 (median of rounds)",
        f"{median([t.p50_ms for t in login]):.1f} / {median([t.p95_ms for t in login]):.1f} ms",
    )
    for size, runs in measured.items():
        per_round = ratios([r.p95_ms for r in runs], [t.p95_ms for t in login])
        results.add(
            "P18",
            f"overview with {size} connection(s) p50 / p95 (median of rounds)",
            f"{median([r.p50_ms for r in runs]):.1f} / {median([r.p95_ms for r in runs]):.1f} ms"
            f" ({sum(r.requests for r in runs)} requests, {sum(r.errors for r in runs)} errors)",
        )
        results.add("P18", f"{size} connection(s): per-round p95 ratios", fmt_ratios(per_round))
        results.add(
            "P18",
            f"overview p95 with {size} connection(s) / login page p95 "
            f"({load.tool()}, median of {ROUNDS})",
            f"{median(per_round):.2f}",
            goal="≤ 3",
            met=median(per_round) <= 3,
        )
