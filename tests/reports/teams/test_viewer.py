"""The viewer role (finance) and the one capability table it is read from (reports/access.py).

Each cell of the table (role x capability) is checked; then what a viewer sees and may not do
on every surface that asks the table: the team page, the report page, budgets and their alerts,
digests, the commands, sharing (M5, S2, S3). The matrices in test_teams.py, test_views.py and
test_integrations.py give the viewer a column of their own.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from reports.access import (
    CAPABILITIES,
    Capability,
    counted_buckets,
    may,
    roles_that_may,
    teams_where,
)
from reports.models import Budget, Connection, Delivery, DigestSent, Membership, Report
from reports.spend import budgets, digests
from reports.teams import TeamError, invitations, roster, sharing
from reports.views.forms import BudgetForm, ConnectionEditForm
from tests.support import figures
from tests.support.world import OWNER_TOKEN, World

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[3]
C = Capability
# An "opt-in" cell of the documented table: the role may ask for what the row gives.
OPT_IN = {C.RECEIVE_TEAM_DIGEST: C.OPT_INTO_TEAM_DIGEST}


def _documented_table() -> dict[str, set[Capability]]:
    """The table as docs/architecture.md ("Teams") writes it: a row per capability, a ✓ (or
    "opt-in") per role that has it, in the columns Admin, Viewer (finance), Member."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    header = "| Capability | Admin | Viewer (finance) | Member |"
    assert text.count(header) == 1, "the capability table's header moved"
    roles = [Membership.Role.ADMIN, Membership.Role.VIEWER, Membership.Role.MEMBER]
    table: dict[str, set[Capability]] = {role: set() for role in roles}
    rows = text.split(header, 1)[1].strip().splitlines()[1:]  # below the |---| line
    for row in itertools.takewhile(lambda line: line.startswith("|"), rows):
        first, *cells = (cell.strip() for cell in row.strip("|").split("|"))
        capability = Capability(re.match(r"`(\w+)`", first).group(1))  # type: ignore[union-attr]
        for role, cell in zip(roles, cells, strict=True):
            if cell == "✓":
                table[role].add(capability)
            elif cell == "opt-in":
                table[role].add(OPT_IN[capability])
            else:
                assert cell == "\N{EN DASH}", f"{capability} x {role}: {cell!r}"
    return table


EXPECTED = _documented_table()


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def team_url(w: World, name: str, *args: Any) -> str:
    return reverse(name, args=[w.team.pk, *args])


def team_budget(w: World, actor: Any, emails: list[str], **webhook: str) -> Budget:
    """The team's budget of 100 a month, set by `actor`, its alerts to `emails` (and to a
    webhook: `webhook_url`, `webhook_secret`)."""
    return budgets.budget_set(
        actor=actor, scope="team", team=w.team, amount="100", emails=emails, **webhook
    )


# --- The table --------------------------------------------------------------------------------


def test_the_capability_table_cell_by_cell(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(CAPABILITIES) == set(Membership.Role.values)  # every role has a row
    cells, failures = 0, []
    for role in Membership.Role.values:
        for capability in Capability:
            cells += 1
            if may(role, capability) != (capability in EXPECTED[role]):
                failures.append(f"{role} x {capability}")
    figures.matrix("M5 capability table", cells, failures, capsys)
    assert not failures, failures
    assert roles_that_may(C.MANAGE_MEMBERS) == [Membership.Role.ADMIN]
    assert roles_that_may(C.SEE_TEAM_REPORTS) == [Membership.Role.ADMIN, Membership.Role.VIEWER]
    assert not may("someone", C.SEE_TEAM)  # an unknown role may do nothing


# A role is asked about only through the table: these spell a check by the role's name.
ROLE_CHECK = re.compile(
    r"role(__in)?\s*=\s*(Membership\.)?Role\.|role\s*==|memberships__role\s*=|is_admin|"
    r"teams_administered_by|admin=True|_require_admin"
)


def test_nothing_but_the_capability_table_asks_a_role_by_name() -> None:
    """One home for the rule: outside reports/access.py no code or template compares a role
    (the one exception: a new team's creator becomes its admin)."""
    found = []
    for path in [*(ROOT / "reports").rglob("*.py"), *(ROOT / "templates").rglob("*.html")]:
        if "migrations" in path.parts or path == ROOT / "reports" / "access.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if ROLE_CHECK.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == [
        "reports/teams/roster.py:"
        f"{_line_of('reports/teams/roster.py', 'user=admin, role=Role.ADMIN')}: "
        "Membership.objects.create(team=team, user=admin, role=Role.ADMIN)"
    ]


