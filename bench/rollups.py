"""P20: reports answered from held data (roll-ups), with 10,000 stored reports.

A copy of the migrated bench database with P6's 10,000 stored reports (bench/data.py `p6`)
and PEOPLE people, each with one connection whose held data tracking has filled in (every
bucket finished, closed, `tracked`, every flag on): each of the last MONTHS_HELD whole months
as one bucket, and every day from the first day of the quarter before last up to today. Its
own gunicorn (2 workers) and qcluster (production timings, Q_WORKERS=2; tracking's schedule
moved out of the way), so anything a request did hand to OSAI would reach the recording
sandbox.

Three requests, each as the report form makes it (compared with the period before, as the
pages ask): "last 12 months by month" (the 12 whole months before this one: a preset ending
now would add today's open part, one OSAI report by design), "last quarter by week" and "last
quarter, two categories" (datasets and models, by month). Each round is one person's three
requests (an identical request by the same person within seconds is a double click, F3, and
would land on the first report); the first round warms up and is not counted. Timed: the POST
of the form to the last byte of the report page it redirects to (the CSRF token is read from
the form page first, untimed). Counted: buckets the requests made, OSAI calls the sandbox
received for these accounts (and sign-ins) from the first request until the worker is idle.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from bench import procs
from bench.context import Bench
from bench.env import BENCH_DIR, TEMPLATE_DB, child_env, copy_database
from bench.osai_recorder import read_calls
from bench.results import Results, median
from bench.tracking import helper, last_bucket_id, query, settled

PEOPLE = 6  # a warm-up round, then ROUNDS
ROUNDS = PEOPLE - 1
MONTHS_HELD = 25  # 12 months and the 12 they are compared with, with a month to spare
EXTRA_REPORTS = 10_000
TWO_CATEGORIES = ("include_datasets", "include_models")
ALL_CATEGORIES = (
    "include_datasets",
    "include_manipulations",
    "include_models",
    "include_rented_devices",
    "include_predictions",
)
SIGN_IN = "POST /api/Users/SignIn"
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _quarter_start(day: date) -> date:
    return day.replace(day=1, month=3 * ((day.month - 1) // 3) + 1)


def _months_back(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def kinds(today: date) -> dict[str, dict[str, Any]]:
    """The three requests, as the form's fields (custom ranges of whole UTC days)."""
    month_start = today.replace(day=1)
    last_quarter = _months_back(_quarter_start(today), 3)
    quarter_last_day = _quarter_start(today) - timedelta(days=1)
    return {
        "last 12 months by month": {
            "date_from": _months_back(month_start, 12),
            "date_to": month_start - timedelta(days=1),
            "granularity": "month",
            "flags": ALL_CATEGORIES,
        },
        "last quarter by week": {
            "date_from": last_quarter,
            "date_to": quarter_last_day,
            "granularity": "week",
            "flags": ALL_CATEGORIES,
        },
        "last quarter, two categories": {
            "date_from": last_quarter,
            "date_to": quarter_last_day,
            "granularity": "month",
            "flags": TWO_CATEGORIES,
        },
    }


def _post_form(base: str, person: dict[str, Any], kind: dict[str, Any]) -> tuple[float, str]:
    """One form request as a browser makes it: seconds from the POST to the report page's
    last byte, and that page."""
    session = requests.Session()
    session.trust_env = False
    session.cookies.set("sessionid", person["session"])
    form = session.get(f"{base}/reports/new/", timeout=30)
    match = _CSRF.search(form.text)
    if form.status_code != 200 or match is None:
        raise RuntimeError(f"the report form answered {form.status_code}")
    data: dict[str, Any] = {
        "csrfmiddlewaretoken": match.group(1),
        "connections": str(person["connection"]),
        "preset": "custom",
        "date_from": kind["date_from"].isoformat(),
        "date_to": kind["date_to"].isoformat(),
        "granularity": kind["granularity"],
        **dict.fromkeys(kind["flags"], "on"),
    }
    t0 = time.perf_counter()
    page = session.post(f"{base}/reports/new/", data=data, timeout=60)
    seconds = time.perf_counter() - t0
    if page.status_code != 200 or "/reports/new/" in page.url:
        raise RuntimeError(f"the request was not accepted ({page.status_code}, {page.url})")
    return seconds, page.text


