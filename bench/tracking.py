"""P17: what one tracking refresh costs per connection, with 1,000 tracked connections.

A copy of the migrated bench database with CONNECTIONS connections (PEOPLE people), each with
everything tracking holds already fetched (bench/data.py's tracked_buckets: two years of held
months and days, and the previous refresh's open day), as an hourly refresh finds them. Its
own qcluster (production timings, Q_WORKERS=2) runs on it; the tracking schedule is moved out
of the way so that the bench starts each refresh itself, with the task the schedule runs
(reports.tasks.tracking_refresh_all), at D = P17_D.

Per connection and refresh: OSAI calls from the recording sandbox (per account), and the
qcluster process group's CPU from the trigger until every new bucket is finished and the
broker is empty (the budget checks that follow a refresh included). Two refreshes: the
first signs every connection in to OSAI (no JWT stored yet); the second is the steady state.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.context import Bench, wait_for
from bench.env import BENCH_DIR, TEMPLATE_DB, child_env, copy_database
from bench.idle import _TICKS, group_cpu_ticks
from bench.osai_recorder import Call, read_calls
from bench.pipeline import CREATE, DOWNLOAD, STATUS, backoff_goal
from bench.results import Results, median

PEOPLE, PER_PERSON = 500, 2
CONNECTIONS = PEOPLE * PER_PERSON
P17_D = 3.0
REFRESHES = 2
REFRESH_TIMEOUT = 900.0
SIGN_IN = "POST /api/Users/SignIn"
_ACTIVE = "('new', 'creating', 'polling', 'downloading')"


def helper(db: Path, *args: str, module: str = "bench.tracking", **env: str) -> dict[str, Any]:
    """`python -m <module> <args>` on database `db` (a helper process); its JSON answer."""
    answer: dict[str, Any] = procs.json_answer(child_env(db, **env), module, *args)
    return answer


def query(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the side database directly (WAL: a reader never blocks the worker)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def last_bucket_id(db: Path) -> int:
    """The newest bucket's id (0 if there is none): what a refresh makes comes after it."""
    [(last,)] = query(db, "SELECT coalesce(max(id), 0) FROM reports_bucket")
    return int(last)


def settled(db: Path, first_id: int) -> bool:
    """Every bucket made since `first_id` is finished and no task waits in the broker."""
    [(active, queued)] = query(
        db,
        f"SELECT (SELECT count(*) FROM reports_bucket WHERE id > ? AND state IN {_ACTIVE}),"  # noqa: S608
        " (SELECT count(*) FROM django_q_ormq)",
        first_id,
    )
    return active == 0 and queued == 0


@contextmanager
def idle_side_worker(bench: Bench, db: Path, name: str) -> Iterator[procs.Managed]:
    """A qcluster of its own on side database `db` (production timings), once it is idle;
    stopped on leaving."""
    worker = procs.start_worker(db, bench.sandbox.api_url, name=name)
    try:
        wait_for(lambda: settled(db, 0), 120, f"{name} to start idle", 0.5)
        time.sleep(3.0)  # the start-up reconcile and dispatcher come and go
        yield worker
    finally:
        worker.stop()


@dataclass(frozen=True)
class TimedRefresh:
    """One run of the tracking schedule's task on a side database, until all it made is done."""

    first_id: int  # the buckets it made come after this one
    started: float  # time.time() at the trigger: the OSAI calls since are the refresh's
    seconds: float
    cpu_ms: float  # the qcluster process group's CPU meanwhile (its idle polling included)


def timed_refresh(
    db: Path,
    worker: procs.Managed,
    *,
    buckets: int,
    made_within: float,
    done_within: float,
    done_interval: float = 0.5,
) -> TimedRefresh:
    """Start the task the tracking schedule runs (reports.tasks.tracking_refresh_all) once;
    wait until it has made at least `buckets` buckets and every one it made is finished."""
    first_id = last_bucket_id(db)
    before = sum(group_cpu_ticks(worker.pid).values())
    t0 = time.time()
    helper(db, "trigger")
    wait_for(
        lambda: (
            query(db, "SELECT count(*) FROM reports_bucket WHERE id > ?", first_id)[0][0] >= buckets
        ),
        made_within,
        f"the refresh to make {buckets} buckets",
        0.5,
    )
    wait_for(lambda: settled(db, first_id), done_within, "the refresh to finish", done_interval)
    seconds = time.time() - t0
    cpu_ms = (sum(group_cpu_ticks(worker.pid).values()) - before) / _TICKS * 1000
    return TimedRefresh(first_id, t0, seconds, cpu_ms)


