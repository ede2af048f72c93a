"""In a real browser (M6, M7): a team's admin invites new@example.com from the team page; the
link is read from the mail that was sent; a new person opens it, creates an account and lands
on the team page as a member. Then the admin reads it all in the team's audit log.

Leaves screenshots of the team page with the pending invitation and of the audit log in
var/test-artifacts/ and, when missing or with OSAI_UPDATE_SCREENSHOT=1, in docs/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core import mail
from playwright.sync_api import expect

from tests.factories import PASSWORD, make_team, make_user
from tests.support.browser import screenshot, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LINK = re.compile(r"https?://\S+/invitations/[A-Za-z0-9_-]+/")


@pytest.fixture
def invite_team(browser_user: Any) -> int:
    """Made before the browser starts: the browser user runs a team with a member."""
    return make_team("Invite lab", admins=[browser_user], members=[make_user("lab-member")]).pk


def test_an_invited_newcomer_creates_an_account_and_joins(
    held_site: Any, invite_team: int, browser_page: tuple[Any, Any], settings: Any
) -> None:
    page, problems = browser_page
    base = held_site.url
    settings.OSAI_USAGE_BASE_URL = base
    mail.outbox = []
    team_url = f"{base}/teams/{invite_team}/"
    sign_in(page, base, "browser-user")
    page.goto(team_url)
    page.fill("#id_who", "new@example.com")
    page.select_option("#id_role", "member")
    page.get_by_role("button", name="Send invitation").click()
    page.wait_for_url(team_url)
    expect(page.locator(".messages")).to_contain_text("Invitation sent to new@example.com")
    pending = page.get_by_role("region", name="Table: Pending invitations")
    expect(pending).to_contain_text("new@example.com")
    expect(pending.get_by_role("button", name="Withdraw")).to_be_visible()
    screenshot(page, "screenshot-invitation.png")

    # The mail the invitation sent (the live server runs in this process: locmem outbox).
    [message] = mail.outbox
    assert message.to == ["new@example.com"]
    match = LINK.search(message.body)
    assert match, message.body
    link = match.group(0)
    assert link.startswith(base)

    # A new person, signed out, opens it and creates an account.
    page.context.clear_cookies()
    page.goto(link)
    expect(page.get_by_role("heading", name="Join Invite lab")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in to accept")).to_be_visible()
    expect(page.locator("#invitation-email")).to_have_value("new@example.com")
    page.fill("#id_username", "newcomer")
    page.fill("#id_password1", PASSWORD)
    page.fill("#id_password2", PASSWORD)
    page.get_by_role("button", name="Create an account and join").click()
    page.wait_for_url(team_url)
    expect(page.locator(".messages")).to_contain_text("You joined Invite lab as a member")
    expect(page.locator("main")).to_contain_text("You are a member of this team.")
    # The link is used: a clear page, nothing changes.
    response = page.goto(link)
    assert response is not None and response.status == 410
    expect(page.locator("main")).to_contain_text("already used")
    # The browser logs the 410 it was meant to get: that one is no problem.
    problems.console_errors = [e for e in problems.console_errors if "(Gone)" not in e]

    # The admin reads it in the team's audit log.
    page.context.clear_cookies()
    sign_in(page, base, "browser-user")
    page.goto(f"{team_url}audit/")
    log = page.get_by_role("region", name="Table: Audit log")
    expect(log).to_contain_text("invitation.send")
    expect(log).to_contain_text("invitation.accept")
    expect(log).to_contain_text("newcomer")
    assert link.rsplit("/", 2)[-2] not in page.content()
    screenshot(page, "screenshot-audit.png")
    problems.assert_none()
