"""Tracking: every working connection's spend kept fresh without anyone asking.

A django-q2 schedule (every OSAI_TRACK_INTERVAL minutes, an hour by default) and
`manage.py track` call `tracking_refresh_all`. For each working connection it makes sure these
buckets exist, with every flag on:

- this month, day by day: closed days are fetched once and reused forever; the open day
  (today so far) is asked of OSAI again on every refresh: one new OSAI report per refresh;
- last month, day by day (the overview compares with "the same days of last month");
- the month before, as one bucket (the monthly digest compares last month with it).

The overview, budgets, forecasts and digests read them through the spend ledger
(reports/spend/ledger.py, monthly.py); nobody fills in a form. Superseded open-day buckets
are deleted, so a connection keeps one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dateutil.relativedelta import relativedelta
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from reports.metrics import all_flags
from reports.models import Bucket, Connection, Granularity, ReportBucket
from reports.periods import Period, split_period, utc_midnight
from reports.pipeline import dispatcher
from reports.pipeline.buckets import BucketConflict, buckets_for


def tracked_periods(now: datetime) -> tuple[list[Period], Period | None]:
    """The closed buckets tracking keeps (the month before last as one bucket, then every day
    of last month and of this month before today) and the open day, if any of it has passed."""
    today = utc_midnight(now.date())
    month_start = today.replace(day=1)
    last_month = month_start - relativedelta(months=1)
    before = last_month - relativedelta(months=1)
    closed = [(before, last_month), *split_period(last_month, today, Granularity.DAY)]
    now = now.replace(microsecond=0)
    return closed, ((today, now) if now > today else None)


def tracking_refresh(
    connection: Connection, *, now: datetime | None = None, wake: bool = True
) -> list[int]:
    """Make sure the connection's tracked buckets exist; start the new ones. Returns their ids.

    The open day gets a new bucket unless one is already on its way. `wake=False` leaves
    waking the pipeline to the caller (a refresh of every connection wakes it once).
    """
    now = now or timezone.now()
    closed, open_day = tracked_periods(now)
    flags = all_flags()
    with transaction.atomic():
        try:
            buckets = buckets_for([connection], closed, flags, now, tracked=True)
        except BucketConflict:
            return []  # a report is creating the same buckets right now; next refresh
        if open_day and not open_day_in_flight(connection, open_day[0]):
            buckets += buckets_for([connection], [open_day], flags, now, tracked=True)
        started = [b.pk for b in buckets if not b.is_terminal]
        if wake:
            dispatcher.start_soon(started)
    prune_open_buckets(connection, now=now)
    return started


def open_day_in_flight(connection: Connection, day: datetime) -> bool:
    """True while the connection's open day (starting at `day`) is being fetched."""
    return (
        Bucket.objects.active()
        .filter(connection=connection, is_closed=False, period_start=day, **all_flags())
        .exists()
    )


def tracking_refresh_all(*, now: datetime | None = None, owner: Any = None) -> int:
    """Refresh every working connection (or one person's). Returns how many."""
    connections = Connection.objects.filter(status=Connection.Status.OK)
    if owner is not None:
        connections = connections.filter(owner=owner)
    count = started = 0
    for connection in connections.iterator():
        started += len(tracking_refresh(connection, now=now, wake=False))
        count += 1
    if started:
        # New buckets are due at once: one wake-up for all of them, not one per connection.
        dispatcher.wake()
    return count


def prune_open_buckets(connection: Connection, *, now: datetime) -> int:
    """Delete tracking's finished open-day buckets that a newer one, or the day's closed
    bucket, has replaced; never one a report uses. Returns how many went."""
    today = utc_midnight(now.date())
    used = ReportBucket.objects.filter(bucket=OuterRef("pk"))
    finished = Bucket.objects.filter(
        connection=connection, tracked=True, is_closed=False, state__in=Bucket.TERMINAL_STATES
    ).exclude(Exists(used))
    stale = finished.filter(period_start__lt=today)
    latest = (
        Bucket.objects.filter(
            connection=connection, is_closed=False, period_start=today, state=Bucket.State.DONE
        )
        .order_by("-period_end", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    replaced = finished.filter(period_start=today).exclude(pk=latest) if latest else None
    deleted = stale.delete()[0]
    if replaced is not None:
        deleted += replaced.delete()[0]
    return deleted


def tracking_in_flight(connection_ids: list[int]) -> bool:
    """True while tracking still waits on OSAI for one of these connections."""
    return Bucket.objects.active().filter(connection_id__in=connection_ids, tracked=True).exists()


def tracking_done_for(connection_id: int) -> bool:
    """True once none of the connection's tracked buckets is on its way (a refresh ended)."""
    return not tracking_in_flight([connection_id])
