"""In a real browser: a team's admin makes the team's own price book, edits a rate, and the
next report uses it while an older report keeps its price; then a saved view, one click from
the overview. A real web server, a real worker, the sandbox (the fixtures of test_browser.py,
through conftest.py).

Leaves screenshots of the price-book page and of the report form with a saved view in
var/test-artifacts/ and, when missing or with OSAI_UPDATE_SCREENSHOT=1, in docs/.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.factories import ensure_example_price_book, make_connection, make_team, make_user
from tests.factories import share_with as share
from tests.support.browser import ARTIFACTS, screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

TEAM = "Desk lab"
BOOK = "Desk lab prices"
NEW_RATE = Decimal(50)  # per GPU-hour of 16 GB training, from today
OLD_RATE = Decimal("2.10")  # the example's
MONEY = re.compile(r"(?P<currency>[A-Z]{3}) (?P<amount>-?[\d,]+\.\d{2})")


def _money(text: str) -> Decimal:
    match = MONEY.search(" ".join(text.split()))
    assert match, f"no amount of money in {text!r}"
    return Decimal(match["amount"].replace(",", ""))


def _csv_rows(page: Any, url: str) -> list[dict[str, str]]:
    """A CSV export, fetched with the browser's session."""
    response = page.request.get(url)
    assert response.ok, response.status
    return list(csv.DictReader(io.StringIO(response.text())))


@dataclass(frozen=True)
class Desk:
    team_pk: int
    admin: str


@pytest.fixture
def desk(browser_user: Any) -> Desk:
    """Made before the browser starts: the browser user administers a team whose member
    shares a sandbox connection; the admin has a connection of their own (for the personal
    form); the example price book."""
    ensure_example_price_book()
    member = make_user("desk-member")
    team = make_team(TEAM, admins=[browser_user], members=[member])
    share(
        team,
        make_connection(member, "Member lab", token=f"osai-sandbox-desk-{secrets.token_hex(6)}"),
    )
    make_connection(browser_user, "Own lab", token=f"osai-sandbox-own-{secrets.token_hex(6)}")
    return Desk(team_pk=team.pk, admin=browser_user.username)


def _team_report(page: Any, team_url: str, start: str, end: str) -> str:
    """Request a team report by day over [start, end] on the team page; its URL once done."""
    page.goto(team_url)
    page.select_option("#id_preset", "custom")
    page.fill("#id_date_from", start)
    page.fill("#id_date_to", end)
    page.select_option("#id_granularity", "day")
    page.click("button:has-text('Request team report')")
    page.wait_for_url(re.compile(r".*/reports/\d+/$"))
    page.wait_for_selector("#status-badge.badge-done", timeout=120_000)
    return str(page.url)


