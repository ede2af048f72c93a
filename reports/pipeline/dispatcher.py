"""The dispatcher: which bucket steps are due, in what order, and within which caps.

django-q2 has no "run this in N seconds", so one dispatcher task (a lease makes it a
singleton) wakes at each bucket's `next_attempt_at` and enqueues a short step
(reports/pipeline/steps.py) by task name; it runs for at most DISPATCH_RUN_SECONDS and then
hands over to a fresh task. A schedule starts it every minute in case everything was lost
(`reconcile`). Claiming a step pushes its bucket's `next_attempt_at` one lease ahead, so a
lost task (a killed worker, the Redis broker) makes the bucket due again and it is simply
enqueued again: the reconciler and the normal path are the same code (Q3, Q4).

Due work is served fairly (F4): people take turns, then their connections; polls of reports
in flight come before new reports; a new report waits, out of the queue, while its
connection, person or OSAI account has as many in flight as allowed (F1). Background work
(tracking's: a new connection's history, the hourly refresh) comes after everything people
asked for, newest period first, and only in the slots they leave free: it starts an OSAI
report only while OSAI_BACKGROUND_RESERVE slots stay free at its connection, account and
person, and is queued only while as much room stays free in the broker. Outbox deliveries
and webhook-requested refreshes are woken here too.

Everything else reaches the dispatcher through `start_soon(bucket_ids)` (after a request
made buckets) or `wake()` (other due work: an outbox delivery, a refresh).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, Min, Q, Value, When, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from django_q.tasks import async_task

from reports.models import Bucket, Connection, Delivery, WorkerLease
from reports.pipeline import eta
from reports.pipeline.buckets import buckets_time_out_overdue

# A dispatcher task runs for a third of the django-q2 timeout at most, then hands over.
DISPATCH_RUN_SECONDS = min(20.0, settings.Q_CLUSTER["timeout"] / 3)
DISPATCH_MAX_SLEEP = 1.0  # new work is noticed within this
# The poll aimed at the moment OSAI should be done is enqueued this long before it is due and
# waits out the rest in the worker, so the broker's hop (the ORM broker looks every `poll`
# seconds) does not make it late. Other steps are enqueued when due.
DISPATCH_LEAD_SECONDS = float(settings.Q_CLUSTER.get("poll", 0.2)) + 0.1
# Steps a new request enqueues itself, before the dispatcher's next round (the rest follow).
KICK_STEPS = 8
# Renewed on every loop (at least once a second), so a dispatcher killed with its worker
# blocks a successor for a few seconds only.
DISPATCHER_LEASE_SECONDS = 5.0
# A lease renewed within this long has a live holder; an older one probably has a dead one.
LEASE_FRESH_SECONDS = 2 * DISPATCH_MAX_SLEEP
DISPATCHER = "dispatcher"


# --- Waking it -------------------------------------------------------------------------------


def start_soon(bucket_ids: Iterable[int]) -> None:
    """After the current transaction commits, make the buckets due and wake the dispatcher."""
    ids = list(bucket_ids)

    def kick() -> None:
        if ids:
            Bucket.objects.active().filter(pk__in=ids).update(next_attempt_at=timezone.now())
            # The first steps go to the queue now, in fair order and within the caps, rather
            # than a dispatcher round (up to a second) later.
            enqueue_due_buckets(limit=KICK_STEPS)
        # A live dispatcher notices the rest within a second; and one about to stop looks
        # again after releasing its lease, so skipping the task here loses nothing.
        if not _dispatcher_alive():
            async_task("reports.tasks.pipeline_dispatch", task_name="osai-dispatch")

    transaction.on_commit(kick)


def wake() -> None:
    """After the current transaction commits, make sure a dispatcher runs: other due work
    (an outbox delivery, a requested refresh) is noticed within its next round."""
    start_soon(())


# --- The dispatcher --------------------------------------------------------------------------


def _lease_acquire(name: str, holder: str, seconds: float) -> bool:
    now = timezone.now()
    WorkerLease.objects.get_or_create(name=name)
    return bool(
        WorkerLease.objects.filter(name=name)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__lt=now) | Q(holder=holder))
        .update(holder=holder, expires_at=now + timedelta(seconds=seconds))
    )


def _lease_expires_in(name: str) -> float:
    expires = WorkerLease.objects.filter(name=name).values_list("expires_at", flat=True).first()
    return (expires - timezone.now()).total_seconds() if expires else 0.0


def _lease_holder_is_gone(name: str) -> bool:
    """True if the lease is not renewed within LEASE_FRESH_SECONDS (a live holder renews)."""

    def expiry() -> datetime | None:
        return WorkerLease.objects.filter(name=name).values_list("expires_at", flat=True).first()

    before = expiry()
    if before is None:
        return True
    time.sleep(LEASE_FRESH_SECONDS)
    return expiry() == before


def _dispatcher_alive() -> bool:
    """True if a dispatcher renewed its lease just now (it renews at least once a second)."""
    return _lease_expires_in(DISPATCHER) > DISPATCHER_LEASE_SECONDS - LEASE_FRESH_SECONDS


def _lease_release(name: str, holder: str) -> None:
    WorkerLease.objects.filter(name=name, holder=holder).update(holder="", expires_at=None)


# How many due buckets of each kind (in flight, people's new, background's new) and connection
# the dispatcher looks at per round: enough to fill the queue, few enough that a backlog
# costs one cheap query a second.
SCAN_PER_CONNECTION = 4


@dataclass(frozen=True)
class _Due:
    pk: int
    starts: bool  # a NEW bucket: its step asks OSAI for a new report (needs a free slot)
    connection: int
    owner: int
    account: str
    due: datetime | None = None
    # A poll aimed at the moment OSAI should be done (reports/pipeline/eta.py): the only step sent
    # ahead of its time, so it is on the spot when the report is ready.
    aimed: bool = False
    # Tracking's work that no person waits for (Bucket.background): served after people's,
    # newest period first, within the slots they leave free.
    background: bool = False
    period_start: datetime | None = None


def _account_key(region: str, account_id: str, connection_id: int) -> str:
    """Connections with one token are one OSAI account: they share its cap (F1)."""
    return f"{region}:{account_id}" if account_id else f"connection:{connection_id}"


def _due_buckets(now: datetime, lease: timedelta, horizon: datetime) -> list[_Due]:
    """The first few due buckets of every connection, skipping those whose step is queued.

    A few of each kind per connection: steps of reports in flight (people's and the
    background's), people's new buckets, the background's new buckets (newest period
    first). So a backlog of new buckets waiting for a slot never hides the polls that free
    one, and background polls never hide a person's new bucket. In flight first, oldest
    first, then new buckets.
    """
    starts = Case(When(state=Bucket.State.NEW, then=Value(1)), default=Value(0))
    # The background's new buckets by period, newest first; every other kind keeps None.
    newest = Case(
        When(state=Bucket.State.NEW, background=True, then=F("period_start")), default=None
    )
    rank = Window(
        RowNumber(),
        partition_by=[F("connection_id"), F("starts"), F("background")],
        order_by=[F("newest").desc(), F("next_attempt_at").asc(), F("pk").asc()],
    )
    rows = (
        Bucket.objects.active()
        .filter(next_attempt_at__lte=horizon)
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lte=now - lease))
        .annotate(starts=starts, newest=newest)
        .annotate(turn=rank)
        .filter(turn__lte=SCAN_PER_CONNECTION)
        .values_list(
            "pk",
            "starts",
            "connection_id",
            "connection__owner_id",
            "connection__region",
            "connection__osai_account_id",
            "next_attempt_at",
            "expected_ready_at",
            "background",
            "period_start",
        )
    )
    ordered = sorted(rows, key=lambda r: (r[1], r[6], r[0]))
    return [
        _Due(
            pk,
            bool(new),
            conn,
            owner,
            _account_key(region, account, conn),
            due,
            # Nobody waits on background work: its polls go when due, never early, so no
            # worker process sleeps out the lead for them.
            aimed=eta.is_aimed(due, expected) and not background,
            background=background,
            period_start=start,
        )
        for pk, new, conn, owner, region, account, due, expected, background, start in ordered
    ]


def _round_robin(groups: Iterable[list[_Due]]) -> list[_Due]:
    """Take one from each group in turn: [[a1, a2], [b1]] -> [a1, b1, a2]."""
    queues = [deque(g) for g in groups if g]
    result: list[_Due] = []
    while queues:
        for queue in list(queues):
            result.append(queue.popleft())
            if not queue:
                queues.remove(queue)
    return result


def fair_order(due: list[_Due]) -> list[_Due]:
    """People take turns, and within a person their connections do (F4): one person's backlog
    never stands in front of another person's first bucket. People whose work has waited
    longest go first in each round.

    Background work comes after all of it: its polls (they free slots), then its new
    buckets newest period first (this month's days before last year's months), connections
    taking turns within a period."""
    by_owner: dict[int, dict[int, list[_Due]]] = {}
    background: list[_Due] = []
    for item in due:  # `due` is oldest first, so dicts keep first-come order
        if item.background:
            background.append(item)
        else:
            by_owner.setdefault(item.owner, {}).setdefault(item.connection, []).append(item)
    people = _round_robin(_round_robin(conns.values()) for conns in by_owner.values())
    polls = [item for item in background if not item.starts]
    starts = sorted(
        (item for item in background if item.starts),
        key=lambda item: -(item.period_start.timestamp() if item.period_start else 0.0),
    )  # stable: within a period, the connection whose work waited longest first
    return [*people, *polls, *starts]


def background_limit(cap: int) -> int:
    """What background work may hold of a cap: all but OSAI_BACKGROUND_RESERVE of it, so a
    person's report always finds a slot; at least one, so history is always filled in."""
    return max(cap - settings.OSAI_BACKGROUND_RESERVE, 1)


