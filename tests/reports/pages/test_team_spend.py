"""The team page leads with the team's spend (reports/pages/team_spend.py): who spent what over
a period of its switch, from held data, and its CSV with the page's total to the cent.

The clock is an input: each test sets it (time-machine), the month's first and last days
included on purpose.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reports.formatting import money, to_cents
from reports.models import Bucket, Connection
from reports.periods import DASH, split_period
from reports.spend import ledger
from reports.spend.monthly import price_book_of
from tests.factories import make_connection, make_held_buckets, make_user, share_with
from tests.support.world import World

pytestmark = pytest.mark.django_db

# Clear of the World's own reports (Oct 2025 to Mar 2026).
NOW = datetime(2026, 11, 14, 9, 30, tzinfo=UTC)
Q3 = (datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC))  # last quarter
Q2 = (datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))  # the one before


def _days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    return split_period(start, end, "day")


def _months(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    return split_period(start, end, "month")


def _get(user: Any, url: str, **params: str) -> Any:
    client = Client()
    client.force_login(user)
    return client.get(url, params)


def _page(user: Any, world: World, **params: str) -> Any:
    response = _get(user, reverse("team_detail", args=[world.team.pk]), **params)
    assert response.status_code == 200
    return response


def _csv_rows(response: Any) -> list[dict[str, str]]:
    assert isinstance(response, StreamingHttpResponse), response.status_code
    text = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _held_quarters(world: World) -> None:
    """Q3 2026 held day by day and Q2 2026 held by month, for both shared connections."""
    for seed, connection in ((1, world.connection), (500, world.admin_connection)):
        make_held_buckets(connection, _days(*Q3), seed=seed)
        make_held_buckets(connection, _months(*Q2), seed=seed + 200)


def _open_day(connection: Connection, now: datetime, *, seed: int) -> None:
    """Today so far, as tracking holds it: an open (preliminary) day bucket."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    (bucket,) = make_held_buckets(connection, [(today, now)], seed=seed)
    Bucket.objects.filter(pk=bucket.pk).update(is_closed=False)


def _expected(world: World, start: datetime, end: datetime, *connections: Connection) -> Decimal:
    """What the ledger says these connections cost, month by month over whole held months (an
    independent sum: reports/spend/ledger.py `period_costs`, its held month else its days)."""
    book = price_book_of(world.team)
    assert book is not None
    total = Decimal(0)
    for month in _months(start, end):
        costs = ledger.period_costs([c.pk for c in connections], book, *month, now=NOW)
        assert costs is not None
        total += costs["total"]
    return total


@pytest.fixture
def clock(time_machine: Any) -> Any:
    time_machine.move_to(NOW, tick=False)
    return time_machine


def test_an_admin_reads_last_quarters_spend_per_member_with_no_form(
    world: World, clock: Any
) -> None:
    _held_quarters(world)
    response = _page(world.team_admin, world, period="last_quarter")
    spend = response.context["spend"]
    owner_part = _expected(world, *Q3, world.connection)
    admin_part = _expected(world, *Q3, world.admin_connection)
    assert spend["period"] == "last_quarter" and spend["period_label"] == f"Jul 2026{DASH}Sep 2026"
    assert spend["total"] == owner_part + admin_part and spend["missing_days"] == 0
    rows = {row.name: row for row in spend["rows"]}
    # Every member who may share has a line (not the viewer), the biggest spender first; one
    # who shares nothing spends 0.
    assert set(rows) == {"owner", "admin", "member"}
    assert rows["owner"].spend == owner_part and rows["admin"].spend == admin_part
    assert rows["member"].spend == 0 and rows["member"].detail == "shares none"
    assert [row.name for row in spend["rows"]][:2] == sorted(
        ("owner", "admin"), key=lambda name: -rows[name].spend
    )
    assert rows["owner"].share == f"{owner_part / spend['total'] * 100:.1f}\u00a0%"
    assert rows["owner"].top_stage  # an ML stage by name
    # The quarter before is held by month: a change for the team and for each member.
    before = _expected(world, *Q2, world.connection, world.admin_connection)
    assert spend["previous"] == before and spend["versus"] == f"Apr 2026{DASH}Jun 2026"
    # Twenty times the quarter before: the amounts, not "+1910.5 %" (U2).
    assert spend["trend"] == "up" and spend["total"] > 10 * before
    assert spend["change"] == (
        f"{money(spend['total'], 'EUR')}, up from {money(before, 'EUR')} in Apr 2026{DASH}Jun 2026"
    )
    assert rows["owner"].previous == _expected(world, *Q2, world.connection)
    # On the page: the switch, the table, a chart stacked by member and the CSV link.
    html = response.content.decode()
    assert 'aria-current="true">Last quarter</a>' in html
    assert f"{to_cents(owner_part):,.2f}" in html and "Top ML stage" in html
    assert spend["chart"].id == "figure-team-spend"
    assert {trace["name"] for trace in spend["chart"].figure["data"]} == {"owner", "admin"}
    assert "/spend.csv?period=last_quarter" in html


