"""The activity feed: OSAI's worker webhooks received for a person's own connections, newest
first. Shared by the page, its polling partial and the API (`/api/v1/activity`).

Only a connection's owner sees its feed: which tasks someone runs is theirs, like the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet

from reports.models import Connection, WebhookEvent

FEED_SIZE = 50


@dataclass(frozen=True)
class FeedItem:
    pk: int
    connection: str
    kind: str
    kind_label: str
    kind_raw: str
    outcome: str  # "succeeded", "failed" or "unknown"
    worker_gb: int | None
    received_at: datetime
    finished_at: datetime | None
    task_id: str
    message: str


def _outcome(succeeded: bool | None) -> str:
    return "unknown" if succeeded is None else ("succeeded" if succeeded else "failed")


def events_visible_to(user: User, connection_id: int | None = None) -> QuerySet[WebhookEvent]:
    """Webhook deliveries of the user's own connections (of one, if given)."""
    if not user.is_authenticated:
        return WebhookEvent.objects.none()
    events = WebhookEvent.objects.filter(connection__owner=user)
    if connection_id is not None:
        events = events.filter(connection_id=connection_id)
    return events


def feed_items(
    user: User, *, connection_id: int | None = None, after: int = 0, limit: int = FEED_SIZE
) -> list[FeedItem]:
    """The newest deliveries, newest first (one query; the raw body is not read)."""
    events = (
        events_visible_to(user, connection_id)
        .filter(pk__gt=after)
        .select_related("connection")
        .defer("body")
        .order_by("-pk")[:limit]
    )
    return [
        FeedItem(
            pk=event.pk,
            connection=event.connection.label,
            kind=event.kind,
            kind_label=event.get_kind_display(),
            kind_raw=event.kind_raw,
            outcome=_outcome(event.succeeded),
            worker_gb=event.worker_gb,
            received_at=event.received_at,
            finished_at=event.finished_at,
            task_id=event.task_id,
            message=event.message,
        )
        for event in events
    ]


def activity_page(user: User, *, connection: Connection | None = None) -> dict[str, Any]:
    """The feed page (or its partial): the items and the newest id, which the next poll sends."""
    items = feed_items(user, connection_id=connection.pk if connection else None)
    return {
        "items": items,
        "latest": items[0].pk if items else 0,
        "feed_connection": connection,
        "has_connections": Connection.objects.filter(owner=user).exists(),
    }


def has_newer(user: User, *, after: int, connection_id: int | None = None) -> bool:
    """True if a delivery newer than `after` arrived (one indexed query): the poll's question."""
    return events_visible_to(user, connection_id).filter(pk__gt=after).exists()
