"""Channels (reports/spend/channels.py, messages.py, notify.py): Slack and Teams bodies within
what the vendors document, a budget alert through each kind posted once to a local receiver
(A1, A3), a team's email channel resolved to its current admins when sent (A8), "Send a
test" through the outbox, the SSRF guard (A2) when adding and when sending, and URLs and
secrets encrypted at rest (T1, T4)."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection as db

from reports.models import Channel, Delivery
from reports.spend import budgets, channels, notify
from reports.spend.messages import Message, slack_body, teams_body
from reports.teams import roster
from tests.factories import ensure_example_price_book, make_connection, make_user
from tests.reports.spend.test_spend import NOW, spend_month
from tests.support.receiver import Receiver
from tests.support.vendor_payloads import (
    SLACK_DOCS_EXAMPLE,
    TEAMS_DOCS_EXAMPLE,
    slack_problems,
    teams_problems,
)
from tests.support.world import World

pytestmark = pytest.mark.django_db

SLACK_URL = "https://hooks.slack.com/services/T0CANARY/B0CANARY/CANARYslackPATH9z81"
PATH_CANARY = "CANARY-path-7d3e"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.url += f"/{PATH_CANARY}"  # the receiver answers any path
    yield server
    server.stop()


def fake_dns(monkeypatch: pytest.MonkeyPatch, address: str) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def payer() -> Any:
    """A person who spent EUR 18 of this month by NOW (1 h of 8 GB training a day)."""
    ensure_example_price_book()
    owner = make_user("payer", email="payer@example.com")
    spend_month(make_connection(owner, "Lab"), 1)
    return owner


# --- The bodies: what Slack's and Microsoft's webhooks accept ---------------------------------


def test_the_checkers_accept_the_vendors_published_examples_and_refuse_broken_bodies() -> None:
    assert slack_problems(SLACK_DOCS_EXAMPLE) == []
    assert teams_problems(TEAMS_DOCS_EXAMPLE) == []
    assert slack_problems({"blocks": []}) == ["no fallback text"]
    header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    assert slack_problems({"text": "t", "blocks": [header]}) == [
        "blocks[0] (header): 151 > 150 characters"
    ]
    assert slack_problems({"text": "t", "blocks": [{"type": "divider"}] * 51})
    broken_card = {
        "type": "message",
        "attachments": [
            {
                "contentType": "text/html",
                "content": {"type": "AdaptiveCard", "version": "9", "body": [{"type": "Image"}]},
            }
        ],
    }
    assert len(teams_problems(broken_card)) == 3


def test_slack_and_teams_bodies_stay_within_the_documented_limits_whatever_the_text() -> None:
    message = Message(
        title="Budget alert: 80 % of " + "a very long budget name " * 20,
        text="Spent <everything> & more\n" * 400,
        facts=[(f"Fact {n}", f"EUR {n}.00") for n in range(15)],
        link="https://usage.example/budgets/1/",
        link_label="Budget | alert log",
    )
    slack = slack_body(message, key="k" * 32)
    assert slack_problems(slack) == []
    assert len(slack["blocks"][0]["text"]["text"]) == 150
    assert "&lt;everything&gt; &amp; more" in slack["blocks"][1]["text"]["text"]
    assert len(slack["blocks"][2]["fields"]) == 10
    assert slack["blocks"][3]["elements"][0]["text"].startswith(
        "<https://usage.example/budgets/1/|Budget / alert log>"
    )
    teams = teams_body(message, key="k" * 32)
    assert teams_problems(teams) == []
    card = teams["attachments"][0]["content"]
    assert card["version"] == "1.4"
    assert [e["type"] for e in card["body"]] == ["TextBlock", "TextBlock", "FactSet", "TextBlock"]
    assert card["actions"][0]["url"] == "https://usage.example/budgets/1/"


# --- A budget alert through each kind of channel, once -----------------------------------------


@pytest.mark.parametrize("kind", ["slack", "teams"])
def test_a_budget_alert_through_a_slack_or_teams_channel_posts_its_body_once(
    kind: str, receiver: Receiver, local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A1: one alert, one delivery, one post (a second send and a second check do nothing);
    the body is the vendor's shape (checked as above) and carries the delivery key."""
    owner = payer()
    channel = channels.channel_add(actor=owner, kind=kind, name="Ops", url=receiver.url)
    budget = budgets.budget_set(actor=owner, scope="person", amount="20", channels=[channel])
    assert [a.threshold for a in budgets.budget_check(budget, now=NOW)] == [50, 80]
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.via, delivery.target) == (kind, channel, "")
    assert notify.delivery_send(delivery.pk) == "sent"
    assert notify.delivery_send(delivery.pk).startswith("not claimed")
    assert budgets.budget_check(budget, now=NOW) == []
    [request] = receiver.received
    body = json.loads(request["body"])
    assert body == delivery.payload
    assert request["headers"]["X-OSAI-Usage-Delivery"] == delivery.key
    assert "X-OSAI-Usage-Signature" not in request["headers"]  # only signed webhooks sign
    if kind == "slack":
        assert slack_problems(body) == []
        assert body["text"] == "Budget alert: 80 % of All of payer's connections"
        assert "*Spent this month*\nEUR 18.00" in [f["text"] for f in body["blocks"][2]["fields"]]
    else:
        assert teams_problems(body) == []
        card = body["attachments"][0]["content"]
        facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
        assert facts["Spent this month"] == "EUR 18.00"
    assert delivery.key in request["body"].decode()
    with capsys.disabled():
        print(f"\n{kind} body as sent: {json.dumps(body, ensure_ascii=False)}")


