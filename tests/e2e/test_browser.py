"""End to end in a real browser: a new user, a real web server, a real worker, the sandbox.

Debian's Chromium through Playwright (`make browser` installs it). The test fails if the page
asks any other host for anything, logs a console error, or reports a CSP violation (S7). It
leaves a screenshot of the report page in var/test-artifacts/ and, when missing or with
OSAI_UPDATE_SCREENSHOT=1, in docs/screenshot-report.png (the README's picture).
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dateutil.relativedelta import relativedelta
from playwright.sync_api import expect

from tests.factories import (
    PASSWORD,
    ensure_example_price_book,
    make_connection,
    make_team,
    make_user,
    share_with,
)
from tests.support import figures
from tests.support.chromium import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot-report.png"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
MONTHS = 6
SANDBOX_LATENCY = 3.0  # long enough to watch the badge before it turns "Done"

# Reports every securitypolicyviolation to Python, on every page the tab opens.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.reportCspViolation(`${event.violatedDirective} blocked ${event.blockedURI} ` +
    `at ${event.sourceFile}:${event.lineNumber}`);
});
"""


class BrowserProblems:
    """Everything the page did that the test forbids, collected as it happens."""

    def __init__(self) -> None:
        self.off_site: list[str] = []
        self.console_errors: list[str] = []
        self.csp_violations: list[str] = []
        self.page_errors: list[str] = []

    def assert_none(self) -> None:
        assert self.off_site == [], f"requests to other hosts: {self.off_site}"
        assert self.csp_violations == [], f"CSP violations: {self.csp_violations}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.page_errors == [], f"uncaught errors: {self.page_errors}"


