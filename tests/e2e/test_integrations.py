"""Integrations end to end: the sandbox posts OSAI worker webhooks to a real web server, a real
worker refreshes the open day once per burst, and the activity feed shows the events in a real
browser without a reload (S7: no CSP violation, nothing asked of another host).

Leaves a screenshot of the feed in var/test-artifacts/ and, when missing or with
OSAI_UPDATE_SCREENSHOT=1, in docs/screenshot-activity.png (the README's picture).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from reports.integrations import webhooks
from reports.models import Bucket, WebhookEvent
from reports.spend import tracking
from tests.e2e.test_browser import ARTIFACTS, BrowserProblems
from tests.factories import make_connection, make_user
from tests.support import figures
from tests.support.browser import sign_in
from tests.support.worker import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshot-activity.png"
POST = "POST /api/Reports"


@dataclass(frozen=True)
class Hooked:
    owner: str  # the username
    label: str
    token: str
    path: str  # the connection's webhook path on the live server


@pytest.fixture
def hooked_connection(browser_user: Any) -> Hooked:
    """Made before the browser starts (its event loop forbids database calls in this thread)."""
    token = f"osai-sandbox-feed-{secrets.token_hex(6)}"
    connection = make_connection(browser_user, "Vision lab", token=token)
    return Hooked(browser_user.username, connection.label, token, webhooks.webhook_path(connection))


@pytest.fixture
def owners_browser(
    live_site: Any, hooked_connection: Hooked, browser_page: tuple[Any, BrowserProblems]
) -> tuple[Any, BrowserProblems, str]:
    """The browser signed in on the live site as the connection's owner: (page, the problems it
    records, the site's URL)."""
    page, problems = browser_page
    sign_in(page, live_site.url, hooked_connection.owner)
    return page, problems, live_site.url


@pytest.mark.browser
def test_a_sandbox_webhook_appears_in_the_feed_without_a_reload(
    hooked_connection: Hooked, owners_browser: tuple[Any, BrowserProblems, str], use_sandbox: Any
) -> None:
    page, problems, base = owners_browser
    page.click("nav >> text=Activity")
    page.wait_for_url(f"{base}/activity/")
    assert page.get_by_text("No webhook from OSAI yet").is_visible()
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    feed = page.locator("#activity-feed")
    assert feed.get_attribute("hx-trigger") == "every 5s"

    # OSAI (the sandbox) starts posting to the connection's URL as its usage accrues.
    use_sandbox.register_webhook(f"{base}{hooked_connection.path}", token=hooked_connection.token)
    assert use_sandbox.fire_webhooks(count=1) == [200]
    page.wait_for_selector("#activity-feed tr[data-event]", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True
    row = page.locator("#activity-feed tbody tr").first.inner_text()
    assert hooked_connection.label in row
    assert any(label in row for _, label in WebhookEvent.Kind.choices if label != "Task")
    assert "Succeeded" in row or "Failed" in row

    # A second one joins the first, still without a reload.
    assert use_sandbox.fire_webhooks(count=1) == [200]
    rows = page.locator("#activity-feed tr[data-event]")
    rows.nth(1).wait_for(timeout=15_000)  # (no wait_for_function: the CSP forbids eval)
    assert page.evaluate("window.__sameDocument") is True
    sent = use_sandbox.webhook_registrations()[0]
    assert sent["failed"] == 0 and sent["sent"] >= 2

    for _ in range(4):  # a fuller feed for the picture
        use_sandbox.fire_webhooks(count=1)
    rows.nth(5).wait_for(timeout=15_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / SCREENSHOT.name), full_page=True)
    if not SCREENSHOT.exists() or os.environ.get("OSAI_UPDATE_SCREENSHOT") == "1":
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    problems.assert_none()
    figures.figure("S7 CSP violations in the browser (activity feed)", len(problems.csp_violations))


def test_a_burst_of_webhooks_makes_one_refresh_with_a_real_worker(
    live_server: Any, start_worker: Any, use_sandbox: Any, settings: Any
) -> None:
    # The web process arms the refresh, the worker runs it: both read the delay (the worker
    # also keeps the open day to one refresh per delay).
    settings.OSAI_WEBHOOK_REFRESH_DELAY_SECONDS = 2
    start_worker(OSAI_WEBHOOK_REFRESH_DELAY_SECONDS="2")
    token = f"osai-sandbox-burst-{secrets.token_hex(6)}"
    connection = make_connection(make_user(), "Burst", token=token)
    tracking.tracking_refresh(connection)  # the month, as the schedule would fetch it
    active = Bucket.objects.active().filter(connection=connection)
    wait_until(lambda: not active.exists(), timeout=90, message="the month to be tracked")
    use_sandbox.reset()  # count from here

    use_sandbox.register_webhook(
        f"{live_server.url}{webhooks.webhook_path(connection)}", token=token
    )
    burst_at = timezone.now()
    assert use_sandbox.fire_webhooks(count=5) == [200] * 5  # five tasks finish at once
    refreshed = Bucket.objects.filter(
        connection=connection, is_closed=False, created_at__gte=burst_at
    )
    wait_until(
        lambda: refreshed.filter(state=Bucket.State.DONE).exists(),
        timeout=60,
        message="the open day to be refreshed",
    )
    # Give a second refresh every chance to happen: it must not.
    wait_until(
        lambda: timezone.now() > burst_at + timedelta(seconds=6), timeout=10, message="a pause"
    )
    assert WebhookEvent.objects.filter(connection=connection).count() == 5
    assert refreshed.count() == 1
    assert use_sandbox.calls_with_token(token).get(POST, 0) == 1
    figures.figure("W1 burst of 5 webhooks with a real worker -> OSAI reports", 1)
