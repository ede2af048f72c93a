"""Roll-ups (D5-D9): a report answered from held buckets (tracking's closed days and months,
every flag on) without asking OSAI again: which buckets it links (D5, D6), how its rows are
grouped (D7) and masked (D8), what the page, the CSV and the API say, and that a team report
still follows M1 (D9). That the totals equal OSAI's own report: tests/e2e/test_cli.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from dateutil.relativedelta import relativedelta
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reports import access
from reports.metrics import all_flags, columns_off
from reports.models import Bucket, Granularity, PriceBook, PriceBookVersion, Report, ReportBucket
from reports.pages.report import report_body, report_json
from reports.periods import split_period, tiled_prefix, tiling
from reports.pipeline import rollups
from reports.spend import pricing
from reports.spend.usage import known_usage, report_rows, sum_rows
from reports.teams.member_spend import team_spend
from tests.factories import (
    make_connection,
    make_done_bucket,
    make_held_buckets,
    make_team,
    make_user,
    request_report,
    request_team_report,
    share_with,
)

pytestmark = pytest.mark.django_db

# A past quarter and a "now" well after it: every period below is closed.
Q1 = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 4, 1, tzinfo=UTC))
NOW = datetime(2025, 6, 15, 12, tzinfo=UTC)
MONDAY = datetime(2025, 3, 3, tzinfo=UTC)
TWO_CATEGORIES = {**all_flags(False), "include_datasets": True, "include_models": True}


def days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    return split_period(start, end, Granularity.DAY)


def months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    return split_period(start, end, Granularity.MONTH)


def linked(report: Report, purpose: str = ReportBucket.Purpose.MAIN) -> list[Bucket]:
    return list(
        Bucket.objects.filter(report_buckets__report=report, report_buckets__purpose=purpose)
    )


def held_quarter(conn, *, month_too: bool = False) -> list[Bucket]:
    held = make_held_buckets(conn, days(*Q1))
    if month_too:
        held += make_held_buckets(conn, [(Q1[0], Q1[0] + relativedelta(months=1))], seed=500)
    return held


def summed(buckets: list[Bucket], column: str) -> float:
    return sum(getattr(b, column) for b in buckets)


# --- Tiling ------------------------------------------------------------------------------------


def test_tiling_prefers_a_held_month_and_fills_the_rest_with_days() -> None:
    conn = make_connection(make_user())
    held = held_quarter(conn, month_too=True)
    chosen = tiling(held, *Q1)
    assert chosen is not None
    assert (chosen[0].period_start, chosen[0].period_end) == (
        Q1[0],
        datetime(2025, 2, 1, tzinfo=UTC),
    )
    assert len(chosen) == 1 + 28 + 31  # January as one month, then February and March by day
    # A week inside January needs days: the month is longer than the week.
    week = (datetime(2025, 1, 6, tzinfo=UTC), datetime(2025, 1, 13, tzinfo=UTC))
    assert len(tiling(held, *week) or []) == 7


def test_tiled_prefix_reaches_as_far_as_held_buckets_go() -> None:
    conn = make_connection(make_user())
    held = make_held_buckets(conn, days(MONDAY, MONDAY + timedelta(days=3)))
    prefix = tiled_prefix(held, MONDAY, MONDAY + timedelta(days=7))
    assert [b.pk for b in prefix] == [b.pk for b in held]
    assert tiled_prefix(held, MONDAY - timedelta(days=1), MONDAY + timedelta(days=7)) == []


# --- What a request links --------------------------------------------------------------------


def test_a_quarter_by_week_from_held_days_asks_osai_nothing_and_is_done_at_once(queue) -> None:
    """D5, D7."""
    owner = make_user()
    conn = make_connection(owner)
    held = held_quarter(conn)
    before = Bucket.objects.count()
    report = request_report(owner, [conn], period=Q1, granularity=Granularity.WEEK, now=NOW)
    assert Bucket.objects.count() == before  # no synthetic bucket, no new OSAI report
    assert {b.pk for b in linked(report)} == {b.pk for b in held}
    assert report.state == Report.State.DONE
    assert (report.buckets_done, report.buckets_total) == (90, 90)
    assert report.finished_at is not None
    assert queue == []  # nothing for the worker

    rows = report_rows(report, linked(report))
    weeks = split_period(*Q1, Granularity.WEEK)
    assert [(r.period_start, r.period_end) for r in rows] == weeks
    assert sum(r.buckets for r in rows) == 90
    totals = sum_rows(rows)
    assert totals["training_seconds_8gb"] == summed(held, "training_seconds_8gb")
    # Images existing: the state at the end of the quarter (its last day's), not a sum.
    assert totals["existing_images"] == held[-1].existing_images
    first_week = [b for b in held if b.period_end <= weeks[0][1]]
    assert rows[0].totals["deleted_images"] == summed(first_week, "deleted_images")
    assert rows[0].totals["existing_images"] == first_week[-1].existing_images


def test_a_quarter_uses_a_held_month_where_it_has_one() -> None:
    owner = make_user()
    conn = make_connection(owner)
    held = held_quarter(conn, month_too=True)
    report = request_report(owner, [conn], period=Q1, granularity=Granularity.MONTH, now=NOW)
    links = linked(report)
    january = [b for b in links if b.period_start.month == 1]
    assert len(january) == 1 and january[0].period_end == datetime(2025, 2, 1, tzinfo=UTC)
    assert len(links) == 1 + 28 + 31
    rows = report_rows(report, links)
    assert [r.buckets for r in rows] == [1, 28, 31]
    assert rows[0].totals["training_seconds_8gb"] == held[-1].training_seconds_8gb


def test_an_exact_finished_bucket_is_reused_before_held_days() -> None:
    owner = make_user()
    conn = make_connection(owner)
    held_quarter(conn)
    exact = make_done_bucket(conn, *Q1, seed=9)
    report = request_report(owner, [conn], period=Q1, now=NOW)
    assert [b.pk for b in linked(report)] == [exact.pk]


def test_held_days_answer_before_a_failed_exact_bucket_is_tried_again() -> None:
    owner = make_user()
    conn = make_connection(owner)
    held = held_quarter(conn)
    failed = make_done_bucket(conn, *Q1, state=Bucket.State.ERROR)
    report = request_report(owner, [conn], period=Q1, now=NOW)
    assert {b.pk for b in linked(report)} == {b.pk for b in held}
    failed.refresh_from_db()
    assert failed.state == Bucket.State.ERROR  # not reset: nothing asks OSAI for it


def test_a_period_not_held_is_one_new_bucket_as_before(queue) -> None:
    owner = make_user()
    conn = make_connection(owner)
    make_held_buckets(conn, days(Q1[0], Q1[0] + timedelta(days=3)))  # January's first days only
    march = (datetime(2025, 3, 1, tzinfo=UTC), Q1[1])
    report = request_report(owner, [conn], period=march, now=NOW)
    [bucket] = linked(report)
    assert (bucket.period_start, bucket.period_end, bucket.state) == (*march, Bucket.State.NEW)
    assert report.state == Report.State.QUEUED


def test_this_week_links_its_held_days_and_asks_osai_only_for_today() -> None:
    """D6."""
    owner = make_user()
    conn = make_connection(owner)
    now = MONDAY + timedelta(days=3, hours=15, minutes=30)  # Thursday afternoon
    today = MONDAY + timedelta(days=3)
    held = make_held_buckets(conn, days(MONDAY, today))
    report = request_report(owner, [conn], period=(MONDAY, now), now=now)
    links = linked(report)
    new = [b for b in links if b.pk not in {h.pk for h in held}]
    assert len(links) == 4
    [today_so_far] = new
    assert (today_so_far.period_start, today_so_far.period_end) == (today, now)
    assert not today_so_far.is_closed
    assert not report.is_terminal  # waits for today's part only
    assert report.buckets_done == 3
    body = report_body(report, "usage")
    assert body["sources"] == "3 held days and 1 new OSAI report"


def test_held_data_in_flight_is_not_used_and_the_rest_of_a_month_is_one_bucket() -> None:
    owner = make_user()
    conn = make_connection(owner)
    march = (datetime(2025, 3, 1, tzinfo=UTC), Q1[1])
    make_held_buckets(conn, days(march[0], march[0] + timedelta(days=20)))
    still_fetching = make_done_bucket(
        conn,
        march[0] + timedelta(days=20),
        march[0] + timedelta(days=21),
        state=Bucket.State.POLLING,
    )
    Bucket.objects.filter(pk=still_fetching.pk).update(tracked=True)
    report = request_report(owner, [conn], period=march, now=NOW)
    rest = [b for b in linked(report) if not b.tracked]
    assert [(b.period_start, b.period_end) for b in rest] == [
        (march[0] + timedelta(days=20), march[1])
    ]


def test_planning_reads_every_connection_and_period_in_one_query() -> None:
    owner = make_user()
    connections = [make_connection(owner) for _ in range(3)]
    for conn in connections:
        held_quarter(conn)
    weeks = split_period(*Q1, Granularity.WEEK)
    with CaptureQueriesContext(db_connection) as captured:
        plan = rollups.plan_periods([c.pk for c in connections], weeks, all_flags(), NOW)
    assert len(captured) == 1
    assert len(plan.linked) == 3 * 90 and plan.new_buckets == 0


def test_the_comparison_is_held_too(queue) -> None:
    owner = make_user()
    conn = make_connection(owner)
    march = (datetime(2025, 3, 1, tzinfo=UTC), Q1[1])
    february = make_held_buckets(conn, days(datetime(2025, 2, 1, tzinfo=UTC), march[0]))
    make_held_buckets(conn, days(*march), seed=100)
    report = request_report(owner, [conn], period=march, now=NOW, compare=True)
    assert {b.pk for b in linked(report, ReportBucket.Purpose.COMPARISON)} == {
        b.pk for b in february
    }
    assert report.state == Report.State.DONE and queue == []


# --- Masking ---------------------------------------------------------------------------------


def test_categories_not_asked_for_are_masked_everywhere(queue) -> None:
    """D8 (tiles and charts read the rows; member spend: the team tests below)."""
    owner = make_user()
    conn = make_connection(owner)
    held = held_quarter(conn)
    report = request_report(
        owner, [conn], period=Q1, granularity=Granularity.MONTH, flags=TWO_CATEGORIES, now=NOW
    )
    assert report.state == Report.State.DONE and len(linked(report)) == 90
    off = columns_off(TWO_CATEGORIES)
    assert set(off) == {
        "manipulation_seconds",
        "device_rental_seconds",
        "prediction_seconds_8gb",
        "prediction_seconds_16gb",
    }
    # Rows, tiles and charts read the same rows.
    totals = sum_rows(report_rows(report, linked(report)))
    assert all(totals[c] == 0 for c in off)
    assert totals["training_seconds_8gb"] == summed(held, "training_seconds_8gb")
    # The API (and generate_report --json).
    data = report_json(report, with_cost=True)
    assert all(
        data["totals"][f] == 0 for f in ("totalManipulationSeconds", "totalDeviceRentalSeconds")
    )
    assert all(b["totals"]["totalPredictionSeconds8GB"] == 0 for b in data["buckets"])
    assert all(p["totals"]["totalDeviceRentalSeconds"] == 0 for p in data["periods"])
    assert data["totals"]["totalTrainingSeconds8GB"] == summed(held, "training_seconds_8gb")
    assert all(b["held"] == "day" for b in data["buckets"])
    # The comparison: held buckets with more flags count, masked.
    compared = known_usage([conn.pk], TWO_CATEGORIES, datetime(2025, 2, 1, tzinfo=UTC), Q1[1])
    assert compared is not None
    assert sum_rows(compared)["device_rental_seconds"] == 0
    assert sum_rows(compared)["images_kb_min"] > 0


def test_the_csv_lists_the_held_buckets_masked_with_their_report_period(world_price_book) -> None:
    """D8, D9, C2."""
    owner = make_user()
    conn = make_connection(owner)
    held_quarter(conn)
    report = request_report(
        owner, [conn], period=Q1, granularity=Granularity.MONTH, flags=TWO_CATEGORIES, now=NOW
    )
    client = Client()
    client.force_login(owner)
    response = client.get(reverse("report_export_csv", args=[report.pk]))
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 90
    assert {r["held"] for r in rows} == {"day"}
    assert {r["report_period_start"] for r in rows} == {
        "2025-01-01T00:00:00Z",
        "2025-02-01T00:00:00Z",
        "2025-03-01T00:00:00Z",
    }
    assert {r["device_rental_hours"] for r in rows} == {"0"}
    assert {r["totalPredictionSeconds16GB"] for r in rows} == {"0"}
    assert {Decimal(r["cost_device_rental"]) for r in rows} == {Decimal(0)}
    assert {r["include_predictions"] for r in rows} == {"true"}  # what OSAI was asked for
    # C2: the CSV's total is the page's total, to the cent.
    page = report_body(report, "cost")
    csv_total = sum(Decimal(r["cost_total"]) for r in rows)
    tiles_total = pricing.sum_costs(pricing.rows_costs(page["rows"], page["price_book"]))["total"]
    assert csv_total.quantize(Decimal("0.01")) == tiles_total.quantize(Decimal("0.01"))


@pytest.fixture
def world_price_book() -> PriceBook:
    from tests.factories import ensure_example_price_book

    return ensure_example_price_book()


def test_a_week_is_priced_where_its_days_were_across_a_price_change() -> None:
    """A rolled-up row prices each held day by the version in force that day, as the CSV
    prices those buckets, not the week's usage spread evenly over it."""
    owner = make_user()
    conn = make_connection(owner)
    week = (MONDAY, MONDAY + timedelta(days=7))
    held = make_held_buckets(conn, days(*week))
    Bucket.objects.filter(pk=held[0].pk).update(training_seconds_8gb=3600 * 100)
    book = PriceBook.objects.create(name="Two rates", currency="EUR")
    PriceBookVersion.objects.create(
        price_book=book, effective_from=Q1[0], training_8gb_per_hour=Decimal("1")
    )
    PriceBookVersion.objects.create(
        price_book=book,
        effective_from=MONDAY + timedelta(days=1),
        training_8gb_per_hour=Decimal("2"),
    )
    report = request_report(
        owner, [conn], period=week, granularity=Granularity.WEEK, now=NOW, price_book=book
    )
    [row] = report_rows(report, linked(report))
    assert len(row.parts) == 7
    by_day = pricing.sum_costs(
        pricing.period_costs(
            {"training_seconds_8gb": b.training_seconds_8gb}, b.period_start, b.period_end, book
        )
        for b in Bucket.objects.filter(pk__in=[h.pk for h in held])
    )
    assert pricing.row_costs(row, book)["training_seconds_8gb"] == by_day["training_seconds_8gb"]


