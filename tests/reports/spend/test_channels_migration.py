"""Migration 0015: each budget's addresses and webhook become channels of its owner (a team
budget's: of its team); its webhook deliveries are linked to the channel and keep no URL."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from reports import crypto

BEFORE = [("reports", "0012_held_data_teams_and_hardening")]
AFTER = [("reports", "0013_retention_anomalies_channels")]
URL = "https://hooks.example.com/in/CANARYmigrated"


def _migrate(target: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


@pytest.mark.django_db(transaction=True)
def test_budget_addresses_and_webhooks_become_channels() -> None:
    try:
        old = _migrate(BEFORE)
        User = old.get_model("auth", "User")
        Team = old.get_model("reports", "Team")
        Budget = old.get_model("reports", "Budget")
        Delivery = old.get_model("reports", "Delivery")
        owner = User.objects.create(username="migrated")
        team = Team.objects.create(name="Migrated team")
        secret = crypto.encrypt_secret("signing-secret")
        person = Budget.objects.create(
            owner=owner,
            scope="person",
            amount=10,
            thresholds=[50],
            emails=["a@example.com", "b@example.com"],
            webhook_url=URL,
            webhook_secret_encrypted=secret,
            channels_set_by=owner,
        )
        team_budget = Budget.objects.create(
            owner=owner, scope="team", team=team, amount=5, thresholds=[80], emails=["c@x.org"]
        )
        Budget.objects.create(owner=owner, scope="connection", amount=1, thresholds=[100])
        Delivery.objects.create(
            key="k1", channel="webhook", target=URL, subject="s", text="t", budget=person
        )
        Delivery.objects.create(
            key="k2", channel="email", target="a@example.com", subject="s", text="t", budget=person
        )

        new = _migrate(AFTER)
        Budget = new.get_model("reports", "Budget")
        Delivery = new.get_model("reports", "Delivery")
        person = Budget.objects.get(pk=person.pk)
        email, hook = sorted(person.channels.all(), key=lambda c: c.kind)
        assert (email.kind, email.owner_id, email.team_id) == ("email", owner.pk, None)
        assert email.emails == ["a@example.com", "b@example.com"]
        assert hook.kind == "webhook" and crypto.decrypt_secret(hook.url_encrypted) == URL
        assert crypto.decrypt_secret(hook.secret_encrypted) == "signing-secret"
        assert (hook.url_host, hook.url_last4) == ("hooks.example.com", "ated")
        [team_channel] = Budget.objects.get(pk=team_budget.pk).channels.all()
        assert (team_channel.team_id, team_channel.owner_id) == (team.pk, None)
        assert team_channel.emails == ["c@x.org"]
        webhook = Delivery.objects.get(key="k1")
        assert (webhook.via_id, webhook.target) == (hook.pk, "")
        assert Delivery.objects.get(key="k2").target == "a@example.com"
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
