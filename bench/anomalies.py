"""P22: what the anomaly detector adds to a tracking refresh, with 1,000 tracked connections.

Measured in a helper process on its own copy of the migrated bench database, in process (no
qcluster): 1,000 connections (500 people x 2), each with everything tracking holds already
fetched (bench/data.py's tracked_buckets, with usage: two years of held months and days), and
its detector's mark one day behind, so the day that closed last is new to it: the first
refresh of a day, the only one that judges a day (the day's other refreshes find no new
closed day: one query).

For each connection, the refresh's finishing work, `reports.tasks.tracking_bucket_done` (is
the refresh done; the budgets its spend counts against; then, with OSAI_ANOMALIES, the
detector and the anomaly alerts' queue), is run with the detector off and on, in turn
(A B B A ...: ROUNDS rounds, the order flipped each round), the mark reset before each "on",
and the CPU time of this process (SQLite runs in it) summed per variant; also "on" once more
without a reset (a refresh of the day that finds no new day).

The figure against the target is the whole refresh's worker CPU: P17's steady-state CPU per
connection and refresh through the real worker (this run's if P17 ran, else P17_MS_DEFAULT,
the last published figure) plus what the detector added here, over P17's.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import timedelta
from typing import Any

from bench import procs
from bench.context import Bench
from bench.env import BENCH_DIR, TEMPLATE_DB, child_env, copy_database
from bench.results import Results

PEOPLE, PER_PERSON = 500, 2
CONNECTIONS = PEOPLE * PER_PERSON
ROUNDS = 3
GOAL = 1.2
# P17's worker CPU per connection and refresh (refresh 2), BENCHMARKS.md of 2026-11-26.
P17_MS_DEFAULT = 40.3


def run_p22(bench: Bench, results: Results) -> None:
    db = copy_database(TEMPLATE_DB, BENCH_DIR / "p22.sqlite3")
    env = child_env(db)
    seeded = procs.json_answer(
        env, "bench.anomalies", "seed", "--people", str(PEOPLE), "--per-person", str(PER_PERSON)
    )
    measured: dict[str, Any] = procs.json_answer(
        env, "bench.anomalies", "measure", "--rounds", str(ROUNDS), timeout=3600
    )
    n = measured["refreshes"]
    off = measured["off_ms"] / n
    on_new = measured["on_new_day_ms"] / n
    on_same = measured["on_same_day_ms"] / n
    p17 = bench.shared.get("p17_ms_per_connection")
    p17_ms = float(p17) if p17 is not None else P17_MS_DEFAULT
    source = "this run's P17" if p17 is not None else "P17 of 2026-11-26"
    added = on_new - off
    ratio = (p17_ms + added) / p17_ms
    results.add(
        "P22",
        "set-up",
        f"{CONNECTIONS:,} tracked connections ({PEOPLE} people x {PER_PERSON}), "
        f"{seeded['buckets']:,} held buckets with usage, own SQLite copy; in process (no "
        f"qcluster): tasks.tracking_bucket_done per connection with OSAI_ANOMALIES off and on, "
        f"{ROUNDS} rounds interleaved (A B B A), CPU time of the process (SQLite included)",
    )
    results.add(
        "P22",
        "refresh finishing work per connection, detector off",
        f"{off:.2f} ms (is the refresh done, the budgets it counts against)",
    )
    results.add(
        "P22",
        "refresh finishing work per connection, detector on, the day's first refresh",
        f"{on_new:.2f} ms (+{added:.2f} ms: one new closed day judged over its 28-day window, "
        f"and the alerts of what it finds queued; {measured['anomalies']} anomalies found over "
        f"{n:,} judged days, "
        f"x{on_new / off:.2f} the finishing work alone)",
    )
    results.add(
        "P22",
        "refresh finishing work per connection, detector on, a later refresh of the day",
        f"{on_same:.2f} ms (x{on_same / off:.2f}: no new closed day, one query, no alerts' queue)",
    )
    results.add(
        "P22",
        "worker CPU of a refresh with the detector / without (the day's first refresh)",
        f"{ratio:.3f} (({p17_ms:.1f} + {added:.2f}) / {p17_ms:.1f} ms per connection; "
        f"{p17_ms:.1f} ms: {source}'s worker CPU per connection and refresh)",
        goal=f"≤ {GOAL}",
        met=ratio <= GOAL,
    )


# --- Helper-process entry points (on the side database) ---------------------------------------


def seed(people: int, per_person: int) -> dict[str, Any]:
    """People, their connections and everything tracking keeps for them, with usage, and
    their detector's mark the day before the last closed day."""
    from django.db import transaction
    from django.utils import timezone

    from bench.data import make_connection, make_user, tracked_buckets
    from reports.models import Bucket, Connection

    now = timezone.now()
    buckets = []
    with transaction.atomic():
        for p in range(people):
            owner = make_user(f"p22-{p}")
            for c in range(per_person):
                connection, _ = make_connection(owner, f"P22 {p}-{c}")
                buckets += tracked_buckets(connection, now, usage=True)
        Bucket.objects.bulk_create(buckets, batch_size=2000)
        Connection.objects.update(anomalies_checked_through=_mark(now))
    return {"buckets": len(buckets)}


def _mark(now: Any) -> Any:
    """The day before the last closed day: that day is new to the detector."""
    return now.date() - timedelta(days=2)


def measure(rounds: int) -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from reports import tasks
    from reports.models import Anomaly, Connection

    ids = list(Connection.objects.order_by("pk").values_list("pk", flat=True))
    mark = _mark(timezone.now())
    cpu = {"off": 0.0, "on": 0.0, "same": 0.0}
    found = 0

    def run(pk: int, detector: bool) -> float:
        settings.OSAI_ANOMALIES = detector
        started = time.process_time()
        tasks.tracking_bucket_done(pk)
        return time.process_time() - started

    def reset(pk: int) -> None:
        Connection.objects.filter(pk=pk).update(anomalies_checked_through=mark)
        Anomaly.objects.filter(connection_id=pk).delete()

    for r in range(rounds):
        for i, pk in enumerate(ids):
            reset(pk)
            if (i + r) % 2 == 0:
                cpu["off"] += run(pk, False)
                cpu["on"] += run(pk, True)
            else:
                cpu["on"] += run(pk, True)
                cpu["off"] += run(pk, False)
            found += Anomaly.objects.filter(connection_id=pk).count()
            cpu["same"] += run(pk, True)  # the mark moved: no new closed day
    refreshes = rounds * len(ids)
    return {
        "refreshes": refreshes,
        "off_ms": cpu["off"] * 1000,
        "on_new_day_ms": cpu["on"] * 1000,
        "on_same_day_ms": cpu["same"] * 1000,
        "anomalies": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    seeding = sub.add_parser("seed")
    seeding.add_argument("--people", type=int, required=True)
    seeding.add_argument("--per-person", type=int, required=True)
    measuring = sub.add_parser("measure")
    measuring.add_argument("--rounds", type=int, default=ROUNDS)
    options = parser.parse_args()
    import django

    django.setup()
    if options.command == "seed":
        print(json.dumps(seed(options.people, options.per_person)))
    else:
        print(json.dumps(measure(options.rounds)))


if __name__ == "__main__":
    main()