def _line_of(path: str, text: str) -> int:
    lines = (ROOT / path).read_text().splitlines()
    return next(n for n, line in enumerate(lines, start=1) if text in line)


# --- The team page ------------------------------------------------------------------------------


def test_a_viewer_sees_the_teams_spend_reports_and_csvs_and_none_of_its_controls(
    world: World,
) -> None:
    w = world
    response = client_for(w.team_viewer).get(team_url(w, "team_detail"))
    assert response.status_code == 200
    content = response.content.decode()
    assert "You are a viewer (finance) of this team." in content
    assert response.context["month"] is not None  # the team's month, budgets and forecast
    assert [r for r, _ in response.context["reports"]] == [w.team_report]
    assert f'href="{reverse("report_detail", args=[w.team_report.pk])}"' in content
    assert team_url(w, "team_report_export_csv", w.team_report.pk) in content
    assert team_url(w, "team_spend_export_csv") + "?period=this_month" in content
    assert team_url(w, "team_digest") in content  # the digest opt-in
    # Leaving is theirs; nothing else that runs the team is on the page.
    assert team_url(w, "team_member_remove", w.team_viewer.pk) in content
    for absent in (
        f'action="{team_url(w, "team_member_add")}"',
        team_url(w, "team_member_role", w.owner.pk),
        team_url(w, "team_member_remove", w.owner.pk),
        team_url(w, "team_report_new"),
        team_url(w, "team_price_book"),
        team_url(w, "team_sharing"),
        'name="role"',
    ):
        assert absent not in content, absent
    # Never another person's OSAI account name or token ending (M2, S3).
    assert all(
        c.account_name is None and c.token_hint is None
        for c in response.context["shared_connections"]
    )
    assert "OSAI account" not in content and w.connection.account_name not in content
    admin_page = client_for(w.team_admin).get(team_url(w, "team_detail")).content.decode()
    assert f"OSAI account {w.connection.account_name}" in admin_page
    assert team_url(w, "team_digest") not in admin_page  # admins get the digest anyway
    member = client_for(w.team_member).get(team_url(w, "team_detail"))
    assert member.context.get("month") is None and member.context["reports"] == []
    assert team_url(w, "team_report_export_csv", w.team_report.pk) not in member.content.decode()


def test_a_viewer_cannot_add_remove_or_change_anyone_and_nothing_changes(world: World) -> None:
    w = world
    before = sorted(Membership.objects.filter(team=w.team).values_list("user_id", "role"))
    shared = set(sharing.team_shared_connections(w.team))
    viewer = client_for(w.team_viewer)
    for url, data in (
        (team_url(w, "team_member_remove", w.owner.pk), {}),
        (team_url(w, "team_member_remove", w.team_admin.pk), {}),
        (team_url(w, "team_member_role", w.owner.pk), {"role": "admin"}),
        (team_url(w, "team_member_role", w.team_viewer.pk), {"role": "admin"}),
        (team_url(w, "team_member_add"), {"who": w.stranger.username, "role": "admin"}),
        (team_url(w, "team_price_book"), {"price_book": ""}),
        (team_url(w, "team_sharing"), {"connections": []}),
    ):
        assert viewer.post(url, data).status_code == 404, url
    for service in (
        lambda: roster.team_member_remove(team=w.team, actor=w.team_viewer, user=w.owner),
        lambda: roster.team_member_set_role(
            team=w.team, actor=w.team_viewer, user=w.team_viewer, role="admin"
        ),
        lambda: roster.team_member_add(team=w.team, actor=w.team_viewer, who="stranger"),
        lambda: roster.team_price_book_set(team=w.team, actor=w.team_viewer, price_book=None),
    ):
        with pytest.raises(TeamError, match="Only the team's admins"):
            service()
    assert sorted(Membership.objects.filter(team=w.team).values_list("user_id", "role")) == before
    assert set(sharing.team_shared_connections(w.team)) == shared
    # Leaving is still theirs.
    assert viewer.post(team_url(w, "team_member_remove", w.team_viewer.pk)).status_code == 302
    assert not Membership.objects.filter(team=w.team, user=w.team_viewer).exists()


