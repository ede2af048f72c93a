"""OSAI's worker webhooks, received per connection (W1), and the refresh a finished task asks for.

Each connection has its own URL, `/hooks/osai/<secret>/`, with 256 random bits in it; only the
secret's SHA-256 is looked up (and the secret itself is kept encrypted, to show it again). A
delivery is JSON of at most OSAI_WEBHOOK_MAX_BYTES, stored as received with what
`osai.webhooks` could read from it; a repeat (same event id, or the same JSON) is stored once.
Only strict JSON that every database stores is taken: NaN and infinite numbers, a NUL
character and lone surrogates are refused with 400, like anything else that is not JSON.

A finished task means the open day's usage has grown, so it asks for a tracking refresh of the
connection's open day (reports/spend/tracking.py), debounced: the first event arms
`Connection.refresh_due_at` OSAI_WEBHOOK_REFRESH_DELAY_SECONDS ahead and later ones find it
armed, so a burst of events makes one refresh. The dispatcher starts it when it is due
(dispatcher.enqueue_due_refreshes), like a bucket step. However the events come, a
connection's open day is asked of OSAI at most once per delay: a refresh that comes less than
the delay after the last one (the hourly tracking's included) waits for the rest of it.
Floods are limited per connection and per person (the view, OSAI_WEBHOOK_RATE and
OSAI_WEBHOOK_PERSON_RATE).
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.urls import reverse
from django.utils import timezone

from osai.webhooks import delivery_key, parse_task_finished
from reports import audit
from reports.models import (
    Bucket,
    Connection,
    WebhookEvent,
    new_webhook_secret,
    prune_rows,
    webhook_secret_digest,
)
from reports.periods import utc_midnight
from reports.pipeline import dispatcher
from reports.spend import tracking

log = logging.getLogger(__name__)

# Content types a JSON body may come with (OSAI documents none); anything else is refused.
_JSON_TYPES = ("application/json", "text/json", "text/plain", "")


class _NotStrictJson(ValueError):
    """NaN, Infinity, a number too large for a float: JSON that Python reads, but no other
    reader does, and that nothing here can store."""


def _refuse_constant(name: str) -> Any:
    raise _NotStrictJson(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NotStrictJson(text)
    return value


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _unstorable_text(payload: Any) -> bool:
    """True if a key or string holds a NUL (PostgreSQL's text refuses it) or a lone UTF-16
    surrogate ("\\ud800": valid JSON, not valid Unicode; no database encodes it). Walked
    without recursion: the parser already bounds the depth."""
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            texts: list[str] = [value]
        elif isinstance(value, dict):
            texts = list(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
            continue
        else:
            continue
        for text in texts:
            if "\x00" in text or _SURROGATE.search(text):
                return True
    return False


class WebhookRejected(Exception):
    """A delivery that is not stored: `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- The URL -----------------------------------------------------------------------------------


def webhook_path(connection: Connection) -> str:
    return reverse("osai_webhook", args=[connection.webhook_secret])


def webhook_url(connection: Connection, base_url: str) -> str:
    """The URL to give OSAI: `base_url` (where OSAI reaches this site) and the secret path."""
    return base_url.rstrip("/") + webhook_path(connection)


def webhook_secret_rotate(*, connection: Connection) -> Connection:
    """A new secret: the old URL answers 404 from now on."""
    connection.set_webhook_secret(new_webhook_secret())
    with transaction.atomic():
        connection.save(update_fields=["webhook_secret_encrypted", "webhook_secret_sha256"])
        # Never the URL: its path is the secret (M7).
        audit.record(
            "webhook.rotate",
            actor=connection.owner,
            object_type="connection",
            object_id=connection.pk,
            label=f"{connection.label}: webhook address replaced",
            owner=connection.owner_id,
            after={"webhook": "address replaced: the old one answers 404"},
        )
    return connection


def connection_for_webhook(secret: str) -> Connection | None:
    """The connection whose webhook URL carries this secret; None for any other string."""
    if not secret or len(secret) > 128:
        return None
    return (
        Connection.objects.filter(webhook_secret_sha256=webhook_secret_digest(secret))
        .select_related("owner")  # the limit per person (the view)
        .first()
    )


# --- Deliveries ----------------------------------------------------------------------------------


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or media.endswith("+json")


def webhook_receive(
    *, connection: Connection, body: bytes, content_type: str, now: datetime | None = None
) -> tuple[WebhookEvent, bool]:
    """Store one delivery; returns (event, created). A repeat returns the stored event.

    Raises WebhookRejected for what is not JSON (415, 400) or too big (413).
    """
    if len(body) > settings.OSAI_WEBHOOK_MAX_BYTES:
        raise WebhookRejected(413, "The body is larger than this endpoint accepts.")
    if not _is_json_type(content_type):
        raise WebhookRejected(415, "Send JSON (Content-Type: application/json).")
    try:
        text = body.decode("utf-8-sig")
        payload = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotStrictJson:
        raise WebhookRejected(400, "The body holds NaN or an infinite number: not JSON.") from None
    except (ValueError, RecursionError):  # also UnicodeDecodeError
        raise WebhookRejected(400, "The body is not JSON (UTF-8).") from None
    if _unstorable_text(payload):
        raise WebhookRejected(
            400, "The body holds a NUL character or invalid Unicode (a lone surrogate)."
        )
    now = now or timezone.now()
    task = parse_task_finished(payload)
    key = delivery_key(payload)
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                connection=connection,
                received_at=now,
                dedupe_key=key,
                body=text,
                kind=task.kind,
                kind_raw=task.kind_raw,
                succeeded=task.succeeded,
                worker_gb=task.worker_gb,
                task_id=task.task_id,
                finished_at=task.finished_at,
                message=task.message,
            )
    except IntegrityError:
        existing = WebhookEvent.objects.filter(connection=connection, dedupe_key=key).first()
        if existing is None:  # not a duplicate after all: let the caller see the error
            raise
        return existing, False
    refresh_request(connection, now=now)
    return event, True


# --- The debounced refresh ---------------------------------------------------------------------


def refresh_request(
    connection: Connection, *, now: datetime | None = None, due: datetime | None = None
) -> bool:
    """Ask for a refresh of the connection's open day, unless one is already armed: the delay
    from now, or at `due`.

    Returns True if this call armed it (the first event of a burst).
    """
    if connection.status != Connection.Status.OK:
        return False  # tracking skips it too, until its token is replaced
    now = now or timezone.now()
    if due is None:
        due = now + timedelta(seconds=settings.OSAI_WEBHOOK_REFRESH_DELAY_SECONDS)
    armed = Connection.objects.filter(pk=connection.pk, refresh_due_at__isnull=True).update(
        refresh_due_at=due
    )
    if armed:
        dispatcher.wake()  # wakes a dispatcher, which starts the refresh when it is due
    return bool(armed)


def _open_day_last_asked(connection: Connection, day: datetime) -> datetime | None:
    """When tracking last made a bucket of the connection's open day (it keeps the newest)."""
    found: datetime | None = Bucket.objects.filter(
        connection=connection, tracked=True, is_closed=False, period_start=day
    ).aggregate(last=Max("created_at"))["last"]
    return found


def webhook_refresh(connection_id: int, *, now: datetime | None = None) -> str:
    """The refresh a burst of webhooks asked for (a task, started by the dispatcher).

    If the open day is being fetched already, that fetch may have started before the tasks
    finished: the refresh is armed again for later rather than dropped.
    """
    now = now or timezone.now()
    connection = Connection.objects.filter(pk=connection_id, status=Connection.Status.OK).first()
    if connection is None:
        return "no working connection"
    today = utc_midnight(now.date())
    if tracking.open_day_in_flight(connection, today):
        refresh_request(connection, now=now)
        return "the open day is being fetched; refresh again later"
    # One OSAI report of the open day per connection per delay, whoever asked for the last.
    delay = timedelta(seconds=settings.OSAI_WEBHOOK_REFRESH_DELAY_SECONDS)
    last = _open_day_last_asked(connection, today)
    if last is not None and now < last + delay:
        refresh_request(connection, now=now, due=last + delay)
        return "the open day was asked for less than the delay ago; refresh again later"
    started = tracking.tracking_refresh(connection, now=now)
    log.info("Webhook refresh of connection %s: %d OSAI reports", connection.pk, len(started))
    return f"refreshed ({len(started)} OSAI reports started)"


# --- Retention (R1) -----------------------------------------------------------------------------


def prune_webhook_events(*, now: datetime, dry_run: bool = False) -> int:
    """Delete OSAI webhooks received more than OSAI_RETAIN_WEBHOOK_EVENTS_DAYS ago: the
    activity page's history. Spend never comes from them (OSAI's reports are counted) and the
    refresh's debounce reads buckets, not events. A delivery OSAI repeats after that long is
    stored again, as new. Returns how many (would) go."""
    before = now - timedelta(days=max(1, settings.OSAI_RETAIN_WEBHOOK_EVENTS_DAYS))
    return prune_rows(WebhookEvent.objects.filter(received_at__lt=before), dry_run=dry_run)