def calls_per_account(
    calls: list[Call], since: float, accounts: set[str]
) -> dict[str, Counter[str]]:
    """The recorded OSAI calls from `since` on, per account of `accounts` and route."""
    per_account: dict[str, Counter[str]] = {a: Counter() for a in accounts}
    for call in calls:
        if call.t >= since and call.account in per_account:
            per_account[call.account][call.route] += 1
    return per_account


def _refresh(bench: Bench, db: Path, worker: procs.Managed, accounts: set[str]) -> dict[str, Any]:
    """One refresh of every connection: trigger, wait until settled, count."""
    timed = timed_refresh(
        db, worker, buckets=CONNECTIONS, made_within=REFRESH_TIMEOUT, done_within=REFRESH_TIMEOUT
    )
    made = query(
        db,
        "SELECT count(*), sum(is_closed), sum(state = 'done'), min(period_start), "
        "max(period_start) FROM reports_bucket WHERE id > ?",
        timed.first_id,
    )[0]
    calls = read_calls(bench.calls_log)
    # A sign-in carries no JWT, so no account: count every one in the window (nothing else
    # runs meanwhile).
    sign_ins = sum(call.t >= timed.started and call.route == SIGN_IN for call in calls)
    return {
        "seconds": timed.seconds,
        "cpu_ms": timed.cpu_ms,
        "made": made,
        "calls": calls_per_account(calls, timed.started, accounts),
        "sign_ins": sign_ins,
    }


def run_p17(bench: Bench, results: Results) -> None:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / "p17.sqlite3")
    seeded = helper(db, "seed", "--people", str(PEOPLE), "--per-person", str(PER_PERSON))
    helper(db, "hold-schedule")
    accounts = set(seeded["accounts"])
    bench.osai_takes(P17_D)
    with idle_side_worker(bench, db, "qcluster-p17") as worker:
        refreshes = [_refresh(bench, db, worker, accounts) for _ in range(REFRESHES)]
    results.add(
        "P17",
        "set-up",
        f"{CONNECTIONS:,} tracked connections ({PEOPLE} people x {PER_PERSON}), everything "
        f"but the open day already fetched; own SQLite copy and qcluster (Q_WORKERS=2, "
        f"production timings); D = {P17_D:g} s; {REFRESHES} refreshes in a row",
    )
    for n, r in enumerate(refreshes, 1):
        _report(results, n, r)
    steady = refreshes[-1]
    per_connection = steady["cpu_ms"] / CONNECTIONS
    bench.shared["p17_ms_per_connection"] = per_connection  # P22's baseline
    per_core_hour = 3_600_000 / per_connection
    results.add(
        "P17",
        "connections one core tracks hourly (3,600,000 ms / worker CPU per connection and "
        f"refresh, refresh {len(refreshes)})",
        f"{per_core_hour:,.0f} ({per_connection:.1f} ms per connection)",
        goal="≥ 10,000",
        met=per_core_hour >= 10_000,
    )
    results.add(
        "P17",
        "wall time bound on this machine (2 worker processes)",
        f"{CONNECTIONS:,} connections refreshed in {steady['seconds']:.0f} s: "
        f"{CONNECTIONS * 3600 / steady['seconds']:,.0f} connections per hourly refresh",
    )


