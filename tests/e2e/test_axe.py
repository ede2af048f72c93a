"""Every page passes axe (U1): axe-core, WCAG 2 A/AA and best practice, on every page a team
admin with data reaches (and the login page, signed out), at a desktop and a phone width.

axe-core comes from npm (package.json's devDependencies, node_modules/axe-core) and is run in
the test browser only, through Playwright's evaluate: the app never ships it. On a phone the
page must not scroll sideways, and a table that is wider than the screen sits in a region that
scrolls and that the keyboard reaches (`.table-wrap`, tabindex="0" with a name).

A real web server and held data only (no worker, no OSAI): the fixtures of test_browser.py.
With OSAI_AXE_SCREENSHOTS=1 it leaves a full-page screenshot of every page at each width in
var/test-artifacts/axe/, to look at.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_browser import BrowserProblems
from tests.factories import (
    ensure_example_price_book,
    make_anomaly,
    make_connection,
    make_done_report,
    make_held_buckets,
    make_team,
    make_user,
    share_with,
)
from tests.support import figures
from tests.support.browser import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "test-artifacts" / "axe"
RUN_ONLY = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
VIEWPORTS = {"desktop": (1360, 900), "phone": (390, 844)}

RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, nodes: v.nodes.length,
    where: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
  }));
}"""

# On a phone: no sideways scrolling, and every table is either narrow enough or inside a region
# that scrolls, that the keyboard reaches (tabindex 0) and that has a name.
PHONE_CHECK = """() => {
  const problems = [];
  if (document.documentElement.scrollWidth > window.innerWidth) {
    problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ` +
                  `${window.innerWidth}`);
  }
  for (const table of document.querySelectorAll('main table')) {
    if (!table.getClientRects().length) continue;  // not shown
    let box = table.parentElement;
    while (box && box !== document.body && getComputedStyle(box).overflowX === 'visible') {
      box = box.parentElement;
    }
    const clipped = table.getBoundingClientRect().right > window.innerWidth + 0.5;
    const scrolls = box && box !== document.body && box.scrollWidth > box.clientWidth;
    const label = (table.querySelector('caption') || {}).textContent ||
                  table.closest('section')?.querySelector('h2')?.textContent || table.className;
    if (scrolls) {
      const reachable = box.getAttribute('tabindex') === '0';
      const named = box.getAttribute('aria-label') || box.getAttribute('aria-labelledby');
      if (!reachable || !named) {
        problems.push(`table "${label.trim()}" scrolls in a region the keyboard cannot reach ` +
                      `or that has no name`);
      }
    } else if (clipped) {
      problems.push(`table "${label.trim()}" is cut off at ${window.innerWidth} px`);
    }
  }
  return problems;
}"""


@dataclass(frozen=True)
class AxeSite:
    admin: str
    pages: list[str]  # signed in as the admin
    anonymous: list[str]


