"""This month's spend (reports/spend/monthly.py), budgets and alerts (reports/spend/budgets.py,
A1, A6), the outbox (reports/spend/notify.py, A3-A5), digests (reports/spend/digests.py), and
what the overview and spend_summary show."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from reports.formatting import to_cents
from reports.metrics import all_flags
from reports.models import (
    Alert,
    Bucket,
    Budget,
    Delivery,
    DigestPreference,
    DigestSent,
    LedgerEntry,
)
from reports.pages.overview import overview_page, spend_summary
from reports.spend import budgets, digests, notify, pricing
from reports.spend.monthly import budget_status, month_forecast, month_spend, status_from
from reports.spend.usage import UsageRow, known_usage, rows_from_buckets
from tests.factories import (
    ensure_example_price_book,
    held_bucket,
    make_connection,
    make_team,
    make_user,
    save_as_finished,
    share_with,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # a Sunday: the 14 closed days of March
HOUR = 3600.0  # one hour of 8 GB training costs EUR 1.20 in the example book
HALF_DAY = timedelta(hours=12)


def day(month: int, d: int) -> datetime:
    return datetime(2026, month, d, tzinfo=UTC)


def spend_bucket(
    connection: Any, start: datetime, hours: float, *, closed: bool = True, end: Any = None
) -> Bucket:
    """A finished tracked bucket (not saved yet) with `hours` of 8 GB training and nothing else."""
    return held_bucket(
        connection,
        start,
        end or start + timedelta(days=1),
        closed=closed,
        totals={"training_seconds_8gb": hours * HOUR},
        finished_at=NOW,
        osai_created_at=start + timedelta(days=1) if closed else NOW,
    )


def spend_day(connection: Any, start: datetime, hours: float, **options: Any) -> Bucket:
    """A bucket as the pipeline finishes it: saved, then its bucket_done (the spend ledger
    writes its rows, replacing an older open-day bucket's)."""
    return save_as_finished(spend_bucket(connection, start, hours, **options))


def spend_month(connection: Any, hours: float) -> None:
    """Mar 1-14 closed and today (the 15th) so far at `hours` a day, Feb at twice that; in
    one insert."""
    Bucket.objects.bulk_create(
        [spend_bucket(connection, day(3, d), hours) for d in range(1, 15)]
        + [spend_bucket(connection, day(3, 15), hours, closed=False, end=NOW)]
        + [spend_bucket(connection, day(2, d), 2 * hours) for d in range(1, 29)]
    )


@pytest.fixture
def book() -> Any:
    return ensure_example_price_book()


@pytest.fixture
def month(book: Any) -> dict[str, Any]:
    """Mar 1-14 closed at 1 h a day, today (the 15th) 1 h so far; Feb at 2 h a day."""
    owner = make_user("payer")
    owner.email = "payer@example.com"
    owner.save()
    conn = make_connection(owner, "Lab")
    spend_month(conn, 1)
    return {"owner": owner, "conn": conn, "book": book}


# --- Month to date, the same days of last month, the forecast ---------------------------------


def test_month_to_date_compares_with_the_same_days_of_last_month(month: dict[str, Any]) -> None:
    spend = month_spend([month["conn"]], month["book"], NOW)
    assert spend.month_to_date == Decimal("18.00")  # 15 h x 1.20
    # Feb 1-14 whole and half of Feb 15, 2 h a day: 29 h x 1.20.
    assert spend.previous_same_days == Decimal("34.80")
    assert spend.previous_label == "2026-02-01 \u2013 2026-02-15 12:00"
    assert spend.missing_days == 0
    assert spend.data_as_of == NOW
    assert [d.cost for d in spend.days][:2] == [Decimal("1.20"), Decimal("1.20")]
    assert spend.days[-1].preliminary is True
    # 14 closed days at EUR 1.20, and 17 more days (today included) at that rate.
    assert spend.forecast is not None
    assert spend.forecast.value == Decimal("37.20")
    assert spend.forecast.low == spend.forecast.high == Decimal("37.20")  # no spread


def test_the_overview_change_on_a_tiny_base_writes_the_amounts_in_the_tile_and_the_table(
    book: Any, time_machine: Any
) -> None:
    """U2: EUR 18.00 after EUR 0.02 on the same days of last month is not "+89900.0 %"."""
    time_machine.move_to(NOW)
    owner = make_user("tiny")
    conn = make_connection(owner, "Lab")
    Bucket.objects.bulk_create(
        [spend_bucket(conn, day(3, d), 1) for d in range(1, 15)]
        + [spend_bucket(conn, day(3, 15), 1, closed=False, end=NOW)]
        + [spend_bucket(conn, day(2, d), 0.001) for d in range(1, 29)]
    )
    page = overview_page(owner, now=NOW)
    expected = "EUR 18.00, up from EUR 0.02 in the same days of last month"
    assert (page["change"], page["trend"]) == (expected, "up")
    assert [(row.change, row.trend) for row in page["per_connection"]] == [(expected, "up")]
    client = Client()
    client.force_login(owner)
    html = client.get(reverse("home")).content.decode()
    assert html.count(expected) == 2 and " % vs" not in html


def test_a_day_not_fetched_yet_is_missing_and_there_is_no_forecast(month: dict[str, Any]) -> None:
    Bucket.objects.filter(period_start=day(3, 5)).delete()
    spend = month_spend([month["conn"]], month["book"], NOW)
    assert spend.missing_days == 1
    assert spend.days[4].cost is None
    assert spend.forecast is None
    assert spend.month_to_date == Decimal("16.80")


def test_the_forecast_weights_recent_days_and_widens_with_their_spread() -> None:
    flat = month_forecast([Decimal(10)] * 10, days_in_month=30, spent_so_far=Decimal(100))
    assert flat is not None and flat.value == Decimal("300.00") and flat.low == flat.high
    rising = month_forecast(
        [Decimal(d) for d in range(1, 11)], days_in_month=30, spent_so_far=Decimal(55)
    )
    assert rising is not None
    assert rising.daily_rate > Decimal("5.5")  # above the plain mean: recent days weigh more
    assert rising.low < rising.value < rising.high
    assert rising.low >= Decimal(55)  # never below what is already spent
    assert month_forecast([Decimal(3)], days_in_month=30, spent_so_far=Decimal(3)) is None


# --- Budgets -------------------------------------------------------------------------------------


def test_a_budget_says_what_is_left_in_money_gpu_hours_and_days(month: dict[str, Any]) -> None:
    budget = budgets.budget_set(actor=month["owner"], scope="person", amount="24")
    status = budget_status(budget, now=NOW)
    assert (status.spent, status.percent, status.remaining) == (
        Decimal("18.00"),
        Decimal("75.00"),
        Decimal("6.00"),
    )
    # EUR 6 at the example rates: 2.10 / h on 16 GB, 1.20 / h on 8 GB.
    assert (status.remaining_gpu_hours_16gb, status.remaining_gpu_hours_8gb) == (
        Decimal("2.9"),
        Decimal("5.0"),
    )
    # EUR 1.20 a day: EUR 6 lasts 5 days from now.
    assert status.runs_out_on == (NOW + timedelta(days=5)).date()
    assert status.crossed == [50]
    assert status.forecast_percent == Decimal("155.00")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0", "more than 0"),
        ("-5", "more than 0"),
        ("ten", "as a number"),
        ("1.234", "two decimals"),
        ("NaN", "more than 0"),
        ("1e20", "12 digits"),
    ],
)
def test_bad_budget_amounts_get_a_clear_message_and_change_nothing(
    month: dict[str, Any], amount: str, message: str
) -> None:
    """A6."""
    with pytest.raises(budgets.BudgetError, match=message):
        budgets.budget_set(actor=month["owner"], scope="person", amount=amount)
    client = Client()
    client.force_login(month["owner"])
    response = client.post(
        reverse("budget_list"), {"scope": "person", "amount": amount, "thresholds": "50"}
    )
    assert response.status_code == 400
    assert Budget.objects.count() == 0