def test_an_admin_makes_someone_a_viewer_and_their_sharing_ends(world: World) -> None:
    """The role select on the team page offers the viewer; a viewer shares nothing, so the
    change ends their sharing at once, as leaving does (M1)."""
    w = world
    admin = client_for(w.team_admin)
    page = admin.get(team_url(w, "team_detail")).content.decode()
    assert '<option value="viewer">Viewer (finance)</option>' in page
    response = admin.post(team_url(w, "team_member_role", w.owner.pk), {"role": "viewer"})
    assert response.status_code == 302
    assert Membership.objects.get(team=w.team, user=w.owner).role == Membership.Role.VIEWER
    assert list(sharing.team_shared_connections(w.team)) == [w.admin_connection]
    assert {b.connection_id for b in counted_buckets(w.team_report)} == {w.admin_connection.pk}
    # As a viewer they share nothing again, by the page, the service or a connection's page.
    owner = client_for(w.owner)
    assert owner.get(team_url(w, "team_sharing")).status_code == 404
    with pytest.raises(TeamError, match="Only members and admins"):
        sharing.team_sharing_set(team=w.team, user=w.owner, connections=[w.connection])
    sharing.connection_teams_set(connection=w.connection, teams=[w.team])
    assert not w.connection.shared_with_teams.exists()
    assert list(ConnectionEditForm(owner=w.owner).fields["shared_with_teams"].queryset) == []
    # And someone new joins as a viewer.
    w.stranger.email = "stranger@example.com"
    w.stranger.save()
    invited = admin.post(
        team_url(w, "team_member_add"), {"who": "stranger@example.com", "role": "viewer"}
    )
    assert invited.status_code == 302
    [invitation] = invitations.invitations_for_person(w.stranger)
    invitations.invitation_accept_mine(user=w.stranger, pk=invitation.pk)
    assert Membership.objects.get(team=w.team, user=w.stranger).role == Membership.Role.VIEWER


def test_a_team_keeps_an_admin_a_viewer_is_not_one(world: World) -> None:
    w = world
    with pytest.raises(TeamError, match="keep at least one admin"):
        roster.team_member_set_role(
            team=w.team, actor=w.team_admin, user=w.team_admin, role="viewer"
        )
    assert Membership.objects.get(team=w.team, user=w.team_admin).role == Membership.Role.ADMIN


def test_the_teams_command_adds_a_viewer_and_makes_one(world: World) -> None:
    out = io.StringIO()
    call_command("teams", "add", "Vision", "stranger", "--role", "viewer", stdout=out)
    assert Membership.objects.get(team=world.team, user=world.stranger).role == "viewer"
    call_command("teams", "role", "Vision", "owner", "--role", "viewer", stdout=out)
    assert list(sharing.team_shared_connections(world.team)) == [world.admin_connection]
    call_command("teams", "list", stdout=out)
    assert "stranger (viewer)" in out.getvalue() and "owner (viewer)" in out.getvalue()
    with pytest.raises(CommandError, match="Only members and admins"):
        call_command(
            "teams", "share", "Vision", "--user", "owner", "--connection", "Main", stdout=out
        )


# --- Reports --------------------------------------------------------------------------------------


def test_a_viewer_reads_a_team_report_but_neither_cancels_nor_retries_it(world: World) -> None:
    w = world
    Report.objects.filter(pk=w.team_report.pk).update(state=Report.State.CANCELLED)
    url = reverse("report_detail", args=[w.team_report.pk])
    viewer_page = client_for(w.team_viewer).get(url)
    assert viewer_page.status_code == 200
    assert reverse("report_export_csv", args=[w.team_report.pk]) in viewer_page.content.decode()
    assert reverse("report_retry", args=[w.team_report.pk]) not in viewer_page.content.decode()
    assert reverse("report_retry", args=[w.team_report.pk]) in (
        client_for(w.team_admin).get(url).content.decode()
    )
    for action in ("report_retry", "report_cancel"):
        response = client_for(w.team_viewer).post(reverse(action, args=[w.team_report.pk]))
        assert response.status_code == 404
    assert Report.objects.get(pk=w.team_report.pk).state == Report.State.CANCELLED


def test_team_pages_a_viewer_reaches_never_show_a_token_or_an_account_name(world: World) -> None:
    w = world
    pages = [
        team_url(w, "team_detail"),
        reverse("report_detail", args=[w.team_report.pk]),
        reverse("report_detail", args=[w.team_report.pk]) + "?view=cost",
        reverse("report_charts", args=[w.team_report.pk]) + "?view=cost",
        team_url(w, "team_report_export_csv", w.team_report.pk),
        reverse("report_export_csv", args=[w.team_report.pk]),
        f"{reverse('spend_export_csv')}?from=2026-01-01&to=2026-04-01&team={w.team.pk}",
        team_url(w, "team_spend_export_csv") + "?period=last_12_months",
    ]
    secrets = [OWNER_TOKEN, OWNER_TOKEN[:-4], "CANARY", "eyJ", w.connection.account_name]
    for url in pages:
        response = client_for(w.team_viewer).get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert not [s for s in secrets if s in body.decode()], url