def _in_flight_counts(
    now: datetime, lease: timedelta
) -> tuple[Counter[int], Counter[int], Counter[str]]:
    """OSAI reports in flight now, per connection, per person and per OSAI account.

    A new bucket whose step is already queued counts too: it will start one.
    """
    per_connection: Counter[int] = Counter()
    per_owner: Counter[int] = Counter()
    per_account: Counter[str] = Counter()
    for conn, owner, region, account, n in (
        Bucket.objects.filter(
            Q(state__in=Bucket.IN_FLIGHT_STATES)
            | Q(state=Bucket.State.NEW, queued_at__gt=now - lease)
        )
        .values_list(
            "connection_id",
            "connection__owner_id",
            "connection__region",
            "connection__osai_account_id",
        )
        .annotate(n=Count("pk"))
    ):
        per_connection[conn] += n
        per_owner[owner] += n
        per_account[_account_key(region, account, conn)] += n
    return per_connection, per_owner, per_account


def enqueue_due_buckets(now: datetime | None = None, limit: int | None = None) -> int:
    """Enqueue the steps of due buckets, fairly and within the caps. Returns how many.

    At most OSAI_QUEUE_DEPTH steps wait in the broker at a time, so a backlog stays in the
    database (where it can be ordered fairly) instead of in the queue (where it cannot). A
    bucket that would ask OSAI for a new report waits, un-queued, while its connection, its
    OSAI account or its person has as many reports in flight as allowed (F1). A poll aimed
    at the moment OSAI should be done goes up to DISPATCH_LEAD_SECONDS early, with that
    moment; other steps go when due (an early back-off poll would only cost a poll).
    Background work goes last (fair_order) and leaves OSAI_BACKGROUND_RESERVE free at every
    cap and in the queue (background_limit): on a connection, account or person busy with
    history, a person's new report starts at once. `limit` caps how many this call enqueues.
    """
    now = now or timezone.now()
    buckets_time_out_overdue(now)
    lease = timedelta(seconds=settings.OSAI_STEP_LEASE_SECONDS)
    horizon = now + timedelta(seconds=DISPATCH_LEAD_SECONDS)
    queued = Bucket.objects.active().filter(queued_at__gt=now - lease).count()
    room = settings.OSAI_QUEUE_DEPTH - queued
    if limit is not None:
        room = min(room, limit)
    if room <= 0:
        return 0
    due = _due_buckets(now, lease, horizon)
    if not due:
        return 0
    per_connection, per_owner, per_account = _in_flight_counts(now, lease)
    caps = (
        settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION,
        settings.OSAI_MAX_IN_FLIGHT_PER_PERSON,
        settings.OSAI_MAX_IN_FLIGHT_PER_ACCOUNT,
    )
    background_caps = tuple(background_limit(cap) for cap in caps)
    # The broker's room background steps may take: they never fill the queue.
    background_room = settings.OSAI_QUEUE_DEPTH - settings.OSAI_BACKGROUND_RESERVE - queued
    enqueued = 0
    for item in fair_order(due):
        if enqueued >= room:
            break
        if item.background and enqueued >= background_room:
            break  # only background work is left (fair_order puts it last)
        if item.due and item.due > now and not item.aimed:
            # Only an aimed poll goes early; a back-off poll sent early would find OSAI no
            # further along and cost a poll. The dispatcher wakes when it is due.
            continue
        if item.starts:
            cap_connection, cap_owner, cap_account = background_caps if item.background else caps
            if (
                per_connection[item.connection] >= cap_connection
                or per_owner[item.owner] >= cap_owner
                or per_account[item.account] >= cap_account
            ):
                continue  # waits for a free slot, out of the queue
            per_connection[item.connection] += 1
            per_owner[item.owner] += 1
            per_account[item.account] += 1
        # Marked queued first, so it is enqueued once; if the task is lost, the mark expires
        # with the lease and the bucket is due again.
        marked = (
            Bucket.objects.filter(pk=item.pk, next_attempt_at__lte=horizon)
            .filter(Q(queued_at__isnull=True) | Q(queued_at__lte=now - lease))
            .update(queued_at=now, next_attempt_at=now + lease)
        )
        if marked:
            not_before = item.due.timestamp() if item.due and item.due > now else None
            async_task(
                "reports.tasks.bucket_step",
                item.pk,
                not_before,
                task_name=f"osai-bucket-{item.pk}",
            )
            enqueued += 1
    return enqueued


