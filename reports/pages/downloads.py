"""What each page's "Download CSV" link gives: the page's rows, from the selectors the page
itself reads, as CSV cells (streamed by reports/spend/exports.py `csv_response`; C1-C5).

- The overview (`overview_csv`) and the API's `/spend?format=csv` (`team_month_csv` for a
  team): this month's held day buckets, one row per connection and day, in the columns of
  every bucket export (reports/spend/exports.py: usage, cost as the spend ledger holds it,
  provenance). Only the days the page counts: a day shown as "not fetched yet" (a connection
  has no held bucket for it) is left out of the month to date, so it is left out here too.
  The rows' `cost_total` adds up exactly to the page's month to date.
- The team page's spend (`team_period_csv`): the held buckets its section adds up over the
  period of its switch (reports/spend/period_spend.py), with the member column; their
  `cost_total` adds up to the section's spend.
- Budgets (`budget_rows`): where each budget stands, the figures the budget bar shows.
- A budget's alert log (`alert_log_rows`): each alert with each message it sent (channel,
  state, attempts, when, the reason it failed), never the message's target: no email
  address, no webhook URL, and a reason's host or address is replaced (`redact`).
- The activity feed (`activity_rows`): each OSAI webhook delivery as the feed describes it,
  never its raw body (the message is already stored with any link's query string removed).
- The Anomalies page (`anomaly_csv`): its rows, every page of them, as the page, the API and
  `manage.py anomalies` list them (reports/pages/anomalies.py): labels, never an account name
  or a token ending.
- The report history (`history_rows`): one row per report. No cost column: a report's cost
  is its buckets priced, which would read every bucket of every report; each row names its
  own CSV (`csv`), which has it.

Lists the page shows a page or the newest of (history, alert log, the feed) are exported in
full, in the page's order. Team rows appear only where the person's role may download the
team's CSVs (reports/access.py, DOWNLOAD_CSV).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from reports.access import Capability, counted_buckets, teams_where
from reports.metrics import FLAG_FIELDS, REPORT_PROGRESS_FIELDS, REPORT_REQUEST_FIELDS
from reports.models import (
    Alert,
    Bucket,
    Budget,
    Connection,
    Delivery,
    LedgerEntry,
    PriceBook,
    Report,
    Team,
)
from reports.pages import anomalies, team_spend
from reports.pages.activity import events_visible_to
from reports.pages.history import history_queryset
from reports.periods import day_number, preset_period, utc_midnight
from reports.spend import exports, pricing
from reports.spend.budgets import budgets_visible_to
from reports.spend.monthly import (
    BookCache,
    BudgetStatus,
    SpendData,
    budget_name,
    known_usage_days,
    load_spend,
    month_spend_of,
    price_book_of,
)
from reports.teams.sharing import team_shared_connections

CHUNK_SIZE = exports.CHUNK_SIZE
ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class CsvFile:
    """Rows (the header first) and an ASCII file name from exports.safe_filename."""

    rows: Iterable[Sequence[str]]
    filename: str


def _cells(values: Iterable[Any]) -> list[str]:
    return [exports.cell(value) for value in values]


# --- The month (the overview; the API's /spend) ----------------------------------------------


def month_buckets(
    data: SpendData, connection_ids: Sequence[int], price_book: PriceBook | None
) -> QuerySet[Bucket]:
    """The held day buckets this month's figures of these connections are made of: each
    connection's closed day, and today's latest open-day bucket, on the days the month to
    date counts (every connection's day is held). With a book, exactly the buckets whose
    ledger rows the page summed (reports/spend/monthly.py, `_day_costs`)."""
    spend = month_spend_of(data, connection_ids, price_book)  # fills in missing ledger rows
    counted = [utc_midnight(d.day) for d in spend.days if d.cost is not None]
    if not counted:
        return Bucket.objects.none()
    today = day_number(data.today)
    if price_book is not None:
        entries = LedgerEntry.objects.filter(
            Q(preliminary=False) | Q(day=today),
            price_book=price_book,
            span=LedgerEntry.Span.DAY,
            connection_id__in=list(connection_ids),
            day__in=[day_number(day) for day in counted],
        )
        return Bucket.objects.filter(pk__in=entries.values("bucket_id"))
    # No book: the buckets monthly.py counts as held days (today's latest open one).
    best: dict[tuple[int, datetime], tuple[bool, datetime, int]] = {}
    for pk, connection_id, start, end, closed in Bucket.objects.filter(
        known_usage_days(),
        Q(is_closed=True) | Q(period_start=data.today),
        connection_id__in=list(connection_ids),
        period_start__in=counted,
    ).values_list("pk", "connection_id", "period_start", "period_end", "is_closed"):
        if closed and end != start + ONE_DAY:
            continue
        rank = (closed, end, pk)
        key = (connection_id, start)
        if key not in best or rank > best[key]:
            best[key] = rank
    return Bucket.objects.filter(pk__in=[pk for _, _, pk in best.values()])


def _month_csv(
    ids: list[int], price_book: PriceBook | None, *, team: Team | None, now: datetime | None
) -> CsvFile:
    data = load_spend(ids, now or timezone.now())
    buckets = month_buckets(data, ids, price_book)
    rows = exports.export_rows(
        buckets,
        team=team is not None,
        with_cost=price_book is not None,
        price_book=price_book,
        from_ledger=True,
    )
    kind = ("osai-usage-team", team.pk) if team is not None else ("osai-usage",)
    return CsvFile(rows, exports.safe_filename(*kind, "month", f"{data.month_start:%Y-%m}"))


def overview_csv(user: User, *, now: datetime | None = None) -> CsvFile:
    """The overview's month: the person's own connections, in the default price book."""
    own = list(Connection.objects.filter(owner=user).values_list("pk", flat=True))
    return _month_csv(own, BookCache().of(None), team=None, now=now)


def team_month_csv(team: Team, *, now: datetime | None = None) -> CsvFile:
    """A team's month (what the team page's month shows), in the team's price book, with the
    member column: the connections its current members share (M1)."""
    shared = list(team_shared_connections(team).values_list("pk", flat=True))
    return _month_csv(shared, price_book_of(team), team=team, now=now)


def team_period_csv(team: Team, period: str, *, now: datetime | None = None) -> CsvFile:
    """The team page's spend over a period of its switch: one row per held bucket (a member's
    connection and day, or month where the page counts the month), with the member column;
    `cost_total` adds up to the page's spend to the cent (the same rows)."""
    now = now or timezone.now()
    book = price_book_of(team)
    shared = list(team_shared_connections(team).values_list("pk", flat=True))
    held = [] if book is None else team_spend.held_spend(shared, book, period, now=now).held
    buckets = Bucket.objects.filter(pk__in=[cost.bucket_id for cost in held])
    rows = exports.export_rows(
        buckets, team=True, with_cost=book is not None, price_book=book, from_ledger=True
    )
    start, _ = preset_period(period, now)
    filename = exports.safe_filename("osai-usage-team", team.pk, period, f"{start:%Y-%m-%d}")
    return CsvFile(rows, filename)


