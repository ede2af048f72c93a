"""The spend ledger (reports/spend/ledger.py): what each held bucket costs, written once,
re-priced when a price book's versions change, and read as exact sums."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Sum

from reports.formatting import to_cents
from reports.models import Bucket, LedgerEntry, PriceBook, PriceBookVersion
from reports.spend import ledger, pricing
from reports.spend.monthly import month_spend
from reports.spend.usage import rows_from_buckets
from tests.factories import held_bucket, make_connection, make_user, save_as_finished

pytestmark = pytest.mark.django_db

YEAR = datetime(2025, 1, 1, tzinfo=UTC)
RATE_CHANGE = datetime(2025, 7, 16, 6, tzinfo=UTC)  # mid-month, mid-day
DAY = timedelta(days=1)
OLD = {"training_8gb_per_hour": Decimal("1.20"), "image_storage_per_gb_month": Decimal("0.023")}
NEW = {"training_8gb_per_hour": Decimal("1.35"), "image_storage_per_gb_month": Decimal("0.025")}


def held(connection: Any, start: datetime, end: datetime, *, seed: float, closed: bool = True):
    """A finished held bucket, finished the way the pipeline finishes one (bucket_done)."""
    totals = {
        "training_seconds_8gb": 1234.5 * seed,
        "images_kb_min": 3.3e9 * seed,
        "existing_images": 100 * seed,
    }
    return save_as_finished(held_bucket(connection, start, end, closed=closed, totals=totals))


@pytest.fixture
def book() -> PriceBook:
    book = PriceBook.objects.create(name="Book", currency="EUR")
    PriceBookVersion.objects.create(price_book=book, effective_from=YEAR, **OLD)
    PriceBookVersion.objects.create(price_book=book, effective_from=RATE_CHANGE, **NEW)
    ledger.ledger_forget(book.pk)  # the versions' own signals ran before any bucket existed
    return book


def test_a_year_of_days_sums_to_what_pricing_each_day_gives_to_the_cent(book: PriceBook) -> None:
    """A year of held days with a rate change in the middle of a July day: the ledger's sums
    (whole integer units) equal pricing each day with row_costs, to the cent, for the year,
    for July, and for the day of the change, which has two rows, one per version."""
    connection = make_connection(make_user())
    day = YEAR
    while day < YEAR.replace(year=2026):
        held(connection, day, day + DAY, seed=1 + day.timetuple().tm_yday % 7)
        day += DAY
    buckets = Bucket.objects.filter(connection=connection)
    rows = rows_from_buckets(buckets)
    assert len(rows) == 365

    def expected(start: datetime, end: datetime) -> Decimal:
        chosen = [r for r in rows if start <= r.period_start and r.period_end <= end]
        return pricing.sum_costs(pricing.rows_costs(chosen, book))["total"]

    def summed(start: datetime, end: datetime) -> Decimal:
        units = LedgerEntry.objects.filter(
            price_book=book, period_start__gte=start, period_end__lte=end
        ).aggregate(total=Sum("cost_total"))["total"]
        return ledger.from_units(units)

    july = (datetime(2025, 7, 1, tzinfo=UTC), datetime(2025, 8, 1, tzinfo=UTC))
    change_day = RATE_CHANGE.replace(hour=0)
    for start, end in [(YEAR, YEAR.replace(year=2026)), july, (change_day, change_day + DAY)]:
        assert to_cents(summed(start, end)) == to_cents(expected(start, end))
    assert LedgerEntry.objects.filter(price_book=book, period_start=change_day).count() == 2
    assert LedgerEntry.objects.filter(price_book=book).count() == 366
    assert ledger.period_costs([connection.pk], book, *july) is not None


def test_a_day_has_one_buckets_rows_the_closed_one_or_the_latest_open_one(book: Any) -> None:
    connection = make_connection(make_user())
    day = datetime(2026, 3, 15, tzinfo=UTC)
    morning = held(connection, day, day + timedelta(hours=8), seed=1, closed=False)
    noon = held(connection, day, day + timedelta(hours=12), seed=2, closed=False)
    assert set(LedgerEntry.objects.values_list("bucket_id", flat=True)) == {noon.pk}
    # The morning's bucket finishing late (a slow OSAI report) replaces nothing.
    assert ledger.ledger_write(morning) == 0
    closed = held(connection, day, day + DAY, seed=3)
    assert set(LedgerEntry.objects.values_list("bucket_id", flat=True)) == {closed.pk}
    assert ledger.ledger_write(noon) == 0


def test_buckets_that_are_not_held_have_no_rows(book: Any) -> None:
    connection = make_connection(make_user())
    day = datetime(2026, 3, 15, tzinfo=UTC)
    week = held(connection, day, day + 7 * DAY, seed=1)  # not a day or a calendar month
    some_flags = held(connection, day, day + DAY, seed=1)
    Bucket.objects.filter(pk=some_flags.pk).update(include_models=False)
    some_flags.refresh_from_db()
    assert ledger.ledger_write(week) == 0
    LedgerEntry.objects.all().delete()
    assert ledger.ledger_write(some_flags) == 0
    assert not LedgerEntry.objects.exists()


def test_a_version_change_reprices_the_book_once(book: PriceBook) -> None:
    """A new version drops the book's rows when it commits and re-writes them (the task);
    re-pricing again, or a page filling rows in meanwhile, counts nothing twice."""
    connection = make_connection(make_user())
    for n in range(5):
        start = datetime(2026, 3, 1, tzinfo=UTC) + n * DAY
        held(connection, start, start + DAY, seed=n + 1)
    before = LedgerEntry.objects.filter(price_book=book).aggregate(t=Sum("cost_total"))["t"]
    dearer = {name: rate * 2 for name, rate in NEW.items()}
    PriceBookVersion.objects.create(
        price_book=book, effective_from=datetime(2026, 1, 1, tzinfo=UTC), **dearer
    )
    ledger.ledger_forget(book.pk)  # what the change's on_commit does (tests run in one transaction)
    assert ledger.ledger_fill([connection.pk], [book]) == 5
    assert ledger.ledger_fill([connection.pk], [book]) == 0
    assert ledger.ledger_reprice(book) == 5
    assert ledger.ledger_reprice(book) == 5
    after = LedgerEntry.objects.filter(price_book=book).aggregate(t=Sum("cost_total"))["t"]
    assert LedgerEntry.objects.filter(price_book=book).count() == 5
    assert after == 2 * before


def test_every_book_has_its_rows_and_the_month_reads_them(book: PriceBook) -> None:
    other = PriceBook.objects.create(name="Dear", currency="USD")
    dearer = {name: rate * 3 for name, rate in NEW.items()}
    PriceBookVersion.objects.create(price_book=other, effective_from=YEAR, **dearer)
    connection = make_connection(make_user())
    now = datetime(2026, 3, 3, 12, tzinfo=UTC)
    for n in range(2):
        start = datetime(2026, 3, 1, tzinfo=UTC) + n * DAY
        held(connection, start, start + DAY, seed=1)
    held(connection, now.replace(hour=0), now, seed=1, closed=False)
    assert LedgerEntry.objects.filter(price_book=other).count() == 3
    euros = month_spend([connection], book, now)
    dollars = month_spend([connection], other, now)
    assert (euros.currency, dollars.currency) == ("EUR", "USD")
    assert euros.month_to_date and dollars.month_to_date > euros.month_to_date
    assert [d.cost is not None for d in euros.days] == [True, True, True]


def test_a_whole_month_counts_its_held_month_and_anything_finer_its_days(book: Any) -> None:
    """Where a held month and its held days disagree (real OSAI need not add up), the month
    answers for the month and the days for a part of it."""
    connection = make_connection(make_user())
    march = datetime(2026, 3, 1, tzinfo=UTC)
    april = datetime(2026, 4, 1, tzinfo=UTC)
    for n in range(31):
        held(connection, march + n * DAY, march + (n + 1) * DAY, seed=1)
    month = held(connection, march, april, seed=40)  # not 31 days' worth: a disagreement
    whole = ledger.period_costs([connection.pk], book, march, april)
    days = ledger.period_costs([connection.pk], book, march, march + 10 * DAY)
    month_rows = LedgerEntry.objects.filter(bucket=month, price_book=book)
    assert whole is not None and days is not None
    assert whole["total"] == ledger.from_units(month_rows.aggregate(t=Sum("cost_total"))["t"])
    day_rows = LedgerEntry.objects.filter(
        price_book=book, span="day", period_start__lt=march + 10 * DAY
    )
    assert days["total"] == ledger.from_units(day_rows.aggregate(t=Sum("cost_total"))["t"])
    assert ledger.period_costs([connection.pk], book, march, april + DAY) is None  # not held


def test_integer_units_add_up_exactly() -> None:
    amounts = [Decimal("0.0000000001") * n for n in (1, 3, 7, 10**12)]
    assert sum(ledger.to_units(a) for a in amounts) == ledger.to_units(sum(amounts, Decimal(0)))
    assert ledger.from_units(ledger.to_units(Decimal("123.4567891234"))) == Decimal(
        "123.4567891234"
    )


def test_the_reprice_command_rewrites_one_book_or_all(book: PriceBook) -> None:
    connection = make_connection(make_user())
    start = datetime(2026, 3, 1, tzinfo=UTC)
    held(connection, start, start + DAY, seed=1)
    LedgerEntry.objects.all().delete()
    out = io.StringIO()
    call_command("reprice", "--book", "Book", stdout=out)
    assert out.getvalue().strip() == "Wrote 1 ledger rows."
    call_command("reprice", stdout=out)
    assert LedgerEntry.objects.count() == PriceBook.objects.count()
    with pytest.raises(Exception, match="No price book is called"):
        call_command("reprice", "--book", "Nope")
