"""The spend ledger: what each held bucket costs, written once, added up by every page.

A *held* bucket is one tracking keeps (reports/spend/tracking.py): every flag on, one UTC day
or one calendar month; today's open-day bucket is held too, marked preliminary. For every
price book, the ledger has one row per held bucket and version of the book in force during
its period, with the cost of that part per priced metric in whole `LedgerEntry.COST_UNITS`
(10^-10 of the currency, the quantum every cost is kept at: pricing.COST_QUANTUM). Integers,
because SQLite keeps decimals as floating point and would add them up inexactly.

- Written when a held bucket finishes (the pipeline's `bucket_done` signal). A day has the rows
  of one bucket: its closed bucket, else its latest open-day bucket; a newer one replaces them.
- Re-written for a book when its versions change (a signal on PriceBookVersion) or on
  `manage.py reprice`; filled in for buckets that have none (a new book, a bucket finished
  before the ledger existed) by `ledger_fill`, which tracking runs on every refresh.

The overview, the team page, budgets, digests, the API's `/spend` and `spend.csv` read sums of
these rows (reports/spend/monthly.py): nothing re-prices raw buckets per view.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

from dateutil.relativedelta import relativedelta
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from django_q.tasks import async_task

from reports.metrics import PRICED_COLUMNS, all_flags
from reports.models import Bucket, Connection, LedgerEntry, PriceBook, PriceBookVersion
from reports.periods import day_number, utc_midnight
from reports.pipeline.buckets import bucket_done
from reports.spend import pricing

Span = LedgerEntry.Span
COST_FIELDS = tuple(f"cost_{column}" for column in PRICED_COLUMNS)
ONE_DAY = timedelta(days=1)
WRITE_BATCH = 2000


def to_units(amount: Decimal) -> int:
    """A cost (a multiple of pricing.COST_QUANTUM) in whole ledger units."""
    return int(amount.scaleb(10).to_integral_value())


def from_units(units: int | None) -> Decimal:
    """Whole ledger units as a cost, exact."""
    return Decimal(units or 0).scaleb(-10)


def held_span(bucket: Bucket) -> str | None:
    """Span.DAY or Span.MONTH for a finished bucket tracking holds, else None."""
    if not bucket.tracked or bucket.state != Bucket.State.DONE:
        return None
    start, end = bucket.period_start, bucket.period_end
    if start != utc_midnight(start.date()) or bucket.flags() != all_flags():
        return None
    if bucket.is_closed and start.day == 1 and end == start + relativedelta(months=1):
        return Span.MONTH
    if (bucket.is_closed and end - start == ONE_DAY) or (
        not bucket.is_closed and end <= start + ONE_DAY
    ):
        return Span.DAY
    return None


def _entries(bucket: Bucket, span: str, book: PriceBook) -> list[LedgerEntry]:
    totals = {column: getattr(bucket, column) for column in PRICED_COLUMNS}
    entries = []
    for version, costs in pricing.version_costs(
        totals, bucket.period_start, bucket.period_end, book
    ):
        entry = LedgerEntry(
            bucket_id=bucket.pk,
            connection_id=bucket.connection_id,
            span=span,
            period_start=bucket.period_start,
            period_end=bucket.period_end,
            day=day_number(bucket.period_start),
            preliminary=not bucket.is_closed,
            price_book=book,
            version=version,
            cost_total=to_units(costs["total"]),
        )
        for column, field in zip(PRICED_COLUMNS, COST_FIELDS, strict=True):
            setattr(entry, field, to_units(costs[column]))
        entries.append(entry)
    return entries


def _books() -> list[PriceBook]:
    return list(PriceBook.objects.prefetch_related("versions").order_by("pk"))


def _supersedes(bucket: Bucket) -> bool:
    """True if this day bucket is the day's current one: its closed bucket, else the open
    bucket that reaches furthest (the latest made, on a tie)."""
    if bucket.is_closed:
        return True
    day_end = bucket.period_start + ONE_DAY
    later = Bucket.objects.filter(
        connection_id=bucket.connection_id,
        tracked=True,
        state=Bucket.State.DONE,
        period_start=bucket.period_start,
        **all_flags(),
    ).filter(
        Q(is_closed=True, period_end=day_end)
        | Q(is_closed=False, period_end__gt=bucket.period_end)
        | Q(is_closed=False, period_end=bucket.period_end, pk__gt=bucket.pk)
    )
    return not later.exists()


def ledger_write(bucket: Bucket, *, books: Sequence[PriceBook] | None = None) -> int:
    """Write a finished held bucket's rows for every price book; returns how many (0 for a
    bucket that is not held, or an open day a newer bucket has replaced)."""
    span = held_span(bucket)
    if span is None:
        return 0
    books = _books() if books is None else books
    with transaction.atomic():
        # One writer per connection at a time, so two open-day buckets finishing together
        # cannot both keep their rows.
        Connection.objects.select_for_update().filter(pk=bucket.connection_id).first()
        if span == Span.DAY:
            if not _supersedes(bucket):
                return 0
            LedgerEntry.objects.filter(
                connection_id=bucket.connection_id,
                span=Span.DAY,
                period_start=bucket.period_start,
                price_book__in=books,
            ).exclude(bucket_id=bucket.pk).delete()
        LedgerEntry.objects.filter(bucket_id=bucket.pk, price_book__in=books).delete()
        entries = [entry for book in books for entry in _entries(bucket, span, book)]
        LedgerEntry.objects.bulk_create(entries)
    return len(entries)


def _current_held(buckets: Iterable[Bucket]) -> list[tuple[Bucket, str]]:
    """Of finished tracked buckets, the ones the ledger holds: each month, and each day's
    current bucket (see _supersedes), with their spans."""
    chosen: dict[tuple[int, str, datetime], tuple[Bucket, str]] = {}
    for bucket in buckets:
        span = held_span(bucket)
        if span is None:
            continue
        key = (bucket.connection_id, span, bucket.period_start)
        best = chosen.get(key)
        rank = (bucket.is_closed, bucket.period_end, bucket.pk)
        if best is None or rank > (best[0].is_closed, best[0].period_end, best[0].pk):
            chosen[key] = (bucket, span)
    return list(chosen.values())


def _held_candidates() -> QuerySet[Bucket]:
    return Bucket.objects.filter(tracked=True, state=Bucket.State.DONE, **all_flags())


def _rewrite(connection_id: int, book: PriceBook) -> int:
    """Replace one connection's rows of one book (under the connection's lock)."""
    with transaction.atomic():
        Connection.objects.select_for_update().filter(pk=connection_id).first()
        LedgerEntry.objects.filter(connection_id=connection_id, price_book=book).delete()
        held = _current_held(_held_candidates().filter(connection_id=connection_id))
        entries = [entry for bucket, span in held for entry in _entries(bucket, span, book)]
        LedgerEntry.objects.bulk_create(entries, batch_size=WRITE_BATCH)
    return len(entries)


def ledger_reprice(book: PriceBook) -> int:
    """Re-write every row of one price book (its versions changed). Returns the rows written.

    Idempotent, connection by connection under the connection's lock, so a version change is
    counted once however often this runs, and a page filling in rows meanwhile adds none twice.
    """
    book = PriceBook.objects.prefetch_related("versions").get(pk=book.pk)
    connection_ids = set(_held_candidates().values_list("connection_id", flat=True).distinct())
    connection_ids |= set(
        LedgerEntry.objects.filter(price_book=book).values_list("connection_id", flat=True)
    )
    return sum(_rewrite(connection_id, book) for connection_id in sorted(connection_ids))


def ledger_forget(book_id: int) -> int:
    """Drop a book's rows at once (its versions changed): until they are re-written, pages
    fill in the rows they need as they read (ledger_fill). Returns how many went."""
    return LedgerEntry.objects.filter(price_book_id=book_id).delete()[0]


def ledger_reprice_all() -> int:
    """Every book's rows re-written (`manage.py reprice`)."""
    return sum(ledger_reprice(book) for book in PriceBook.objects.order_by("pk"))