# --- A report (the page's link, the API) -------------------------------------------------------


def report_csv(report: Report, *, with_cost: bool) -> CsvFile:
    """A report's rows: every bucket its numbers come from (reports/spend/exports.py)."""
    team = report.team_id is not None
    rows = exports.export_rows(
        counted_buckets(report),
        team=team,
        with_cost=with_cost,
        price_book=pricing.price_book_for(report),
        report=report,
    )
    kind = ("osai-usage-team", report.team_id, "report") if team else ("osai-usage-report",)
    filename = exports.safe_filename(
        *kind, report.pk, f"{report.period_start:%Y-%m-%d}", f"{report.period_end:%Y-%m-%d}"
    )
    return CsvFile(rows, filename)


# --- Budgets and their alert logs --------------------------------------------------------------


def csv_budgets(user: User) -> list[Budget]:
    """The budgets a person sees whose rows they may download: their own, and their teams'
    where their role may download the team's CSVs."""
    visible = budgets_visible_to(user)
    teams = set(teams_where(user, Capability.DOWNLOAD_CSV).values_list("pk", flat=True))
    return [b for b in visible if b.team_id is None or b.team_id in teams]


BUDGET_COLUMNS = [
    "budget_id",
    "budget",
    "scope",
    "team",
    "connection",
    "month",
    "currency",
    "amount",
    "spent",
    "percent",
    "remaining",
    "remaining_gpu_hours_16gb",
    "remaining_gpu_hours_8gb",
    "forecast",
    "forecast_low",
    "forecast_high",
    "forecast_percent",
    "runs_out_on",
    "thresholds",
    "thresholds_crossed",
    "on_forecast",
]


