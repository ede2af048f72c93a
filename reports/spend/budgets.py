"""Budgets: set them, and check them against this month's spend, alerting once per threshold.

A budget is monthly, per connection, per person (all their connections) or per team (its
admins set it, its admins and viewers see it), in its price book's currency (A6: a positive
Decimal). Its thresholds (default 50/80/100 %) apply to spend so far and, if chosen, to the
month-end forecast. Its alerts go to its channels (reports/spend/channels.py: its owner's,
or for a team budget the team's). A team budget's alerts go to the team's current admins
(A8): through the channels an admin chose, never to the address of an account whose holder
gets no alerts (a viewer, a member, someone no longer in the team: reports/access.py); and
once the person who chose those channels is no longer an admin, the channels stop and the
alerts go to the team's admins themselves, until an admin saves the budget again.

Checking a budget (after each tracking refresh, and by `manage.py check_budgets`) inserts one
Alert row per newly crossed threshold; the database's uniqueness makes that exactly once per
month (A1), however many workers check at once. One check that finds several thresholds
newly crossed sends one message, naming the highest (reports/spend/notify.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from dateutil.relativedelta import relativedelta
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.urls import reverse
from django.utils import timezone

from reports import audit
from reports.access import Capability, team_emails, teams_where
from reports.formatting import money
from reports.models import Alert, Budget, Channel, Connection, Delivery, Team, prune_rows
from reports.spend import channels as channel_service
from reports.spend import notify
from reports.spend.messages import Message
from reports.spend.monthly import BudgetStatus, budget_status

DEFAULT_THRESHOLDS = (50, 80, 100)
MAX_AMOUNT = Decimal("999999999999.99")


class BudgetError(Exception):
    """A budget that cannot be set; the message is for the form or the command."""


# --- Setting a budget ---------------------------------------------------------------------------


def parse_amount(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value).strip().replace(",", ""))
    except (InvalidOperation, ValueError):
        raise BudgetError("Give the monthly amount as a number, such as 250 or 1200.50.") from None
    if not amount.is_finite() or amount <= 0:
        raise BudgetError("The monthly amount must be more than 0.")
    if amount > MAX_AMOUNT or amount != amount.quantize(Decimal("0.01")):
        raise BudgetError("The monthly amount has at most two decimals and 12 digits.")
    return amount


def parse_thresholds(values: Iterable[Any]) -> list[int]:
    try:
        thresholds = sorted({int(str(v).strip().rstrip("%")) for v in values if str(v).strip()})
    except ValueError:
        raise BudgetError("Thresholds are whole percentages, such as 50, 80, 100.") from None
    if not thresholds or any(not 1 <= t <= 1000 for t in thresholds):
        raise BudgetError("Give one to ten thresholds between 1 and 1000 %.")
    if len(thresholds) > 10:
        raise BudgetError("Give one to ten thresholds between 1 and 1000 %.")
    return thresholds


def parse_emails(values: Iterable[str]) -> list[str]:
    try:
        return channel_service.parse_emails(values)
    except channel_service.ChannelError as exc:
        raise BudgetError(str(exc).replace("A channel emails", "Alerts go to")) from None


@transaction.atomic
def budget_set(
    *,
    actor: User,
    scope: str,
    amount: Any,
    connection: Connection | None = None,
    team: Team | None = None,
    thresholds: Sequence[Any] = DEFAULT_THRESHOLDS,
    on_forecast: bool = False,
    channels: Iterable[Channel] | None = None,
    emails: Sequence[str] = (),
    webhook_url: str = "",
    webhook_secret: str | None = None,
) -> Budget:
    """Create or change the one budget of a scope. `actor` sets it: the connection's owner, the
    person themselves, or a role of the team that manages its budgets (an admin).

    Its alerts go to `channels` (None keeps the ones it has): the actor's own, or for a team
    budget the team's. `emails` adds an email channel to those addresses (the one that
    exists, or a new one) and `webhook_url` a signed webhook channel with `webhook_secret`:
    the budget form's and `set_budget`'s shortcuts, which make channels like any other."""
    if scope == Budget.Scope.CONNECTION:
        if connection is None or connection.owner_id != actor.pk:
            raise BudgetError("Choose one of your own connections.")
        lookup: dict[str, Any] = {"scope": scope, "connection": connection}
    elif scope == Budget.Scope.TEAM:
        managed = teams_where(actor, Capability.MANAGE_BUDGETS)
        if team is None or not managed.filter(pk=team.pk).exists():
            raise BudgetError("Only the team's admins set its budget.")
        lookup = {"scope": scope, "team": team}
    elif scope == Budget.Scope.PERSON:
        lookup = {"scope": scope, "owner": actor}
    else:
        raise BudgetError("Choose what the budget covers: a connection, you, or a team.")
    owner_team = team if scope == Budget.Scope.TEAM else None
    chosen = None if channels is None else list(channels)
    if chosen is not None:
        ids = {c.pk for c in chosen}
        if channel_service.channels_usable(actor, owner_team).filter(pk__in=ids).count() != len(
            ids
        ):
            raise BudgetError(
                "Choose channels of the team." if owner_team else "Choose channels of your own."
            )
    addresses = parse_emails(emails)
    channel_service.refuse_non_admin_addresses(
        owner_team,
        addresses,
        "budget alerts go to the team's admins; its viewers and members see the budget on the "
        "team page.",
        BudgetError,
    )
    fields = {
        "amount": parse_amount(amount),
        "thresholds": parse_thresholds(thresholds),
        "on_forecast": bool(on_forecast),
    }
    budget = Budget.objects.filter(**lookup).first()
    before = None if budget is None else _audited(budget)
    if budget is None:
        budget = Budget(**{"owner": actor, **lookup})
    elif chosen is None:
        chosen = list(budget.channels.all())
    for name, value in fields.items():
        setattr(budget, name, value)
    budget.channels_set_by = actor  # who saves the budget answers for where its alerts go
    budget.save()
    chosen = chosen or []
    try:
        if addresses:
            chosen.append(
                channel_service.email_channel_for(actor=actor, team=owner_team, addresses=addresses)
            )
        if webhook_url:
            hook = channel_service.webhook_channel_for(
                actor=actor, team=owner_team, url=webhook_url, secret=webhook_secret, among=chosen
            )
            chosen = [c for c in chosen if c.pk != hook.pk] + [hook]
    except channel_service.ChannelError as exc:
        raise BudgetError(str(exc)) from None
    budget.channels.set(chosen)
    after = _audited(budget)
    if before != after:
        _record(
            "budget.create" if before is None else "budget.change", actor, budget, before, after
        )
    return budget


def _audited(budget: Budget) -> dict[str, Any]:
    """What the audit log keeps of a budget (M7): never a channel's address or URL."""
    return {
        "amount": str(budget.amount),
        "thresholds": list(budget.thresholds),
        "on_forecast": budget.on_forecast,
        "channels": sorted(c.name for c in budget.channels.all()) if budget.pk else [],
    }