def test_a_signed_webhook_channel_signs_its_body_with_its_secret(
    receiver: Receiver, local: None
) -> None:
    """A3 through a channel: the HMAC of the raw body under the channel's secret."""
    owner = make_user("hooker")
    channel = channels.channel_add(
        actor=owner, kind="webhook", name="Ours", url=receiver.url, secret="chan-secret"
    )
    delivery = channels.channel_send_test(actor=owner, channel=channel)
    assert notify.delivery_send(delivery.pk) == "sent"
    [request] = receiver.received
    expected = "sha256=" + hmac.new(b"chan-secret", request["body"], hashlib.sha256).hexdigest()
    assert request["headers"]["X-OSAI-Usage-Signature"] == expected
    body = json.loads(request["body"])
    assert body["delivery"] == delivery.key and body["test"] is True
    with pytest.raises(channels.ChannelError, match="needs a secret"):
        channels.channel_add(actor=owner, kind="webhook", name="Unsigned", url=receiver.url)


# --- A team's email channel: its current admins, resolved when sent (A8) ----------------------


def test_a_team_email_channel_goes_to_the_current_admins_only(
    world: World, mailoutbox: list[Any]
) -> None:
    w = world
    for user, address in ((w.team_admin, "admin@example.com"), (w.owner, "owner@example.com")):
        user.email = address
        user.save()
    channel = channels.channel_add(
        actor=w.team_admin, kind="email", name="Admins", team=w.team, to_team_admins=True
    )
    # Queued while the owner is a member; the owner is made an admin before it is sent.
    first = channels.channel_send_test(actor=w.team_admin, channel=channel)
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="admin")
    assert notify.delivery_send(first.pk) == "sent"
    assert sorted(mailoutbox[-1].to) == ["admin@example.com", "owner@example.com"]
    # Made a viewer since: the next message leaves them out.
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="viewer")
    second = channels.channel_send_test(actor=w.team_admin, channel=channel)
    assert notify.delivery_send(second.pk) == "sent"
    assert mailoutbox[-1].to == ["admin@example.com"]
    assert first.target == second.target == ""  # nobody's address is kept in the outbox
    # A viewer's address is refused on a team channel; a viewer manages no team channel.
    with pytest.raises(channels.ChannelError, match=r"finance@example\.com"):
        channels.channel_add(
            actor=w.team_admin, kind="email", name="F", team=w.team, emails=["finance@example.com"]
        )
    with pytest.raises(channels.ChannelError, match="Only the team's admins"):
        channels.channel_add(
            actor=w.team_viewer, kind="email", name="F", team=w.team, to_team_admins=True
        )
    with pytest.raises(channels.ChannelError):
        channels.channel_send_test(actor=w.team_viewer, channel=channel)