def test_only_a_teams_admins_set_its_budget_and_only_owners_see_budgets(
    month: dict[str, Any],
) -> None:
    admin, member, stranger = make_user(), make_user(), make_user()
    team = make_team(admins=[admin], members=[member])
    with pytest.raises(budgets.BudgetError, match="team's admins"):
        budgets.budget_set(actor=member, scope="team", amount="100", team=team)
    budget = budgets.budget_set(actor=admin, scope="team", amount="100", team=team)
    other = budgets.budget_set(actor=month["owner"], scope="person", amount="5")
    for user, visible in ((admin, True), (member, False), (stranger, False)):
        client = Client()
        client.force_login(user)
        status = client.get(reverse("budget_detail", args=[budget.pk])).status_code
        assert status == (200 if visible else 404)
        assert client.get(reverse("budget_detail", args=[other.pk])).status_code == 404
        assert client.post(reverse("budget_delete", args=[other.pk])).status_code == 404
    assert Budget.objects.count() == 2


# --- Alerts: once per threshold per month (A1), one message naming the highest -------------


def test_each_threshold_alerts_once_a_month_with_one_message_naming_the_highest(
    month: dict[str, Any],
) -> None:
    budget = budgets.budget_set(
        actor=month["owner"], scope="person", amount="20", emails=["ops@example.com"]
    )
    first = budgets.budget_check(budget, now=NOW)  # 90 %: past 50 and 80
    assert sorted(a.threshold for a in first) == [50, 80]
    deliveries = list(Delivery.objects.all())
    assert len(deliveries) == 1
    assert deliveries[0].subject == "Budget alert: 80 % of All of payer's connections"
    assert "past 80 %" in deliveries[0].text and "EUR 18.00 spent" in deliveries[0].text
    assert budgets.budget_check(budget, now=NOW) == []  # a second check sends nothing
    assert Delivery.objects.count() == 1
    # Crossing 100 % later in the month alerts for 100 % only.
    spend_day(month["conn"], day(3, 15), 3, closed=False, end=NOW + timedelta(hours=1))
    later = budgets.budget_check(budget, now=NOW + timedelta(hours=1))
    assert [a.threshold for a in later] == [100]
    # A new month starts over.
    april = budgets.budget_check(budget, now=datetime(2026, 4, 2, tzinfo=UTC))
    assert april == []  # nothing spent in April yet
    assert Alert.objects.filter(month=datetime(2026, 3, 1).date()).count() == 3


