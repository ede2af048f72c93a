"""The audit log (M7): every listed change is recorded by its service (page, CLI and API
alike, `.update()` included), on SQLite and PostgreSQL alike; never a secret in an entry or
the CSV; who reads which entries; entries are never edited, deleted or pruned."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from reports import audit, retention
from reports.integrations import api_tokens, webhooks
from reports.metrics import RATE_FIELDS
from reports.models import ApiToken, AuditEntry, Budget, Channel, Connection, PriceBook
from reports.pipeline import connections
from reports.spend import budgets, channels, pricing
from reports.teams import invitations, price_books, roster, sharing
from tests.support.world import JWT, OWNER_TOKEN, World

pytestmark = pytest.mark.django_db

NEW_TOKEN = "osai-sandbox-CANARY-new-token-77aa"
SLACK_URL = "http://127.0.0.1:9/services/T000/B000/CANARYslackSECRET"
HOOK_SECRET = "CANARY-signing-secret-5150"


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """No OSAI sign-in for a token check; channels may post to loopback."""
    monkeypatch.setattr(connections, "_check_token", lambda connection, token: "acct@osai")
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True


def _own_book(w: World) -> PriceBook:
    source = pricing.default_price_book()
    assert source is not None
    return price_books.price_book_copy(
        team=w.team, actor=w.team_admin, source=source, name="Vision prices"
    )


def _rates() -> dict[str, Decimal]:
    return dict.fromkeys(RATE_FIELDS, Decimal("1.5"))


def _version_delete(w: World) -> None:
    book = _own_book(w)
    version, _ = price_books.price_book_version_save(
        book=book,
        team=w.team,
        actor=w.team_admin,
        effective=(timezone.now() + timedelta(days=2)).date(),
        rates=_rates(),
    )
    price_books.price_book_version_delete(version=version, team=w.team, actor=w.team_admin)


def _budget(w: World) -> Budget:
    return budgets.budget_set(actor=w.owner, scope="person", amount="10")


def _slack(w: World) -> Channel:
    return channels.channel_add(
        actor=w.team_admin, kind="slack", name="Ops", team=w.team, url=SLACK_URL
    )


def _api_token(w: World) -> ApiToken:
    return api_tokens.api_token_create(user=w.owner, name="cron")[0]


def _connection(w: World) -> Connection:
    return Connection.objects.get(pk=w.connection.pk)


# (action, what the actor does, who acts, the entry's team or None)
CHANGES: list[tuple[str, Callable[[World], Any]]] = [
    ("budget.create", _budget),
    (
        "budget.change",
        lambda w: (_budget(w), budgets.budget_set(actor=w.owner, scope="person", amount="20")),
    ),
    ("budget.delete", lambda w: budgets.budget_delete(actor=w.owner, budget=_budget(w))),
    ("team.create", lambda w: roster.team_create(name="New team", admin=w.owner)),
    (
        "member.add",
        lambda w: roster.team_member_add(team=w.team, actor=w.team_admin, who="stranger"),
    ),
    (
        "member.remove",
        lambda w: roster.team_member_remove(team=w.team, actor=w.team_admin, user=w.team_member),
    ),
    (
        "member.leave",
        lambda w: roster.team_member_remove(team=w.team, actor=w.team_member, user=w.team_member),
    ),
    (
        "member.role",
        lambda w: roster.team_member_set_role(
            team=w.team, actor=w.team_admin, user=w.owner, role="viewer"
        ),
    ),
    (
        "team.price_book",
        lambda w: roster.team_price_book_set(
            team=w.team, actor=w.team_admin, price_book=_own_book(w)
        ),
    ),
    (
        "team.two_factor",
        lambda w: roster.team_two_factor_set(team=w.team, actor=w.team_admin, required=True),
    ),
    ("sharing.set", lambda w: sharing.team_sharing_set(team=w.team, user=w.owner, connections=[])),
    ("price_book.copy", _own_book),
    (
        "price_book.version_add",
        lambda w: price_books.price_book_version_save(
            book=_own_book(w),
            team=w.team,
            actor=w.team_admin,
            effective=(timezone.now() + timedelta(days=1)).date(),
            rates=_rates(),
        ),
    ),
    ("price_book.version_delete", _version_delete),
    (
        "price_book.settings",
        lambda w: price_books.price_book_settings_set(
            book=_own_book(w), team=w.team, actor=w.team_admin, name="Renamed", currency="EUR"
        ),
    ),
    (
        "connection.add",
        lambda w: connections.connection_create(
            owner=w.owner, label="Second", region="sandbox", access_token=NEW_TOKEN
        ),
    ),
    (
        "connection.label",
        lambda w: connections.connection_relabel(connection=_connection(w), label="Relabelled"),
    ),
    (
        "connection.token",
        lambda w: connections.connection_replace_token(
            connection=_connection(w), access_token=NEW_TOKEN
        ),
    ),
    ("connection.delete", lambda w: connections.connection_delete(connection=_connection(w))),
    ("api_token.create", _api_token),
    ("api_token.revoke", lambda w: api_tokens.api_token_revoke(user=w.owner, pk=_api_token(w).pk)),
    ("webhook.rotate", lambda w: webhooks.webhook_secret_rotate(connection=_connection(w))),
    ("channel.add", _slack),
    ("channel.delete", lambda w: channels.channel_delete(actor=w.team_admin, channel=_slack(w))),
    (
        "invitation.send",
        lambda w: invitations.invitation_send(
            team=w.team, actor=w.team_admin, email="x@example.com", role="member"
        ),
    ),
    (
        "invitation.accept",
        lambda w: invitations.invitation_accept(
            token=invitations.invitation_send(
                team=w.team, actor=w.team_admin, email="x@example.com", role="member"
            ).token,
            user=w.stranger,
        ),
    ),
    (
        "invitation.withdraw",
        lambda w: invitations.invitation_withdraw(
            team=w.team,
            actor=w.team_admin,
            pk=invitations.invitation_send(
                team=w.team, actor=w.team_admin, email="x@example.com", role="member"
            ).invitation.pk,
        ),
    ),
]


def _secrets(w: World) -> list[str]:
    found = [OWNER_TOKEN, NEW_TOKEN, JWT, SLACK_URL, "CANARYslackSECRET", HOOK_SECRET]
    found += [c.webhook_secret for c in Connection.objects.all()]
    found += list(w.tokens.values())
    return found


@pytest.mark.parametrize("action,change", CHANGES, ids=[c[0] for c in CHANGES])
def test_each_change_is_recorded_by_its_service_without_a_secret(
    world: World, offline: None, mailoutbox: list[Any], action: str, change: Callable[[World], Any]
) -> None:
    before = set(AuditEntry.objects.values_list("pk", flat=True))
    result = change(world)
    entries = AuditEntry.objects.exclude(pk__in=before)
    entry = entries.filter(action=action).order_by("-pk").first()
    assert entry is not None, sorted(entries.values_list("action", flat=True))
    assert entry.object_type and entry.object_id and entry.label
    assert entry.via == AuditEntry.Via.SYSTEM and entry.client_ip is None  # no page, no CLI here
    assert entry.actor is not None or action.startswith("system")
    written = json.dumps(list(entries.values()), default=str)
    secrets = _secrets(world)
    if action.startswith("invitation") and hasattr(result, "token"):
        secrets.append(result.token)
    secrets += [m.body.split("/invitations/")[1].split("/")[0] for m in mailoutbox]
    assert not [s for s in secrets if s and s in written]
    if action == "connection.token":
        assert entry.before == {"token": f"…{OWNER_TOKEN[-4:]}"}
        assert entry.after == {"token": f"token replaced (…{NEW_TOKEN[-4:]})"}


def test_a_page_records_the_page_and_the_client_address(world: World) -> None:
    client = _client(world.owner)
    response = client.post(
        reverse("connection_edit", args=[world.connection.pk]),
        {"label": "Renamed"},
        REMOTE_ADDR="203.0.113.7",
    )
    assert response.status_code == 302
    entry = AuditEntry.objects.get(action="connection.label")
    assert (entry.via, entry.client_ip, entry.actor) == ("page", "203.0.113.7", world.owner)
    assert entry.before == {"label": "Main"} and entry.after == {"label": "Renamed"}


def test_the_cli_records_the_cli(world: World) -> None:
    call_command("teams", "role", "Vision", "owner", "--role", "viewer", stdout=io.StringIO())
    entry = AuditEntry.objects.get(action="member.role")
    assert (entry.via, entry.actor, entry.client_ip) == ("cli", None, None)
    assert entry.before == {"role": "member"} and entry.after == {"role": "viewer"}


def test_a_secret_key_is_never_written_whatever_a_caller_passes(world: World) -> None:
    entry = audit.record(
        "test.secret",
        actor=None,
        object_type="x",
        after={"url": SLACK_URL, "webhook_secret": "s", "password": "p", "label": "ok"},
    )
    assert entry.after == {"label": "ok"}


def _changes_in_both_teams(w: World) -> None:
    roster.team_member_set_role(
        team=w.other_team, actor=w.other_admin, user=w.stranger, role="viewer"
    )
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="viewer")
    api_tokens.api_token_create(user=w.other_admin, name="theirs")


def test_who_reads_which_entries(world: World) -> None:
    w = world
    _changes_in_both_teams(w)
    # A person: what they did and what was done to theirs, never another team's.
    owner_page = _client(w.owner).get(reverse("audit_log")).content.decode()
    assert "owner in Vision" in owner_page and "stranger in Elsewhere" not in owner_page
    member_page = _client(w.team_member).get(reverse("audit_log")).content.decode()
    assert "stranger in Elsewhere" not in member_page and "owner in Vision" not in member_page
    # A team's admins: the team's entries only; its members and viewers: 404.
    team_page = _client(w.team_admin).get(reverse("team_audit", args=[w.team.pk]))
    assert "owner in Vision" in team_page.content.decode()
    assert "stranger in Elsewhere" not in team_page.content.decode()
    for user in (w.team_member, w.team_viewer, w.owner, w.other_admin):
        assert _client(user).get(reverse("team_audit", args=[w.team.pk])).status_code == 404
        assert _client(user).get(reverse("team_audit_csv", args=[w.team.pk])).status_code == 404
    # ?all=1 is for staff only: anyone else gets their own entries.
    assert (
        "stranger in Elsewhere"
        not in _client(w.owner).get(reverse("audit_log") + "?all=1").content.decode()
    )
    w.owner.is_staff = True
    w.owner.save()
    assert (
        "stranger in Elsewhere"
        in _client(w.owner).get(reverse("audit_log") + "?all=1").content.decode()
    )


def test_filters_pagination_and_the_csv(world: World, offline: None, settings: Any) -> None:
    w = world
    connection = _connection(w)
    connections.connection_replace_token(connection=connection, access_token=NEW_TOKEN)
    for n in range(60):
        connections.connection_relabel(connection=connection, label=f"=HYPERLINK({n})")
    client = _client(w.owner)
    page = client.get(reverse("audit_log")).content.decode()
    assert "Page 1 of 2" in page
    only = client.get(reverse("audit_log") + "?action=connection.token").content.decode()
    assert "token replaced" in only and "HYPERLINK" not in only
    tomorrow = (timezone.now() + timedelta(days=1)).date().isoformat()
    assert (
        "No entries yet."
        in client.get(reverse("audit_log") + f"?since={tomorrow}").content.decode()
    )
    response = client.get(reverse("audit_log_csv") + "?action=connection")
    assert response["Cache-Control"] == "private, no-store"
    assert response["Content-Disposition"].startswith(
        'attachment; filename="osai-usage-audit-mine-'
    )
    body = b"".join(response.streaming_content).decode()
    assert body.splitlines()[0].startswith("at_utc,actor,action")
    assert "'=HYPERLINK(" in body  # the formula guard (C1)
    assert "token replaced" in body
    assert not [s for s in _secrets(w) if s in body]


def test_entries_are_never_edited_deleted_or_pruned(world: World, admin_user: Any) -> None:
    _changes_in_both_teams(world)
    model_admin = admin.site._registry[AuditEntry]
    request = RequestFactory().get("/")
    request.user = admin_user
    entry = AuditEntry.objects.first()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)
    count = AuditEntry.objects.count()
    retention.prune(now=timezone.now() + timedelta(days=3650))
    assert AuditEntry.objects.count() == count