def ledger_fill(
    connection_ids: Iterable[int],
    books: Sequence[PriceBook] | None = None,
    *,
    since: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Write the rows these connections' held buckets (from `since` on) are missing in these
    books (all books by default): a book made or re-priced since, a bucket finished before
    the ledger existed. Readers call it only when their sums find a held day missing, so
    pages pay for it only then. Returns the rows written."""
    ids = list(connection_ids)
    if not ids:
        return 0
    written = 0
    # Closed buckets, and the open days of today and yesterday: an older open-day bucket that
    # no one pruned was replaced long ago and is never the day's.
    recent = utc_midnight((now or timezone.now()).date()) - ONE_DAY
    candidates = _held_candidates().filter(
        Q(is_closed=True) | Q(period_start__gte=recent), connection_id__in=ids
    )
    if since is not None:
        candidates = candidates.filter(period_start__gte=since)
    for book in _books() if books is None else books:
        has_rows = LedgerEntry.objects.filter(bucket=OuterRef("pk"), price_book=book)
        missing = list(candidates.exclude(Exists(has_rows)))
        for bucket, _ in _current_held(missing):
            written += ledger_write(bucket, books=[book])
    return written


# --- Keeping it current ---------------------------------------------------------------------


def on_bucket_done(sender: object, bucket_id: int, **kwargs: object) -> None:
    """A bucket finished (the pipeline's bucket_done): if it is held, write its rows."""
    bucket = Bucket.objects.filter(pk=bucket_id).first()
    if bucket is not None:
        ledger_write(bucket)


def on_version_changed(sender: object, instance: PriceBookVersion, **kwargs: object) -> None:
    """A book's versions changed: its rows are dropped once the change commits (pages fill
    in what they read) and re-written in the background."""
    book_id = instance.price_book_id

    def forget_and_reprice() -> None:
        ledger_forget(book_id)
        async_task("reports.tasks.ledger_reprice", book_id, task_name=f"osai-reprice-{book_id}")

    transaction.on_commit(forget_and_reprice)


def connect_signals() -> None:
    bucket_done.connect(on_bucket_done, dispatch_uid="osai-ledger-bucket-done")
    for signal in (post_save, post_delete):
        signal.connect(
            on_version_changed, sender=PriceBookVersion, dispatch_uid=f"osai-ledger-{signal}"
        )


# --- Reading it -----------------------------------------------------------------------------


def period_costs(
    connection_ids: Sequence[int],
    price_book: PriceBook,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> pricing.Costs | None:
    """What these connections cost together over whole UTC days [start, end), per priced
    metric and in total, or None unless every one of those days is held for each of them.
    A calendar month counts its held month where there is one (the month answers for a
    whole-month view; its days for anything finer). Two queries once the rows exist."""
    ids = sorted(set(connection_ids))
    if not ids:
        return None
    costs = _period_costs(ids, price_book, start, end)
    if costs is None and ledger_fill(ids, [price_book], since=start, now=now):
        costs = _period_costs(ids, price_book, start, end)
    return costs


def _period_costs(
    ids: list[int], price_book: PriceBook, start: datetime, end: datetime
) -> pricing.Costs | None:
    whole_month = start.day == 1 and end == start + relativedelta(months=1)
    sums = {f"units_{field}": Sum(field) for field in ("cost_total", *COST_FIELDS)}
    in_period = Q(period_start__gte=start, period_end__lte=end, preliminary=False)
    entries = LedgerEntry.objects.filter(in_period, price_book=price_book, connection_id__in=ids)
    by_connection: dict[int, dict[str, int]] = {}
    if whole_month:
        for row in (
            entries.filter(span=Span.MONTH).values("connection_id").annotate(**sums).order_by()
        ):
            by_connection[row["connection_id"]] = row
    days_needed = (end - start) // ONE_DAY
    missing = [c for c in ids if c not in by_connection]
    if missing:
        for row in (
            entries.filter(span=Span.DAY, connection_id__in=missing)
            .values("connection_id")
            .annotate(days=Count("day", distinct=True), **sums)
            .order_by()
        ):
            if row["days"] == days_needed:
                by_connection[row["connection_id"]] = row
    if len(by_connection) != len(ids):
        return None
    costs = pricing.Costs()
    for column, field in zip((*PRICED_COLUMNS, "total"), (*COST_FIELDS, "cost_total"), strict=True):
        costs[column] = from_units(
            sum(row[f"units_{field}"] or 0 for row in by_connection.values())
        )
    return costs


def bucket_costs(bucket_ids: Sequence[int], price_book: PriceBook) -> dict[int, pricing.Costs]:
    """Each held bucket's cost in one book, as the ledger holds it (one query): per priced
    metric and in total, with the versions that priced it."""
    result: dict[int, pricing.Costs] = {}
    entries = (
        LedgerEntry.objects.filter(bucket_id__in=list(bucket_ids), price_book=price_book)
        .select_related("version")
        .order_by("bucket_id", "period_start", "version__effective_from")
    )
    for entry in entries:
        costs = result.setdefault(
            entry.bucket_id, pricing.Costs(dict.fromkeys((*PRICED_COLUMNS, "total"), Decimal(0)))
        )
        for column, field in zip(PRICED_COLUMNS, COST_FIELDS, strict=True):
            costs[column] += from_units(getattr(entry, field))
        costs["total"] += from_units(entry.cost_total)
        if entry.version is None:
            costs.unpriced = True
        else:
            costs.versions.append(entry.version)
    return result
