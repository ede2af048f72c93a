"""Digests: a weekly (Mondays, for the week before) and a monthly (the 1st, for the month
before) email per person, and per team for its admins and the viewers who asked for it
(reports/access.py, `team_digest_teams`): the period's spend, the change against the period
before, this month's forecast, the top categories, where the budgets stand, and a link to the
CSV, and the period's anomalies (reports/spend/anomalies.py, their causes in the digest's
book). Read from tracked buckets; each digest is made once (`DigestSent` is unique per person,
team, kind and period) and sent through the outbox. People can turn either kind off
(DigestPreference), and send their own to channels of theirs too
(`DigestPreference.channels`: Slack, Teams, a signed webhook, more addresses).

A team with channels gets its digest there, once per period (`DigestSent` without a person):
one message per channel, a team email channel resolved to its current admins when it is sent
(A8), so its admins get it through the channels instead of one email each; its viewers who
opted in get theirs by email as before. A team without channels: an email per admin, as
before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import capfirst

from reports.access import Capability, may_in_team, team_digest_teams, verified_emails
from reports.formatting import change_text, money
from reports.metrics import CATEGORIES, all_flags, metrics_in
from reports.models import (
    Anomaly,
    Budget,
    Channel,
    Connection,
    DigestPreference,
    DigestSent,
    PriceBook,
    Team,
)
from reports.periods import describe, utc_midnight
from reports.spend import anomalies, ledger, notify, pricing
from reports.spend.messages import Message
from reports.spend.monthly import budget_status, month_spend, price_book_of
from reports.spend.usage import known_usage

WEEKLY = "weekly"
MONTHLY = "monthly"


def due_periods(now: datetime) -> list[tuple[str, datetime, datetime]]:
    """The digests due today: (kind, start, end) of the period each one covers."""
    today = utc_midnight(now.astimezone(UTC).date())
    due = []
    if today.weekday() == 0:
        due.append((WEEKLY, today - timedelta(days=7), today))
    if today.day == 1:
        due.append((MONTHLY, today - relativedelta(months=1), today))
    return due


@dataclass(frozen=True)
class Digest:
    subject: str
    text: str


def digest_for(
    *,
    kind: str,
    start: datetime,
    end: datetime,
    name: str,
    connections: list[Connection],
    price_book: PriceBook | None,
    budgets: list[Budget],
    csv_query: dict[str, str],
    now: datetime,
) -> Digest:
    """The digest of one scope (a person or a team) for one period."""
    currency = price_book.currency if price_book else ""
    ids = [c.pk for c in connections]
    costs = _held_costs(ids, price_book, start, end, now)
    before_start = start - (relativedelta(months=1) if kind == MONTHLY else timedelta(days=7))
    before = _held_costs(ids, price_book, before_start, start, now)
    label = describe(start, end)
    lines = [f"{name}: usage and spend for {label} (UTC).", ""]
    if costs is None:
        lines.append("Not all of this period is fetched from OSAI yet; see the dashboard.")
        spent = None
    else:
        spent = costs["total"]
        lines.append(f"Spend: {money(spent, currency)}")
        if before is not None:
            change, _ = change_text(
                spent,
                before["total"],
                describe(before_start, start),
                currency=currency,
                with_base=True,
            )
            lines.append(f"Change: {change}")
        top = sorted(
            (
                (sum((costs.get(m.column, Decimal(0)) for m in metrics_in(c.key)), Decimal(0)), c)
                for c in CATEGORIES
            ),
            key=lambda item: item[0],
            reverse=True,
        )[:3]
        lines.append(
            "Top categories: "
            + ", ".join(f"{c.label} {money(value, currency)}" for value, c in top if value)
        )
    month = month_spend(connections, price_book, now)
    if month.forecast is not None:
        lines.append(
            f"This month so far: {money(month.month_to_date, currency)}; month-end forecast "
            f"(our estimate, not OSAI's) {money(month.forecast.value, currency)}."
        )
    for budget in budgets:
        status = budget_status(budget, now=now)
        lines.append(
            f"Budget {status.name}: {status.percent} % of {money(status.amount, currency)} "
            f"used this month, {money(status.remaining, currency)} left."
        )
    lines += anomaly_lines(connections, price_book, start, end)
    base = settings.OSAI_USAGE_BASE_URL.rstrip("/")
    csv_link = f"{base}{reverse('spend_export_csv')}?{urlencode(csv_query)}"
    lines += [
        "",
        f"CSV of the period: {csv_link}",
        f"Dashboard: {base}{reverse('home')}",
        f"Digest settings: {base}{reverse('digest_settings')}",
    ]
    title = "Weekly" if kind == WEEKLY else "Monthly"
    amount = f": {money(spent, currency)}" if spent is not None else ""
    return Digest(subject=f"{title} OSAI usage, {name}, {label}{amount}", text="\n".join(lines))


def anomaly_lines(
    connections: list[Connection], price_book: PriceBook | None, start: datetime, end: datetime
) -> list[str]:
    """The period's anomalies of these connections, oldest first, each its day and its cause
    priced in the digest's book; one marked as expected says so. None: no line."""
    rows = (
        Anomaly.objects.filter(
            connection__in=connections, day__gte=start.date(), day__lt=end.date()
        )
        .select_related("connection")
        .order_by("day", "connection__label", "column")
    )
    found = [
        f"- {anomaly.day:%Y-%m-%d}: {capfirst(anomalies.cause(anomaly, price_book))}"
        + ("" if anomaly.alerting else " (marked as expected)")
        for anomaly in rows
    ]
    if not found:
        return []
    return [f"Anomalies ({len(found)}):", *found]