def budget_rows(statuses: Sequence[BudgetStatus], now: datetime) -> Iterator[list[str]]:
    """The header, then where each budget stands this month, as its bar says it: money to the
    cent, percent to the hundredth, the forecast and the day it runs out (empty if none)."""
    yield BUDGET_COLUMNS
    month = f"{now:%Y-%m}"
    for status in statuses:
        budget = status.budget
        forecast = status.forecast
        yield _cells(
            [
                budget.pk,
                status.name,
                budget.scope,
                budget.team.name if budget.team_id and budget.team else "",
                budget.connection.label if budget.connection_id and budget.connection else "",
                month,
                status.currency,
                status.amount,
                status.spent,
                status.percent,
                status.remaining,
                status.remaining_gpu_hours_16gb,
                status.remaining_gpu_hours_8gb,
                forecast.value if forecast else None,
                forecast.low if forecast else None,
                forecast.high if forecast else None,
                status.forecast_percent,
                status.runs_out_on.isoformat() if status.runs_out_on else "",
                " ".join(str(t) for t in sorted(int(t) for t in budget.thresholds)),
                " ".join(str(t) for t in status.crossed),
                budget.on_forecast,
            ]
        )


ALERT_COLUMNS = [
    "budget_id",
    "budget",
    "month",
    "kind",
    "threshold",
    "percent",
    "value",
    "currency",
    "created_at",
    "delivery_channel",
    "delivery_state",
    "delivery_attempts",
    "delivery_created_at",
    "delivery_sent_at",
    "delivery_last_error",
    "delivery_key",
]
_EMAIL = re.compile(r"[^\s@,;:<>()\[\]\"']+@[^\s@,;:<>()\[\]\"']+")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def redact(text: str, *targets: str) -> str:
    """A delivery's reason without its targets: URLs, email addresses, and the hosts of
    `targets` (the message's own target, its channel's URL host)."""
    text = _URL.sub("[url]", text)
    text = _EMAIL.sub("[address]", text)
    for target in targets:
        host = urlsplit(target).hostname if "://" in target else None
        if host:
            text = re.sub(re.escape(host), "[webhook host]", text, flags=re.IGNORECASE)
    return text


def _alert_cells(budget: Budget, name: str, currency: str, alert: Alert | None) -> list[Any]:
    if alert is None:
        return [budget.pk, name, "", "", "", "", "", currency, ""]
    return [
        budget.pk,
        name,
        f"{alert.month:%Y-%m}",
        alert.kind,
        alert.threshold,
        alert.percent,
        alert.value,
        currency,
        alert.created_at,
    ]


