"""End to end in a real browser: a new user, a real web server, a real worker, the sandbox.

Debian's Chromium through Playwright (`make browser` installs it). The test fails if the page
asks any other host for anything, logs a console error, or reports a CSP violation (S7). It
leaves a screenshot of the report page in var/test-artifacts/ and, when missing or with
OSAI_UPDATE_SCREENSHOT=1, in docs/screenshot-report.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from dateutil.relativedelta import relativedelta

from tests import figures
from tests.factories import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.worker, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot-report.png"
ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts"
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
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")
    assert page.get_by_text("Two steps to your first report").is_visible()

    # Add a sandbox connection: the token is checked with the sandbox, then shown as …last4.
    page.click("a:has-text('Add a connection')")
    page.fill("#id_label", "Sandbox")
    page.select_option("#id_region", "sandbox")
    page.fill("#id_access_token", token)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/connections/")
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
    compute = page.locator('.chart[data-figure="figure-compute"]')
    compute.locator(".barlayer .trace").first.wait_for(timeout=20_000)
    traces = compute.locator(".barlayer .trace")
    assert traces.count() == 7
    assert traces.first.locator(".point").count() == MONTHS
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