@pytest.fixture
def axe_site(browser_user: Any, settings: Any) -> AxeSite:
    """Made before the browser starts: the browser user administers a team with a member and a
    viewer, both admins' and the member's connections shared, every day held since the start of
    the previous quarter; a finished personal and team report; budgets of each scope with
    alerts (one failed); the team's own price book; saved views; an API token; OSAI webhooks
    received; a connection that needs a new token."""
    from reports.integrations.api_tokens import api_token_create
    from reports.models import Alert, Budget, Channel, Delivery, Report, WebhookEvent
    from reports.pages.links import saved_view_save
    from reports.periods import preset_period, split_period
    from reports.spend.budgets import budget_set
    from reports.spend.channels import channel_add
    from reports.teams.price_books import price_book_copy

    book = ensure_example_price_book()
    admin = browser_user
    member, viewer = make_user("axe-member"), make_user("axe-viewer")
    team = make_team("Axe lab", admins=[admin], members=[member], viewers=[viewer])
    now = datetime.now(UTC)
    start, _ = preset_period("last_quarter", now)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    own = make_connection(admin, "Own lab", token=f"osai-sandbox-axe-{secrets.token_hex(6)}")
    theirs = make_connection(member, "Member lab")
    stale = make_connection(
        admin,
        "Old lab",
        status="needs_token",
        status_message="OSAI no longer accepts this token.",
    )
    share_with(team, own, theirs)
    for seed, connection in ((1, own), (300, theirs), (50, stale)):
        if start < today:
            make_held_buckets(connection, split_period(start, today, "day"), seed=seed)
    report = make_done_report(admin, [own])
    team_report = make_done_report(admin, [own, theirs], team=team)
    make_done_report(
        admin, [own], state=Report.State.FAILED, start=datetime(2025, 1, 1, tzinfo=UTC)
    )

    budgets = [
        budget_set(actor=admin, scope=Budget.Scope.CONNECTION, connection=own, amount=Decimal(50)),
        budget_set(actor=admin, scope=Budget.Scope.PERSON, amount=Decimal(5000)),
        budget_set(
            actor=admin,
            scope=Budget.Scope.TEAM,
            team=team,
            amount=Decimal(100),
            emails=["lab@example.com"],
        ),
    ]
    month = today.date().replace(day=1)
    for budget in budgets:
        alert = Alert.objects.create(
            budget=budget,
            month=month,
            kind=Alert.Kind.ACTUAL,
            threshold=80,
            percent=Decimal("84.20"),
            value=Decimal("84.20"),
        )
        Delivery.objects.create(
            key=secrets.token_hex(16),
            channel=Channel.Kind.WEBHOOK,
            target="https://hooks.example.com/osai",
            subject="80 % of the budget",
            text="",
            budget=budget,
            alert=alert,
            state=Delivery.State.FAILED,
            attempts=5,
            last_error="The receiver answered 500.",
        )
    own_book = price_book_copy(team=team, actor=admin, source=book, name="Axe lab prices")
    saved_view_save(owner=admin, name="Last quarter", params={"preset": "last_quarter"})
    saved_view_save(owner=admin, name="Team quarter", params={"preset": "last_quarter"}, team=team)
    api_token_create(user=admin, name="Cron")
    for n, kind in enumerate(("training", "prediction", "conversion")):
        WebhookEvent.objects.create(
            connection=own,
            dedupe_key=f"axe-{n}",
            body="{}",
            kind=kind,
            kind_raw=kind.title(),
            succeeded=n != 1,
            worker_gb=16,
            task_id=f"task-{n}",
            finished_at=now - timedelta(hours=n),
            message="Finished" if n != 1 else "Out of memory",
        )

    # Anomalies (N5): a spike on each shared connection, idle storage, one answered.
    yesterday = (today - timedelta(days=1)).date()
    make_anomaly(own, yesterday)
    make_anomaly(theirs, yesterday - timedelta(days=1), feedback="expected")
    make_anomaly(own, yesterday - timedelta(days=3), kind="idle_storage", column="images_kb_min")

    channel_add(actor=admin, kind="email", name="Finance inbox", emails=["finance@example.com"])
    channel_add(actor=admin, kind="email", name="Lab admins", team=team, to_team_admins=True)

    # Invitations (M6): one pending on the team page, one to the admin's own address (their
    # teams page), a link as its invitee sees it signed in and signed out, and a used one.
    from reports.teams import invitations

    admin.email = "axe-admin@example.com"
    admin.save()
    invitations.invitation_send(team=team, actor=admin, email="new@example.com", role="member")
    elsewhere = make_team("Axe elsewhere", admins=[member])
    mine = invitations.invitation_send(
        team=elsewhere, actor=member, email=admin.email, role="viewer"
    )
    anyone = invitations.invitation_send(
        team=team, actor=admin, email="anyone@example.com", role="viewer"
    )
    used = invitations.invitation_send(
        team=elsewhere, actor=member, email="used@example.com", role="member"
    )
    invitations.invitation_accept(token=used.token, user=viewer)

    t = f"/teams/{team.pk}"
    pages = [
        "/audit/",
        "/audit/?action=channel.add",
        f"{t}/audit/",
        f"/invitations/{mine.token}/",
        f"/invitations/{used.token}/",  # the 410 page
        "/channels/",
        f"{t}/channels/",
        "/",
        "/budgets/",
        f"/budgets/{budgets[2].pk}/",
        "/account/digests/",
        "/account/api-tokens/",
        "/activity/",
        "/anomalies/",
        f"/anomalies/?team={team.pk}",
        "/anomalies/?kind=spike&look=1",
        "/connections/",
        "/connections/new/",
        f"/connections/{own.pk}/edit/",
        f"/connections/{stale.pk}/token/",
        f"/connections/{own.pk}/delete/",
        f"/connections/{own.pk}/webhook/",
        "/reports/",
        "/reports/new/",
        "/reports/?view=cost",
        f"/reports/{report.pk}/",
        f"/reports/{report.pk}/?view=cost",
        "/teams/",
        f"{t}/",
        f"{t}/?period=last_quarter&by=connection",
        f"{t}/?period=last_12_months",  # the anomalies' flags, whatever the day of the month
        f"{t}/sharing/",
        f"{t}/price-books/{own_book.pk}/",
        f"{t}/price-books/{book.pk}/",
        f"{t}/reports/new/",
        f"{t}/reports/{team_report.pk}/",
        f"{t}/reports/{team_report.pk}/?view=cost",
        "/accounts/password/change/",
        "/accounts/2fa/",
        "/accounts/2fa/totp/activate/",  # asks for the password again first
        "/reports/999999/",  # the 404 page
    ]
    anonymous = ["/accounts/login/", f"/invitations/{anyone.token}/"]
    if settings.PASSWORD_RESET_ENABLED:
        anonymous.append("/accounts/password/reset/")
    return AxeSite(admin.username, pages, anonymous)