def enqueue_due_deliveries(now: datetime | None = None) -> int:
    """Enqueue a send for every outbox delivery that is due (reports/spend/notify.py)."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(state=Delivery.State.PENDING, next_attempt_at__lte=now).values_list(
            "pk", flat=True
        )[:200]
    )
    enqueued = 0
    lease = timedelta(seconds=settings.OSAI_STEP_LEASE_SECONDS)
    for pk in due:
        if Delivery.objects.filter(pk=pk, next_attempt_at__lte=now).update(
            next_attempt_at=now + lease
        ):
            async_task("reports.tasks.delivery_send", pk, task_name=f"osai-delivery-{pk}")
            enqueued += 1
    return enqueued


def enqueue_due_refreshes(now: datetime | None = None) -> int:
    """Start each open-day refresh that OSAI's webhooks asked for and that is due
    (reports/integrations/webhooks.py).

    Claimed by clearing the mark, so events that arrive while it runs ask for the next one.
    """
    now = now or timezone.now()
    due = list(
        Connection.objects.filter(refresh_due_at__lte=now).values_list("pk", flat=True)[:200]
    )
    enqueued = 0
    for pk in due:
        if Connection.objects.filter(pk=pk, refresh_due_at__lte=now).update(refresh_due_at=None):
            async_task("reports.tasks.webhook_refresh", pk, task_name=f"osai-refresh-{pk}")
            enqueued += 1
    return enqueued


def _next_due() -> datetime | None:
    """When the next bucket step, delivery or refresh is due (None: nothing in flight).

    The moment a report should be done counts too: a step that is queued or running hides
    its bucket's next poll (its next_attempt_at is the lease until it writes the real one),
    and across a wide estimate that poll can come sooner than DISPATCH_MAX_SLEEP. Waking
    then lets the aimed poll go early, as it should, instead of up to a second late.
    """
    now = timezone.now()
    bucket = Bucket.objects.active().aggregate(
        m=Min("next_attempt_at"),
        expected=Min("expected_ready_at", filter=Q(expected_ready_at__gt=now)),
    )
    delivery = Delivery.objects.filter(state=Delivery.State.PENDING).aggregate(
        m=Min("next_attempt_at")
    )
    refresh = Connection.objects.aggregate(m=Min("refresh_due_at"))
    candidates = (bucket["m"], bucket["expected"], delivery["m"], refresh["m"])
    moments = [m for m in candidates if m is not None]
    return min(moments, default=None)


def dispatch(run_seconds: float = DISPATCH_RUN_SECONDS) -> str:
    """Wake at each due bucket and enqueue its step; a singleton through a lease."""
    holder = uuid.uuid4().hex
    lease_seconds = DISPATCHER_LEASE_SECONDS
    if not _lease_acquire(DISPATCHER, holder, lease_seconds):
        # Renewed just now: its holder is alive. Leave at once, not after watching the lease
        # for LEASE_FRESH_SECONDS: a burst of wake-ups (a tracking refresh of many
        # connections) queues many of these tasks, and each would hold a worker process.
        if _dispatcher_alive():
            return "another dispatcher is running"
        # Its holder may have been killed with its worker: if it does not renew the lease
        # within a couple of seconds, wait the lease out once and take over, rather than
        # leave the work in flight to the reconciler's next tick.
        if not _lease_holder_is_gone(DISPATCHER):
            return "another dispatcher is running"
        time.sleep(min(max(_lease_expires_in(DISPATCHER), 0), lease_seconds) + 0.1)
        if not _lease_acquire(DISPATCHER, holder, lease_seconds):
            return "another dispatcher is running"
    end = time.monotonic() + run_seconds
    try:
        while True:
            moved = enqueue_due_buckets() + enqueue_due_deliveries() + enqueue_due_refreshes()
            next_due = _next_due()
            if next_due is None or time.monotonic() >= end:
                break
            remaining = (next_due - timezone.now()).total_seconds()
            wait = remaining - DISPATCH_LEAD_SECONDS
            if wait <= 0 and not moved:
                # A step inside the lead window that is not sent early: wake when it is due.
                # Due work that cannot move (waiting for a free slot, or the queue is full):
                # look again in a second rather than spin.
                wait = remaining if remaining > 0 else DISPATCH_MAX_SLEEP
            time.sleep(min(max(wait, 0.05), DISPATCH_MAX_SLEEP))
            if not _lease_acquire(DISPATCHER, holder, lease_seconds):
                return "lease lost to another dispatcher"
    finally:
        _lease_release(DISPATCHER, holder)
    # Checked after the release, so work that arrived meanwhile is never left unattended:
    # either we see it here, or its own wake-up task found the lease free.
    if _next_due() is not None:
        async_task("reports.tasks.pipeline_dispatch", task_name="osai-dispatch")
        return "handed over"
    return "idle"


def reconcile(*, force: bool = False) -> str:
    """The schedule's safety net: time out overdue buckets and make sure a dispatcher runs.

    `force` (at worker start, perhaps after a crash) starts one even if the lease looks
    fresh: its holder may have died a moment ago, and the new dispatcher finds out.
    """
    buckets_time_out_overdue(timezone.now())
    if _next_due() is None:
        return "nothing in flight"
    if not force and _dispatcher_alive():
        return "a dispatcher is running"
    async_task("reports.tasks.pipeline_dispatch", task_name="osai-dispatch")
    return "dispatcher started"
