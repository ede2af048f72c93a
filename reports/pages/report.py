"""The report page's model: the badge, KPI tiles (reports/pages/tiles.py), charts with their
tables, the buckets.

Built from a report and a view mode ("usage" or "cost"); the views render it, and the CLI
and the API read the same figures. Nothing here asks OSAI anything: it reads buckets.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

from django.conf import settings
from django.core.cache import cache
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone

from reports import formatting
from reports.access import comparison_buckets_of, counted_buckets
from reports.metrics import METRICS, OSAI_FIELD_TO_COLUMN, PRICED_COLUMNS, columns_off
from reports.models import Bucket, BucketFile, Connection, PriceBook, Report
from reports.pages import anomalies as anomaly_pages
from reports.pages import blocks, charts
from reports.pages.blocks import ChartBlock, chart_block
from reports.pages.members import member_breakdown
from reports.pages.tiles import ml_stages, tiles
from reports.periods import EARLIEST_PERIOD_START, comparison_period, describe
from reports.spend import pricing
from reports.spend.usage import (
    UsageRow,
    held_kind,
    known_usage,
    report_rows,
    sources,
    sum_rows,
)

ViewMode = Literal["usage", "cost"]
# OSAI totals that are a state at the end of a period (images existing), not a sum over it.
STATE_FIELDS = frozenset(m.osai_field for m in METRICS if not m.total.additive)


def view_mode(value: str | None) -> ViewMode:
    """The view mode a `?view=` parameter asks for (usage unless it says cost)."""
    return "cost" if value == "cost" else "usage"


def duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


# The badge's polling (P5). With an estimate (reports/pipeline/eta.py): at the moment OSAI should be
# done plus the worker's own poll and write (BADGE_SETTLE_SECONDS), then densely for a short
# while. Without one, when a single bucket is left: just after the worker's next poll of it
# (Report.next_check_at) plus its hop through the broker, request and write
# (BADGE_FOLLOW_SECONDS), nothing on the page can change before then; then a little more
# often for a short while in case the worker is late (also once well past an estimate: the
# worker is back on its back-off). Waits are at most BADGE_MAX_WAIT_SECONDS, so the elapsed
# time stays current. Otherwise: every BADGE_POLL_SECONDS.
BADGE_POLL_SECONDS = 2.0
REPORT_ANOMALIES_SHOWN = 10  # the rest are a link away
BADGE_MAX_WAIT_SECONDS = 5.0
BADGE_SETTLE_SECONDS = 0.15
BADGE_DENSE_SECONDS = 0.1
BADGE_DENSE_PERIOD_SECONDS = 1.0
BADGE_FOLLOW_SECONDS = 0.4
BADGE_CATCH_UP_SECONDS = 0.25


def badge_poll_seconds(report: Report, now: datetime) -> float:
    """Seconds until the badge should look again."""
    if report.is_terminal:
        return BADGE_POLL_SECONDS
    if report.expected_done_at is not None:
        wait = _look_after(report.expected_done_at, now, BADGE_SETTLE_SECONDS, BADGE_DENSE_SECONDS)
        if wait is not None:
            return wait
        # Long past the estimate, the worker is back on its back-off: follow it as below.
    unfinished = report.buckets_total - report.buckets_done - report.buckets_failed
    if report.next_check_at is not None and unfinished == 1:
        wait = _look_after(report.next_check_at, now, BADGE_FOLLOW_SECONDS, BADGE_CATCH_UP_SECONDS)
        return wait or BADGE_POLL_SECONDS
    return BADGE_POLL_SECONDS


def _look_after(moment: datetime, now: datetime, settle: float, dense: float) -> float | None:
    """Seconds until `settle` after `moment`, then `dense` for a short while (None: past)."""
    until = (moment - now).total_seconds() + settle
    if until > dense:
        return min(until, BADGE_MAX_WAIT_SECONDS)
    if until > -BADGE_DENSE_PERIOD_SECONDS:
        return dense
    return None


def poll_trigger(seconds: float) -> str:
    """An htmx polling trigger: "every 2s", or in milliseconds when not whole seconds."""
    if float(seconds).is_integer():
        return f"every {int(seconds)}s"
    return f"every {max(50, round(seconds * 1000))}ms"


def eta_text(report: Report, now: datetime) -> str:
    """ "about 40 s left", from the same estimate the worker polls by ("" when unknown)."""
    if report.is_terminal or report.expected_done_at is None:
        return ""
    left = (report.expected_done_at - now).total_seconds()
    if left < -BADGE_DENSE_PERIOD_SECONDS - BADGE_SETTLE_SECONDS:
        return "taking longer than usual"
    if left < 1.5:
        return "finishing"
    if left < 90:
        return f"about {math.ceil(left)} s left"
    return f"about {round(left / 60)} min left"


def badge_context(report: Report) -> dict[str, Any]:
    """What the status badge needs: the report row only (S6: no further queries)."""
    now = timezone.now()
    if report.started_at:
        elapsed = duration((report.finished_at or now) - report.started_at)
    else:
        elapsed = duration((report.finished_at or now) - report.requested_at)
    status_url = reverse("report_status", args=[report.pk])
    return {
        "report": report,
        "elapsed": elapsed,
        "waiting": report.started_at is None,
        "eta": eta_text(report, now),
        "poll_trigger": poll_trigger(badge_poll_seconds(report, now)),
        "status_url": f"{status_url}?{urlencode({'seen': report.buckets_done})}",
    }


def report_buckets(report: Report) -> list[Bucket]:
    """The report's buckets with their connection, whether a raw file is archived, and
    whether it is held (`held`: "day", "month" or None; `more_categories`: it has usage of
    categories the report masks, which its raw file shows).

    A team report only counts connections still shared by current members (reports/teams/).
    """
    buckets: list[Bucket] = list(
        counted_buckets(report)
        .select_related("connection__owner")
        .annotate(has_file=Exists(BucketFile.objects.filter(bucket=OuterRef("pk"))))
        .order_by("period_start", "connection__label", "pk")
    )
    flags = report.flags()
    for bucket in buckets:
        bucket.held = held_kind(bucket)  # type: ignore[attr-defined]
        bucket.more_categories = bucket.flags() != flags  # type: ignore[attr-defined]
    return buckets


def comparison_pending(report: Report) -> bool:
    """True while buckets of the period the report compares with are still being fetched."""
    return comparison_buckets_of(report).exclude(state__in=Bucket.TERMINAL_STATES).exists()


def comparison(report: Report, connection_ids: Sequence[int]) -> dict[str, Any]:
    """What the report is compared with: its period, a label, and the usage if known.

    Known means finished buckets cover the period for every one of the report's connections
    (usage.known_usage); the report's own request fetched them (ReportBucket COMPARISON),
    so `pending` is true while those are still on their way.
    """
    start, end = comparison_period(report.preset, report.period_start, report.period_end)
    rows = None
    if connection_ids and start >= EARLIEST_PERIOD_START:
        rows = known_usage(connection_ids, report.flags(), start, end)
    pending = rows is None and comparison_pending(report)
    return {
        "start": start,
        "end": end,
        "label": describe(start, end),
        "rows": rows,
        "pending": pending,
    }


def report_body(report: Report, mode: ViewMode) -> dict[str, Any]:
    """Everything below the badge: tiles, charts with their tables, buckets, actions."""
    buckets = report_buckets(report)
    rows = report_rows(report, buckets)
    totals = sum_rows(rows)
    connection_ids = sorted({b.connection_id for b in buckets})
    compared = comparison(report, connection_ids)
    previous_rows = compared["rows"] if report.is_terminal else None
    previous = sum_rows(previous_rows) if previous_rows is not None else None

    price_book: PriceBook | None = None
    row_money: list[pricing.Costs] | None = None
    money = previous_money = None
    currency = ""
    pricing_notice = None
    if mode == "cost":
        price_book = pricing.price_book_for(report)
        currency = price_book.currency if price_book else ""
        row_money = pricing.rows_costs(rows, price_book)
        money = pricing.sum_costs(row_money)
        if previous_rows is not None:
            previous_money = pricing.sum_costs(pricing.rows_costs(previous_rows, price_book))
        pricing_notice = pricing.pricing_notice(rows, price_book)
    period = (report.period_start, report.period_end)
    priced_with = pricing.versions_in(price_book, *period)
    repriced = pricing.repriced_by(price_book, *period, since=report.requested_at)

    figures = cached_figures(rows, report.granularity, row_money, currency)
    members = member_breakdown(report, cost_view=mode == "cost") if report.team_id else None
    stages = ml_stages(rows, totals, money, price_book) if money is not None and rows else None
    failed = [b for b in buckets if b.state in Bucket.FAILED_STATES]
    done = [b for b in buckets if b.state == Bucket.State.DONE]
    # Not started although due: the person's (or the OSAI account's) reports in flight are at
    # the cap, so these take turns (F1).
    now = timezone.now()
    waiting = sum(
        1
        for b in buckets
        if b.state == Bucket.State.NEW and b.next_attempt_at and b.next_attempt_at <= now
    )
    as_of = [t for t in (b.osai_created_at or b.finished_at for b in done) if t is not None]
    data_as_of = max(as_of, default=None)
    # Anomalies of its connections on its days (N5): one query; a book read only if any.
    found = anomaly_pages.between(connection_ids, *period)
    anomaly_book = pricing.price_book_for(report) if found and price_book is None else price_book
    return {
        "report": report,
        "anomalies": anomaly_pages.items(found[:REPORT_ANOMALIES_SHOWN], anomaly_book),
        "anomalies_more": max(0, len(found) - REPORT_ANOMALIES_SHOWN),
        "anomalies_url": reverse("anomaly_list")
        + (f"?team={report.team_id}" if report.team_id else ""),
        "mode": mode,
        "rows": rows,
        "buckets": buckets,
        "failed_buckets": failed,
        "waiting_for_slot": waiting if not report.is_terminal else 0,
        "slot_caps": (
            settings.OSAI_MAX_IN_FLIGHT_PER_PERSON,
            settings.OSAI_MAX_IN_FLIGHT_PER_ACCOUNT,
        ),
        "preliminary": any(r.preliminary for r in rows),
        "data_as_of": data_as_of,
        "sources": sources(buckets, report.requested_at),
        "connection_labels": sorted({_connection_label(report, b.connection) for b in buckets}),
        "tiles": tiles(
            report,
            totals,
            previous,
            money=money,
            previous_money=previous_money,
            currency=currency,
            versus=compared["label"],
        ),
        "previous_known": previous is not None,
        "comparison": compared,
        "charts": figures,
        "members": members,
        "stages": stages,
        "skipped_connections": report.skipped_connections if report.team_id else [],
        "price_book": price_book,
        "is_example_prices": mode == "cost" and pricing.is_example(price_book),
        "pricing_notice": pricing_notice,
        # The versions that price its period, and those saved since it was requested.
        "priced_with": priced_with,
        "repricing_notes": pricing.repricing_notes(repriced),
        "charts_url": with_mode(reverse("report_charts", args=[report.pk]), mode),
        "can_cancel": not report.is_terminal,
        "can_retry": report.is_terminal
        and (report.buckets_failed > 0 or report.state == Report.State.CANCELLED),
    }


def _connection_label(report: Report, connection: Connection) -> str:
    """A team report names each connection with its owner: people share them."""
    if report.team_id is None:
        return connection.label
    return f"{connection.owner.get_username()}: {connection.label}"


def with_mode(url: str, mode: ViewMode) -> str:
    return f"{url}?view=cost" if mode == "cost" else url


# A report's figures are cached by what they show (P14): the rows they plot, their costs, the
# granularity, the currency and the code that draws them. A repeat view builds none; anything
# that changes a figure (a bucket finishing, a price-book version added or edited, a member
# leaving a team) makes a new key, so nothing needs invalidating by hand.
FIGURES_CACHE_SECONDS = 7 * 24 * 3600
DRAWING_CODE = hashlib.sha256(
    Path(charts.__file__).read_bytes() + Path(blocks.__file__).read_bytes()
).hexdigest()[:16]


def figures_cache_key(
    rows: list[UsageRow], granularity: str, row_money: list[pricing.Costs] | None, currency: str
) -> str:
    digest = hashlib.sha256(repr((DRAWING_CODE, granularity, currency)).encode())
    for row in rows:
        digest.update(repr((row.period_start, row.period_end, row.preliminary)).encode())
        digest.update(repr(sorted(row.totals.items())).encode())
    for costs in row_money or ():
        digest.update(repr((sorted(costs.items()), costs.unpriced)).encode())
    return f"report-figures:{digest.hexdigest()}"


def cached_figures(
    rows: list[UsageRow], granularity: str, row_money: list[pricing.Costs] | None, currency: str
) -> list[ChartBlock]:
    """The figures for these rows and costs, built once and then read from the cache."""
    key = figures_cache_key(rows, granularity, row_money, currency)
    figures: list[ChartBlock] | None = cache.get(key)
    if figures is None:
        figures = build_figures(rows, granularity, row_money, currency)
        cache.set(key, figures, FIGURES_CACHE_SECONDS)
    return figures


def build_figures(
    rows: list[UsageRow], granularity: str, row_money: list[pricing.Costs] | None, currency: str
) -> list[ChartBlock]:
    """The report's charts: of usage, or of its cost (with the cumulative spend) given money."""
    money: dict[str, Any] = {"costs": row_money, "currency": currency}
    figures = [("compute", charts.compute_hours_figure(rows, granularity=granularity, **money))]
    if row_money is not None:
        cumulative = charts.cumulative_cost_figure(
            rows, row_money, granularity=granularity, currency=currency
        )
        figures.append(("cumulative", cumulative))
    figures += [
        ("share", charts.share_figure(rows, **money)),
        ("devices", charts.device_rental_figure(rows, granularity=granularity, **money)),
        ("storage", charts.storage_figure(rows, granularity=granularity, **money)),
        ("images", charts.images_figure(rows, granularity=granularity)),
    ]
    return [chart_block(name, fig, wide=name in ("compute", "cumulative")) for name, fig in figures]