# --- Budgets and alerts -----------------------------------------------------------------------


def test_a_viewer_sees_team_budgets_but_sets_none(world: World) -> None:
    w = world
    budget = budgets.budget_set(actor=w.team_admin, scope="team", team=w.team, amount="100")
    viewer = client_for(w.team_viewer)
    listed = viewer.get(reverse("budget_list"))
    assert [s.budget for s in listed.context["statuses"]] == [budget]
    assert list(listed.context["form"].fields["team"].queryset) == []  # no team to set one for
    detail = viewer.get(reverse("budget_detail", args=[budget.pk]))
    assert detail.status_code == 200 and detail.context["manages"] is False
    content = detail.content.decode()
    assert 'name="amount"' not in content
    assert reverse("budget_delete", args=[budget.pk]) not in content
    admin_detail = client_for(w.team_admin).get(reverse("budget_detail", args=[budget.pk]))
    assert 'name="amount"' in admin_detail.content.decode()
    assert (
        client_for(w.team_member).get(reverse("budget_detail", args=[budget.pk])).status_code == 404
    )
    with pytest.raises(budgets.BudgetError, match="team's admins"):
        budgets.budget_set(actor=w.team_viewer, scope="team", team=w.team, amount="5")
    assert list(BudgetForm(user=w.team_viewer).fields["team"].queryset) == []
    assert budgets.budgets_managed_by(w.team_viewer) == []
    assert budgets.budgets_visible_to(w.team_viewer) == [budget]


def test_budget_alerts_go_to_the_teams_admins_never_to_its_viewers(world: World) -> None:
    w = world
    with pytest.raises(budgets.BudgetError, match=r"FINANCE@example\.com: budget alerts go to"):
        team_budget(w, w.team_admin, ["ops@example.com", "FINANCE@example.com"])
    w.owner.email = "owner@example.com"
    w.owner.save()
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="admin")
    budget = team_budget(w, w.team_admin, ["ops@example.com", "owner@example.com"])
    assert budgets.alert_addresses(budget) == ["ops@example.com", "owner@example.com"]
    # Made a viewer since: their address is left out of the next alert.
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="viewer")
    assert budgets.alert_addresses(budget) == ["ops@example.com"]
    # A personal budget is its owner's business.
    own = budgets.budget_set(
        actor=w.team_viewer, scope="person", amount="5", emails=["finance@example.com"]
    )
    assert budgets.alert_addresses(own) == ["finance@example.com"]


def test_a_removed_team_admin_stops_receiving_the_team_alerts_they_set_up(
    world: World, settings: Any, mailoutbox: list[Any]
) -> None:
    """A8: recipients of a team's alerts are its current admins at sending time. The channels
    (addresses, webhook) set by an admin who is removed stop, even for an alert queued
    before; the alerts go to the team's admins instead; the budget page says so; an admin
    who saves the budget takes the channels over."""
    from reports.spend import notify
    from tests.support.receiver import Receiver

    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    w = world
    w.team_admin.email = "leaving@example.com"
    w.team_admin.save()
    w.owner.email = "owner@example.com"
    w.owner.save()
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="admin")
    hook = Receiver()
    try:
        budget = team_budget(
            w,
            w.team_admin,
            ["leaving@example.com", "ops@example.com"],
            webhook_url=hook.url,
            webhook_secret="s3cret",
        )
        assert budgets.alert_addresses(budget) == ["leaving@example.com", "ops@example.com"]
        queued = notify.deliveries_create(
            subject="Budget alert",
            text="t",
            payload={},
            emails=budgets.alert_emails(budget),
            channels=budgets.alert_channels(budget),
            budget=budget,
        )
        roster.team_member_remove(team=w.team, actor=w.owner, user=w.team_admin)
        budget.refresh_from_db()

        # Queued before the removal, sent after: neither channel reaches the leaver.
        assert [notify.delivery_send(d.pk) for d in queued] == ["refused", "refused"]
        assert mailoutbox == [] and hook.received == []
        assert {d.last_error[:9] for d in Delivery.objects.filter(budget=budget)} == {"Not sent:"}
        # The next alert goes to the team's admins, and nowhere else.
        assert budgets.channels_stopped(budget)
        assert budgets.alert_addresses(budget) == ["owner@example.com"]
        assert budgets.alert_channels(budget) == []
        client = Client()
        client.force_login(w.owner)
        page = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
        assert "were chosen by admin, who is no longer an admin of Vision" in page

        # An admin saves it: the channels are theirs, without the leaver's own address.
        with pytest.raises(budgets.BudgetError, match=r"leaving@example\.com"):
            team_budget(w, w.owner, ["leaving@example.com"])
        budget = team_budget(w, w.owner, ["ops@example.com"], webhook_url=hook.url)
        assert not budgets.channels_stopped(budget)
        assert budgets.alert_addresses(budget) == ["ops@example.com"]
        [webhook] = [c for c in budgets.alert_channels(budget) if c.kind == "webhook"]
        assert webhook.url == hook.url
        page = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
        assert "who is no longer an admin of Vision" not in page
    finally:
        hook.stop()


