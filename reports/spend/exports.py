"""CSV exports: one row per finished bucket, with provenance, streamed.

Columns, in order (`export_columns`):

- period_start, period_end: ISO 8601 in UTC ("2026-01-01T00:00:00Z"); the end is exclusive.
- preliminary: "true" for the open bucket, whose usage may still grow.
- member (team exports only), connection: the connection's owner and label.
- every usage metric in its display unit (GPU-hours, hours, GB-months, counts; 9 decimals),
  then every metric raw under OSAI's own field name (totalTrainingSeconds8GB …), as received.
- with cost: cost_<column> per priced metric and cost_total, at the internal precision of
  reports/spend/pricing.py (10 decimals, not rounded to cents), then currency, price_book and
  price_book_versions (the effective_from of each version that priced the bucket).
- provenance: osai_report_id, osai_creation_time (OSAI's raw string), the five include_* flags
  (what OSAI was asked for), raw_json_sha256 (the checksum of the archived OSAI JSON file,
  empty if none).
- a report's export only: report_period_start, report_period_end (the report's row, its
  period split by its granularity, that the bucket counts in: held days under a week) and
  held ("day" or "month" for a bucket tracking keeps and the report reused, else empty).

A report's export lists the buckets its numbers come from, held ones included, a row each.
The usage of categories the report did not ask for is 0 in its rows, display, raw and cost
columns alike (a held bucket has every category; its include_* flags and its archived file
show that), so the columns add up to the page's figures.

There is no TOTAL row: every row is a bucket, so scripts can parse the file without special
cases. Because costs are not rounded per row, the sum of cost_total rounded once to cents equals
the page's total to the cent.

Text cells that a spreadsheet would run as a formula are prefixed with a single quote (C1);
numbers are written as numbers, so a negative amount stays a number (C2). No token, JWT or
signed URL is ever a column: buckets do not store them.
"""

from __future__ import annotations

import csv
import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse

from reports.formatting import utc_z
from reports.metrics import (
    FLAG_FIELDS,
    METRIC_BY_COLUMN,
    METRICS,
    PRICED,
    PRICED_COLUMNS,
    columns_off,
)
from reports.models import Bucket, PriceBook, Report
from reports.periods import Period
from reports.spend import ledger, pricing
from reports.spend.usage import held_kind, report_periods, row_period

CHUNK_SIZE = 500
DISPLAY_QUANTUM = Decimal("1E-9")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def export_columns(*, team: bool, with_cost: bool, report: bool = False) -> list[str]:
    """The CSV header for a personal (team=False) or team export, with or without cost;
    `report`: a report's export (the report period and held columns)."""
    columns = ["period_start", "period_end", "preliminary"]
    columns += ["member", "connection"] if team else ["connection"]
    columns += [m.csv_header for m in METRICS]
    columns += [m.osai_field for m in METRICS]
    if with_cost:
        columns += [*(m.cost_header for m in PRICED), "cost_total", "currency", "price_book"]
        columns += ["price_book_versions"]
    columns += ["osai_report_id", "osai_creation_time", *FLAG_FIELDS, "raw_json_sha256"]
    if report:
        columns += ["report_period_start", "report_period_end", "held"]
    return columns


# --- Cells ------------------------------------------------------------------------------------


def neutralise(text: str) -> str:
    """Text a spreadsheet would treat as a formula, prefixed with a single quote (C1)."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def number(value: float | int | Decimal | None) -> str:
    """A number as plain decimal text: no exponent for Decimals, OSAI's doubles as received.

    Integral doubles below 2**53 are written without ".0"; other doubles use repr(), the
    shortest text that reads back as the same double (1.4956327299571348e+18).
    """
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    return str(int(value))


def cell(value: Any) -> str:
    """One CSV cell: numbers as numbers, booleans as true/false, text neutralised."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return number(value)
    if isinstance(value, datetime):
        return utc_z(value)
    return neutralise(str(value))


def display_number(column: str, raw: float | None) -> str:
    if raw is None:
        return ""
    divisor = METRIC_BY_COLUMN[column].divisor
    if divisor == 1:
        return number(raw)
    value = pricing.to_decimal(raw) / pricing.to_decimal(divisor)
    return number(value.quantize(DISPLAY_QUANTUM).normalize())


# --- Rows -------------------------------------------------------------------------------------


def export_buckets(buckets: QuerySet[Bucket]) -> QuerySet[Bucket]:
    """Finished buckets with what a row needs, in one query: no JSON bodies, no archived files."""
    return (
        buckets.filter(state=Bucket.State.DONE)
        .select_related("connection__owner")
        .defer(
            "osai_response",
            "connection__token_encrypted",
            "connection__jwt_encrypted",
            "connection__owner__password",
        )
        .annotate(raw_json_sha256=F("file__sha256"))
        .order_by("period_start", "period_end", "connection__owner__username", "connection__label")
    )