def _held_costs(
    ids: list[int], price_book: PriceBook | None, start: datetime, end: datetime, now: datetime
) -> pricing.Costs | None:
    """The period's cost from the spend ledger (None unless all of it is held); without a
    price book, what is held costs 0."""
    if not ids:
        return None
    if price_book is not None:
        return ledger.period_costs(ids, price_book, start, end, now=now)
    rows = known_usage(ids, all_flags(), start, end)
    return None if rows is None else pricing.sum_costs(pricing.rows_costs(rows, None))


def _wants(user: User, kind: str) -> bool:
    preference = DigestPreference.objects.filter(user=user).first()
    if preference is None:
        return True
    return preference.weekly if kind == WEEKLY else preference.monthly


def digest_channels(user: User) -> list[Channel]:
    """The person's channels their own digests go to, besides their email."""
    return list(Channel.objects.filter(digest_preferences__user=user, owner=user))


def _made_before(user: User | None, team: Team | None, kind: str, start: datetime) -> bool:
    """Whether this digest (its recipient, kind and period) was made already."""
    return DigestSent.objects.filter(
        user=user, team=team, kind=kind, period_start=start.date()
    ).exists()


def _queue_once(
    *,
    user: User | None,
    team: Team | None,
    kind: str,
    start: datetime,
    digest: Digest,
    payload: dict[str, object],
    emails: list[str],
    channels: list[Channel],
) -> bool:
    """Record the digest (once per recipient, kind and period) and queue its messages; False
    if it was made before."""
    base = settings.OSAI_USAGE_BASE_URL.rstrip("/")
    try:
        with transaction.atomic():
            DigestSent.objects.create(user=user, team=team, kind=kind, period_start=start.date())
            notify.deliveries_create(
                subject=digest.subject,
                text=digest.text,
                payload=payload,
                emails=emails,
                channels=channels,
                message=Message(
                    title=digest.subject,
                    text=digest.text,
                    link=f"{base}{reverse('home')}",
                    link_label="Dashboard",
                ),
            )
    except IntegrityError:
        return False
    return True


def _queue(user: User, team: Team | None, kind: str, start: datetime, digest: Digest) -> bool:
    """Record the digest and queue its email (and, for a person's own, its channels), once
    (False if it was made before)."""
    return _queue_once(
        user=user,
        team=team,
        kind=kind,
        start=start,
        digest=digest,
        payload={"text": digest.subject},
        emails=verified_emails(user),  # never an address single sign-on left unverified
        channels=digest_channels(user) if team is None else [],
    )


def team_channels(team: Team) -> list[Channel]:
    """The team's channels its digests go to (all of them)."""
    return list(Channel.objects.filter(team=team))


def _queue_team_channels(
    team: Team, channels: list[Channel], kind: str, start: datetime, digest: Digest
) -> bool:
    """Record the team's digest to its channels and queue one message per channel, once per
    period (False if it was made before). Recipients are resolved when each is sent."""
    return _queue_once(
        user=None,
        team=team,
        kind=kind,
        start=start,
        digest=digest,
        payload={
            "text": digest.subject,
            "digest": kind,
            "period_start": f"{start:%Y-%m-%d}",
            "team": {"id": team.pk, "name": team.name},
        },
        emails=[],
        channels=channels,
    )


def _team_digest(
    team: Team, kind: str, start: datetime, end: datetime, query: dict[str, str], now: datetime
) -> Digest | None:
    shared = list(Connection.objects.counting_for_team(team))
    if not shared:
        return None
    return digest_for(
        kind=kind,
        start=start,
        end=end,
        name=f"team {team.name}",
        connections=shared,
        price_book=price_book_of(team),
        budgets=list(Budget.objects.filter(team=team)),
        csv_query={**query, "team": str(team.pk)},
        now=now,
    )


def digests_send(*, now: datetime | None = None) -> int:
    """Queue every digest due today that is not made yet. Returns how many were queued."""
    now = now or timezone.now()
    queued = 0
    with_channels = set(
        Channel.objects.filter(team__isnull=False).values_list("team_id", flat=True)
    )
    for kind, start, end in due_periods(now):
        query = {"from": f"{start:%Y-%m-%d}", "to": f"{end:%Y-%m-%d}"}
        for user in get_user_model().objects.filter(is_active=True).exclude(email=""):
            if not _wants(user, kind):
                continue
            own = list(Connection.objects.filter(owner=user))
            if own and not _made_before(user, None, kind, start):
                digest = digest_for(
                    kind=kind,
                    start=start,
                    end=end,
                    name=user.get_username(),
                    connections=own,
                    price_book=pricing.default_price_book(),
                    budgets=list(Budget.objects.filter(owner=user, team__isnull=True)),
                    csv_query=query,
                    now=now,
                )
                queued += _queue(user, None, kind, start, digest)
            for team in team_digest_teams(user):
                if team.pk in with_channels and may_in_team(
                    user.pk, team, Capability.RECEIVE_TEAM_DIGEST
                ):
                    continue  # an admin: through the team's channels
                if _made_before(user, team, kind, start):
                    continue
                made = _team_digest(team, kind, start, end, query, now)
                if made is not None:
                    queued += _queue(user, team, kind, start, made)
        for team in Team.objects.filter(pk__in=with_channels).order_by("pk"):
            if _made_before(None, team, kind, start):
                continue
            made = _team_digest(team, kind, start, end, query, now)
            if made is not None:
                queued += _queue_team_channels(team, team_channels(team), kind, start, made)
    return queued


def period_from_query(values: dict[str, str]) -> tuple[date, date] | None:
    """The [from, to) days of a CSV link, or None if they are not valid dates."""
    try:
        first = date.fromisoformat(values.get("from", ""))
        last = date.fromisoformat(values.get("to", ""))
    except ValueError:
        return None
    return (first, last) if first < last else None