def test_a_tiny_budget_far_overspent_alerts_at_the_largest_percent_it_can_store(
    month: dict[str, Any],
) -> None:
    """0.01 of a currency and over EUR 1,000 spent: 10 million percent and more, beyond
    Alert.percent's 9 digits (PostgreSQL refused the row), is stored as its largest value."""
    budget = budgets.budget_set(actor=month["owner"], scope="person", amount="0.01")
    spend_day(month["conn"], day(3, 15), 900, closed=False, end=NOW + timedelta(hours=1))
    alerts = budgets.budget_check(budget, now=NOW + timedelta(hours=1))
    assert sorted(a.threshold for a in alerts) == [50, 80, 100]
    assert {a.percent for a in Alert.objects.filter(budget=budget)} == {budgets.PERCENT_CEILING}


def test_forecast_thresholds_alert_when_chosen(month: dict[str, Any]) -> None:
    budget = budgets.budget_set(
        actor=month["owner"], scope="person", amount="30", on_forecast=True, thresholds=[100]
    )
    alerts = budgets.budget_check(budget, now=NOW)
    assert [(a.kind, a.threshold) for a in alerts] == [("forecast", 100)]  # 37.20 of 30


def test_alert_messages_carry_no_secret(month: dict[str, Any], settings: Any) -> None:
    """A5: the webhook secret is encrypted at rest, never in the message, page or log."""
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    secret = "CANARY-webhook-secret-9f8e"
    budget = budgets.budget_set(
        actor=month["owner"],
        scope="person",
        amount="20",
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret=secret,
    )
    [channel] = budget.channels.all()
    assert secret not in channel.secret_encrypted
    assert "127.0.0.1:9/hook" not in channel.url_encrypted
    budgets.budget_check(budget, now=NOW)
    delivery = Delivery.objects.get()
    everything = json.dumps(delivery.payload) + delivery.text + delivery.target
    assert secret not in everything and "127.0.0.1:9/hook" not in everything
    client = Client()
    client.force_login(month["owner"])
    page = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
    assert secret not in page and "127.0.0.1:9/hook" not in page


def test_an_email_delivery_is_sent_once_with_its_key(month: dict[str, Any]) -> None:
    budget = budgets.budget_set(
        actor=month["owner"], scope="person", amount="20", emails=["a@example.com", "b@x.org"]
    )
    budgets.budget_check(budget, now=NOW)
    delivery = Delivery.objects.get()
    assert notify.delivery_send(delivery.pk) == "sent"
    assert notify.delivery_send(delivery.pk).startswith("not claimed")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["a@example.com", "b@x.org"]
    assert message.extra_headers["X-OSAI-Usage-Delivery"] == delivery.key
    delivery.refresh_from_db()
    assert (delivery.state, delivery.attempts) == ("sent", 1)


