"""The report pipeline: what the django-q2 worker does, one short idempotent step at a time.

    bucket: new → creating → polling → downloading → done
                                     ↘ error / timed_out / cancelled
    report: queued → running (k of N) → done | partial | failed | timed_out | cancelled

Our rows are the source of truth, never django-q2's task table. Delivery is at least once
and a worker may die anywhere, so:

- A step starts by *claiming* its bucket with one conditional UPDATE (a lease). A second
  delivery of the same task finds the lease held and does nothing (Q9).
- The OSAI report id is committed right after `POST /Reports` returns, so a re-run polls
  instead of creating a second OSAI report. The one window left: a worker killed after OSAI
  answered the POST but before that commit. The re-run then creates one more OSAI report
  (at most one extra per kill, Q1).
- Each claim counts an attempt; a step that makes progress resets the count. A bucket whose
  step keeps crashing its worker, or keeps meeting transient errors, stops after
  OSAI_BUCKET_MAX_ATTEMPTS with a message (Q5). Every bucket has a deadline (Q6).
- Claiming pushes `next_attempt_at` one lease ahead. If the task is lost (worker killed,
  Redis broker), the bucket simply becomes due again and the dispatcher re-enqueues it: the
  reconciler and the normal path are the same code (Q3, Q4).

django-q2 has no "run this in N seconds", so one dispatcher task (a lease makes it a
singleton) wakes at each bucket's `next_attempt_at` and enqueues a short `bucket_step`;
it runs for at most DISPATCH_RUN_SECONDS and then hands over to a fresh task. A schedule
starts it every minute in case everything was lost.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Min,
    Q,
    Value,
    When,
    Window,
)
from django.db.models.functions import RowNumber
from django.utils import timezone
from django_q.tasks import async_task

from osai.client import OsaiClient
from osai.errors import OsaiAuthError, OsaiError, OsaiRateLimited
from reports import crypto
from reports.access import bucket_is_wanted
from reports.metrics import OSAI_FIELD_TO_COLUMN, to_osai_flags
from reports.models import Bucket, BucketFile, Connection, Delivery, WorkerLease
from reports.pipeline import eta
from reports.pipeline.connections import connection_mark_needs_token, osai_client_for
from reports.pipeline.failpoints import failpoint
from reports.pipeline.progress import note_next_poll, refresh_reports_of

log = logging.getLogger(__name__)

ACTIVE_STATES = (
    Bucket.State.NEW,
    Bucket.State.CREATING,
    Bucket.State.POLLING,
    Bucket.State.DOWNLOADING,
)
# States in which an OSAI report exists (or may) and counts against the per-connection bound.
IN_FLIGHT_STATES = (Bucket.State.CREATING, Bucket.State.POLLING, Bucket.State.DOWNLOADING)

# A dispatcher task runs for a third of the django-q2 timeout at most, then hands over.
DISPATCH_RUN_SECONDS = min(20.0, settings.Q_CLUSTER["timeout"] / 3)
DISPATCH_MAX_SLEEP = 1.0  # new work is noticed within this
# The poll aimed at the moment OSAI should be done is enqueued this long before it is due and
# waits out the rest in the worker, so the broker's hop (the ORM broker looks every `poll`
# seconds) does not make it late. Other steps are enqueued when due.
DISPATCH_LEAD_SECONDS = float(settings.Q_CLUSTER.get("poll", 0.2)) + 0.1
AIMED_TOLERANCE_SECONDS = 0.05  # a step due this close to expected_ready_at is the aimed poll
# Steps a new request enqueues itself, before the dispatcher's next round (the rest follow).
KICK_STEPS = 8
# Renewed on every loop (at least once a second), so a dispatcher killed with its worker
# blocks a successor for a few seconds only.
DISPATCHER_LEASE_SECONDS = 5.0
# A lease renewed within this long has a live holder; an older one probably has a dead one.
LEASE_FRESH_SECONDS = 2 * DISPATCH_MAX_SLEEP
DISPATCHER = "dispatcher"
UNWANTED_MESSAGE = (
    "Stopped: no report needs this part any more (its connection is no longer shared with "
    "the team, or its owner left the team)."
)


# --- Starting work ---------------------------------------------------------------------------


def start_soon(bucket_ids: Iterable[int]) -> None:
    """After the current transaction commits, make the buckets due and wake the dispatcher."""
    ids = list(bucket_ids)

    def kick() -> None:
        if ids:
            Bucket.objects.filter(pk__in=ids, state__in=ACTIVE_STATES).update(
                next_attempt_at=timezone.now()
            )
            # The first steps go to the queue now, in fair order and within the caps, rather
            # than a dispatcher round (up to a second) later.
            enqueue_due_buckets(limit=KICK_STEPS)
        # A live dispatcher notices the rest within a second; and one about to stop looks
        # again after releasing its lease, so skipping the task here loses nothing.
        if not _dispatcher_alive():
            async_task("reports.tasks.pipeline_dispatch", task_name="osai-dispatch")

    transaction.on_commit(kick)


def buckets_release_unwanted(bucket_ids: Iterable[int], *, message: str = "") -> int:
    """Stop, at once, the unfinished buckets that no live report wants any more (M1).

    The same rule the worker checks before every step; this makes it take effect without
    waiting for the bucket's next turn. Returns how many were stopped.
    """
    stopped = 0
    for bucket in Bucket.objects.filter(pk__in=list(bucket_ids), state__in=ACTIVE_STATES):
        if not bucket_is_wanted(bucket):
            _finish(bucket.pk, Bucket.State.CANCELLED, message or UNWANTED_MESSAGE)
            stopped += 1
    return stopped


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


# How many due buckets of each connection the dispatcher looks at per round: enough to fill
# the queue, few enough that a backlog costs one cheap query a second.
SCAN_PER_CONNECTION = 4


@dataclass(frozen=True)
class _Due:
    pk: int
    starts: bool  # a NEW bucket: its step asks OSAI for a new report (needs a free slot)
    connection: int
    owner: int
    account: str
    due: datetime | None = None
    # A poll aimed at the moment OSAI should be done (reports/eta.py): the only step sent
    # ahead of its time, so it is on the spot when the report is ready.
    aimed: bool = False


def _account_key(region: str, account_id: str, connection_id: int) -> str:
    """Connections with one token are one OSAI account: they share its cap (F1)."""
    return f"{region}:{account_id}" if account_id else f"connection:{connection_id}"


def _due_buckets(now: datetime, lease: timedelta, horizon: datetime) -> list[_Due]:
    """The first few due buckets of every connection, skipping those whose step is queued.

    Steps of reports already in flight come first, oldest first, then new buckets: a
    backlog of new buckets waiting for a slot must never hide the polls that free one.
    """
    starts = Case(When(state=Bucket.State.NEW, then=Value(1)), default=Value(0))
    rank = Window(
        RowNumber(),
        partition_by=[F("connection_id")],
        order_by=[F("starts").asc(), F("next_attempt_at").asc(), F("pk").asc()],
    )
    rows = (
        Bucket.objects.filter(state__in=ACTIVE_STATES, next_attempt_at__lte=horizon)
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lte=now - lease))
        .annotate(starts=starts)
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
            aimed=_is_aimed(due, expected),
        )
        for pk, new, conn, owner, region, account, due, expected in ordered
    ]


def _is_aimed(due: datetime | None, expected: datetime | None) -> bool:
    return (
        due is not None
        and expected is not None
        and abs((expected - due).total_seconds()) < AIMED_TOLERANCE_SECONDS
    )


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
    longest go first in each round."""
    by_owner: dict[int, dict[int, list[_Due]]] = {}
    for item in due:  # `due` is oldest first, so dicts keep first-come order
        by_owner.setdefault(item.owner, {}).setdefault(item.connection, []).append(item)
    return _round_robin(_round_robin(conns.values()) for conns in by_owner.values())


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
            Q(state__in=IN_FLIGHT_STATES) | Q(state=Bucket.State.NEW, queued_at__gt=now - lease)
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
    `limit` caps how many this call enqueues.
    """
    now = now or timezone.now()
    _time_out_overdue(now)
    lease = timedelta(seconds=settings.OSAI_STEP_LEASE_SECONDS)
    horizon = now + timedelta(seconds=DISPATCH_LEAD_SECONDS)
    queued = Bucket.objects.filter(state__in=ACTIVE_STATES, queued_at__gt=now - lease).count()
    room = settings.OSAI_QUEUE_DEPTH - queued
    if limit is not None:
        room = min(room, limit)
    if room <= 0:
        return 0
    due = _due_buckets(now, lease, horizon)
    if not due:
        return 0
    per_connection, per_owner, per_account = _in_flight_counts(now, lease)
    enqueued = 0
    for item in fair_order(due):
        if enqueued >= room:
            break
        if item.due and item.due > now and not item.aimed:
            # Only an aimed poll goes early; a back-off poll sent early would find OSAI no
            # further along and cost a poll. The dispatcher wakes when it is due.
            continue
        if item.starts:
            if (
                per_connection[item.connection] >= settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION
                or per_owner[item.owner] >= settings.OSAI_MAX_IN_FLIGHT_PER_PERSON
                or per_account[item.account] >= settings.OSAI_MAX_IN_FLIGHT_PER_ACCOUNT
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
    """Enqueue a send for every outbox delivery that is due (reports/notify.py)."""
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
    """Start each open-day refresh that webhooks asked for and that is due (reports/webhooks.py).

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
    bucket = Bucket.objects.filter(state__in=ACTIVE_STATES).aggregate(
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
    _time_out_overdue(timezone.now())
    if _next_due() is None:
        return "nothing in flight"
    if not force and _dispatcher_alive():
        return "a dispatcher is running"
    async_task("reports.tasks.pipeline_dispatch", task_name="osai-dispatch")
    return "dispatcher started"


def _time_out_overdue(now: datetime) -> None:
    overdue = list(
        Bucket.objects.filter(state__in=ACTIVE_STATES, deadline_at__lt=now).values_list(
            "pk", flat=True
        )
    )
    for pk in overdue:
        _finish(
            pk,
            Bucket.State.TIMED_OUT,
            "OSAI did not finish this report before the deadline "
            f"({settings.OSAI_BUCKET_DEADLINE_SECONDS // 60} min).",
        )


# --- One step of one bucket ------------------------------------------------------------------


def _poll_delay(polls: int) -> float:
    """Seconds until the next status poll of a bucket that has been polled `polls` times.

    The first poll comes soon (most reports of a short period are quick); then every 2 s, the
    seed playbook's own interval, while the report is young; then the gap grows by half per
    poll up to a cap, so a slow report costs OSAI a handful of polls, not one every 2 s.
    """
    first = settings.OSAI_POLL_FIRST_SECONDS
    steady = settings.OSAI_POLL_STEADY_SECONDS
    cap = settings.OSAI_POLL_MAX_SECONDS
    steady_polls = int(settings.OSAI_POLL_STEADY_PERIOD_SECONDS // steady)
    if polls <= 0:
        return float(min(first, cap))
    if polls <= steady_polls:
        return float(min(steady, cap))
    return float(min(steady * 1.5 ** (polls - steady_polls), cap))


def _backoff_on_schedule(since_created: float, polls: int) -> float:
    """Seconds to the back-off's next poll, kept on its schedule counted from the create.

    Each poll comes a little after its moment (the dispatcher's wake, the broker's hop);
    counted from the previous poll that lateness would add up, a second or two over a slow
    report. Counted from the create it does not, and no poll comes before its moment, so a
    report still makes at most the back-off's polls (P1). A poll far behind (a long queue)
    catches up at half the interval, not all at once.
    """
    planned = sum(_poll_delay(n) for n in range(polls + 1))
    return max(planned - since_created, _poll_delay(polls) / 2)


def _claim(pk: int, now: datetime) -> bool:
    lease = now + timedelta(seconds=settings.OSAI_STEP_LEASE_SECONDS)
    return bool(
        Bucket.objects.filter(pk=pk, state__in=ACTIVE_STATES)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=lease, next_attempt_at=lease, attempts=F("attempts") + 1, queued_at=None
        )
    )


def _save(bucket: Bucket, **fields: object) -> None:
    """Write fields of a bucket we hold the lease of, and release the lease."""
    fields.setdefault("lease_until", None)
    # Never overwrite a terminal state (a deadline or a cancel may have landed meanwhile).
    Bucket.objects.filter(pk=bucket.pk, state__in=ACTIVE_STATES).update(**fields)
    for name, value in fields.items():
        setattr(bucket, name, value)


def _finish(pk: int, state: str, message: str = "") -> None:
    """Move a bucket to a terminal state (only from an active one) and refresh its reports."""
    changed = Bucket.objects.filter(pk=pk, state__in=ACTIVE_STATES).update(
        state=state,
        error_message=message[:500],
        finished_at=timezone.now(),
        next_attempt_at=None,
        lease_until=None,
    )
    if changed:
        refresh_reports_of(pk)


def bucket_step(pk: int, not_before: float | None = None) -> str:
    """Do the next step of one bucket: create, poll, or download. Safe to run twice.

    `not_before` (epoch seconds): when the step was due; it was enqueued a moment early
    (DISPATCH_LEAD_SECONDS) to hide the broker's hop. Only the poll aimed at the moment OSAI
    should be done waits for it (a precise poll that came early would find the report still
    generating); any other step runs at once rather than hold a worker process idle.
    """
    now = timezone.now()
    if not _claim(pk, now):
        return "not claimed (done, or another worker holds it)"
    bucket = Bucket.objects.select_related("connection").get(pk=pk)
    if not_before is not None and _aimed_at_expected_moment(bucket, not_before):
        time.sleep(min(max(not_before - time.time(), 0.0), DISPATCH_LEAD_SECONDS))
        now = timezone.now()
    if bucket.attempts > settings.OSAI_BUCKET_MAX_ATTEMPTS:
        _finish(
            pk,
            Bucket.State.ERROR,
            f"Gave up after {bucket.attempts - 1} attempts: the worker crashed or OSAI kept "
            "failing while processing this part of the report. Retry the report later.",
        )
        return "gave up"
    if bucket.deadline_at and now > bucket.deadline_at:
        _time_out_overdue(now)
        return "timed out"
    if not bucket_is_wanted(bucket):
        _finish(pk, Bucket.State.CANCELLED, UNWANTED_MESSAGE)
        return "no report wants it any more"
    if bucket.connection.status == Connection.Status.NEEDS_TOKEN:
        _finish(pk, Bucket.State.ERROR, _needs_token_message(bucket.connection))
        return "connection needs a token"
    if bucket.started_at is None:
        Bucket.objects.filter(pk=pk).update(started_at=now)
        refresh_reports_of(pk)
    failpoint("step_start")
    try:
        client = osai_client_for(bucket.connection)
        if bucket.state in (Bucket.State.NEW, Bucket.State.CREATING):
            return _step_create(bucket, client)
        return _step_poll(bucket, client)
    except crypto.TokenDecryptionError as exc:
        _finish(pk, Bucket.State.ERROR, str(exc))
        return "token unreadable"
    except OsaiAuthError as exc:
        connection_mark_needs_token(connection=bucket.connection, message=exc.message)
        _finish(pk, Bucket.State.ERROR, _needs_token_message(bucket.connection))
        return "auth refused"
    except OsaiError as exc:
        if exc.permanent:
            _finish(pk, Bucket.State.ERROR, exc.message)
            return "failed"
        delay = _poll_delay(bucket.polls + 1)
        if isinstance(exc, OsaiRateLimited) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        # Keep the attempt counted: repeated transient errors end at the attempt limit.
        _save(
            bucket,
            next_attempt_at=timezone.now() + timedelta(seconds=delay),
            error_message=f"Retrying: {exc.message}"[:500],
        )
        return "transient error, retrying"


def _aimed_at_expected_moment(bucket: Bucket, not_before: float) -> bool:
    expected = bucket.expected_ready_at
    return (
        bucket.state == Bucket.State.POLLING
        and expected is not None
        and abs(expected.timestamp() - not_before) < AIMED_TOLERANCE_SECONDS
    )


def _needs_token_message(connection: Connection) -> str:
    return (
        f"OSAI no longer accepts the access token of the connection {connection.label!r} "
        "(…" + connection.token_last4 + "). Add a new token on the Connections page."
    )


def _step_create(bucket: Bucket, client: OsaiClient) -> str:
    with transaction.atomic():
        # Politeness: a bounded number of OSAI reports in flight per connection.
        Connection.objects.select_for_update().filter(pk=bucket.connection_id).first()
        in_flight = (
            Bucket.objects.filter(connection_id=bucket.connection_id, state__in=IN_FLIGHT_STATES)
            .exclude(pk=bucket.pk)
            .count()
        )
        if in_flight >= settings.OSAI_MAX_IN_FLIGHT_PER_CONNECTION:
            _save(
                bucket,
                attempts=F("attempts") - 1,
                next_attempt_at=timezone.now() + timedelta(seconds=2),
            )
            return "waiting for a free slot"
        _save(bucket, state=Bucket.State.CREATING, lease_until=bucket.lease_until)
    plan = eta.estimate(_finished_samples(bucket))
    created = client.create_report(
        bucket.period_start, bucket.period_end, to_osai_flags(bucket.flags())
    )
    failpoint("after_create")
    seen_at = timezone.now()
    first_poll = seen_at + timedelta(seconds=eta.seconds_to_next_poll(plan, 0.0, 0, _poll_delay))
    # Commit the id at once: from here on a re-run polls instead of creating again.
    _save(
        bucket,
        state=Bucket.State.POLLING,
        osai_report_id=created.id,
        osai_status=created.status,
        osai_created_at=created.creation_time,
        osai_creation_time_raw=created.creation_time_raw[:40],
        created_seen_at=seen_at,
        eta_low_seconds=plan.low if plan else None,
        expected_ready_at=seen_at + timedelta(seconds=plan.high) if plan else None,
        attempts=0,
        next_attempt_at=first_poll,
        error_message="",
    )
    note_next_poll(bucket.pk, first_poll)  # the badge looks just after it
    if plan is not None:
        refresh_reports_of(bucket.pk)  # the badge shows the estimate
    return "created"


def _finished_samples(bucket: Bucket) -> list[eta.Sample]:
    """How long OSAI took for the connection's last buckets of the same length, newest first."""
    shortest, longest = eta.length_class(bucket.period_end - bucket.period_start)
    length = ExpressionWrapper(F("period_end") - F("period_start"), output_field=DurationField())
    rows = (
        Bucket.objects.filter(
            connection_id=bucket.connection_id,
            ready_seen_seconds__isnull=False,
            pending_seen_seconds__isnull=False,
        )
        .annotate(length=length)
        .filter(length__gt=shortest, length__lte=longest)
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")
        .values_list("pending_seen_seconds", "ready_seen_seconds", "polls")[: eta.WINDOW]
    )
    return [
        eta.Sample(pending, ready, polls)
        for pending, ready, polls in rows
        if pending is not None and ready is not None
    ]


def _plan_of(bucket: Bucket) -> eta.Estimate | None:
    """The polling plan made when the bucket was created at OSAI (None: the back-off)."""
    if bucket.eta_low_seconds is None or not bucket.expected_ready_at or not bucket.created_seen_at:
        return None
    high = (bucket.expected_ready_at - bucket.created_seen_at).total_seconds()
    return eta.Estimate(low=bucket.eta_low_seconds, high=high, samples=0)


def _step_poll(bucket: Bucket, client: OsaiClient) -> str:
    assert bucket.osai_report_id is not None
    asked_at = timezone.now()
    status = client.get_report(bucket.osai_report_id)
    failpoint("after_poll")
    polls = bucket.polls + 1
    plan = _plan_of(bucket)
    # Seconds since OSAI answered our POST when we asked (None for buckets created before
    # that was recorded): what OSAI's answer tells us about how long it takes.
    elapsed = (
        (asked_at - bucket.created_seen_at).total_seconds() if bucket.created_seen_at else None
    )
    if status.is_pending:
        now = timezone.now()
        if bucket.created_seen_at is None:
            delay = _poll_delay(polls)
        else:
            since_created = (now - bucket.created_seen_at).total_seconds()
            delay = (
                _backoff_on_schedule(since_created, polls)
                if plan is None
                else eta.seconds_to_next_poll(plan, since_created, polls, _poll_delay)
            )
        _save(
            bucket,
            polls=polls,
            osai_status=status.status,
            pending_seen_seconds=elapsed,
            attempts=0,
            error_message="",
            next_attempt_at=now + timedelta(seconds=delay),
        )
        note_next_poll(bucket.pk, now + timedelta(seconds=delay))  # the badge looks just after
        return "still generating"
    learned: dict[str, object] = {}
    if elapsed is not None:
        low, high = eta.sample_of(bucket.pending_seen_seconds, elapsed, plan)
        learned = {"pending_seen_seconds": low, "ready_seen_seconds": high}
    if status.is_error:
        _save(
            bucket,
            polls=polls,
            osai_status=status.status,
            lease_until=bucket.lease_until,
            **learned,
        )
        _finish(
            bucket.pk,
            Bucket.State.ERROR,
            "OSAI reported an error while generating this report (status 1).",
        )
        return "osai error"
    # Done: keep the totals exactly as received, then archive the file at `path` at once,
    # because the signed link expires.
    totals = {column: status.totals[osai] for osai, column in OSAI_FIELD_TO_COLUMN.items()}
    _save(
        bucket,
        polls=polls,
        osai_status=status.status,
        osai_response=status.raw,
        state=Bucket.State.DOWNLOADING,
        lease_until=bucket.lease_until,
        **learned,
        **totals,
    )
    note = ""
    if status.path:
        try:
            content = client.download_report_file(status.path)
            failpoint("after_download")
        except OsaiError as exc:
            if not exc.permanent:
                raise  # transient: try the step again; it polls once more for a fresh link
            note = f"The report file could not be archived: {exc.message}"
        else:
            BucketFile.objects.update_or_create(
                bucket=bucket,
                defaults={
                    "content": content,
                    "sha256": hashlib.sha256(content).hexdigest(),
                    "size_bytes": len(content),
                    "downloaded_at": timezone.now(),
                },
            )
    else:
        note = "OSAI gave no report file to archive."
    _save(bucket, attempts=0, lease_until=bucket.lease_until)
    _finish(bucket.pk, Bucket.State.DONE, note)
    if bucket.tracked:
        # A tracking refresh may be complete: its budgets are evaluated then (by name, so the
        # pipeline imports nothing above it).
        async_task(
            "reports.tasks.tracking_bucket_done",
            bucket.connection_id,
            task_name=f"osai-tracked-{bucket.pk}",
        )
    return "done"