def test_an_address_of_someone_who_left_the_team_is_left_out_of_its_alerts(world: World) -> None:
    """A8: an admin put a colleague's address on the team budget; the colleague leaves the
    team: their address is dropped from the next alert, whoever set it."""
    w = world
    w.team_member.email = "member@example.com"
    w.team_member.save()
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.team_member, role="admin")
    budget = team_budget(w, w.team_admin, ["member@example.com", "ops@example.com"])
    roster.team_member_remove(team=w.team, actor=w.team_member, user=w.team_member)  # leaves
    assert not budgets.channels_stopped(budget)
    assert budgets.alert_addresses(budget) == ["ops@example.com"]


# --- Digests ----------------------------------------------------------------------------------


def test_team_digests_go_to_admins_and_to_viewers_who_opted_in(world: World) -> None:
    w = world
    monday = datetime(2026, 3, 16, 7, tzinfo=UTC)
    for user in (w.team_admin, w.team_member, w.owner):
        user.email = f"{user.username}@example.com"
        user.save()

    def team_digest_targets() -> set[str]:
        DigestSent.objects.all().delete()
        Delivery.objects.all().delete()
        digests.digests_send(now=monday)
        return {d.target for d in Delivery.objects.all() if "team Vision" in d.subject}

    assert team_digest_targets() == {"admin@example.com"}
    viewer = client_for(w.team_viewer)
    assert viewer.post(team_url(w, "team_digest"), {"team_digest": "on"}).status_code == 302
    assert Membership.objects.get(team=w.team, user=w.team_viewer).team_digest is True
    assert team_digest_targets() == {"admin@example.com", "finance@example.com"}
    page = viewer.get(team_url(w, "team_detail")).content.decode()
    assert 'name="team_digest" checked' in page
    assert viewer.post(team_url(w, "team_digest"), {}).status_code == 302  # opted out again
    assert team_digest_targets() == {"admin@example.com"}
    # Only a viewer's choice: members and admins get a 404 and nothing changes.
    for user in (w.team_member, w.team_admin, w.stranger):
        response = client_for(user).post(team_url(w, "team_digest"), {"team_digest": "on"})
        assert response.status_code == 404
    assert not Membership.objects.filter(team_digest=True).exists()
    # A member who opted in while a viewer gets nothing once made a member again.
    Membership.objects.filter(team=w.team, user=w.team_viewer).update(team_digest=True)
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.team_viewer, role="member")
    assert team_digest_targets() == {"admin@example.com"}


# --- The API and the commands -----------------------------------------------------------------


def test_a_viewer_reads_the_teams_spend_by_api_and_command(world: World) -> None:
    w = world
    assert list(teams_where(w.team_viewer, C.SEE_TEAM_SPEND)) == [w.team]
    assert list(teams_where(w.team_member, C.SEE_TEAM_SPEND)) == []
    out = io.StringIO()
    call_command("spend_summary", "--user", "viewer", "--team", "Vision", "--json", stdout=out)
    assert "month_to_date_cost" in json.loads(out.getvalue())
    with pytest.raises(CommandError, match="not an admin or viewer of 'Vision'"):
        call_command("spend_summary", "--user", "member", "--team", "Vision", stdout=out)
    answer = Client().get(
        f"/api/v1/spend?team={w.team.pk}", HTTP_AUTHORIZATION=f"Bearer {w.tokens['team_viewer']}"
    )
    assert answer.status_code == 200 and answer.json()["team"] == "Vision"
    reports = Client().get(
        "/api/v1/reports", HTTP_AUTHORIZATION=f"Bearer {w.tokens['team_viewer']}"
    )
    assert [r["id"] for r in reports.json()["items"]] == [w.team_report.pk]
    assert Connection.objects.filter(owner=w.team_viewer).count() == 0