def test_per_connection_rows_on_demand(world: World, clock: Any) -> None:
    _held_quarters(world)
    extra = make_connection(world.owner, "Second")
    share_with(world.team, extra)
    make_held_buckets(extra, _days(*Q3), seed=900)
    spend = _page(world.team_viewer, world, period="last_quarter", by="connection").context["spend"]
    rows = {row.name: row for row in spend["rows"]}
    assert set(rows) == {"Main", "Admin lab", "Second"}
    # Second holds nothing of the quarter before: no change to show, for anyone.
    assert rows["Second"].detail == "of owner" and rows["Second"].previous is None
    assert rows["Second"].spend == _expected(world, *Q3, extra)
    assert sum(row.spend for row in spend["rows"]) == spend["total"]


def test_a_viewer_downloads_the_team_csv_and_its_total_is_the_pages(
    world: World, clock: Any
) -> None:
    _held_quarters(world)
    spend = _page(world.team_viewer, world, period="last_quarter").context["spend"]
    url = reverse("team_spend_export_csv", args=[world.team.pk])
    rows = _csv_rows(_get(world.team_viewer, url, period="last_quarter"))
    # One row per member's connection and day, with the member, and the page's total.
    assert len(rows) == 2 * 92
    assert {row["member"] for row in rows} == {"owner", "admin"}
    assert {row["period_start"][:10] for row in rows} == {
        f"{start:%Y-%m-%d}" for start, _ in _days(*Q3)
    }
    assert sum(Decimal(row["cost_total"]) for row in rows) == spend["total"]
    assert "osai-sandbox" not in str(rows)  # no token


def test_the_csv_is_for_the_roles_that_may_download_the_teams_csvs(
    world: World, clock: Any
) -> None:
    url = reverse("team_spend_export_csv", args=[world.team.pk])
    assert _get(world.team_admin, url).status_code == 200
    for user in (world.owner, world.team_member, world.stranger):  # members, outsiders
        assert _get(user, url).status_code == 404
    assert "spend.csv" not in _page(world.owner, world).content.decode()


def test_a_member_sees_only_their_own_part(world: World, clock: Any) -> None:
    _held_quarters(world)
    spend = _page(world.owner, world, period="last_quarter", by="connection").context["spend"]
    assert not spend["whole_team"] and spend["by"] == "member" and spend["chart"] is None
    assert [row.name for row in spend["rows"]] == ["owner"]
    assert spend["total"] == _expected(world, *Q3, world.connection)
    html = _page(world.owner, world, period="last_quarter").content.decode()
    admin_part = _expected(world, *Q3, world.admin_connection)
    assert "Your part of Vision" in html and f"{to_cents(admin_part):,.2f}" not in html


