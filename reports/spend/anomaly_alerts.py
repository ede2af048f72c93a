"""Anomaly alerts (A12): each anomaly alerts once, through the outbox budget alerts use.

Who receives (`audiences`, the one home of the rule):

- the connection's owner, through their own channels (all of them), or by email to their
  address when they have none, as a budget's alerts did before channels; unless they turned
  off "Email me about usage anomalies" (`DigestPreference.anomalies`), asked when queued and
  again when sent (`notify.wants_anomaly_alerts`), so turning it off also stops what waits;
- each team the connection counts for (M1), through the team's channels, priced in the
  team's book. A team's email channel is resolved when each message is sent: its current
  admins (A8), never an address whose holder turned the alerts off (reports/spend/notify.py).

Once (A1's rule): `Anomaly.alerted_at` is set by one conditional UPDATE in the transaction
that queues the anomaly's messages, so two workers queue it once. The tracking hook queues
them inside the detector's transaction that records the anomalies (reports/tasks.py), so a
worker killed before that commit records neither, and the next refresh judges the day again.
A worker killed between sending a message and recording it sends it at most once more, with
the same key (notify.delivery_send).

Never for an anomaly marked "expected" (checked when queued and again when sent), and only
for an anomaly whose day is at most OSAI_ANOMALY_ALERT_DAYS before it is found: a day is
judged by the refresh after it closes, so a few days cover an outage, while a new
connection's history (months of past days, judged at once) never floods anyone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.text import capfirst

from reports.access import verified_emails
from reports.metrics import CATEGORIES, METRIC_BY_COLUMN
from reports.models import (
    Anomaly,
    Channel,
    Connection,
    Delivery,
    PriceBook,
    Team,
    prune_rows,
)
from reports.spend import anomalies, notify, pricing
from reports.spend.messages import Message
from reports.spend.monthly import price_book_of

ANOMALIES_PATH = "/anomalies/"
_CATEGORY_LABELS = {category.key: category.label for category in CATEGORIES}


@dataclass
class Audience:
    """Where one anomaly message goes, and the book that prices it."""

    team: Team | None
    book: PriceBook | None
    channels: list[Channel] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)


def audiences(connection: Connection) -> list[Audience]:
    """Who an anomaly of the connection is sent to: see the module."""
    found: list[Audience] = []
    owner = connection.owner
    if notify.wants_anomaly_alerts(owner.pk):
        own = list(Channel.objects.filter(owner=owner))
        # Emailed only where the person showed the address is theirs (not one single sign-on
        # brought in unverified).
        emails = [] if own else verified_emails(owner)
        if own or emails:
            found.append(Audience(None, pricing.default_price_book(), own, emails))
    teams = Team.objects.filter(
        shared_connections=connection, memberships__user=connection.owner_id
    ).select_related("price_book")
    for team in teams.distinct().order_by("pk"):
        channels = list(Channel.objects.filter(team=team))
        if channels:
            found.append(Audience(team, price_book_of(team), channels))
    return found


def link() -> str:
    return settings.OSAI_USAGE_BASE_URL.rstrip("/") + ANOMALIES_PATH


def first_day_alerted(now: datetime) -> date:
    """The earliest anomaly day that still alerts when found at `now`."""
    return now.astimezone(UTC).date() - timedelta(days=max(0, settings.OSAI_ANOMALY_ALERT_DAYS))


def message_of(
    anomaly: Anomaly, connection: Connection, audience: Audience
) -> tuple[str, str, dict[str, Any], Message]:
    """The subject, email text, signed webhook payload and Slack/Teams message of one
    anomaly for one audience (priced in its book)."""
    metric = METRIC_BY_COLUMN[anomaly.column]
    category = _CATEGORY_LABELS[metric.category]
    cause = anomalies.cause(anomaly, audience.book, connection.label)
    kind = "Idle storage" if anomaly.kind == Anomaly.Kind.IDLE_STORAGE else "Usage spike"
    subject = (
        f"{kind} on {connection.label}: {anomalies.metric_phrase(anomaly.column)} "
        f"on {anomaly.day:%Y-%m-%d}"
    )
    url = link()
    headline = f"{capfirst(cause)}."  # the cause opens the message as a sentence
    where = f" (shared with team {audience.team.name})" if audience.team is not None else ""
    lines = [
        headline,
        "",
        f"Day: {anomaly.day:%Y-%m-%d} (UTC). Connection: {connection.label}{where}. "
        f"Category: {category}.",
        "If it was planned, mark it as expected on the Anomalies page; it will not alert again.",
    ]
    text = "\n".join([*lines, "", f"Anomalies: {url}"])
    facts = [
        ("Connection", connection.label),
        ("Category", category),
        ("Metric", metric.label),
        ("Day", f"{anomaly.day:%Y-%m-%d}"),
    ]
    if audience.team is not None:
        facts.append(("Team", audience.team.name))
    payload: dict[str, Any] = {
        "text": f"{subject}. {headline}",
        "anomaly": {
            "id": anomaly.pk,
            "kind": anomaly.kind,
            "connection": connection.label,
            "connection_id": connection.pk,
            "category": metric.category,
            "category_label": category,
            "metric": anomaly.column,
            "day": anomaly.day.isoformat(),
            "actual": anomaly.actual,
            "expected_low": anomaly.expected_low,
            "expected_high": anomaly.expected_high,
            "cause": cause,
            "currency": audience.book.currency if audience.book is not None else "",
        },
        "team": (
            {"id": audience.team.pk, "name": audience.team.name}
            if audience.team is not None
            else None
        ),
        "url": url,
    }
    message = Message(
        title=subject,
        text="\n".join(lines),
        facts=facts,
        link=url,
        link_label="Anomalies",
    )
    return subject, text, payload, message


def anomaly_alerts_queue(connection: Connection, *, now: datetime | None = None) -> list[Anomaly]:
    """Queue the alerts of the connection's anomalies not alerted yet (recent, not expected).
    Returns the anomalies it queued (none on a repeat). One query when there is nothing."""
    now = now or timezone.now()
    waiting = list(
        Anomaly.objects.filter(
            connection=connection, alerted_at__isnull=True, day__gte=first_day_alerted(now)
        )
        .exclude(feedback=Anomaly.Feedback.EXPECTED)
        .order_by("day", "column")
    )
    if not waiting:
        return []
    who = audiences(connection)
    queued = []
    for anomaly in waiting:
        with transaction.atomic():
            claimed = Anomaly.objects.filter(pk=anomaly.pk, alerted_at__isnull=True).update(
                alerted_at=now
            )
            if not claimed:
                continue  # another worker queued it (A1)
            for audience in who:
                subject, text, payload, message = message_of(anomaly, connection, audience)
                notify.deliveries_create(
                    subject=subject,
                    text=text,
                    payload=payload,
                    emails=audience.emails,
                    channels=audience.channels,
                    message=message,
                    anomaly=anomaly,
                )
        queued.append(anomaly)
    return queued


# --- Retention (R4) -----------------------------------------------------------------------------


def anomalies_kept_from(now: datetime) -> date:
    """The first day whose anomalies are kept: the start of the month
    OSAI_RETAIN_ANOMALIES_MONTHS calendar months back, counting this one (never fewer than
    two: this month's and last month's, which digests and alerts still read)."""
    months = max(2, settings.OSAI_RETAIN_ANOMALIES_MONTHS)
    month = now.astimezone(UTC).date().replace(day=1)
    return month - relativedelta(months=months - 1)


def prune_anomalies(*, now: datetime, dry_run: bool = False) -> int:
    """Delete anomalies of days before `anomalies_kept_from`, except one a kept message still
    names (the alert log's row). A day is judged once (`Connection.anomalies_checked_through`),
    so a pruned anomaly is never found again. Returns how many (would) go: the same count
    before the deliveries' prune (a dry run) and after it."""
    past = notify.deliveries_past_retention(now=now).values("pk")
    named = Delivery.objects.filter(anomaly=OuterRef("pk")).exclude(pk__in=past)
    old = Anomaly.objects.filter(day__lt=anomalies_kept_from(now)).exclude(Exists(named))
    return prune_rows(old, dry_run=dry_run)