def test_a_failing_mail_server_is_retried_then_shown_as_failed(
    month: dict[str, Any], settings: Any
) -> None:
    """A4, in-process: nothing listens on the mail port."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 3
    settings.ALERT_DELIVERY_RETRY_SECONDS = 0
    budget = budgets.budget_set(
        actor=month["owner"], scope="person", amount="20", emails=["a@b.co"]
    )
    budgets.budget_check(budget, now=NOW)
    delivery = Delivery.objects.get()
    results = [notify.delivery_send(delivery.pk) for _ in range(3)]
    assert results == ["will retry", "will retry", "failed"]
    delivery.refresh_from_db()
    assert delivery.state == "failed" and delivery.attempts == 3
    assert (
        "could not be reached" in delivery.last_error and "gave up after 3" in delivery.last_error
    )
    client = Client()
    client.force_login(month["owner"])
    page = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
    assert "Failed" in page and "could not be reached" in page


# --- The overview and spend_summary ---------------------------------------------------------------


def test_spend_summary_prints_what_the_overview_shows(
    month: dict[str, Any], time_machine: Any
) -> None:
    time_machine.move_to(NOW)
    budgets.budget_set(actor=month["owner"], scope="person", amount="24")
    out = io.StringIO()
    call_command("spend_summary", "--user", "payer", "--json", stdout=out)
    summary = json.loads(out.getvalue())
    assert summary == spend_summary(overview_page(month["owner"], now=NOW)) | {
        "as_of": summary["as_of"]
    }
    assert summary["currency"] == "EUR"
    assert summary["month_to_date_cost"] == "18.00"
    assert summary["previous_month_same_days_cost"] == "34.80"
    assert (summary["forecast_cost"], summary["forecast_low"], summary["forecast_high"]) == (
        "37.20",
        "37.20",
        "37.20",
    )
    assert summary["budgets"] == [
        {
            "scope": "person",
            "name": "All of payer's connections",
            "amount": "24.00",
            "spent": "18.00",
            "percent": "75.00",
            "remaining": "6.00",
            "remaining_gpu_hours_16gb": "2.9",
            "remaining_gpu_hours_8gb": "5.0",
            "runs_out_on": "2026-03-20",
        }
    ]
    client = Client()
    client.force_login(month["owner"])
    page = client.get(reverse("home")).content.decode()
    assert "EUR</span> 18.00" in page and "37.20" in page
    assert "-48.3 % vs the same days of last month" in page
    assert 'class="budget-meter' in page and 'value="75"' in page


def test_the_overview_queries_do_not_grow_with_connections_and_budgets(
    book: Any, time_machine: Any
) -> None:
    """P18 as a count: the overview's queries are the same for 1 and 50 connections, each
    with its budget and a month of spend."""
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    time_machine.move_to(NOW)
    owner = make_user()
    client = Client()
    client.force_login(owner)

    def add(count: int) -> None:
        for _ in range(count):
            conn = make_connection(owner)
            spend_month(conn, 1)
            budgets.budget_set(actor=owner, scope="connection", amount="50", connection=conn)

    counts = []
    for more in (1, 49):
        add(more)
        # The first view writes the ledger rows the factory's buckets lack (the pipeline
        # writes them as buckets finish); the page then reads sums.
        assert client.get(reverse("home")).status_code == 200
        with CaptureQueriesContext(db) as queries:
            page = client.get(reverse("home"))
        assert page.status_code == 200 and "EUR</span> " in page.content.decode()
        counts.append(len(queries.captured_queries))
        sql = [q["sql"] for q in queries.captured_queries]
        # The book's versions are read once (for the hours left), not per connection or
        # budget; the month's costs come from the ledger: nothing is priced.
        assert sum('FROM "reports_pricebookversion"' in q for q in sql) == 1
        assert sum('FROM "reports_ledgerentry"' in q for q in sql) >= 1
    assert counts[0] == counts[1]


@pytest.fixture
def pricing_work(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every cost computed from now on (pricing's one computation), from an empty memo."""
    pricing.clear_totals_memo()
    priced: list[UsageRow] = []
    real = pricing._costs_over_segments

    def counting(totals: Any, segments: Any, duration: Any = None) -> pricing.Costs:
        priced.append(totals)
        return real(totals, segments, duration)

    monkeypatch.setattr(pricing, "_costs_over_segments", counting)
    return priced