def test_a_team_budget_takes_only_the_teams_channels(world: World, local: None) -> None:
    w = world
    own = channels.channel_add(actor=w.team_admin, kind="email", name="Me", emails=["a@b.co"])
    with pytest.raises(budgets.BudgetError, match="channels of the team"):
        budgets.budget_set(
            actor=w.team_admin, scope="team", team=w.team, amount="9", channels=[own]
        )
    with pytest.raises(budgets.BudgetError, match="channels of your own"):
        budgets.budget_set(actor=w.owner, scope="person", amount="9", channels=[own])


# --- A2: the SSRF guard, when a channel is added and when it is used ------------------------


@pytest.mark.parametrize("address", ["10.0.0.5", "169.254.169.254", "127.0.0.1"])
def test_a_url_that_resolves_inside_is_refused_when_added_and_when_sent(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    owner = make_user("guarded")
    fake_dns(monkeypatch, address)
    with pytest.raises(channels.ChannelError, match="not on the public internet"):
        channels.channel_add(actor=owner, kind="slack", name="S", url=SLACK_URL)
    with pytest.raises(channels.ChannelError, match="https only"):
        channels.channel_add(actor=owner, kind="teams", name="T", url="http://example.com/x")
    assert not Channel.objects.exists()
    # Public when added; the name points inside by the time it is used (DNS rebinding).
    fake_dns(monkeypatch, "93.184.216.34")
    channel = channels.channel_add(actor=owner, kind="slack", name="S", url=SLACK_URL)
    fake_dns(monkeypatch, address)
    delivery = channels.channel_send_test(actor=owner, channel=channel)
    assert notify.delivery_send(delivery.pk) == "refused"
    delivery.refresh_from_db()
    assert delivery.state == Delivery.State.FAILED
    assert "not on the public internet" in delivery.last_error
    assert "CANARY" not in delivery.last_error


# --- At rest: encrypted, shown as a hint, rotated ------------------------------------------------


def test_channel_urls_and_secrets_are_encrypted_at_rest_and_shown_as_a_hint(
    monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """T1/T4 for channels: no URL or secret in a database dump; the hint is the host and the
    last four characters; re-encryption rotates both and a second run changes nothing."""
    from io import StringIO

    from cryptography.fernet import Fernet

    fake_dns(monkeypatch, "93.184.216.34")
    owner = make_user("atrest")
    slack = channels.channel_add(actor=owner, kind="slack", name="S", url=SLACK_URL)
    hook_url = "https://hooks.example.com/in/CANARYhookPATH"
    hook = channels.channel_add(
        actor=owner, kind="webhook", name="W", url=hook_url, secret="CANARY-chan-secret"
    )
    assert slack.url_hint == "hooks.slack.com …9z81"
    assert hook.url_hint == "hooks.example.com …PATH"
    with db.cursor() as cursor:
        cursor.execute("SELECT * FROM reports_channel")
        rows = repr(cursor.fetchall())
    dump = StringIO()
    call_command("dumpdata", "reports.channel", stdout=dump)
    for text in (rows, dump.getvalue()):
        assert "CANARY" not in text and "hooks.slack.com/services" not in text
    new_key = Fernet.generate_key().decode()
    settings.OSAI_TOKEN_KEYS = [new_key, *settings.OSAI_TOKEN_KEYS]
    out = StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "Channel 2 (2 changed)" in out.getvalue()
    settings.OSAI_TOKEN_KEYS = [new_key]
    slack.refresh_from_db()
    hook.refresh_from_db()
    assert slack.url == SLACK_URL
    assert hook.url == hook_url
    out = StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "Channel 2 (0 changed)" in out.getvalue()


def test_a_deleted_channel_refuses_its_waiting_message(local: None, receiver: Receiver) -> None:
    owner = make_user("deleter")
    channel = channels.channel_add(actor=owner, kind="slack", name="S", url=receiver.url)
    delivery = channels.channel_send_test(actor=owner, channel=channel)
    channels.channel_delete(actor=owner, channel=channel)
    assert notify.delivery_send(delivery.pk) == "refused"
    delivery.refresh_from_db()
    assert delivery.last_error == "Not sent: its channel was deleted."
    assert receiver.received == [] and mail.outbox == []
