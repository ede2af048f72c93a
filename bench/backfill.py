"""P21: a new connection's history (two years held), filled in by the worker in the background.

1. OSAI calls and cost: a copy of the migrated bench database with CONNECTIONS new
   connections (one person each, a fresh sandbox account each) and nothing held yet. Its own
   qcluster (production timings, Q_WORKERS=2) runs on it; the bench starts the refresh that
   the tracking schedule runs (reports.tasks.tracking_refresh_all), at D = P21_D, and waits
   until every bucket is finished and the broker is empty. Per connection: POST /Reports (one
   per held period: at most 25 + 184), status polls, downloads, from the recording sandbox;
   wall time and the qcluster process group's CPU per bucket, extrapolated to 1,000 new
   connections on the same 2 worker processes.
2. People first: on the bench's own worker (production timings), a person's one-bucket report
   on a connection that shares its OSAI account (one token) with a connection filling in its
   history, against the same report on an idle pipeline, interleaved over P21_ROUNDS rounds
   (a new account each round); the history is stopped after each round. Goal: P15's bound,
   1.5 x the idle time plus one poll interval.
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.context import Bench, wait_for
from bench.env import BENCH_DIR, TEMPLATE_DB, copy_database
from bench.fairness import add_turn_results
from bench.idle import wait_idle
from bench.osai_recorder import read_calls
from bench.pipeline import CREATE, DOWNLOAD, STATUS, backoff_goal
from bench.results import Results, median
from bench.tracking import calls_per_account, helper, idle_side_worker, query, timed_refresh

CONNECTIONS = 20
EXTRAPOLATE_TO = 1_000
P21_D = 3.0  # seconds OSAI takes per report
BACKFILL_TIMEOUT = 1800.0
P21_ROUNDS = 3
PEOPLE_D = 2.0  # as P15: long enough that the history always has reports in flight
IN_FLIGHT_BEFORE = 10  # the history is really running at OSAI before the person asks
MODULE = "bench.backfill"


# --- 1. OSAI calls and cost of filling in the history -------------------------------------------


def _backfill(bench: Bench, results: Results) -> None:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / "p21.sqlite3")
    seeded = helper(db, "seed", "--connections", str(CONNECTIONS), module=MODULE)
    helper(db, "hold-schedule")
    accounts = set(seeded["accounts"])
    bench.osai_takes(P21_D)
    with idle_side_worker(bench, db, "qcluster-p21") as worker:
        refresh = timed_refresh(
            db,
            worker,
            buckets=CONNECTIONS,
            made_within=120,
            done_within=BACKFILL_TIMEOUT,
            done_interval=1.0,
        )
    made = query(
        db,
        "SELECT count(*), sum(state = 'done'), sum(background), min(period_start), "
        "max(period_start) FROM reports_bucket WHERE id > ?",
        refresh.first_id,
    )[0]
    periods = helper(db, "periods", module=MODULE)
    per_account = calls_per_account(read_calls(bench.calls_log), refresh.started, accounts)
    _report_backfill(results, made, periods, per_account, refresh.seconds, refresh.cpu_ms)


def _report_backfill(
    results: Results,
    made: tuple[Any, ...],
    periods: dict[str, Any],
    calls: dict[str, Counter[str]],
    seconds: float,
    cpu_ms: float,
) -> None:
    count, done, background, first, last = made
    held = int(periods["held"])
    results.add(
        "P21",
        "set-up",
        f"{CONNECTIONS} new connections (a person and a fresh OSAI account each), nothing held "
        f"yet; own SQLite copy and qcluster (Q_WORKERS=2, production timings and caps); "
        f"D = {P21_D:g} s; the tracking schedule's task started once; held window today: "
        f"{periods['months']} months + {periods['days']} closed days + the open day = {held} "
        "buckets per connection",
    )
    results.add(
        "P21",
        "buckets made",
        f"{count} ({done} done, {background} background; periods from {first[:10]} to {last[:10]})",
        goal=f"{CONNECTIONS} x {held}, all done",
        met=count == done == CONNECTIONS * held,
    )
    posts = Counter(c[CREATE] for c in calls.values())
    results.add(
        "P21",
        "POST /Reports per connection",
        _spread(posts),
        goal=f"= {held} (one per held period; ≤ 25 + 184)",
        met=set(posts) == {held} and held <= 25 + 184,
    )
    downloads = Counter(c[DOWNLOAD] for c in calls.values())
    results.add(
        "P21",
        "downloads per connection",
        _spread(downloads),
        goal="one per bucket",
        met=set(downloads) == {held},
    )
    k, polls_goal = backoff_goal(P21_D)
    gets = [c[STATUS] / held for c in calls.values()]
    results.add(
        "P21",
        "GET /Reports/{id} per bucket (per connection: median, max)",
        f"{median(gets):.2f}, {max(gets):.2f}",
        goal=polls_goal,
        met=max(gets) <= k,
    )
    buckets = CONNECTIONS * held
    per_bucket_ms = cpu_ms / buckets
    results.add(
        "P21",
        "time and worker CPU per bucket",
        f"{seconds / buckets * 1000:.1f} ms of wall time ({buckets / seconds:.1f} buckets/s, all "
        f"{buckets:,} in {seconds:.0f} s); {per_bucket_ms:.1f} ms of CPU ({cpu_ms / 1000:.1f} s "
        "in all, the qcluster's idle polling included)",
    )
    total = EXTRAPOLATE_TO * held
    cpu_hours = total * per_bucket_ms / 3_600_000
    wall_hours = total * seconds / buckets / 3600
    results.add(
        "P21",
        f"{EXTRAPOLATE_TO:,} new connections at once, extrapolated (2 worker processes)",
        f"{total:,} buckets: ~{wall_hours:.1f} h at this rate, {cpu_hours:.1f} h of worker CPU "
        f"({CONNECTIONS * 3600 / seconds:,.0f} connections' histories an hour)",
    )


def _spread(counts: Counter[int]) -> str:
    """{184: 19, 185: 1} -> "184 for 19 connections, 185 for 1"."""
    parts = [f"{value} for {n}" for value, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return parts[0] + " connections" + "".join(f", {p}" for p in parts[1:])


# --- 2. A person's report beside a history on the same account ---------------------------------


def _seconds(report_id: int) -> float:
    from bench.fairness import _seconds as seconds_of

    return seconds_of(report_id)


def _people_first(bench: Bench, results: Results) -> None:
    from bench.data import make_user, request_report
    from reports.models import Bucket
    from reports.pipeline.buckets import bucket_finish
    from reports.spend import tracking

    bench.osai_takes(PEOPLE_D)
    wait_idle()
    owner = make_user(f"p21-person-{secrets.token_hex(3)}")
    day = datetime(2023, 1, 1, tzinfo=UTC)  # before any held history: nothing to reuse

    def one_bucket(connection: Any) -> float:
        nonlocal day
        report = request_report(owner, connection, day, day + timedelta(days=1), "total")
        day += timedelta(days=1)
        return _seconds(report.pk)

    idle, beside, waiting = [], [], []
    for n in range(P21_ROUNDS):
        history, mine = _shared_account(owner, n)
        one_bucket(mine)  # warm-up: signs this account in to OSAI
        wait_idle(timeout=180)
        idle.append(one_bucket(mine))
        tracking.tracking_refresh(history)  # a new connection: two years, in the background
        backlog = Bucket.objects.filter(connection=history, background=True)
        wait_for(
            lambda b=backlog: b.filter(state=Bucket.State.POLLING).count() >= IN_FLIGHT_BEFORE,
            60,
            "the history to have reports in flight at OSAI",
            0.1,
        )
        beside.append(one_bucket(mine))
        waiting.append(backlog.exclude(state__in=Bucket.TERMINAL_STATES).count())
        for pk in backlog.filter(state__in=Bucket.ACTIVE_STATES).values_list("pk", flat=True):
            bucket_finish(pk, Bucket.State.CANCELLED, "the benchmark round is over")
    wait_idle(timeout=180)

    add_turn_results(
        results,
        "P21",
        PEOPLE_D,
        idle,
        beside,
        relation="beside",
        idle_label=f"a person's one-bucket report, idle (s, per round, D={PEOPLE_D:g} s)",
        busy_label="the same beside a new connection's history on its OSAI account (s, per round)",
        waiting_label="history buckets still waiting when it finished (per round)",
        waiting=", ".join(str(n) for n in waiting),
        goal="≤ 1.5 x idle + W (P15's bound)",
    )


def _shared_account(owner: Any, round_no: int) -> tuple[Any, Any]:
    """Two connections of one new token (one OSAI account): one to fill in its history, one
    for the person's reports."""
    from bench.data import TOKEN_PREFIX, token_connection
    from osai.sandbox import account_id_for_token

    token = f"{TOKEN_PREFIX}p21-{round_no}-{secrets.token_hex(4)}"
    account = account_id_for_token(token)
    history, reports = (
        token_connection(owner, label, token, osai_account_id=account)
        for label in (f"P21 history {round_no}", f"P21 reports {round_no}")
    )
    return history, reports