def _report(results: Results, n: int, r: dict[str, Any]) -> None:
    count, closed, done, first, last = r["made"]
    calls: dict[str, Counter[str]] = r["calls"]
    posts = Counter(c[CREATE] for c in calls.values())
    gets = [c[STATUS] for c in calls.values()]
    downloads = Counter(c[DOWNLOAD] for c in calls.values())
    sign_ins = r["sign_ins"]
    others = sum(
        v
        for c in calls.values()
        for route, v in c.items()
        if route not in (CREATE, STATUS, DOWNLOAD, SIGN_IN)
    )
    label = f"refresh {n}"
    results.add(
        "P17",
        f"{label}: buckets made",
        f"{count} ({count - (closed or 0)} open-day, {closed or 0} closed; {done} done; "
        f"periods from {first[:10]} to {last[:10]}); {r['seconds']:.0f} s for all",
        goal=f"{CONNECTIONS} open-day buckets only",
        met=count == CONNECTIONS and not closed and done == CONNECTIONS,
    )
    _one_each(results, f"{label}: POST /Reports", posts)
    k, polls_goal = backoff_goal(P17_D)
    results.add(
        "P17",
        f"{label}: GET /Reports/{{id}} per connection",
        f"median {median(gets):g}, max {max(gets)}",
        goal=polls_goal,
        met=max(gets) <= k,
    )
    _one_each(results, f"{label}: downloads", downloads)
    results.add(
        "P17",
        f"{label}: other OSAI calls",
        f"{sign_ins} sign-ins ({sign_ins / CONNECTIONS:.2f} per connection), {others} others",
    )
    results.add(
        "P17",
        f"{label}: worker CPU per connection",
        f"{r['cpu_ms'] / CONNECTIONS:.1f} ms ({r['cpu_ms'] / 1000:.1f} s of CPU in all, "
        "the qcluster's idle polling included)",
    )


def _one_each(results: Results, what: str, counts: Counter[int]) -> None:
    """`what` per connection, whose goal is exactly one for every connection."""
    results.add(
        "P17", f"{what} per connection", _spread(counts), goal="= 1", met=set(counts) == {1}
    )


def _spread(counts: Counter[int]) -> str:
    """{1: 998, 2: 2} -> "1 for 998 connections, 2 for 2"."""
    parts = [f"{value} for {n}" for value, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return parts[0] + " connections" + "".join(f", {p}" for p in parts[1:])


# --- Helper-process entry points (on the side database) ---------------------------------------


def seed(people: int, per_person: int) -> dict[str, Any]:
    """People, their connections and everything tracking keeps for them, fetched already."""
    from django.db import transaction
    from django.utils import timezone

    from bench.data import make_connection, make_user, tracked_buckets
    from reports.models import Bucket

    now = timezone.now()
    accounts, buckets = [], []
    with transaction.atomic():
        for p in range(people):
            owner = make_user(f"p17-{p}")
            for c in range(per_person):
                connection, account = make_connection(owner, f"P17 {p}-{c}")
                accounts.append(account)
                buckets += tracked_buckets(connection, now, with_open_day=True, usage=False)
        Bucket.objects.bulk_create(buckets, batch_size=2000)
    return {"accounts": accounts, "buckets": len(buckets)}


def hold_schedule() -> dict[str, Any]:
    """Move the hourly tracking schedule a year ahead, before a qcluster starts on this
    database: its first run is due at once (the migration made it), and would fetch every
    connection's whole month. Only the bench starts refreshes then."""
    from datetime import timedelta

    from django.utils import timezone
    from django_q.models import Schedule

    from reports.schedules import TRACK

    held = Schedule.objects.filter(name=TRACK).update(next_run=timezone.now() + timedelta(days=365))
    return {"held": held}


def trigger() -> dict[str, Any]:
    """What the tracking schedule does: one task that refreshes every working connection."""
    from django_q.tasks import async_task

    return {"task": async_task("reports.tasks.tracking_refresh_all", task_name="osai-track")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--people", type=int, required=True)
    seeding.add_argument("--per-person", type=int, required=True)
    sub.add_parser("trigger")
    sub.add_parser("hold-schedule")
    options = parser.parse_args()
    import django

    django.setup()
    if options.command == "seed":
        print(json.dumps(seed(options.people, options.per_person)))
    elif options.command == "trigger":
        print(json.dumps(trigger()))
    else:
        print(json.dumps(hold_schedule()))


if __name__ == "__main__":
    main()