def test_the_overview_prices_each_held_day_once(
    book: Any, time_machine: Any, own_cache: None, pricing_work: list[Any]
) -> None:
    """The totals, the per-connection rows, the forecasts and every budget read the spend
    ledger: each held day is priced once, when its row is written (here on the first view,
    for buckets the factory made; the pipeline writes them as buckets finish), and a repeat
    view prices nothing, the day of last month cut at this moment included."""
    time_machine.move_to(NOW)
    owner = make_user()
    connections = [make_connection(owner) for _ in range(3)]
    for hours, conn in enumerate(connections, start=1):  # different usage: no row alike
        spend_month(conn, hours)
        budgets.budget_set(actor=owner, scope="connection", amount="50", connection=conn)
    budgets.budget_set(actor=owner, scope="person", amount="500")
    client = Client()
    client.force_login(owner)

    assert client.get(reverse("home")).status_code == 200
    # Per connection: 15 days of March and the 28 of February, once each, in the one book.
    assert len(pricing_work) == 3 * (15 + 28)
    assert LedgerEntry.objects.count() == 3 * (15 + 28)
    del pricing_work[:]
    assert client.get(reverse("home")).status_code == 200
    assert pricing_work == []


def _reference_month(ids: list[int], book: Any) -> tuple[Any, ...]:
    """The month as the overview computed it before the ledger: each connection's buckets
    priced with row_costs, day by day, and last month's same days through known_usage (the
    cut day pro rata), all to the cent."""
    days = []
    for n in range(NOW.day):
        start = day(3, 1) + timedelta(days=n)
        buckets = Bucket.objects.filter(connection_id__in=ids, period_start=start, tracked=True)
        rows = rows_from_buckets(buckets.order_by("connection_id", "-period_end"))
        per_connection = {b.connection_id for b in buckets}
        cost = sum((pricing.row_costs(r, book)["total"] for r in rows), Decimal(0))
        days.append(to_cents(cost) if len(per_connection) == len(ids) else None)
    earlier = known_usage(ids, all_flags(), day(2, 1), day(2, NOW.day) + HALF_DAY)
    previous = None
    if earlier is not None:
        previous = to_cents(pricing.sum_costs(pricing.rows_costs(earlier, book))["total"])
    return days, previous


def _cents(values: list[Any]) -> list[Any]:
    return [None if v is None else to_cents(v) for v in values]


def test_shared_pricing_shows_what_each_scope_priced_alone_did(book: Any) -> None:
    """Pins the figures: connections with different usage, a new version from the middle of
    a day, a missing day and a team budget in another book and currency give the overview
    and the team page what pricing each scope on its own gives."""
    from reports.models import PriceBook, PriceBookVersion
    from reports.pages.overview import team_overview
    from reports.spend.monthly import BookCache, load_spend, month_spend_of

    rates = {"training_8gb_per_hour": Decimal("1.3"), "training_16gb_per_hour": Decimal("2")}
    PriceBookVersion.objects.create(price_book=book, effective_from=day(3, 6) + HALF_DAY, **rates)
    usd = PriceBook.objects.create(name="USD book", currency="USD")
    PriceBookVersion.objects.create(price_book=usd, effective_from=day(1, 1), **rates)
    owner = make_user()
    member = make_user()
    team = make_team(admins=[owner], members=[member])
    team.price_book = usd
    team.save()
    mine = [make_connection(owner) for _ in range(3)]
    theirs = make_connection(member)
    for hours, conn in enumerate([*mine, theirs], start=1):
        spend_month(conn, hours * 1.5)
    Bucket.objects.filter(connection=mine[1], period_start=day(3, 9)).delete()
    share_with(team, mine[0], theirs)
    for conn in mine:
        budgets.budget_set(actor=owner, scope="connection", amount="20", connection=conn)
    budgets.budget_set(actor=owner, scope="person", amount="100")
    budgets.budget_set(actor=owner, scope="team", team=team, amount="100")

    page = overview_page(owner, now=NOW)
    team_page = team_overview(team, now=NOW)
    default = BookCache().of(None)
    for scope, ids, price_book in [
        (page, [c.pk for c in mine], default),
        (team_page, sorted([mine[0].pk, theirs.pk]), usd),
    ]:
        days, previous = _reference_month(ids, price_book)
        assert _cents([d.cost for d in scope["spend"].days]) == days
        assert to_cents(scope["spend"].previous_same_days) == previous
        assert to_cents(scope["spend"].month_to_date) == sum((d for d in days if d), Decimal(0))
    assert page["spend"].missing_days == 1 and page["forecast"] is None
    assert team_page["forecast"] is not None
    complete = [d.cost is not None for d in page["spend"].days]
    for row, conn in zip(page["per_connection"], mine, strict=True):
        days, previous = _reference_month([conn.pk], default)
        # A connection's month to date counts the days known for all of them (as the total).
        known = [d for d, whole in zip(days, complete, strict=True) if whole and d]
        assert to_cents(row.month_to_date) == sum(known, Decimal(0))
        assert to_cents(row.previous) == previous
    for status in page["budgets"]:
        covered = {
            "connection": [status.budget.connection_id],
            "person": [c.pk for c in mine],
            "team": sorted([mine[0].pk, theirs.pk]),
        }[status.budget.scope]
        price_book = usd if status.budget.scope == "team" else default
        alone = month_spend_of(load_spend(covered, NOW), covered, price_book)
        days, _ = _reference_month(covered, price_book)
        assert to_cents(alone.month_to_date) == sum((d for d in days if d), Decimal(0))
        assert status == status_from(status.budget, alone, price_book)


