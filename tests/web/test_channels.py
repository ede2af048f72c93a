"""The Channels pages (reports/views/channels.py): add, list, send a test, remove; a team's
for its admins. A webhook URL is a secret: it is never rendered again (the list shows its
host and last four characters), not on an error either, and never reaches a budget page, a
log line or a CSV (T2, A5, C7)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from reports.models import Channel, Delivery
from reports.spend import budgets, notify
from tests.support.receiver import Receiver
from tests.support.world import World

pytestmark = pytest.mark.django_db

PATH_CANARY = "CANARYpath7d3e"


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_person_adds_tests_and_removes_a_slack_channel_and_never_sees_its_url_again(
    world: World, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True
    settings.ALERT_DELIVERY_MAX_ATTEMPTS = 1
    caplog.set_level(logging.DEBUG)
    hook = Receiver(status=500)
    url = f"{hook.url}/{PATH_CANARY}"
    client = client_for(world.owner)
    try:
        # A mistake first: the form comes back with its error and without the URL.
        refused = client.post(
            reverse("channel_list"), {"name": "Ops", "kind": "webhook", "url": url}
        )
        assert refused.status_code == 400
        assert "needs a secret" in refused.content.decode()
        assert PATH_CANARY not in refused.content.decode()

        added = client.post(reverse("channel_list"), {"name": "Ops", "kind": "slack", "url": url})
        assert added.status_code == 302
        channel = Channel.objects.get(owner=world.owner)
        page = client.get(reverse("channel_list")).content.decode()
        assert "Ops" in page and f"127.0.0.1 …{PATH_CANARY[-4:]}" in page
        assert PATH_CANARY not in page

        # Send a test: one message in the outbox, sent by the worker (here: by hand).
        assert client.post(reverse("channel_test", args=[channel.pk])).status_code == 302
        delivery = Delivery.objects.get(via=channel)
        assert notify.delivery_send(delivery.pk) == "failed"  # the receiver answers 500
        assert len(hook.received) == 1
        page = client.get(reverse("channel_list")).content.decode()
        assert "Failed" in page and "answered HTTP 500" in page
        assert PATH_CANARY not in page

        # Chosen on a budget: the budget page and its CSVs name it, never its URL.
        budget = budgets.budget_set(
            actor=world.owner, scope="person", amount="5", channels=[channel]
        )
        Delivery.objects.filter(pk=delivery.pk).update(budget=budget)
        detail = client.get(reverse("budget_detail", args=[budget.pk])).content.decode()
        assert "Ops" in detail and PATH_CANARY not in detail
        for name in ("budget_alert_log_csv", "budget_export_csv"):
            csv = client.get(reverse(name, args=[budget.pk]))
            assert PATH_CANARY not in b"".join(csv.streaming_content).decode()
        assert PATH_CANARY not in caplog.text

        assert client.post(reverse("channel_delete", args=[channel.pk])).status_code == 302
        assert not Channel.objects.filter(pk=channel.pk).exists()
        assert list(budget.channels.all()) == []
    finally:
        hook.stop()


def test_a_teams_channels_are_its_admins_to_manage(world: World) -> None:
    w = world
    url = reverse("team_channels", args=[w.team.pk])
    for user in (w.team_viewer, w.team_member, w.owner, w.other_admin):
        assert client_for(user).get(url).status_code == 404
    admin = client_for(w.team_admin)
    team_page = admin.get(reverse("team_detail", args=[w.team.pk])).content.decode()
    assert url in team_page
    assert (
        url
        not in client_for(w.team_viewer)
        .get(reverse("team_detail", args=[w.team.pk]))
        .content.decode()
    )
    response = admin.post(
        url, {"name": "Admins", "kind": "email", "emails": "", "to_team_admins": "on"}
    )
    assert response.status_code == 302
    channel = Channel.objects.get(team=w.team)
    assert channel.to_team_admins and channel.owner is None
    page = admin.get(url).content.decode()
    assert "the team&#x27;s admins" in page or "the team's admins" in page
    # A viewer's address on the team's channel is refused.
    refused = admin.post(url, {"name": "Finance", "kind": "email", "emails": "finance@example.com"})
    assert refused.status_code == 400
    assert Channel.objects.filter(team=w.team).count() == 1


def test_the_budget_form_offers_ones_own_and_the_managed_teams_channels(world: World) -> None:
    w = world
    Channel.objects.create(owner=w.team_admin, kind="email", name="Mine", emails=["a@b.co"])
    Channel.objects.create(team=w.team, kind="email", name="Vision admins", to_team_admins=True)
    Channel.objects.create(owner=w.owner, kind="email", name="Not theirs", emails=["c@d.co"])
    page = client_for(w.team_admin).get(reverse("budget_list")).content.decode()
    assert "Mine" in page and "Vision admins" in page and "Not theirs" not in page