def run_p20(bench: Bench, results: Results) -> None:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / "p20.sqlite3")
    procs.json_answer(
        child_env(db), "bench.data", "p6", "--extra-reports", str(EXTRA_REPORTS), timeout=300
    )
    seeded = helper(db, "seed", "--people", str(PEOPLE), module="bench.rollups")
    helper(db, "hold-schedule")
    people: list[dict[str, Any]] = seeded["people"]
    accounts = {p["account"] for p in people}
    web, base = procs.start_gunicorn(db, "gunicorn-p20", bench.sandbox.api_url)
    worker = procs.start_worker(db, bench.sandbox.api_url, name="qcluster-p20")
    try:
        time.sleep(3.0)  # the worker's start-up reconcile and dispatcher come and go
        first_id = last_bucket_id(db)
        t0 = time.time()
        today = datetime.now(UTC).date()
        asked = kinds(today)
        seconds: dict[str, list[float]] = {name: [] for name in asked}
        pages_done = 0
        held_said = set()
        for n, person in enumerate(people):
            for name, kind in asked.items():
                took, page = _post_form(base, person, kind)
                pages_done += "badge-done" in page
                held_said |= set(re.findall(r"From ([^.<]*held[^.<]*)\.", page))
                if n:  # the first round warms up
                    seconds[name].append(took)
        time.sleep(2.0)  # anything handed to OSAI would be on its way by now
        procs_settled = settled(db, first_id)
        made = query(db, "SELECT count(*) FROM reports_bucket WHERE id > ?", first_id)[0][0]
        calls = [
            c
            for c in read_calls(bench.calls_log)
            if c.t >= t0 and (c.account in accounts or c.route == SIGN_IN)
        ]
    finally:
        worker.stop()
        web.stop()
    requests_made = PEOPLE * len(asked)
    results.add(
        "P20",
        "set-up",
        f"{EXTRA_REPORTS + 1:,} stored reports (P6's seed) and {PEOPLE} people, each with "
        f"one connection holding its last {MONTHS_HELD} months as months and every day since "
        "the quarter before last; own SQLite copy, gunicorn (2 workers) and qcluster; "
        "requests through the report form, compared with the period before",
    )
    results.add(
        "P20",
        f"OSAI reports made by {requests_made} requests (buckets created; OSAI calls for "
        "these accounts, sign-ins included)",
        f"{made} buckets; {len(calls)} calls",
        goal="0",
        met=made == 0 and not calls and procs_settled,
    )
    results.add(
        "P20",
        "report pages finished when first shown",
        f"{pages_done} of {requests_made}; the page says: {'; '.join(sorted(held_said))}",
        goal=f"{requests_made}",
        met=pages_done == requests_made,
    )
    for name, values in seconds.items():
        results.add(
            "P20",
            f"{name}: form POST to finished page, median of {ROUNDS} (each)",
            f"{median(values) * 1000:.0f} ms ({', '.join(f'{v * 1000:.0f}' for v in values)})",
            goal="≤ 1 s",
            met=median(values) <= 1.0,
        )


# --- Helper-process entry point (on the side database) -----------------------------------------


def seed(people: int) -> dict[str, Any]:
    """People, a connection each, and everything tracking would hold for it."""
    from dateutil.relativedelta import relativedelta
    from django.db import transaction
    from django.utils import timezone

    from bench.data import done_bucket, make_connection, make_user, session_cookie
    from reports.models import Bucket
    from reports.periods import utc_midnight

    now = timezone.now()
    today = utc_midnight(now.date())
    this_month = today.replace(day=1)
    first_day = utc_midnight(_months_back(_quarter_start(today.date()), 6))
    periods = [
        (this_month - relativedelta(months=n), this_month - relativedelta(months=n - 1))
        for n in range(MONTHS_HELD, 0, -1)
    ]
    day = first_day
    while day < today:
        periods.append((day, day + timedelta(days=1)))
        day += timedelta(days=1)
    found: list[dict[str, Any]] = []
    with transaction.atomic():
        buckets = []
        for p in range(people):
            owner = make_user(f"p20-{p}")
            connection, account = make_connection(owner, "Held")
            for n, (start, end) in enumerate(periods):
                bucket = done_bucket(connection, start, end, connection.pk * 1000 + n)
                bucket.tracked = True
                buckets.append(bucket)
            found.append({"connection": connection.pk, "account": account, "owner": owner})
        Bucket.objects.bulk_create(buckets, batch_size=2000)
    return {
        "people": [
            {
                "connection": f["connection"],
                "account": f["account"],
                "session": session_cookie(f["owner"]),
            }
            for f in found
        ],
        "held_buckets_each": len(periods),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--people", type=int, required=True)
    options = parser.parse_args()
    import django

    django.setup()
    print(json.dumps(seed(options.people)))


if __name__ == "__main__":
    main()