def bucket_row(
    bucket: Bucket,
    *,
    team: bool,
    with_cost: bool,
    price_book: PriceBook | None,
    costs: pricing.Costs | None = None,
    masked: Sequence[str] = (),
    report_period: Period | None = None,
) -> list[str]:
    """One bucket as CSV cells, in the order of export_columns(); `costs` as the spend ledger
    holds them, else priced here. `masked`: usage columns shown as 0 (categories the report
    did not ask for); `report_period`: a report's export, the report row it counts in."""
    row: list[Any] = [bucket.period_start, bucket.period_end, not bucket.is_closed]
    if team:
        row.append(bucket.connection.owner.get_username())
    row.append(bucket.connection.label)
    cells = [cell(v) for v in row]
    usage = {m.column: 0.0 if m.column in masked else getattr(bucket, m.column) for m in METRICS}
    cells += [display_number(m.column, usage[m.column]) for m in METRICS]
    cells += [number(usage[m.column]) for m in METRICS]
    if with_cost:
        bucket_costs = costs
        if bucket_costs is None:
            totals = {column: usage[column] for column in PRICED_COLUMNS}
            bucket_costs = pricing.period_costs(
                totals, bucket.period_start, bucket.period_end, price_book
            )
        cells += [number(bucket_costs[column]) for column in PRICED_COLUMNS]
        cells.append(number(bucket_costs["total"]))
        cells.append(cell(price_book.currency if price_book else ""))
        cells.append(cell(price_book.name if price_book else ""))
        cells.append(" ".join(utc_z(v.effective_from) for v in bucket_costs.versions))
    cells.append(cell(bucket.osai_report_id))
    cells.append(cell(bucket.osai_creation_time_raw))
    cells += [cell(getattr(bucket, flag)) for flag in FLAG_FIELDS]
    cells.append(cell(getattr(bucket, "raw_json_sha256", None) or ""))
    if report_period is not None:
        cells += [cell(report_period[0]), cell(report_period[1]), cell(held_kind(bucket) or "")]
    return cells


def export_rows(
    buckets: QuerySet[Bucket],
    *,
    team: bool,
    with_cost: bool,
    price_book: PriceBook | None,
    from_ledger: bool = False,
    report: Report | None = None,
) -> Iterator[list[str]]:
    """The header, then one row per finished bucket, read in chunks (O(1) queries per chunk).
    `from_ledger`: held buckets, whose costs the spend ledger holds (one query per chunk).
    `report`: a report's export, its masked categories and report periods (module docstring)."""
    if with_cost and price_book is not None:
        pricing.price_book_versions(price_book)  # one query for the versions, up front
    yield export_columns(team=team, with_cost=with_cost, report=report is not None)
    masked = columns_off(report.flags()) if report is not None else ()
    periods = report_periods(report) if report is not None else []
    starts = [start for start, _ in periods]
    rows = export_buckets(buckets).iterator(chunk_size=CHUNK_SIZE)
    while chunk := list(itertools.islice(rows, CHUNK_SIZE)):
        held = (
            ledger.bucket_costs([b.pk for b in chunk], price_book)
            if from_ledger and with_cost and price_book is not None
            else {}
        )
        for bucket in chunk:
            yield bucket_row(
                bucket,
                team=team,
                with_cost=with_cost,
                price_book=price_book,
                costs=held.get(bucket.pk),
                masked=masked,
                report_period=(
                    row_period(bucket.period_start, bucket.period_end, periods, starts)
                    if report is not None
                    else None
                ),
            )


# --- Output -----------------------------------------------------------------------------------


class _Echo:
    """A file-like object whose write() returns the line, for streaming csv.writer output."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[Sequence[str]]) -> Iterator[str]:
    """Each row as one CSV line (RFC 4180 quoting, CRLF line ends)."""
    writer = csv.writer(_Echo())
    for row in rows:
        yield writer.writerow(row)


def safe_filename(*parts: object) -> str:
    """An ASCII-only, slugged file name like osai-usage-report-123-2026-01-01-2026-07-01.csv."""
    text = "-".join(str(p) for p in parts)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return f"{slug[:150] or 'export'}.csv"


def csv_response(rows: Iterable[Sequence[str]], filename: str) -> StreamingHttpResponse:
    """Stream rows as a CSV download. The filename must come from safe_filename()."""
    response = StreamingHttpResponse(csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response