def alert_log_rows(budgets: Sequence[Budget]) -> Iterator[list[str]]:
    """The header, then each budget's alert log as its page shows it, newest first: a row per
    message an alert sent (an alert that sent none: one row, the message columns empty),
    then any message of the budget without an alert. Read in chunks (O(1) queries each)."""
    yield ALERT_COLUMNS
    books = BookCache()
    about = {
        b.pk: (
            b,
            budget_name(b),
            getattr(books.of(b.team if b.scope == Budget.Scope.TEAM else None), "currency", ""),
        )
        for b in budgets
    }
    alerts = (
        Alert.objects.filter(budget_id__in=list(about))
        .prefetch_related("deliveries__via")
        .order_by("budget_id", "-created_at", "-threshold", "-pk")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for alert in alerts:
        budget, name, currency = about[alert.budget_id]
        deliveries = sorted(alert.deliveries.all(), key=lambda d: (d.created_at, d.pk))
        head = _alert_cells(budget, name, currency, alert)
        if not deliveries:
            yield _cells([*head, "", "", "", "", "", "", ""])
        for delivery in deliveries:
            yield _cells([*head, *_delivery_cells(budget, delivery)])
    loose = (
        Delivery.objects.filter(budget_id__in=list(about), alert__isnull=True)
        .select_related("via")
        .order_by("budget_id", "-created_at", "-pk")
    )
    for delivery in loose:
        budget, name, currency = about[delivery.budget_id or 0]
        yield _cells(
            [*_alert_cells(budget, name, currency, None), *_delivery_cells(budget, delivery)]
        )


def _channel_url_host(delivery: Delivery) -> str:
    """The host of the delivery's channel's URL, as a URL `redact` takes out ("" if none)."""
    channel = delivery.via
    return f"https://{channel.url_host}/" if channel is not None and channel.url_host else ""


def _delivery_cells(budget: Budget, delivery: Delivery) -> list[Any]:
    # The target (addresses, the webhook URL) is read only to take it out of the reason.
    return [
        delivery.channel,
        delivery.state,
        delivery.attempts,
        delivery.created_at,
        delivery.sent_at,
        redact(delivery.last_error, delivery.target, _channel_url_host(delivery)),
        delivery.key,
    ]


# --- The activity feed -------------------------------------------------------------------------

ACTIVITY_COLUMNS = [
    "id",
    "received_at",
    "connection",
    "kind",
    "kind_raw",
    "outcome",
    "worker_gb",
    "finished_at",
    "task_id",
    "message",
]


def activity_rows(user: User, connection_id: int | None = None) -> Iterator[list[str]]:
    """The header, then every webhook delivery of the person's own connections (of one),
    newest first, as the feed shows them: never the raw body, the URL or its secret."""
    yield ACTIVITY_COLUMNS
    rows = (
        events_visible_to(user, connection_id)
        .order_by("-pk")
        .values_list(
            "pk",
            "received_at",
            "connection__label",
            "kind",
            "kind_raw",
            "succeeded",
            "worker_gb",
            "finished_at",
            "task_id",
            "message",
        )
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for pk, received, label, kind, raw, succeeded, gb, finished, task, message in rows:
        outcome = "unknown" if succeeded is None else ("succeeded" if succeeded else "failed")
        yield _cells([pk, received, label, kind, raw, outcome, gb, finished, task, message])


# --- The report history ------------------------------------------------------------------------

HISTORY_COLUMNS = [
    "report_id",
    "team",
    "requested_by",
    "connections",
    *REPORT_REQUEST_FIELDS,
    *REPORT_PROGRESS_FIELDS,
    "requested_at",
    "started_at",
    "finished_at",
    "csv",
]


def history_reports(user: User) -> QuerySet[Report]:
    """The history page's reports (own first, newest first), team reports only of teams whose
    CSVs the person may download."""
    return history_queryset(user).filter(
        Q(team__isnull=True) | Q(team__in=teams_where(user, Capability.DOWNLOAD_CSV))
    )


def history_rows(user: User) -> Iterator[list[str]]:
    """The header, then one row per report of the history, in its order (every page of it)."""
    yield HISTORY_COLUMNS
    for report in history_reports(user).iterator(chunk_size=CHUNK_SIZE):
        labels = "; ".join(sorted(c.label for c in report.connections.all()))
        yield _cells(
            [
                report.pk,
                report.team.name if report.team_id and report.team else "",
                report.owner.get_username(),
                labels,
                report.preset,
                report.period_start,
                report.period_end,
                report.granularity,
                *(getattr(report, flag) for flag in FLAG_FIELDS),
                report.state,
                report.buckets_total,
                report.buckets_done,
                report.buckets_failed,
                report.requested_at,
                report.started_at,
                report.finished_at,
                reverse("report_export_csv", args=[report.pk]),
            ]
        )


# --- The Anomalies page ------------------------------------------------------------------------

ANOMALY_COLUMNS = [
    "id",
    "day",
    "connection",
    "connection_id",
    "kind",
    "metric",
    "label",
    "actual",
    "expected_low",
    "expected_high",
    "currency",
    "feedback",
    "alerting",
    "cause",
    "created_at",
]


def anomaly_csv(scope: anomalies.AnomalyScope, filters: anomalies.AnomalyFilter) -> CsvFile:
    """The header, then the page's rows (every page), newest day first."""

    def rows() -> Iterator[list[str]]:
        yield ANOMALY_COLUMNS
        for row in anomalies.rows(scope, filters):
            yield _cells(row[column] for column in ANOMALY_COLUMNS)

    kind = ("osai-usage-anomalies-team", scope.team.pk) if scope.team else ("osai-usage-anomalies",)
    return CsvFile(rows(), exports.safe_filename(*kind))