def _settle(page: Any) -> None:
    """Wait for Plotly's charts: pages are whole when they load (htmx only polls for news)."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.chart[data-figure]')]"
        ".every(c => c.hasAttribute('data-drawn'))",
        timeout=15_000,
    )


def test_every_page_passes_axe_and_fits_a_phone(
    held_site: Any,
    axe_site: AxeSite,
    browser_page: tuple[Any, BrowserProblems],
    capsys: Any,
) -> None:
    assert AXE_JS.exists(), "node_modules/axe-core is missing: run `npm ci`"
    axe_source = AXE_JS.read_text()
    page, problems = browser_page
    base = held_site.url
    found: dict[str, list[str]] = {}
    by_rule: dict[str, int] = {}
    checked = 0

    def audit(path: str, viewport: str) -> None:
        nonlocal checked
        response = page.goto(f"{base}{path}", wait_until="load")
        assert response is not None and response.status in (200, 404, 410), (path, response.status)
        _settle(page)
        if os.environ.get("OSAI_AXE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{viewport}.png"), full_page=True)
        page.evaluate(axe_source)  # into this page only, past its CSP (never in the app)
        where = f"{path} ({viewport})"
        for v in page.evaluate(RUN_AXE, RUN_ONLY):
            by_rule[v["id"]] = by_rule.get(v["id"], 0) + v["nodes"]
            found.setdefault(where, []).append(
                f"{v['id']} ({v['impact']}) x{v['nodes']}: {', '.join(v['where'])}"
            )
        if viewport == "phone":
            for problem in page.evaluate(PHONE_CHECK):
                by_rule["phone-layout"] = by_rule.get("phone-layout", 0) + 1
                found.setdefault(where, []).append(problem)
        checked += 1

    for viewport, (width, height) in VIEWPORTS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.context.clear_cookies()
        for path in axe_site.anonymous:
            audit(path, viewport)
        sign_in(page, base, axe_site.admin)
        for path in axe_site.pages:
            audit(path, viewport)

    figures.figure("U1 axe pages x viewports checked", checked)
    figures.figure("U1 axe violations", sum(by_rule.values()))
    with capsys.disabled():
        print(f"\nU1 axe: {checked} pages x viewports checked, {sum(by_rule.values())} violations")
        for rule, count in sorted(by_rule.items()):
            print(f"  {rule}: {count}")
    report = "\n".join(f"{where}:\n  " + "\n  ".join(items) for where, items in found.items())
    assert not found, f"axe violations and phone layout problems:\n{report}"
    # The 404 page and a used invitation's 410 log their status as console errors; nothing
    # else may.
    problems.console_errors = [
        e for e in problems.console_errors if "404" not in e and "(Gone)" not in e
    ]
    problems.assert_none()
