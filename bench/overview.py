"""P18: the overview page (`/`) with 1 and with 50 connections and budgets, and the team page
(`/teams/<id>/`: this month, who spent what) of a team with 1 and with 50 members.

Two people on the main bench database: one with 1 connection, the other with 50, each
connection with its own monthly budget and a month of tracked spend (every bucket tracking
keeps, today's open day included, as bench/data.py's tracked_buckets writes them). Queries
per page come from Django's test client in this process (CaptureQueriesContext); p95 comes
from wrk against the bench's gunicorn, interleaved with the login page (a trivial view)
over ROUNDS rounds, as P7 does.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Any

from django.utils import timezone

from bench import load
from bench.context import Bench
from bench.data import make_connection, make_user, session_cookie, signed_in_client, tracked_buckets
from bench.pages import P7_SECONDS, ROUNDS, _queries, warm_up
from bench.results import Results, fmt_ratios, interleaved

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


def _team(size: int) -> tuple[Any, str]:
    """A team of `size` members (its admin one of them), each sharing a connection with a
    month of tracked spend; the admin and the team page's path."""
    from reports.models import Bucket, Membership, Team

    team = Team.objects.create(name=f"P18 team {size} {secrets.token_hex(3)}")
    now = timezone.now()
    buckets = []
    admin = None
    for n in range(size):
        user = make_user(f"p18-team-{size}-{n}-{secrets.token_hex(3)}")
        role = Membership.Role.ADMIN if n == 0 else Membership.Role.MEMBER
        Membership.objects.create(team=team, user=user, role=role)
        connection, _ = make_connection(user, f"P18 team {n:02d}")
        connection.shared_with_teams.add(team)
        buckets += tracked_buckets(connection, now, with_open_day=True)
        admin = admin or user
    Bucket.objects.bulk_create(buckets, batch_size=2000)
    return admin, f"/teams/{team.pk}/"


def run_p18(bench: Bench, results: Results) -> None:
    people = {size: ("/", _person(size)) for size in SIZES}
    teams = {size: _team(size)[::-1] for size in SIZES}
    pages = {
        **{f"overview with {size} connection(s)": people[size] for size in SIZES},
        **{f"team page with {size} member(s)": teams[size] for size in SIZES},
    }
    queries = {name: _queries(signed_in_client(user), path) for name, (path, user) in pages.items()}
    for kind, unit in (("overview", "connection(s)"), ("team page", "member(s)")):
        one, fifty = (queries[f"{kind} with {s} {unit}"] for s in SIZES)
        results.add(
            "P18",
            f"queries, {kind}: 1 vs 50 {unit}",
            f"{one} vs {fifty}",
            goal="equal",
            met=one == fifty,
        )

    overview = {
        name: (f"{bench.base_url}{path}", {"Cookie": f"sessionid={session_cookie(user)}"})
        for name, (path, user) in pages.items()
    }
    trivial = f"{bench.base_url}/accounts/login/"
    warm_up(trivial)
    for url, headers in overview.values():
        warm_up(url, headers)
    login, *measured = interleaved(
        ROUNDS,
        partial(load.run, trivial, P7_SECONDS),
        *(partial(load.run, url, P7_SECONDS, headers) for url, headers in overview.values()),
    )
    medians = "p50 / p95 (median of rounds)"
    results.add("P18", f"login page {medians}", load.p50_p95(login))
    for name, runs in zip(overview, measured, strict=True):
        per_round = load.p95_ratios(runs, login)
        results.add("P18", f"{name} {medians}", f"{load.p50_p95(runs)} {load.tally(runs)}")
        results.add("P18", f"{name}: per-round p95 ratios", fmt_ratios(per_round))
        ratio = f"{name} p95 / login page p95"
        results.median_at_most("P18", f"{ratio} ({load.tool()}, median of {ROUNDS})", per_round, 3)