@pytest.fixture
def browser_page() -> Iterator[tuple[Any, BrowserProblems]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    problems = BrowserProblems()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        context.expose_binding(
            "reportCspViolation", lambda source, text: problems.csp_violations.append(text)
        )
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()

        def on_request(request: Any) -> None:
            host = urlparse(request.url).hostname or ""
            if request.url.startswith(("http:", "https:", "ws:", "wss:")) and (
                host not in LOCAL_HOSTS
            ):
                problems.off_site.append(request.url)

        page.on("request", on_request)
        page.on(
            "console",
            lambda m: problems.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda error: problems.page_errors.append(str(error)))
        try:
            yield page, problems
        finally:
            context.close()
            browser.close()


@pytest.fixture
def live_site(settings: Any, live_server: Any, worker: Any, use_sandbox: Any) -> Any:
    """The live server with plain static names (its static handler serves from the finders).

    The manifest storage's hashed names exist only in STATIC_ROOT, which the live server's
    handler does not read; production serves them with whitenoise (tested in test_views).
    """
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    use_sandbox.set_latency(SANDBOX_LATENCY)
    return live_server


@pytest.fixture
def browser_user(transactional_db: None) -> Any:
    """Made before the browser starts: Playwright's sync API runs an event loop in this thread,
    and Django refuses database calls while one runs."""
    ensure_example_price_book()  # transactional tests flush migration data
    return make_user("browser-user")


def _screenshot(page: Any) -> None:
    """Always into var/test-artifacts; into docs/ (the README's picture) when it is missing or
    OSAI_UPDATE_SCREENSHOT=1, so that a test run does not rewrite a committed file each time."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / SCREENSHOT.name), full_page=True)
    if not SCREENSHOT.exists() or os.environ.get("OSAI_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)


def _last_full_months(count: int, today: date) -> tuple[date, date]:
    first_of_this_month = today.replace(day=1)
    start = first_of_this_month - relativedelta(months=count)
    return start, first_of_this_month - relativedelta(days=1)


def test_a_new_user_gets_from_sign_in_to_charts_in_the_browser(
    live_site: Any, browser_user: Any, browser_page: tuple[Any, BrowserProblems], tmp_path: Path
) -> None:
    page, problems = browser_page
    base = live_site.url
    user = browser_user
    token = f"osai-sandbox-browser-{secrets.token_hex(6)}"

    # Sign in; the first page says what to do.
    _sign_in(page, base, user.username)
    assert page.get_by_text("Two steps to your first report").is_visible()

    # Add a sandbox connection: the token is checked with the sandbox, then shown as …last4.
    page.click("a:has-text('Add a connection')")
    _save_sandbox_connection(page, base, "Sandbox", token)
    body = page.content()
    assert f"…{token[-4:]}" in body and token not in body

    # Ask for the last MONTHS whole months, month by month.
    start, end = _last_full_months(MONTHS, datetime.now(UTC).date())
    page.click("nav >> text=New report")
    page.select_option("#id_preset", "custom")
    page.fill("#id_date_from", start.isoformat())
    page.fill("#id_date_to", end.isoformat())
    page.select_option("#id_granularity", "month")
    page.click("button:has-text('Generate report')")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/reports/\d+/$"))
    report_url = page.url
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # The badge polls while OSAI works, then turns Done without a reload.
    badge = page.locator("#status-badge")
    assert badge.get_attribute("hx-trigger") == "every 2s"
    assert re.search(r"Queued|Generating", badge.inner_text())
    status_polls: list[str] = []
    page.on("request", lambda r: status_polls.append(r.url) if "/status/" in r.url else None)
    page.wait_for_selector("#status-badge.badge-done", timeout=90_000)
    assert page.evaluate("window.__sameDocument") is True
    badge = page.locator("#status-badge")
    assert badge.get_attribute("hx-trigger") is None
    assert f"{MONTHS} of {MONTHS} buckets done" in badge.inner_text()
    assert "Generated at" in badge.inner_text()

    # The charts load by themselves once it is done: one bar per month in every trace.
    # (The body may still show a reload from while buckets were finishing: wait for the last.)
    compute = page.locator('.chart[data-figure="figure-compute"]')
    traces = compute.locator(".barlayer .trace")
    expect(traces.first.locator(".point")).to_have_count(MONTHS, timeout=60_000)
    assert traces.count() == 7
    assert page.locator(".chart .main-svg").count() >= 4
    assert page.locator("table.numbers").count() >= 4

    # P5: no poll after the report is done.
    polls_at_done = len(status_polls)
    page.wait_for_timeout(4500)
    assert len(status_polls) == polls_at_done
    figures.figure("P5 badge polls after terminal (browser)", len(status_polls) - polls_at_done)

    page.wait_for_timeout(500)  # let Plotly finish its transitions
    _screenshot(page)

    # The history lists it as done.
    page.click("nav >> text=History")
    page.wait_for_url(f"{base}/reports/")
    row = page.locator("tbody tr").first
    assert "Done" in row.inner_text() and f"{MONTHS}/{MONTHS}" in row.inner_text()

    # Download one bucket's raw OSAI JSON.
    page.goto(report_url)
    page.click("summary:has-text('behind this page')")
    with page.expect_download() as download_info:
        page.locator("a[download]").first.click()
    download = download_info.value
    assert re.fullmatch(r"osai-report-\d+\.json", download.suggested_filename)
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    assert isinstance(json.loads(saved.read_text()), dict)

    # The cost view draws its charts too, with the example-prices label.
    page.click(".toggle >> text=Cost")
    page.locator('.chart[data-figure="figure-cumulative"] .scatterlayer').wait_for()
    assert "Example prices" in page.content()

    problems.assert_none()
    figures.figure("S7 CSP violations in the browser", len(problems.csp_violations))


# --- A team admin: usage/cost toggle, team view, CSV totals against the page (C2) -------------

TEAM_MONTHS = 3
TEAM_NAME = "Vision lab"
ADMIN_LABEL = "Admin sandbox"
# A label a spreadsheet would run as a formula: the CSV must neutralise it (C1).
MEMBER_LABEL = "=1+1 member lab"
FORMULA_STARTS = ("=", "+", "@", "\t", "\r", "\n")
MONEY_TEXT = re.compile(r"(?P<currency>[A-Z]{3}) (?P<amount>-?[\d,]+\.\d{2})")


@dataclass(frozen=True)
class TeamSetup:
    team_pk: int
    admin: str
    member: str


@pytest.fixture
def team_setup(browser_user: Any) -> TeamSetup:
    """Made before the browser starts (see browser_user): the browser user administers a team
    whose other member already shares a sandbox connection with it; the example price book."""
    ensure_example_price_book()  # transactional tests flush migration data
    member = make_user("team-member")
    team = make_team(TEAM_NAME, admins=[browser_user], members=[member])
    connection = make_connection(
        member, MEMBER_LABEL, token=f"osai-sandbox-member-{secrets.token_hex(6)}"
    )
    share_with(team, connection)
    return TeamSetup(team_pk=team.pk, admin=browser_user.username, member=member.username)


def _team_screenshot(page: Any, name: str) -> None:
    """Into var/test-artifacts; into docs/ when missing or OSAI_UPDATE_SCREENSHOT=1."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)
    target = SCREENSHOT.parent / name
    if not target.exists() or os.environ.get("OSAI_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(target), full_page=True)


def _cents(amount: Decimal) -> Decimal:
    """Rounded to cents as the pages round (formatting.to_cents: ROUND_HALF_UP, once)."""
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _parse_money(text: str) -> tuple[str, Decimal]:
    """'EUR 1,234.56' (as the page shows it) -> ('EUR', Decimal('1234.56'))."""
    match = MONEY_TEXT.fullmatch(" ".join(text.split()))
    assert match, f"not an amount of money: {text!r}"
    return match["currency"], Decimal(match["amount"].replace(",", ""))


def _parse_number(text: str) -> Decimal:
    """'1,234.56' -> Decimal('1234.56')."""
    return Decimal(text.strip().replace(",", ""))


def _download_csv(page: Any, link: Any, tmp_path: Path) -> tuple[str, list[dict[str, str]]]:
    """Click a download link; the file's name and its rows as dicts (csv.DictReader)."""
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with saved.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return download.suggested_filename, rows


def _assert_no_formula_cells(rows: list[dict[str, str]]) -> int:
    """C1/C2: no cell a spreadsheet would run; a cell starting with "-" must be a number.

    Returns the number of cells checked."""
    checked = 0
    for row in rows:
        assert None not in row, f"a row has more cells than the header: {row}"
        for column, value in row.items():
            checked += 1
            assert not value.startswith(FORMULA_STARTS), f"{column}={value!r} runs as a formula"
            if value.startswith("-"):
                Decimal(value)  # a negative number, not text
    return checked


def _csv_cost_total(rows: list[dict[str, str]]) -> Decimal:
    """Sum of the exact per-bucket cost_total column, rounded to cents once."""
    return _cents(sum((Decimal(row["cost_total"]) for row in rows), Decimal(0)))


def _wait_until_done(page: Any) -> None:
    """The status badge turns Done by polling, without a reload of the page."""
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    page.wait_for_selector("#status-badge.badge-done", timeout=90_000)
    assert page.evaluate("window.__sameDocument") is True


def _fill_period(page: Any, start: date, end: date) -> None:
    page.select_option("#id_preset", "custom")
    page.fill("#id_date_from", start.isoformat())
    page.fill("#id_date_to", end.isoformat())
    page.select_option("#id_granularity", "month")


def test_a_team_admin_sees_the_same_cost_totals_on_the_page_and_in_the_csv(
    live_site: Any,
    team_setup: TeamSetup,
    browser_page: tuple[Any, BrowserProblems],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import expect

    page, problems = browser_page
    base = live_site.url
    setup = team_setup
    team_url = f"{base}/teams/{setup.team_pk}/"
    token = f"osai-sandbox-admin-{secrets.token_hex(6)}"
    start, end = _last_full_months(TEAM_MONTHS, datetime.now(UTC).date())
    months = [start + relativedelta(months=i) for i in range(TEAM_MONTHS)]

    # Sign in as the team's admin and add an own sandbox connection.
    _sign_in(page, base, setup.admin)
    page.goto(f"{base}/connections/new/")
    _save_sandbox_connection(page, base, ADMIN_LABEL, token)

    # Share it with the team on the team's sharing page.
    page.goto(team_url)
    assert "You are a team admin of this team" in " ".join(
        page.locator("main").inner_text().split()
    )
    page.click("a:has-text('Share your connections')")
    page.wait_for_url(f"{team_url}sharing/")
    page.get_by_label(f"{ADMIN_LABEL} (").check()
    page.click("button:has-text('Save sharing')")
    page.wait_for_url(team_url)
    shared = page.locator("section[aria-labelledby=shared-heading]")
    expect(shared).to_contain_text(ADMIN_LABEL)
    expect(shared).to_contain_text(MEMBER_LABEL)
    expect(shared).to_contain_text(f"…{token[-4:]}")
    assert token not in page.content()

    # Request a team report: the last TEAM_MONTHS whole months, month by month. It is the
    # report page, with the team's breadcrumbs and a per-member breakdown.
    _fill_period(page, start, end)
    page.click("button:has-text('Request team report')")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/reports/\d+/$"))
    report_url = page.url
    _wait_until_done(page)
    buckets = 2 * TEAM_MONTHS  # (admin's + member's connection) x months
    assert f"{buckets} of {buckets} buckets done" in page.locator("#status-badge").inner_text()
    expect(page.locator("nav.breadcrumbs")).to_contain_text(TEAM_NAME)

    # Spend per member, filled in without a reload once it is done.
    members = page.locator("section[aria-labelledby=members-heading]")
    members_table = members.locator("table").first
    expect(members_table.locator("tbody th")).to_have_text(sorted([setup.admin, setup.member]))
    page.locator('.chart[data-figure="figure-members-by-kind"][data-drawn]').wait_for()
    period_line = page.locator("main p.period")
    period_text = period_line.inner_text()
    assert f"{start:%Y-%m-%d} 00:00" in period_text

    # Toggle to cost: same page, same period, ?view=cost, money in the currency.
    page.click(".toggle >> text=Cost")
    page.wait_for_url(f"{report_url}?view=cost")
    assert period_line.inner_text() == period_text
    expect(page.locator(".toggle a[aria-current=true]")).to_have_text("Cost")
    currency, page_total = _parse_money(page.locator(".tile-value").first.inner_text())
    assert currency == "EUR" and page_total > 0
    expect(members_table.locator("thead th").last).to_have_text(f"Total ({currency})")
    assert members_table.locator("tbody tr").count() == 2
    assert _parse_number(members_table.locator("tfoot td").last.inner_text()) == page_total
    by_stage = page.locator('.chart[data-figure="figure-members-by-kind"]')
    by_stage.locator(".barlayer .trace").first.wait_for(timeout=20_000)
    assert by_stage.locator(".barlayer .trace").count() == 5  # the ML stages
    page.locator(".chart[data-drawn]").nth(0).wait_for()
    page.wait_for_timeout(500)
    team_charts_drawn = page.locator(".chart[data-drawn]").count()
    _team_screenshot(page, "screenshot-team-report.png")

    # The team CSV: one row per (member connection x month); its total is the page's.
    link = page.locator(".toolbar-links a:has-text('Download CSV')")
    filename, rows = _download_csv(page, link, tmp_path)
    assert re.fullmatch(rf"osai-usage-team-{setup.team_pk}-report-\d+-[\d-]+\.csv", filename)
    cells = _assert_no_formula_cells(rows)
    expected_keys = {
        (member, label, f"{month:%Y-%m-%d}T00:00:00Z")
        for member, label in ((setup.admin, ADMIN_LABEL), (setup.member, "'" + MEMBER_LABEL))
        for month in months
    }
    keys = [(row["member"], row["connection"], row["period_start"]) for row in rows]
    assert sorted(keys) == sorted(expected_keys)  # no duplicates, nothing missing
    assert {row["currency"] for row in rows} == {currency}
    assert {row["preliminary"] for row in rows} == {"false"}
    team_csv_total = _csv_cost_total(rows)
    assert team_csv_total == page_total, (
        f"team CSV total {team_csv_total} != page total {page_total}"
    )

    # A personal report on the admin's own connection (its buckets are reused).
    page.click("nav >> text=New report")
    _fill_period(page, start, end)
    page.click("button:has-text('Generate report')")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/reports/\d+/$"))
    personal_url = page.url
    _wait_until_done(page)
    page.click(".toggle >> text=Cost")
    page.wait_for_url(f"{personal_url}?view=cost")
    expect(page.locator(".toggle a[aria-current=true]")).to_have_text("Cost")

    # Its total: the last point of "Cumulative spend", in the chart's data table.
    cumulative = page.locator(
        "figure.chart-block", has=page.locator('[data-figure="figure-cumulative"]')
    )
    header = cumulative.locator("thead th").last.text_content() or ""
    assert header == f"Cumulative spend ({currency})"
    last_point = cumulative.locator("tbody tr").last.locator("td").last.text_content() or ""
    personal_total = _parse_number(last_point)
    assert personal_total > 0
    # The Total tile says the same; the category tiles (each rounded once) add up to it
    # within rounding.
    tiles = [
        _parse_money(text)
        for text in page.locator(".tile-value").all_inner_texts()
        if text.strip().startswith(currency)
    ]
    assert len(tiles) == 8  # the total, then 7 priced categories
    (_, total_tile), categories = tiles[0], tiles[1:]
    assert total_tile == personal_total
    tile_sum = sum((amount for _, amount in categories), Decimal(0))
    assert abs(tile_sum - personal_total) <= Decimal("0.005") * len(categories)

    link = page.locator(".toolbar-links a:has-text('Download CSV')")
    filename, personal_rows = _download_csv(page, link, tmp_path)
    assert re.fullmatch(r"osai-usage-report-\d+-[\d-]+\.csv", filename)
    cells += _assert_no_formula_cells(personal_rows)
    assert "member" not in personal_rows[0]
    assert sorted(row["period_start"] for row in personal_rows) == [
        f"{month:%Y-%m-%d}T00:00:00Z" for month in months
    ]
    assert {row["connection"] for row in personal_rows} == {ADMIN_LABEL}
    personal_csv_total = _csv_cost_total(personal_rows)
    assert personal_csv_total == personal_total, (
        f"report CSV total {personal_csv_total} != page total {personal_total}"
    )
    # The admin's share of the team report is the same buckets at the same prices.
    admin_rows = [row for row in rows if row["member"] == setup.admin]
    assert _csv_cost_total(admin_rows) == personal_csv_total
    # The team report draws every chart the personal one does, and the per-member ones.
    personal_charts_drawn = page.locator(".chart[data-drawn]").count()
    assert personal_charts_drawn >= 5
    assert team_charts_drawn >= personal_charts_drawn + 2

    # The team page itself, as its admin sees it.
    page.goto(team_url)
    page.wait_for_timeout(300)
    _team_screenshot(page, "screenshot-team.png")

    # A plain member of the team: the team report is a 404 at either address.
    page.click("form.signout button")
    _sign_in(page, base, setup.member)
    report_pk = report_url.rstrip("/").rsplit("/", 1)[-1]
    errors_before = len(problems.console_errors)
    for url in (report_url, f"{team_url}reports/{report_pk}/"):
        response = page.goto(url)
        assert response is not None and response.status == 404, url
    # The browser logs each 404 page as a console error: those two are the point here.
    assert all("404" in e for e in problems.console_errors[errors_before:])
    del problems.console_errors[errors_before:]
    page.goto(team_url)
    assert "Team reports" not in page.locator("main").inner_text()
    assert f"…{token[-4:]}" not in page.content()  # M2: names, never token endings

    problems.assert_none()
    figures.figure("browser CSV total equals page total", "yes (team and report)")
    figures.figure(
        "browser CSV total = page total (team, report)",
        f"{currency} {page_total}, {currency} {personal_total}",
    )
    figures.figure("browser CSV cells checked for formulas", cells)
    figures.figure("S7 CSP violations in the browser", len(problems.csp_violations))


# --- Cost control: the overview, a budget, and a comparison that works ------------------------


def _spend_summary(username: str) -> dict[str, Any]:
    """`manage.py spend_summary --json`, as a script would run it, on the test database."""
    from tests.support.worker import ROOT, database_url

    env = {**os.environ, "DATABASE_URL": database_url(), "OSAI_TESTING": "1"}
    output = subprocess.run(
        [sys.executable, "manage.py", "spend_summary", "--user", username, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    summary: dict[str, Any] = json.loads(output)
    return summary


@pytest.fixture
def priced_user(browser_user: Any) -> Any:
    """The browser user, with the example price book in place (before the browser starts)."""
    ensure_example_price_book()  # transactional tests flush migration data
    return browser_user


def test_the_overview_fills_in_shows_a_forecast_and_a_budget_and_last_month_compares(
    live_site: Any,
    use_sandbox: Any,
    priced_user: Any,
    browser_page: tuple[Any, BrowserProblems],
) -> None:
    from playwright.sync_api import expect

    browser_user = priced_user
    use_sandbox.set_latency(0.5)  # the month's 60 tracked days arrive quickly
    page, problems = browser_page
    base = live_site.url
    token = f"osai-sandbox-overview-{secrets.token_hex(6)}"

    _sign_in(page, base, browser_user.username)
    page.goto(f"{base}/connections/new/")
    _save_sandbox_connection(page, base, "Sandbox", token)

    # The overview fills in by itself while tracking fetches the month: no reload.
    page.goto(f"{base}/")
    page.evaluate("window.__sameDocument = true")
    overview = page.locator("#overview")
    expect(overview).not_to_have_attribute("hx-trigger", "every 3s", timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True
    mtd_text = page.locator("#month-to-date").inner_text()
    currency, page_mtd = _parse_money(mtd_text)
    # What the page shows is what the server's own figures say (a separate process, on the
    # same buckets); nothing here is worked out from this test's idea of today's date: the
    # server decides which month it is and whether a forecast is due (from the 3rd).
    summary = _spend_summary(browser_user.username)
    assert (summary["currency"], Decimal(summary["month_to_date_cost"])) == (currency, page_mtd)
    if summary["forecast_cost"] is None:
        expect(page.locator("#forecast")).to_have_count(0)
    else:
        _, forecast = _parse_money(page.locator("#forecast").inner_text())
        assert forecast == Decimal(summary["forecast_cost"]) >= page_mtd
    page.locator('.chart[data-figure="figure-month"] .barlayer .trace').first.wait_for()

    # Set a budget on the page; the overview then shows its bar. Any amount will do: the
    # bar must say what the server computed for it (early in a month the spend is a few
    # cents, so a percentage the test predicted from the rounded month to date would be off).
    page.click("nav >> text=Budgets")
    page.check("input[name=scope][value=person]")
    amount = max((page_mtd * 2).quantize(Decimal("0.01")), Decimal("1.00"))
    page.fill("#id_amount", str(amount))
    page.click("button:has-text('Set budget')")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/budgets/\d+/$"))
    page.goto(f"{base}/")
    bar = page.locator("#overview meter.budget-meter")
    expect(bar).to_have_count(1)
    figures_text = " ".join(page.locator("#overview .budget-figures").inner_text().split())
    budget_figures = re.fullmatch(
        rf"{currency} (?P<spent>[\d,]+\.\d{{2}}) of (?P<amount>[\d,]+\.\d{{2}}) · "
        r"(?P<percent>[\d.]+) %",
        figures_text,
    )
    assert budget_figures, figures_text
    assert _parse_number(budget_figures["amount"]) == amount
    # The budget's spend is the month to date on the same page (its only connection), and
    # at least what the page showed before (spend only grows).
    spent = _parse_number(budget_figures["spent"])
    assert spent == _parse_money(page.locator("#month-to-date").inner_text())[1] >= page_mtd
    # The bar is the server's exact percentage (its accessible name), cut to 0-100 ...
    label = bar.get_attribute("aria-label") or ""
    percent = Decimal(label.removesuffix(" % of the budget used"))
    assert int(bar.get_attribute("value") or -1) == int(min(max(percent, Decimal(0)), 100))
    assert Decimal(budget_figures["percent"]) == percent.quantize(Decimal("0.1"), ROUND_HALF_UP)
    # ... of the amount set, from the cents shown (the server divides the exact spend) ...
    assert abs(percent - spent / amount * 100) <= Decimal("0.005") / amount * 100 + Decimal("0.005")
    # ... and what spend_summary says of the same budget (more spend may have arrived since).
    [stored] = _spend_summary(browser_user.username)["budgets"]
    assert Decimal(stored["amount"]) == amount
    assert Decimal(stored["percent"]) >= percent and Decimal(stored["spent"]) >= spent
    _team_screenshot(page, "screenshot-overview.png")

    # "Last month" compares with the month before, fetched by the app itself.
    page.click("nav >> text=New report")
    page.select_option("#id_preset", "last_month")
    page.select_option("#id_granularity", "total")
    page.click("button:has-text('Generate report')")
    page.wait_for_url(re.compile(rf"{re.escape(base)}/reports/\d+/$"))
    _wait_until_done(page)
    # The server chose "last month": the report's own period says which, and the month before
    # it is what it compares with.
    period = page.locator("main p.period").inner_text()
    last_month = re.search(r"from (\d{4}-\d{2}-01) 00:00 to (\d{4}-\d{2}-01) 00:00", period)
    assert last_month, period
    month_before = date.fromisoformat(last_month[1]) - relativedelta(months=1)
    assert date.fromisoformat(last_month[2]) == date.fromisoformat(last_month[1]) + relativedelta(
        months=1
    )
    # Every tile of a category with usage says how it changed since then.
    changes = page.locator(".tile .tile-change", has_text=f"{month_before:%b %Y}")
    expect(changes.first).to_be_visible(timeout=60_000)
    assert changes.count() >= 5
    expect(page.locator("#kpi-title")).to_contain_text(f"compared with {month_before:%b %Y}")
    problems.assert_none()


# --- The team page leads with the team's spend (issue 20) -------------------------------------


@dataclass(frozen=True)
class HeldTeam:
    team_pk: int
    admin: str
    viewer: str
    # What the ledger says each member spent last quarter (reports/spend/ledger.py,
    # `period_costs` month by month: independent of the page's own sums).
    spend: dict[str, Decimal]


@pytest.fixture
def held_team(browser_user: Any) -> HeldTeam:
    """Made before the browser starts: the browser user administers a team with a viewer
    (finance) and a member; the admin and the member each share a connection whose last
    quarter tracking holds day by day (no OSAI call is needed to answer it)."""
    from reports.periods import preset_period, split_period
    from reports.spend import ledger
    from reports.spend.pricing import default_price_book
    from tests.factories import make_held_buckets

    viewer, member = make_user("finance"), make_user("lab-member")
    team = make_team(TEAM_NAME, admins=[browser_user], members=[member], viewers=[viewer])
    start, end = preset_period("last_quarter", datetime.now(UTC))
    book = default_price_book()
    assert book is not None
    spend = {}
    for seed, person in ((1, browser_user), (400, member)):
        connection = make_connection(person, f"{person.username} lab")
        share_with(team, connection)
        make_held_buckets(connection, split_period(start, end, "day"), seed=seed)
        months = split_period(start, end, "month")
        costs = [ledger.period_costs([connection.pk], book, *month) for month in months]
        spend[person.username] = sum((c["total"] for c in costs if c is not None), Decimal(0))
    return HeldTeam(team.pk, browser_user.username, viewer.username, spend)


@pytest.fixture
def held_site(settings: Any, live_server: Any) -> Any:
    """The live server alone: held data answers the team page without a worker or OSAI."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return live_server


def _save_sandbox_connection(page: Any, base: str, label: str, token: str) -> None:
    """Fills the new-connection form the page shows with a sandbox token, and saves it."""
    page.fill("#id_label", label)
    page.select_option("#id_region", "sandbox")
    page.fill("#id_access_token", token)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/connections/")


def _sign_in(page: Any, base: str, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_an_admin_reads_last_quarter_per_member_and_finance_downloads_the_same_total(
    held_site: Any, held_team: HeldTeam, browser_page: tuple[Any, BrowserProblems], tmp_path: Path
) -> None:
    page, problems = browser_page
    base = held_site.url
    team_url = f"{base}/teams/{held_team.team_pk}/"

    # The admin: last quarter per member, from the switch, with no form and no wait.
    _sign_in(page, base, held_team.admin)
    page.goto(team_url)
    page.click("nav.period-switch >> text=Last quarter")
    page.wait_for_url(re.compile(r".*\?period=last_quarter#spend$"))
    table = page.locator("section#spend table")
    for username, spent in held_team.spend.items():
        row = table.locator("tbody tr", has_text=username)
        assert _parse_number(row.locator("td").first.inner_text()) == _cents(spent)
    page.locator('.chart[data-figure="figure-team-spend"][data-drawn]').wait_for()
    currency, total = _parse_money(page.locator("section#spend .tile-value").first.inner_text())
    assert total == _cents(sum(held_team.spend.values(), Decimal(0)))
    _team_screenshot(page, "screenshot-team.png")

    # Finance (a viewer): the same page's CSV; its cost_total adds up to the page's total.
    _sign_in(page, base, held_team.viewer)
    page.goto(f"{team_url}?period=last_quarter")
    viewer_total = _parse_money(page.locator("section#spend .tile-value").first.inner_text())
    assert viewer_total == (currency, total)
    assert page.locator("button:has-text('Remove')").count() == 0  # changes no one
    name, rows = _download_csv(
        page, page.locator("section#spend a:has-text('Download CSV')"), tmp_path
    )
    assert name.endswith(".csv") and {row["member"] for row in rows} == set(held_team.spend)
    assert _csv_cost_total(rows) == total
    _assert_no_formula_cells(rows)
    problems.assert_none()
