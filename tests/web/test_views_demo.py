"""`seed_demo` (run by `make run`): the demo login and its reports, made once."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import RequestFactory

from reports import crypto
from reports.management.commands.seed_demo import DEMO_PASSWORD, DEMO_TOKEN
from reports.models import Connection, Report, Team
from reports.teams import sharing

pytestmark = pytest.mark.django_db


def test_seed_demo_is_idempotent_and_prints_the_login() -> None:
    first, second = StringIO(), StringIO()
    call_command("seed_demo", stdout=first)
    call_command("seed_demo", stdout=second)
    user = get_user_model().objects.get(username="demo")
    assert Connection.objects.filter(owner=user).count() == 1
    assert Report.objects.filter(owner=user, team=None).count() == 3
    assert {(r.preset, r.granularity) for r in Report.objects.filter(team=None)} == {
        ("last_12_months", "month"),
        ("last_30_days", "day"),
        ("last_month", "total"),
    }
    # A team the demo user runs, with a member who shares a connection, and a team report.
    team = Team.objects.get(name="Demo team")
    roles = team.memberships.order_by("user__username").values_list("user__username", "role")
    assert list(roles) == [("dana", "member"), ("demo", "admin")]
    assert [c.label for c in sharing.team_shared_connections(team)] == [
        "Dana's lab",
        "Sandbox demo",
    ]
    team_report = Report.objects.get(team=team)
    assert (team_report.owner, team_report.connections.count()) == (user, 2)
    assert not get_user_model().objects.get(username="dana").has_usable_password()
    assert f"demo / {DEMO_PASSWORD}" in first.getvalue()
    assert "Found the report" in second.getvalue()
    request = RequestFactory().post("/accounts/login/")  # django-axes wants a request
    assert authenticate(request, username="demo", password=DEMO_PASSWORD) == user
    connection = Connection.objects.get(owner=user)
    assert crypto.decrypt_secret(connection.token_encrypted) == DEMO_TOKEN
    assert connection.region == "sandbox" and connection.account_name == "demo"


def test_seed_demo_refuses_without_the_sandbox_region(settings: Any) -> None:
    settings.OSAI_REGIONS = {"eu": "https://app-eu.onestepai.com/api"}
    with pytest.raises(CommandError, match="local demos only"):
        call_command("seed_demo", stdout=StringIO())
    assert not get_user_model().objects.filter(username="demo").exists()


def test_the_demo_connections_webhook_urls_are_registered_with_the_sandbox(
    osai_sandbox: Any,
) -> None:
    """What `make run` does once the sandbox answers: its events then reach the demo's feed."""
    from django.urls import resolve

    from reports.integrations import webhooks
    from reports.management.commands.seed_demo import (
        MEMBER_TOKEN,
        demo_webhook_registrations,
        register_demo_webhooks,
    )

    call_command("seed_demo", stdout=StringIO())
    # Port 9 (discard): nothing listens there, so no event lands on anybody's server.
    registrations = demo_webhook_registrations("http://127.0.0.1:9/")
    assert [r["token"] for r in registrations] == [DEMO_TOKEN, MEMBER_TOKEN]
    for registration in registrations:
        path = registration["url"].removeprefix("http://127.0.0.1:9")
        secret = resolve(path).kwargs["secret"]
        assert webhooks.connection_for_webhook(secret) is not None
    assert register_demo_webhooks(osai_sandbox.base_url, registrations, wait_seconds=5) == 2
    assert sorted(r["url"] for r in osai_sandbox.webhook_registrations()) == sorted(
        r["url"] for r in registrations
    )
    osai_sandbox.reset()