def test_the_month_chart_is_built_once_per_content(
    month: dict[str, Any], own_cache: None, time_machine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reports.pages import charts

    builds: list[int] = []
    real = charts.month_spend_figure
    monkeypatch.setattr(
        charts, "month_spend_figure", lambda *a, **k: builds.append(1) or real(*a, **k)
    )
    time_machine.move_to(NOW)
    client = Client()
    client.force_login(month["owner"])
    for _ in range(2):
        page = client.get(reverse("home")).content.decode()
        assert 'id="figure-month"' in page and "18.00" in page
    assert len(builds) == 1
    # Today's bucket grows: the next refresh's open-day bucket finishes (the pipeline's
    # bucket_done writes its ledger rows, replacing the older one's); a new figure, with the
    # new spend in it.
    spend_day(month["conn"], day(3, 15), 3, closed=False, end=NOW + timedelta(minutes=1))
    assert "20.40" in client.get(reverse("home")).content.decode()
    assert len(builds) == 2


# --- Digests ---------------------------------------------------------------------------------


def test_digests_are_made_once_per_period_and_respect_opt_out(month: dict[str, Any]) -> None:
    monday = datetime(2026, 3, 16, 7, tzinfo=UTC)
    spend_day(month["conn"], day(3, 15), 1)  # Sunday has closed by Monday
    assert [k for k, _, _ in digests.due_periods(monday)] == ["weekly"]
    assert [k for k, _, _ in digests.due_periods(datetime(2026, 4, 1, tzinfo=UTC))] == ["monthly"]
    assert digests.due_periods(NOW) == []
    assert digests.digests_send(now=monday) == 1
    assert digests.digests_send(now=monday + timedelta(hours=1)) == 0  # once
    delivery = Delivery.objects.get()
    assert delivery.target == "payer@example.com"
    assert "usage and spend for 2026-03-09 \u2013 2026-03-15" in delivery.text
    assert "Spend: EUR 8.40" in delivery.text  # 7 days x 1 h x 1.20
    assert "/spend.csv?from=2026-03-09&to=2026-03-16" in delivery.text
    DigestPreference.objects.create(user=month["owner"], weekly=False)
    DigestSent.objects.all().delete()
    assert digests.digests_send(now=monday) == 0


def test_a_digest_is_not_emailed_to_an_address_single_sign_on_left_unverified(
    month: dict[str, Any],
) -> None:
    """S14: an account whose address came from a provider that did not verify it gets its
    digest made (once) but not emailed; verified, the next period's is."""
    from allauth.account.models import EmailAddress

    monday = datetime(2026, 3, 16, 7, tzinfo=UTC)
    spend_day(month["conn"], day(3, 15), 1)
    address = EmailAddress.objects.create(
        user=month["owner"], email="payer@example.com", verified=False
    )
    assert digests.digests_send(now=monday) == 1
    assert not Delivery.objects.exists()
    address.verified = True
    address.save()
    assert digests.digests_send(now=monday + timedelta(days=7)) == 1
    assert list(Delivery.objects.values_list("target", flat=True)) == ["payer@example.com"]


def _weekly_digest_change(book: Any, before_hours: float, hours: float) -> list[str]:
    """The "Change:" line of a weekly digest for Mar 9-15 (`hours` a day of 8 GB training at
    EUR 1.20 an hour) after Mar 2-8 (`before_hours` a day)."""
    owner = make_user("weekly")
    conn = make_connection(owner, "Lab")
    for d in range(2, 16):
        spend_day(conn, day(3, d), before_hours if d < 9 else hours)
    digest = digests.digest_for(
        kind=digests.WEEKLY,
        start=day(3, 9),
        end=day(3, 16),
        name="weekly",
        connections=[conn],
        price_book=book,
        budgets=[],
        csv_query={},
        now=datetime(2026, 3, 16, 7, tzinfo=UTC),
    )
    return [line for line in digest.text.splitlines() if line.startswith("Change:")]


def test_the_digest_change_on_a_tiny_base_writes_the_amounts(book: Any) -> None:
    """U2: a week after one of EUR 0.08 is not "+29900.0 %"."""
    assert _weekly_digest_change(book, 0.01, 3) == [
        "Change: EUR 25.20, up from EUR 0.08 in 2026-03-02 \u2013 2026-03-08"
    ]


def test_the_digest_change_on_a_normal_base_is_a_percentage_of_the_amount_before(
    book: Any,
) -> None:
    assert _weekly_digest_change(book, 1, 3) == [
        "Change: +200.0 % vs 2026-03-02 \u2013 2026-03-08 (EUR 8.40)"
    ]


def test_the_digest_change_on_a_zero_base_is_new_since(book: Any) -> None:
    assert _weekly_digest_change(book, 0, 3) == ["Change: new since 2026-03-02 \u2013 2026-03-08"]


def test_the_digest_csv_link_exports_the_period_for_its_owner_only(month: dict[str, Any]) -> None:
    spend_day(month["conn"], day(3, 15), 1)
    client = Client()
    client.force_login(month["owner"])
    response = client.get(reverse("spend_export_csv") + "?from=2026-03-09&to=2026-03-16")
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 1 + 7  # the header and seven days
    stranger = Client()
    stranger.force_login(make_user())
    body = b"".join(
        stranger.get(
            reverse("spend_export_csv") + "?from=2026-03-09&to=2026-03-16"
        ).streaming_content
    )
    assert body.decode().count("\n") == 1  # only the header: nothing of theirs
    # Malformed dates are a 400 that says what it takes (issue 23); another team is a 404.
    assert client.get(reverse("spend_export_csv") + "?from=x&to=y").status_code == 400
    assert (
        client.get(
            reverse("spend_export_csv") + "?from=2026-03-09&to=2026-03-16&team=9"
        ).status_code
        == 404
    )


def test_pricing_and_the_ml_stage_view_on_the_report_page(month: dict[str, Any]) -> None:
    from tests.factories import make_done_report

    report = make_done_report(month["owner"], [make_connection(month["owner"])])
    client = Client()
    client.force_login(month["owner"])
    page = client.get(reverse("report_detail", args=[report.pk]) + "?view=cost")
    stages = page.context["stages"]
    assert [label for label, _, _ in stages.stages] == [
        "Data (image storage)",
        "Augmentation",
        "Training (incl. model storage)",
        "Conversion",
        "Deployment (devices + prediction)",
    ]
    total_tile = Decimal(page.context["tiles"][0].value.replace(",", ""))
    stage_sum = sum((Decimal(a.replace(",", "")) for _, a, _ in stages.stages), Decimal(0))
    assert abs(stage_sum - total_tile) <= Decimal("0.03")  # five stages, each rounded once
    assert [label for label, _, _ in stages.what_if] == [
        "As it ran",
        "All training on 8 GB workers",
        "All training on 16 GB workers",
    ]
    content = page.content.decode()
    assert "By ML stage" in content and "per training GPU-hour" in content


# --- At any moment: the real clock and the month edges (tests/support/clock.py) ---------------


def test_the_overview_budgets_and_digests_at_this_moment(book: Any) -> None:
    """Run at the real clock and at each edge the guard sets (the 1st five minutes in, the
    2nd, the last day after a shorter month, a leap day): tracking has fetched 1 h of 8 GB
    training (EUR 1.20) on every day of this month so far, today's open day included, and 2 h
    on every day of last month."""
    from calendar import monthrange

    from dateutil.relativedelta import relativedelta
    from django.utils import timezone

    from reports.formatting import money
    from reports.integrations import api_tokens
    from reports.periods import utc_midnight

    now = timezone.now()
    today = utc_midnight(now.date())
    month_start = today.replace(day=1)
    last_month = month_start - relativedelta(months=1)
    days_in_month = monthrange(now.year, now.month)[1]
    days_last_month = (month_start - last_month).days
    owner = make_user("payer")
    owner.email = "payer@example.com"
    owner.save()
    conn = make_connection(owner, "Lab")
    for d in range(now.day - 1):
        spend_day(conn, month_start + timedelta(days=d), 1)
    spend_day(conn, today, 1, closed=False, end=now)
    for d in range(days_last_month):
        spend_day(conn, last_month + timedelta(days=d), 2)
    rate = Decimal("1.20")

    spend = month_spend([conn], book, now)
    assert spend.month_to_date == rate * now.day
    assert (len(spend.days), spend.missing_days) == (now.day, 0)
    assert spend.days[-1].preliminary and not any(d.preliminary for d in spend.days[:-1])
    # The same days of last month: as far into it as this month has gone, at most all of it.
    same_days = min(now - month_start, month_start - last_month) / timedelta(days=1)
    assert spend.previous_same_days is not None
    assert abs(spend.previous_same_days - 2 * rate * Decimal(same_days)) < Decimal("0.0001")
    # A forecast from the 3rd day: two closed days at EUR 1.20, the rest of the month alike.
    if now.day < 3:
        assert spend.forecast is None
    else:
        assert spend.forecast is not None and spend.forecast.closed_days == now.day - 1
        assert spend.forecast.value == rate * days_in_month

    # A budget of the month-end at that rate: as much of it is spent as of the month.
    budget = budgets.budget_set(
        actor=owner, scope="person", amount=rate * days_in_month, emails=["a@example.com"]
    )
    status = budget_status(budget, now=now)
    percent = (Decimal(100) * now.day / days_in_month).quantize(Decimal("0.01"))
    assert (status.spent, status.percent) == (rate * now.day, percent)
    assert status.runs_out_on == (
        (month_start + timedelta(days=days_in_month - 1)).date()
        if 3 <= now.day < days_in_month
        else None
    )
    # The overview, spend_summary and the API say the same, at this moment.
    client = Client()
    client.force_login(owner)
    page = client.get(reverse("home")).content.decode()
    assert f"EUR</span> {money(rate * now.day)}" in page
    assert f'value="{int(percent)}"' in page
    assert ("from the 3rd day of the month" in page) == (now.day < 3)
    out = io.StringIO()
    call_command("spend_summary", "--user", owner.username, "--json", stdout=out)
    token = api_tokens.api_token_create(user=owner, name="cron")[1]
    api = Client().get("/api/v1/spend", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    for summary in (json.loads(out.getvalue()), api):
        assert summary["month"] == f"{now:%Y-%m}"
        assert summary["month_to_date_cost"] == str(rate * now.day)
        assert (summary["forecast_cost"] is None) == (now.day < 3)
        assert summary["budgets"][0]["percent"] == str(percent)

    alerts = budgets.budget_check(budget, now=now)
    assert [a.threshold for a in alerts] == [t for t in (50, 80, 100) if percent >= t]
    assert {a.month for a in alerts} <= {month_start.date()}

    # The digests due today (the monthly one on the 1st, the weekly one on Mondays).
    due = digests.due_periods(now)
    assert ("monthly" in [kind for kind, _, _ in due]) == (now.day == 1)
    Delivery.objects.all().delete()
    assert digests.digests_send(now=now) == len(due)
    for kind, start, _end in due:
        daily = [rate if start + timedelta(days=d) >= month_start else 2 * rate for d in range(7)]
        spent = 2 * rate * days_last_month if kind == "monthly" else sum(daily, Decimal(0))
        assert DigestSent.objects.filter(user=owner, kind=kind, period_start=start.date())
        [text] = [d.text for d in Delivery.objects.all() if d.subject.startswith(kind.title())]
        assert f"Spend: {money(spent, 'EUR')}" in text, text


def test_set_budget_reads_the_webhook_secret_from_standard_input_or_a_file_never_argv(
    settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A5: a secret given as an argument shows in `ps` and the shell's history; the command
    refuses it there and reads it from a file or standard input instead."""
    from django.core.management.base import CommandError

    from reports import crypto
    from reports.models import Budget

    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    owner = make_user()
    hook = ["--webhook", "http://127.0.0.1:9/hook"]
    base = ["set_budget", "--user", owner.username, "--monthly", "10", *hook]
    with pytest.raises(CommandError, match="--webhook-secret-file"):
        call_command(*base, "--webhook-secret", "in-argv", stdout=io.StringIO())
    assert not Budget.objects.exists()

    monkeypatch.setattr("sys.stdin", io.StringIO("from-stdin\n"))
    call_command(*base, "--webhook-secret-file", "-", stdout=io.StringIO())
    budget = Budget.objects.get()

    def secret() -> str:
        [channel] = budget.channels.all()  # one webhook channel, however often it is set
        return crypto.decrypt_secret(channel.secret_encrypted)

    assert secret() == "from-stdin"

    secret_file = tmp_path / "hook-secret"
    secret_file.write_text("from-a-file\n")
    call_command(*base, "--webhook-secret-file", str(secret_file), stdout=io.StringIO())
    assert secret() == "from-a-file"
    # Without the option the secret is kept.
    call_command(*base, stdout=io.StringIO())
    assert secret() == "from-a-file"
    with pytest.raises(CommandError, match="Cannot read the webhook secret"):
        call_command(*base, "--webhook-secret-file", str(tmp_path / "nope"), stdout=io.StringIO())