def test_the_last_12_months_count_held_months_and_this_months_days(
    world: World, clock: Any
) -> None:
    """Months the ledger holds whole count as months (the chart is by month); the days of
    this month so far, today's open day included, count as days."""
    extra = make_connection(world.owner, "Second")
    share_with(world.team, extra)
    months = _months(datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    make_held_buckets(extra, months, seed=1)
    make_held_buckets(
        extra, _days(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 14, tzinfo=UTC)), seed=50
    )
    _open_day(extra, NOW, seed=80)
    spend = _page(world.team_admin, world, period="last_12_months").context["spend"]
    by_month = ledger.period_costs([extra.pk], price_book_of(world.team), *months[0], now=NOW)
    assert by_month is not None
    assert spend["missing_days"] == 2 * 349  # Main and Admin lab hold nothing of the year
    chart = spend["chart"].figure["data"]
    assert [trace["name"] for trace in chart] == ["owner"]
    assert len(chart[0]["x"]) == 12 and chart[0]["y"][0] == pytest.approx(float(by_month["total"]))
    owner = next(row for row in spend["rows"] if row.name == "owner")
    assert owner.spend == spend["total"] > 0


@pytest.mark.parametrize(
    "now",
    [
        datetime(2026, 3, 1, 0, 30, tzinfo=UTC),  # the month's first half hour
        datetime(2026, 3, 31, 23, 0, tzinfo=UTC),  # its last day
        datetime(2028, 2, 29, 12, 0, tzinfo=UTC),  # a leap day
    ],
)
def test_this_month_on_the_edges_of_a_month(world: World, time_machine: Any, now: datetime) -> None:
    time_machine.move_to(now, tick=False)
    today = now.replace(hour=0, minute=0)
    first = today.replace(day=1)
    make_held_buckets(world.connection, _days(first, today), seed=3)
    _open_day(world.connection, now, seed=70)
    spend = _page(world.team_admin, world).context["spend"]
    assert spend["period"] == "this_month"
    days = (today - first) // timedelta(days=1) + 1  # today's open day included
    assert spend["missing_days"] == days  # the admin's connection: nothing held
    assert spend["total"] > 0 and spend["rows"][0].name == "owner"


def test_the_page_reads_the_same_number_of_queries_for_two_or_twelve_members(
    world: World, clock: Any
) -> None:
    def queries() -> int:
        client = Client()
        client.force_login(world.team_admin)
        url = reverse("team_detail", args=[world.team.pk])
        client.get(url, {"period": "last_quarter"})  # fills in the ledger, warms the caches
        with CaptureQueriesContext(db_connection) as captured:
            assert client.get(url, {"period": "last_quarter"}).status_code == 200
        return len(captured)

    _held_quarters(world)
    few = queries()
    for n in range(10):
        person = make_user(f"extra{n}")
        world.team.memberships.create(user=person, role="member")
        connection = make_connection(person, f"Lab {n}")
        share_with(world.team, connection)
        make_held_buckets(connection, _days(*Q3), seed=1000 + n)
    assert queries() == few


def test_export_usage_by_member_and_month_has_the_team_pages_total(
    world: World, clock: Any
) -> None:
    """`export_usage --team NAME --preset last_quarter --granularity month --group member`:
    a row per member and month, adding up to the team page's last quarter."""
    _held_quarters(world)
    spend = _page(world.team_admin, world, period="last_quarter").context["spend"]
    out = io.StringIO()
    call_command(
        "export_usage",
        *("--team", "Vision", "--preset", "last_quarter", "--granularity", "month"),
        *("--group", "member"),
        stdout=out,
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert sorted((row["member"], row["period_start"][:7]) for row in rows) == sorted(
        (member, month)
        for member in ("admin", "owner")
        for month in ("2026-07", "2026-08", "2026-09")
    )
    assert sum(Decimal(row["cost_total"]) for row in rows) == spend["total"]
    by_member = {row.name: row.spend for row in spend["rows"]}
    for member in ("admin", "owner"):
        exported = sum(Decimal(r["cost_total"]) for r in rows if r["member"] == member)
        assert exported == by_member[member]