# --- The page --------------------------------------------------------------------------------


def test_the_page_says_where_its_numbers_came_from() -> None:
    """D9: and it is done when first shown: the badge does not poll."""
    owner = make_user()
    conn = make_connection(owner)
    held_quarter(conn)
    report = request_report(owner, [conn], period=Q1, granularity=Granularity.WEEK, now=NOW)
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("report_detail", args=[report.pk])).content.decode()
    assert "From 90 held days." in page
    assert "held day" in page
    assert 'hx-trigger="every' not in page.split('id="status-badge"')[1].split(">")[0]


def test_held_months_are_named_as_months() -> None:
    owner = make_user()
    conn = make_connection(owner)
    make_held_buckets(conn, months(datetime(2024, 4, 1, tzinfo=UTC), Q1[1]))
    report = request_report(
        owner,
        [conn],
        period=(datetime(2024, 4, 1, tzinfo=UTC), Q1[1]),
        granularity=Granularity.MONTH,
        now=NOW,
    )
    assert report.state == Report.State.DONE
    assert report_body(report, "usage")["sources"] == "12 held months"
    assert report_json(report)["sources"] == "12 held months"


# --- Teams (M1) ------------------------------------------------------------------------------


def test_a_team_report_from_held_data_follows_the_team_rule() -> None:
    """D9, M1."""
    admin, member = make_user(), make_user()
    team = make_team(admins=[admin], members=[member])
    mine, theirs = make_connection(admin), make_connection(member)
    share_with(team, mine, theirs)
    held_quarter(mine)
    theirs_held = make_held_buckets(theirs, days(*Q1), seed=200)
    report = request_team_report(team, admin, period=Q1, granularity=Granularity.MONTH, now=NOW)
    assert report.state == Report.State.DONE and report.buckets_total == 180
    spend = team_spend(report)
    assert [(c.period_start.month, c.member) for c in spend.cells][:2] == [
        (1, admin.username),
        (1, member.username),
    ]
    assert len(spend.periods) == 3
    member_total = next(m for m in spend.members if m.member == member.username)
    assert member_total.totals["training_seconds_8gb"] == summed(
        theirs_held, "training_seconds_8gb"
    )
    # The member leaves: their held days stop counting at once (M1).
    team.memberships.filter(user=member).delete()
    assert access.counted_buckets(report).count() == 90
    assert {c.member for c in team_spend(report).cells} == {admin.username}


