"""Tracking: every working connection's spend held, and kept fresh, without anyone asking.

A django-q2 schedule (every OSAI_TRACK_INTERVAL minutes, an hour by default) and
`manage.py track` call `tracking_refresh_all`. For each working connection it makes sure these
buckets exist, with every flag on (the connection's *held* data):

- the last OSAI_HELD_MONTHS closed calendar months (25), one bucket each: "last 12 months"
  and "year to date" have their comparison periods too, and the monthly digest its month;
- every day since the first day of the previous calendar quarter (OSAI_HELD_DAYS_SINCE;
  at most 184 days): closed days are fetched once and reused forever; the open day (today
  so far) is asked of OSAI again on every refresh: one new OSAI report per refresh.

A new connection's history is filled in by the first refresh, in the background
(`Bucket.background`): the dispatcher starts it after what people ask for, newest period
first, in the slots they leave free. The overview, budgets, forecasts and digests read these
buckets through the spend ledger (reports/spend/ledger.py), which the refresh also heals;
nobody fills in a form. Superseded open-day buckets are deleted, so a connection keeps one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from reports.metrics import all_flags
from reports.models import (
    PRUNE_BATCH,
    Bucket,
    BucketFile,
    Connection,
    Granularity,
    LedgerEntry,
    ReportBucket,
    prune_rows,
)
from reports.periods import Period, split_period, utc_midnight
from reports.pipeline import dispatcher
from reports.pipeline.buckets import BucketConflict, buckets_for
from reports.spend import ledger

ONE_DAY = timedelta(days=1)


def held_months(today: datetime) -> list[Period]:
    """The last OSAI_HELD_MONTHS closed calendar months before `today` (a UTC midnight),
    oldest first."""
    first = today.replace(day=1)
    count = settings.OSAI_HELD_MONTHS
    return [
        (first - relativedelta(months=n), first - relativedelta(months=n - 1))
        for n in range(count, 0, -1)
    ]


def held_days_from(today: datetime) -> datetime:
    """The first held day: the first day of the previous calendar quarter (or month)."""
    since = settings.OSAI_HELD_DAYS_SINCE
    if since == "quarter":
        quarter = today.replace(month=3 * ((today.month - 1) // 3) + 1, day=1)
        return quarter - relativedelta(months=3)
    if since == "month":
        return today.replace(day=1) - relativedelta(months=1)
    raise ImproperlyConfigured('OSAI_HELD_DAYS_SINCE must be "quarter" or "month".')


def tracked_periods(now: datetime) -> tuple[list[Period], Period | None]:
    """The closed buckets tracking holds (the held months, then every closed held day) and
    the open day, if any of it has passed."""
    today = utc_midnight(now.date())
    closed = [*held_months(today), *split_period(held_days_from(today), today, Granularity.DAY)]
    now = now.replace(microsecond=0)
    return closed, ((today, now) if now > today else None)


@dataclass(frozen=True)
class History:
    """How much of the held window is held (done) for every one of some connections: the
    overview's "history: 9 of 25 months held"."""

    months_held: int
    months: int
    days_held: int  # closed days
    days: int

    @property
    def complete(self) -> bool:
        return self.months_held >= self.months and self.days_held >= self.days


def history_held(connection_ids: list[int], now: datetime) -> History:
    """The held window and how much of it every one of these connections holds. Two
    queries, however many connections."""
    today = utc_midnight(now.date())
    months = held_months(today)
    first_day = held_days_from(today)
    days = (today - first_day) // ONE_DAY
    ids = sorted(set(connection_ids))
    if not ids:
        return History(0, len(months), 0, days)
    held = Bucket.objects.filter(
        connection_id__in=ids, tracked=True, is_closed=True, state=Bucket.State.DONE, **all_flags()
    )

    def whole(queryset: Any) -> int:
        """Periods that every connection holds."""
        return int(
            queryset.values("period_start")
            .annotate(n=Count("connection_id", distinct=True))
            .filter(n=len(ids))
            .count()
        )

    months_held = (
        whole(
            held.filter(
                period_start__in=[start for start, _ in months],
                period_end__in=[end for _, end in months],
            )
        )
        if months
        else 0
    )
    # Tracking holds days and months only: in the days window, what is not a month is a day.
    days_held = whole(
        held.filter(period_start__gte=first_day, period_end__lte=today).exclude(
            period_start__in=[start for start, _ in months if start >= first_day],
            period_end__in=[end for start, end in months if start >= first_day],
        )
    )
    return History(months_held, len(months), days_held, days)


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
    periods = list(closed)
    with transaction.atomic():
        if open_day and not open_day_in_flight(connection, open_day[0]):
            periods.append(open_day)
        try:
            # One query finds every held period already there (~210 in production).
            buckets = buckets_for([connection], periods, flags, now, tracked=True)
        except BucketConflict:
            return []  # a report is creating the same buckets right now; next refresh
        # New (or failed and reset) buckets only: one already on its way keeps its next poll.
        started = [b.pk for b in buckets if b.state == Bucket.State.NEW]
        if wake:
            dispatcher.start_soon(started)
    prune_open_buckets(connection, now=now)
    ledger.ledger_fill([connection.pk], now=now)  # the ledger heals here (cheap if whole)
    return started