def report_page(report: Report, mode: ViewMode) -> dict[str, Any]:
    """The whole report page: the badge, the body and the page's own links."""
    return {
        **badge_context(report),
        **report_body(report, mode),
        "period_label": charts.period_label(report.period_start, report.period_end, "total"),
        "usage_url": reverse("report_detail", args=[report.pk]),
        "cost_url": with_mode(reverse("report_detail", args=[report.pk]), "cost"),
        "mode": mode,
    }


_COLUMN_TO_OSAI_FIELD = {column: field for field, column in OSAI_FIELD_TO_COLUMN.items()}


def _costs_json(costs: pricing.Costs) -> dict[str, str]:
    """Cost per priced OSAI total (OSAI's field names) and "total", as exact decimal strings."""
    by_field = {
        _COLUMN_TO_OSAI_FIELD[c]: str(formatting.to_cents(costs[c])) for c in PRICED_COLUMNS
    }
    return {**by_field, "total": str(formatting.to_cents(costs["total"]))}


def report_json(report: Report, *, with_cost: bool = False) -> dict[str, Any]:
    """The report, its rows, its buckets and its totals (OSAI field names, raw units);
    `with_cost` adds what they cost in the report's price book, priced as the page prices
    them.

    `periods` are the report's rows (its period split by its granularity, whatever buckets
    answer them); `buckets` are those buckets (held days and months included: `held`), as
    provenance. The usage of categories the report did not ask for is 0 throughout (a held
    bucket has every category). Usage adds up; images existing are the state at the end:
    each connection's latest bucket's, summed over connections.
    """
    buckets = list(
        counted_buckets(report)
        .select_related("connection__owner")
        .order_by("period_start", "connection__label")
    )
    off = {_COLUMN_TO_OSAI_FIELD[column] for column in columns_off(report.flags())}

    def shown(bucket: Bucket) -> dict[str, Any]:
        return {field: 0 if field in off else value for field, value in bucket.totals().items()}

    done = [b for b in buckets if b.state == Bucket.State.DONE]
    totals: dict[str, int | float] = dict.fromkeys(OSAI_FIELD_TO_COLUMN, 0)
    latest: dict[int, Bucket] = {}  # per connection, its latest finished bucket
    for bucket in done:
        for field, value in shown(bucket).items():
            if field not in STATE_FIELDS:
                totals[field] += value or 0
        before = latest.get(bucket.connection_id)
        if before is None or bucket.period_end > before.period_end:
            latest[bucket.connection_id] = bucket
    for bucket in latest.values():
        for field, value in shown(bucket).items():
            if field in STATE_FIELDS:
                totals[field] += value or 0
    rows = report_rows(report, done)
    data: dict[str, Any] = {
        "id": report.pk,
        "state": report.state,
        "granularity": report.granularity,
        "periodFrom": formatting.utc_z(report.period_start),
        "periodTo": formatting.utc_z(report.period_end),
        "flags": report.flags(),
        "team": report.team.name if report.team else None,
        "connections": (
            sorted({_connection_label(report, b.connection) for b in buckets})
            if report.team_id
            else [c.label for c in report.connections.order_by("label")]
        ),
        "skipped_connections": report.skipped_connections,
        "buckets_total": report.buckets_total,
        "buckets_done": report.buckets_done,
        "buckets_failed": report.buckets_failed,
        "requested_at": report.requested_at.isoformat(),
        "finished_at": report.finished_at.isoformat() if report.finished_at else None,
        "error": report.error_message or None,
        "sources": sources(buckets, report.requested_at),
        "totals": totals,
        "periods": [
            {
                "periodFrom": formatting.utc_z(row.period_start),
                "periodTo": formatting.utc_z(row.period_end),
                "preliminary": row.preliminary,
                "buckets": row.buckets,
                "totals": {
                    field: row.totals[column] for field, column in OSAI_FIELD_TO_COLUMN.items()
                },
            }
            for row in rows
        ],
        "buckets": [
            {
                "connection": _connection_label(report, b.connection),
                "periodFrom": formatting.utc_z(b.period_start),
                "periodTo": formatting.utc_z(b.period_end),
                "preliminary": not b.is_closed,
                "held": held_kind(b),
                "state": b.state,
                "osaiReportId": b.osai_report_id,
                "osaiCreationTime": b.osai_creation_time_raw or None,
                "error": b.error_message or None,
                "totals": shown(b) if b.state == Bucket.State.DONE else None,
            }
            for b in buckets
        ],
    }
    if with_cost:
        price_book = pricing.price_book_for(report)
        total = pricing.sum_costs(pricing.rows_costs(rows, price_book))
        data.update(
            {
                "currency": price_book.currency if price_book else None,
                "price_book": price_book.name if price_book else None,
                "price_book_is_example": pricing.is_example(price_book),
                "cost": _costs_json(total),
            }
        )
        masked_columns = columns_off(report.flags())
        for item, bucket in zip(data["buckets"], buckets, strict=True):
            item["cost"] = _bucket_cost_json(bucket, price_book, masked_columns)
    return data


def _bucket_cost_json(
    bucket: Bucket, price_book: PriceBook | None, masked_columns: Sequence[str]
) -> dict[str, str] | None:
    if bucket.state != Bucket.State.DONE:
        return None
    usage = {
        column: 0.0 if column in masked_columns else getattr(bucket, column)
        for column in PRICED_COLUMNS
    }
    costs = pricing.period_costs(usage, bucket.period_start, bucket.period_end, price_book)
    return _costs_json(costs)