def test_an_admin_edits_a_rate_the_next_report_uses_it_and_an_older_one_keeps_its_price(
    live_site: Any, use_sandbox: Any, desk: Desk, browser_page: tuple[Any, Any]
) -> None:
    use_sandbox.set_latency(0.5)
    page, problems = browser_page
    base = live_site.url
    team_url = f"{base}/teams/{desk.team_pk}/"
    today = datetime.now(UTC).date()
    week_ago = (today - timedelta(days=7)).isoformat()
    sign_in(page, base, desk.admin)

    # The team page: make our own price book, a copy of the example; use it for the team.
    page.goto(team_url)
    page.fill("#copy-name", BOOK)
    page.click("button:has-text('Make our own price book')")
    page.wait_for_url(re.compile(rf"{re.escape(team_url)}price-books/\d+/$"))
    book_url = page.url
    expect(page.locator("h1")).to_contain_text(BOOK)
    expect(page.locator("main")).to_contain_text("Example prices")  # the example's rates still
    page.click('button:has-text("Use for Desk lab\'s reports")')
    page.wait_for_url(book_url)
    expect(page.locator("main")).to_contain_text("Prices Desk lab's reports")

    # An older report: the last seven whole days, priced with the example's rates.
    old_url = _team_report(page, team_url, week_ago, (today - timedelta(days=1)).isoformat())
    page.goto(f"{old_url}?view=cost")
    old_total = _money(page.locator(".tile-value").first.inner_text())
    assert old_total > 0
    expect(page.locator("#priced-with")).to_have_text(
        f"Priced with “{BOOK}” (EUR): rates from 2020-01-01 (UTC)."
    )
    old_pk = old_url.rstrip("/").rsplit("/", 1)[-1]
    old_csv_total = sum(
        Decimal(r["cost_total"]) for r in _csv_rows(page, f"{base}/reports/{old_pk}/export.csv")
    )

    # Edit one rate, from today (the form starts from today and today's rates).
    page.goto(book_url)
    assert page.input_value("#id_effective") == today.isoformat()
    assert Decimal(page.input_value("#id_training_16gb_per_hour")) == OLD_RATE
    errors_before = len(problems.console_errors)
    page.fill("#id_training_16gb_per_hour", "-1")  # refused, with a clear message
    page.click("button:has-text('Save rates')")
    expect(page.locator("main")).to_contain_text("Training, 16 GB: a rate cannot be negative.")
    # The browser logs the form's 400 as a console error: that one is the point here.
    assert all("400" in e for e in problems.console_errors[errors_before:])
    del problems.console_errors[errors_before:]
    page.fill("#id_training_16gb_per_hour", str(NEW_RATE))
    page.click("button:has-text('Save rates')")
    page.wait_for_url(book_url)
    expect(page.locator(".messages")).to_contain_text(f"Saved the rates from {today:%Y-%m-%d}")
    rates = page.locator("section[aria-labelledby=rates-heading] thead")
    expect(rates).to_contain_text(f"from {today:%Y-%m-%d} in force")
    expect(page.locator("main")).not_to_contain_text("Example prices")
    page.wait_for_timeout(200)
    screenshot(page, "screenshot-price-book.png")

    # The next report, the same days and today: today is priced with the new rate.
    new_url = _team_report(page, team_url, week_ago, today.isoformat())
    page.goto(f"{new_url}?view=cost")
    expect(page.locator("#priced-with")).to_have_text(
        f"Priced with “{BOOK}” (EUR): rates from 2020-01-01, from {today:%Y-%m-%d} (UTC)."
    )
    new_pk = new_url.rstrip("/").rsplit("/", 1)[-1]
    rows = _csv_rows(page, f"{base}/reports/{new_pk}/export.csv")
    today_start = f"{today:%Y-%m-%d}T00:00:00Z"
    assert {r["period_start"] for r in rows} >= {today_start}
    for row in rows:
        hours = Decimal(row["training_16gb_gpu_hours"])
        cost = Decimal(row["cost_training_16gb"])
        rate = NEW_RATE if row["period_start"] == today_start else OLD_RATE
        # The CSV's hours are rounded to 10^-9: the cost is hours x rate within that.
        assert abs(cost - hours * rate) <= rate * Decimal("1E-9"), row
    assert (
        sum(Decimal(r["cost_total"]) for r in rows if r["period_start"] != today_start)
        == old_csv_total
    )  # the same seven days, the same prices

    # The older report keeps its price, and says nothing was re-priced.
    page.goto(f"{old_url}?view=cost")
    assert _money(page.locator(".tile-value").first.inner_text()) == old_total
    expect(page.locator("#priced-with")).to_have_text(
        f"Priced with “{BOOK}” (EUR): rates from 2020-01-01 (UTC)."
    )
    expect(page.locator("main")).not_to_contain_text("Prices changed")

    # A saved view: the personal form, saved by name, one click from the overview.
    page.goto(f"{base}/reports/new/")
    page.select_option("#id_preset", "last_quarter")
    page.select_option("#id_granularity", "week")
    page.uncheck("#id_include_predictions")
    page.fill("#id_view_name", "Quarterly review")
    page.press("#id_view_name", "Enter")  # saves the view: it requests nothing
    expect(page.locator(".messages")).to_contain_text("Saved the view “Quarterly review”")
    assert "preset=last_quarter" in page.url and "/reports/new/" in page.url
    expect(page.locator(".saved-views")).to_contain_text("Quarterly review")
    page.goto(f"{base}/")
    views = page.locator("section[aria-labelledby=views-heading]")
    expect(views).to_contain_text("Last quarter, weekly")
    views.locator("a:has-text('Quarterly review')").click()
    page.wait_for_url(re.compile(r".*/reports/new/\?.*preset=last_quarter.*"))
    assert page.input_value("#id_preset") == "last_quarter"
    assert page.input_value("#id_granularity") == "week"
    assert not page.is_checked("#id_include_predictions")
    assert page.is_checked("#id_include_models")
    page.wait_for_timeout(200)
    screenshot(page, "screenshot-saved-view.png")

    # Run again, from the older report: the team form with its fixed range of days.
    page.goto(old_url)
    page.click(".toolbar-links a:has-text('Run again')")
    page.wait_for_url(re.compile(rf"{re.escape(team_url)}reports/new/\?.*"))
    assert page.input_value("#id_preset") == "custom"
    assert page.input_value("#id_date_from") == week_ago

    page.wait_for_timeout(200)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "desk-team-form.png"), full_page=True)

    problems.assert_none()