def open_day_in_flight(connection: Connection, day: datetime) -> bool:
    """True while the connection's open day (starting at `day`) is being fetched."""
    return (
        Bucket.objects.active()
        .filter(connection=connection, is_closed=False, period_start=day, **all_flags())
        .exists()
    )


def tracking_refresh_all(*, now: datetime | None = None, owner: User | None = None) -> int:
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


def needed_by_reports_or_ledger() -> Q:
    """A bucket something still reads: a report that exists links it (its page, CSV, raw
    JSON download), or the spend ledger holds rows of it (pages, budgets, digests, exports).
    What retention (reports/retention.py) and the open-day prune never touch."""
    return Q(Exists(ReportBucket.objects.filter(bucket=OuterRef("pk")))) | Q(
        Exists(LedgerEntry.objects.filter(bucket=OuterRef("pk")))
    )


def superseded_buckets(*, now: datetime) -> QuerySet[Bucket]:
    """Finished open-period buckets nothing needs any more, of every connection (one query):

    - tracking's open days a newer bucket of the same day, or the day's closed bucket, has
      replaced (a connection keeps its latest finished open day);
    - open buckets tracking does not keep whose report is gone (an open bucket is never
      reused: each request asks OSAI again).

    Never one a report links or the ledger holds (`needed_by_reports_or_ledger`): an open
    day's rows move to the bucket that replaces it when that one is written, and only then
    does the old one go. The one rule behind `prune_open_buckets` and retention's prune."""
    today = utc_midnight(now.date())
    latest_today = Bucket.objects.filter(
        connection_id=OuterRef("connection_id"),
        is_closed=False,
        period_start=today,
        state=Bucket.State.DONE,
    ).order_by("-period_end", "-pk")
    finished = Bucket.objects.filter(is_closed=False, state__in=Bucket.TERMINAL_STATES).exclude(
        needed_by_reports_or_ledger()
    )
    stale = Q(tracked=True, period_start__lt=today)
    replaced = (
        Q(tracked=True, period_start=today)
        & Q(Exists(latest_today))
        & ~Q(pk=Subquery(latest_today.values("pk")[:1]))
    )
    orphaned = Q(tracked=False)
    return finished.filter(stale | replaced | orphaned)


def prune_open_buckets(connection: Connection, *, now: datetime) -> int:
    """Delete the connection's superseded open-day buckets (`superseded_buckets`) after a
    refresh. Returns how many went."""
    return prune_rows(superseded_buckets(now=now).filter(connection=connection))


def raw_json_unneeded(*, before: datetime) -> QuerySet[Bucket]:
    """Buckets finished before `before` whose raw OSAI answer (`osai_response`) or archived
    file nobody can open any more: no report links them, the ledger holds none of their rows
    and tracking does not keep them. Their totals stay (a closed bucket is still reused)."""
    return (
        Bucket.objects.filter(tracked=False, state__in=Bucket.TERMINAL_STATES)
        .filter(Q(finished_at__lt=before) | Q(finished_at__isnull=True, created_at__lt=before))
        .filter(Q(osai_response__isnull=False) | Q(file__isnull=False))
        .exclude(needed_by_reports_or_ledger())
    )


def prune_raw_json(*, before: datetime, dry_run: bool = False) -> int:
    """Drop the raw OSAI JSON of `raw_json_unneeded` buckets (a bounded number of queries per
    thousand); returns how many buckets lost theirs."""
    buckets = raw_json_unneeded(before=before)
    if dry_run:
        return buckets.count()
    pks = buckets.order_by("pk").values_list("pk", flat=True)
    dropped = 0
    while True:
        batch = list(pks[:PRUNE_BATCH])
        if batch:
            with transaction.atomic():
                BucketFile.objects.filter(bucket_id__in=batch).delete()
                Bucket.objects.filter(pk__in=batch).update(osai_response=None)
            dropped += len(batch)
        if len(batch) < PRUNE_BATCH:
            return dropped


def tracking_in_flight(connection_ids: list[int]) -> bool:
    """True while tracking still waits on OSAI for one of these connections."""
    return Bucket.objects.active().filter(connection_id__in=connection_ids, tracked=True).exists()


def tracking_done_for(connection_id: int, *, now: datetime | None = None) -> bool:
    """True once none of the connection's tracked buckets of this month is on its way (a
    refresh ended): what budgets read. History still being filled in does not hold them up."""
    month_start = utc_midnight((now or timezone.now()).date()).replace(day=1)
    return (
        not Bucket.objects.active()
        .filter(connection_id=connection_id, tracked=True, period_end__gt=month_start)
        .exists()
    )