def run_p21(bench: Bench, results: Results) -> None:
    _people_first(bench, results)
    _backfill(bench, results)


# --- Helper-process entry points (on the side database) ---------------------------------------


def seed(connections: int) -> dict[str, Any]:
    """People with one new connection each (a fresh sandbox account), nothing fetched."""
    from django.db import transaction

    from bench.data import make_connection, make_user

    accounts = []
    with transaction.atomic():
        for n in range(connections):
            _, account = make_connection(make_user(f"p21-{n}"), f"P21 {n}")
            accounts.append(account)
    return {"accounts": accounts}


def periods() -> dict[str, Any]:
    """The held window today, as the refresh saw it (production settings)."""
    from django.utils import timezone

    from reports.spend import tracking

    closed, open_day = tracking.tracked_periods(timezone.now())
    months = len(tracking.held_months(_today()))
    return {
        "months": months,
        "days": len(closed) - months,
        "held": len(closed) + (1 if open_day else 0),
    }


def _today() -> datetime:
    from django.utils import timezone

    from reports.periods import utc_midnight

    return utc_midnight(timezone.now().date())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--connections", type=int, required=True)
    sub.add_parser("periods")
    options = parser.parse_args()
    import django

    django.setup()
    if options.command == "seed":
        print(json.dumps(seed(options.connections)))
    else:
        print(json.dumps(periods()))


if __name__ == "__main__":
    main()