def test_member_spend_states_are_the_state_at_each_period_end() -> None:
    """D7 for the per-member sums."""
    admin = make_user()
    team = make_team(admins=[admin])
    conn = make_connection(admin)
    share_with(team, conn)
    held = held_quarter(conn)
    report = request_team_report(team, admin, period=Q1, granularity=Granularity.MONTH, now=NOW)
    cells = team_spend(report).cells
    january = [b for b in held if b.period_start.month == 1]
    assert len(cells) == 3
    assert cells[0].totals["existing_images"] == january[-1].existing_images
    assert cells[0].totals["deleted_images"] == summed(january, "deleted_images")


def test_member_spend_masks_the_categories_not_asked_for() -> None:
    """D8 for the per-member sums and costs."""
    admin = make_user()
    team = make_team(admins=[admin])
    conn = make_connection(admin)
    share_with(team, conn)
    held_quarter(conn)
    report = request_team_report(
        team, admin, period=Q1, granularity=Granularity.MONTH, flags=TWO_CATEGORIES, now=NOW
    )
    spend = team_spend(report)
    assert all(spend.team.totals[c] == 0 for c in columns_off(TWO_CATEGORIES))
    assert spend.team.costs["device_rental_seconds"] == 0
    assert spend.team.totals["training_seconds_8gb"] > 0