def _record(
    action: str,
    actor: User,
    budget: Budget,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    connection = budget.connection if budget.scope == Budget.Scope.CONNECTION else None
    audit.record(
        action,
        actor=actor,
        object_type="budget",
        object_id=budget.pk,
        label=f"{budget.get_scope_display()} budget"
        + (f" of {budget.team.name}" if budget.team_id and budget.team else "")
        + (f" of {connection.label}" if connection else ""),
        team=budget.team_id,
        owner=None if budget.team_id else budget.owner_id,
        before=before,
        after=after,
    )


def budget_delete(*, actor: User, budget: Budget) -> None:
    if budget not in budgets_managed_by(actor):
        raise BudgetError("You cannot remove this budget.")
    with transaction.atomic():
        before = _audited(budget)
        pk = budget.pk
        budget.delete()
        budget.pk = pk
        _record("budget.delete", actor, budget, before, None)


def budgets_managed_by(user: User) -> list[Budget]:
    """A person's own budgets and those of the teams whose budgets they manage (admins)."""
    return _budgets_of(user, Capability.MANAGE_BUDGETS)


def budgets_visible_to(user: User) -> list[Budget]:
    """A person's own budgets and those of the teams whose spend they see (admins, viewers)."""
    return _budgets_of(user, Capability.SEE_TEAM_SPEND)


def _budgets_of(user: User, capability: Capability) -> list[Budget]:
    if not user.is_authenticated:
        return []
    return list(
        Budget.objects.filter(
            Q(owner=user, team__isnull=True) | Q(team__in=teams_where(user, capability))
        )
        .select_related("connection", "team__price_book", "owner")
        # What no budget shows: reading it cost more than the rest (timestamps are parsed).
        .defer(*(f"connection__{name}" for name in CONNECTION_UNSHOWN), *USER_UNSHOWN)
        .order_by("scope", "pk")
    )


# Fields of a budget's connection and owner that budgets never show.
CONNECTION_UNSHOWN = (
    "token_encrypted",
    "jwt_encrypted",
    "jwt_expires_at",
    "webhook_secret_encrypted",
    "last_verified_at",
    "refresh_due_at",
    "created_at",
)
USER_UNSHOWN = ("owner__password", "owner__last_login", "owner__date_joined")


channels_stopped = notify.channels_stopped


def alert_channels(budget: Budget) -> list[Channel]:
    """The channels a budget's alerts go to: its own, unless they stopped (A8). A team
    channel's addresses are checked again when each message is sent (notify)."""
    return [] if channels_stopped(budget) else list(budget.channels.all())


def alert_addresses(budget: Budget) -> list[str]:
    """Every address the budget's next alert would be emailed to, as it would be resolved
    now: its email channels' (a team's admins as they are now, A8) and `alert_emails`."""
    found = alert_emails(budget)
    for channel in alert_channels(budget):
        if channel.kind == Channel.Kind.EMAIL:
            found += notify.addresses_now(
                notify.channel_addresses(channel), channel=channel, budget=budget
            )
    return list(dict.fromkeys(found))


def alert_emails(budget: Budget) -> list[str]:
    """Addresses a budget's alerts are emailed to directly, outside its channels: the team's
    admins' own, once a team budget's channels were chosen by someone who is no longer an
    admin (A8); none otherwise."""
    if budget.team_id is not None and channels_stopped(budget):
        return team_emails(budget.team_id, Capability.RECEIVE_ALERTS)
    return []


# --- Checking budgets -----------------------------------------------------------------------------


# Alert.percent's largest value (max_digits=9, decimal_places=2).
PERCENT_CEILING = Decimal("9999999.99")


def budget_check(budget: Budget, *, now: datetime | None = None) -> list[Alert]:
    """Record the thresholds newly crossed this month and queue one message naming the
    highest. Returns the new alerts (none on a second check)."""
    now = now or timezone.now()
    status = budget_status(budget, now=now)
    month = now.astimezone(UTC).date().replace(day=1)
    crossed: list[tuple[str, int, Decimal, Decimal]] = [
        (Alert.Kind.ACTUAL, t, status.percent, status.spent) for t in status.crossed
    ]
    if budget.on_forecast and status.forecast is not None and status.forecast_percent is not None:
        crossed += [
            (Alert.Kind.FORECAST, int(t), status.forecast_percent, status.forecast.value)
            for t in sorted(budget.thresholds)
            if status.forecast_percent >= int(t)
        ]
    new: list[Alert] = []
    with transaction.atomic():
        for kind, threshold, percent, value in crossed:
            try:
                with transaction.atomic():
                    new.append(
                        Alert.objects.create(
                            budget=budget,
                            month=month,
                            kind=kind,
                            threshold=threshold,
                            # A tiny budget far overspent (0.01 of 10,000) is "at least"
                            # the column's largest figure, not an error at PostgreSQL.
                            percent=min(percent, PERCENT_CEILING),
                            value=value,
                            created_at=now,
                        )
                    )
            except IntegrityError:
                continue  # crossed before this month: already alerted (A1)
        if new:
            highest = max(new, key=lambda a: (a.threshold, a.kind == Alert.Kind.ACTUAL))
            _queue_alert(status, highest)
    return new


def _queue_alert(status: BudgetStatus, alert: Alert) -> None:
    budget = status.budget
    currency = status.currency
    amount = money(status.amount, currency)
    if alert.kind == Alert.Kind.FORECAST and status.forecast is not None:
        headline = (
            f"{status.name}: the month-end forecast ({money(status.forecast.value, currency)}) "
            f"is {alert.percent} % of the {amount} budget, past {alert.threshold} %."
        )
    else:
        headline = (
            f"{status.name}: {money(status.spent, currency)} spent this month, "
            f"{alert.percent} % of the {amount} budget, past {alert.threshold} %."
        )
    lines = [headline, ""]
    lines.append(f"Left: {money(status.remaining, currency)}")
    if status.remaining_gpu_hours_16gb is not None:
        lines.append(
            f"That is about {status.remaining_gpu_hours_16gb} h of 16 GB training or "
            f"{status.remaining_gpu_hours_8gb} h on 8 GB at the price book's rates."
        )
    if status.runs_out_on:
        lines.append(f"At the current rate it runs out on {status.runs_out_on:%Y-%m-%d}.")
    if status.forecast is not None:
        forecast = status.forecast
        lines.append(
            f"Month-end forecast (our estimate, not OSAI's): {money(forecast.value, currency)} "
            f"(likely {money(forecast.low)} to {money(forecast.high)})."
        )
    link = settings.OSAI_USAGE_BASE_URL.rstrip("/") + reverse("budget_detail", args=[budget.pk])
    lines += ["", f"Budget and alert log: {link}"]
    text = "\n".join(lines)
    payload = {
        "text": headline,
        "budget": {
            "id": budget.pk,
            "name": status.name,
            "scope": budget.scope,
            "amount": str(status.amount),
            "currency": status.currency,
        },
        "month": f"{alert.month:%Y-%m}",
        "kind": alert.kind,
        "threshold": alert.threshold,
        "percent": str(alert.percent),
        "spent": str(status.spent),
        "remaining": str(status.remaining),
        "forecast": str(status.forecast.value) if status.forecast else None,
        "url": link,
    }
    facts = [
        ("Spent this month", money(status.spent, currency)),
        ("Budget", amount),
        ("Used", f"{alert.percent} % (threshold {alert.threshold} %)"),
        ("Left", money(status.remaining, currency)),
    ]
    if status.forecast is not None:
        facts.append(("Month-end forecast", money(status.forecast.value, currency)))
    subject = f"Budget alert: {alert.threshold} % of {status.name}"
    notify.deliveries_create(
        subject=subject,
        text=text,
        payload=payload,
        emails=alert_emails(budget),
        channels=alert_channels(budget),
        message=Message(
            title=subject,
            text="\n".join(lines[:-2]).strip(),
            facts=facts,
            link=link,
            link_label="Budget and alert log",
        ),
        budget=budget,
        alert=alert,
    )


def budgets_for_connection(connection: Connection) -> list[Budget]:
    """Every budget the connection's spend counts against."""
    teams = Team.objects.filter(
        shared_connections=connection, memberships__user=connection.owner_id
    )
    return list(
        Budget.objects.filter(
            Q(scope=Budget.Scope.CONNECTION, connection=connection)
            | Q(scope=Budget.Scope.PERSON, owner=connection.owner_id)
            | Q(scope=Budget.Scope.TEAM, team__in=teams)
        ).select_related("connection", "team__price_book", "owner")
    )


def budgets_check(
    budgets: Iterable[Budget] | None = None, *, now: datetime | None = None
) -> tuple[int, list[Alert]]:
    """Check budgets (all by default). Returns how many were checked and the new alerts."""
    budgets = (
        list(Budget.objects.select_related("connection", "team__price_book", "owner"))
        if budgets is None
        else list(budgets)
    )
    alerts: list[Alert] = []
    for budget in budgets:
        alerts += budget_check(budget, now=now)
    return len(budgets), alerts


# --- Retention (R2) -----------------------------------------------------------------------------


def alerts_kept_from(now: datetime) -> date:
    """The first month whose alerts are kept: OSAI_RETAIN_ALERTS_MONTHS calendar months
    counting this one, and never fewer than two. An Alert row is what keeps its threshold from
    alerting again in its month (A1); this month's and last month's are the ones a check can
    still meet (a check runs in the month it checks, a late one just after the month turns)."""
    months = max(2, settings.OSAI_RETAIN_ALERTS_MONTHS)
    month = now.astimezone(UTC).date().replace(day=1)
    return month - relativedelta(months=months - 1)


def prune_alerts(*, now: datetime, dry_run: bool = False) -> int:
    """Delete alerts of months before `alerts_kept_from`, except one a kept message still
    names (its row on the budget page and in the alert log). Returns how many (would) go:
    the same count before the deliveries' prune (a dry run) and after it."""
    past = notify.deliveries_past_retention(now=now).values("pk")
    named = Delivery.objects.filter(alert=OuterRef("pk")).exclude(pk__in=past)
    old = Alert.objects.filter(month__lt=alerts_kept_from(now)).exclude(Exists(named))
    return prune_rows(old, dry_run=dry_run)
