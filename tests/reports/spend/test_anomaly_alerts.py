"""Anomaly alerts (reports/spend/anomaly_alerts.py, A12): once per anomaly through the outbox,
never for an expected one or a new connection's old history, the person's opt-out, a team's
channels resolved to its current admins when sent, and a kill between sending and recording
costing at most one duplicate with the same key (A1)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.db.models import F

from reports import tasks
from reports.metrics import METRIC_BY_COLUMN
from reports.models import (
    Anomaly,
    Channel,
    Connection,
    Delivery,
    DigestPreference,
    DigestSent,
    Membership,
    PriceBookVersion,
)
from reports.spend import anomalies, anomaly_alerts, channels, digests, notify, pricing
from reports.teams import roster
from reports.teams.price_books import price_book_copy
from tests.factories import make_connection, make_team, make_user, share_with
from tests.reports.spend.test_anomalies import HOUR, NORMAL, TRAINING_16, at, held_days
from tests.support.receiver import Receiver
from tests.support.vendor_payloads import slack_problems, teams_problems
from tests.support.world import World

pytestmark = pytest.mark.django_db

FOUND = at(28)  # the spike's day (day 28) has just closed
SPIKE_DAY = "2025-03-31"
CAUSE = "Training on 16 GB workers on Dana's lab: EUR 210.00 against a usual EUR"


@pytest.fixture
def lab(book: Any) -> Connection:
    owner = make_user("dana", email="dana@example.com")
    return make_connection(owner, "Dana's lab")


@pytest.fixture
def book() -> Any:
    from tests.factories import ensure_example_price_book

    return ensure_example_price_book()


def spike(connection: Connection, now: Any = FOUND) -> Anomaly:
    """A 100x day of 16 GB training on day 28, detected at `now`."""
    held_days(connection, anomalies_start(), [*NORMAL, {TRAINING_16: 100 * HOUR}])
    anomalies.detect(connection, now=now)
    return Anomaly.objects.get()


def anomalies_start() -> Any:
    from tests.reports.spend.test_anomalies import START

    return START


def send_all() -> list[str]:
    return [
        notify.delivery_send(pk)
        for pk in Delivery.objects.order_by("pk").values_list("pk", flat=True)
    ]


def test_an_anomaly_alerts_its_owner_once_by_email_naming_the_connection_and_category(
    lab: Connection,
) -> None:
    anomaly = spike(lab)
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == [anomaly]
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == []  # once (A1)
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.target, delivery.anomaly) == (
        "email",
        "dana@example.com",
        anomaly,
    )
    assert send_all() == ["sent"]
    assert notify.delivery_send(delivery.pk).startswith("not claimed")
    [message] = mail.outbox
    assert message.to == ["dana@example.com"]
    assert message.subject == (
        f"Usage spike on Dana's lab: training on 16 GB workers on {SPIKE_DAY}"
    )
    assert CAUSE in message.body and "Category: Training." in message.body
    assert "http://127.0.0.1:8000/anomalies/" in message.body
    assert message.extra_headers["X-OSAI-Usage-Delivery"] == delivery.key
    anomaly.refresh_from_db()
    assert anomaly.alerted_at == FOUND


def test_the_tracking_hook_queues_once_and_the_database_claims_each_anomaly_once(
    lab: Connection, monkeypatch: Any, time_machine: Any
) -> None:
    time_machine.move_to(FOUND)
    held_days(lab, anomalies_start(), [*NORMAL, {TRAINING_16: 100 * HOUR}])
    assert tasks.tracking_bucket_done(lab.pk).endswith("1 new anomalies, 1 anomaly alerts queued")
    assert tasks.tracking_bucket_done(lab.pk).endswith(", 0 new anomalies")
    assert Delivery.objects.count() == 1
    # A second worker that read the anomaly before the first claimed it queues nothing.
    Anomaly.objects.update(alerted_at=None)
    real_filter = Anomaly.objects.filter
    claimed_elsewhere = []

    def filter_then_claim(*args: Any, **kwargs: Any) -> Any:
        rows = real_filter(*args, **kwargs)
        if "pk" in kwargs and not claimed_elsewhere:
            claimed_elsewhere.append(real_filter(pk=kwargs["pk"]).update(alerted_at=FOUND))
        return rows

    monkeypatch.setattr(Anomaly.objects, "filter", filter_then_claim)
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == []
    assert claimed_elsewhere == [1] and Delivery.objects.count() == 1


def test_an_expected_anomaly_never_alerts_even_once_queued(lab: Connection) -> None:
    anomaly = spike(lab)
    Anomaly.objects.update(feedback=Anomaly.Feedback.EXPECTED)
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == []
    assert not Delivery.objects.exists()
    # Queued, then marked expected before it was sent: refused, nothing sent.
    Anomaly.objects.update(feedback="")
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == [anomaly]
    Anomaly.objects.update(feedback=Anomaly.Feedback.EXPECTED)
    assert send_all() == ["refused"]
    assert Delivery.objects.get().last_error == "Not sent: its anomaly was marked as expected."
    assert mail.outbox == []


def test_opting_out_after_queueing_stops_the_persons_own_waiting_messages_not_the_teams(
    lab: Connection, receiver: Receiver, local: None
) -> None:
    """A12: the opt-out is asked again when sending, beside "expected": the owner's own
    channels (a Slack one, and an email one to an address that is not theirs) are refused
    with a reason their channels page shows; the team's channels are not the person's and
    still go."""
    owner = lab.owner
    admin = make_user("ada", email="ada@example.com")
    team = make_team("Vision", admins=[admin], members=[owner])
    share_with(team, lab)
    own_slack = channels.channel_add(actor=owner, kind="slack", name="Mine", url=receiver.url)
    own_mail = channels.channel_add(
        actor=owner, kind="email", name="Ops list", emails=["ops@example.com"]
    )
    team_mail = channels.channel_add(
        actor=admin, kind="email", name="Admins", team=team, to_team_admins=True
    )
    team_slack = channels.channel_add(
        actor=admin, kind="slack", name="Team", team=team, url=receiver.url
    )
    spike(lab)
    assert len(anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)) == 1
    queued = {d.via_id: d for d in Delivery.objects.all()}
    assert set(queued) == {own_slack.pk, own_mail.pk, team_mail.pk, team_slack.pk}
    DigestPreference.objects.create(user=owner, anomalies=False)  # after queueing
    assert sorted(send_all()) == ["refused", "refused", "sent", "sent"]
    why = 'Not sent: its owner turned off "Email me about usage anomalies" after it was queued.'
    for channel in (own_slack, own_mail):
        delivery = Delivery.objects.get(pk=queued[channel.pk].pk)
        assert (delivery.state, delivery.last_error) == (Delivery.State.FAILED, why)
    for channel in (team_mail, team_slack):
        assert Delivery.objects.get(pk=queued[channel.pk].pk).state == Delivery.State.SENT
    assert [r["headers"]["X-OSAI-Usage-Delivery"] for r in receiver.received] == [
        queued[team_slack.pk].key
    ]
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]  # never ops@example.com
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(owner)
    page = client.get(reverse("channel_list")).content.decode()
    assert page.count("Not sent: its owner turned off &quot;Email me about usage anomalies") == 2


def test_opting_out_after_queueing_stops_the_owners_own_address_too(lab: Connection) -> None:
    """Without channels the owner's alert goes to their address: refused the same way."""
    spike(lab)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    DigestPreference.objects.create(user=lab.owner, anomalies=False)
    assert send_all() == ["refused"]
    delivery = Delivery.objects.get()
    assert (delivery.state, delivery.via, delivery.target) == ("failed", None, "dana@example.com")
    assert delivery.last_error.startswith("Not sent: its owner turned off")
    assert mail.outbox == []


def test_a_new_connections_old_history_never_alerts(lab: Connection, settings: Any) -> None:
    """The spike is 33 days old when the connection's history is first judged."""
    later = FOUND + timedelta(days=33)
    spike(lab, now=later)
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=later) == []
    assert not Delivery.objects.exists()
    settings.OSAI_ANOMALY_ALERT_DAYS = 40  # a longer reach alerts it
    assert len(anomaly_alerts.anomaly_alerts_queue(lab, now=later)) == 1


def test_the_owners_channels_replace_their_email_and_opting_out_stops_them(
    lab: Connection, receiver: Receiver, local: None
) -> None:
    owner = lab.owner
    slack = channels.channel_add(actor=owner, kind="slack", name="Ops", url=receiver.url)
    DigestPreference.objects.create(user=owner, anomalies=False)
    spike(lab)
    assert len(anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)) == 1  # claimed, sent nowhere
    assert not Delivery.objects.exists()
    DigestPreference.objects.filter(user=owner).update(anomalies=True)
    Anomaly.objects.update(alerted_at=None)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    [delivery] = Delivery.objects.all()
    assert (delivery.channel, delivery.via, delivery.target) == ("slack", slack, "")
    assert send_all() == ["sent"]
    [request] = receiver.received
    body = json.loads(request["body"])
    assert slack_problems(body) == []
    assert body["text"] == f"Usage spike on Dana's lab: training on 16 GB workers on {SPIKE_DAY}"
    assert CAUSE in body["blocks"][1]["text"]["text"]
    assert request["headers"]["X-OSAI-Usage-Delivery"] == delivery.key
    assert delivery.key in request["body"].decode()


def test_a_shared_connection_alerts_the_teams_channels_resolved_to_its_current_admins(
    book: Any, lab: Connection, receiver: Receiver, local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A8/A9: the team's email channel reaches its admins as they are when it is sent, never
    a viewer or someone who opted out; the team's message is priced in the team's book."""
    owner = lab.owner
    admin = make_user("ada", email="ada@example.com")
    other_admin = make_user("ole", email="ole@example.com")
    viewer = make_user("vic", email="vic@example.com")
    team = make_team("Vision", admins=[admin, other_admin], members=[owner], viewers=[viewer])
    share_with(team, lab)
    # The team's own book prices 16 GB training at twice the default's.
    own_book = price_book_copy(team=team, actor=admin, source=book, name="Vision rates")
    rate = METRIC_BY_COLUMN[TRAINING_16].rate_field
    assert rate is not None
    PriceBookVersion.objects.filter(price_book=own_book).update(**{rate: F(rate) * 2})
    team.price_book = own_book
    team.save()
    team_mail = channels.channel_add(
        actor=admin, kind="email", name="Admins", team=team, to_team_admins=True
    )
    teams = channels.channel_add(
        actor=admin, kind="teams", name="Team chat", team=team, url=receiver.url
    )
    hook = channels.channel_add(
        actor=admin, kind="webhook", name="Ours", team=team, url=receiver.url, secret="s3cret"
    )
    stranger_team = make_team("Elsewhere", admins=[make_user("eve", email="eve@example.com")])
    channels.channel_add(
        actor=stranger_team.memberships.get().user,
        kind="email",
        name="E",
        team=stranger_team,
        to_team_admins=True,
    )
    spike(lab)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    deliveries = list(Delivery.objects.order_by("pk"))
    assert [(d.channel, d.via) for d in deliveries] == [
        ("email", None),  # the owner, who has no channel of their own
        ("email", team_mail),  # the team's, by name
        ("webhook", hook),
        ("teams", teams),
    ]
    assert all(d.target in ("", "dana@example.com") for d in deliveries)
    # Before it is sent: one admin leaves the admins, the other opts out; a new one joins.
    roster.team_member_set_role(team=team, actor=admin, user=other_admin, role="viewer")
    newcomer = make_user("nia", email="nia@example.com")
    roster.team_member_add(team=team, actor=admin, who="nia", role="admin")
    DigestPreference.objects.create(user=admin, anomalies=False)
    assert send_all() == ["sent"] * 4
    by_to = sorted(sorted(m.to) for m in mail.outbox)
    assert by_to == [["dana@example.com"], [newcomer.email]]
    posts = {
        r["headers"]["X-OSAI-Usage-Delivery"]: json.loads(r["body"]) for r in receiver.received
    }
    card = posts[deliveries[3].key]
    assert teams_problems(card) == []
    content = card["attachments"][0]["content"]
    team_cause = CAUSE.replace("EUR 210.00", "EUR 420.00")  # in the team's book
    assert team_cause in content["body"][1]["text"]
    owners = next(m for m in mail.outbox if m.to == ["dana@example.com"])
    assert CAUSE in owners.body  # the owner's: the default book
    facts = {f["title"]: f["value"] for f in content["body"][2]["facts"]}
    assert facts["Team"] == "Vision" and facts["Category"] == "Training"
    assert content["actions"][0]["url"] == "http://127.0.0.1:8000/anomalies/"
    signed = posts[deliveries[2].key]
    assert signed["delivery"] == deliveries[2].key
    assert signed["anomaly"]["connection"] == "Dana's lab"
    assert signed["anomaly"]["category"] == "training" and signed["team"]["name"] == "Vision"
    everything = json.dumps([d.payload for d in deliveries]) + "".join(d.text for d in deliveries)
    assert receiver.url not in everything and "s3cret" not in everything
    with capsys.disabled():
        print(f"\nteams anomaly body as sent: {json.dumps(card, ensure_ascii=False)}")


def test_a_worker_killed_between_sending_and_recording_sends_once_more_with_the_same_key(
    lab: Connection,
    receiver: Receiver,
    local: None,
    monkeypatch: Any,
    settings: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channels.channel_add(actor=lab.owner, kind="slack", name="Ops", url=receiver.url)
    spike(lab)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    [delivery] = Delivery.objects.all()

    class Killed(BaseException):
        """What SIGKILL does to the attempt: nothing after the send runs."""

    def die(name: str) -> None:
        if name == "after_send":
            raise Killed

    monkeypatch.setattr(notify, "failpoint", die)
    with pytest.raises(Killed):
        notify.delivery_send(delivery.pk)
    monkeypatch.undo()
    # Its lease still holds: nobody sends it meanwhile; once it runs out, it goes once more.
    assert notify.delivery_send(delivery.pk).startswith("not claimed")
    later = delivery.created_at + timedelta(seconds=settings.ALERT_DELIVERY_LEASE_SECONDS + 1)
    assert notify.delivery_send(delivery.pk, now=later) == "sent"
    assert notify.delivery_send(delivery.pk).startswith("not claimed")
    keys = [r["headers"]["X-OSAI-Usage-Delivery"] for r in receiver.received]
    assert keys == [delivery.key, delivery.key]  # one duplicate, the same key
    bodies = [json.loads(r["body"]) for r in receiver.received]
    assert bodies[0] == bodies[1] and delivery.key in json.dumps(bodies[0])
    assert anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND) == []
    with capsys.disabled():
        print(f"\nslack anomaly body as sent: {json.dumps(bodies[0], ensure_ascii=False)}")


def test_the_opt_out_is_on_the_digest_settings_page_and_on_by_default(lab: Connection) -> None:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(lab.owner)
    page = client.get(reverse("digest_settings")).content.decode()
    assert "Email me about usage anomalies" in page
    assert re.search(r'<input type="checkbox" name="anomalies"[^>]*checked', page)
    client.post(reverse("digest_settings"), {"weekly": "on", "monthly": "on"})
    assert DigestPreference.objects.get(user=lab.owner).anomalies is False
    assert not notify.wants_anomaly_alerts(lab.owner.pk)


# --- Digests: the period's anomalies, and a team's digest to the team's channels ---------------


def dana_week(lab: Connection, start: datetime, *, now: datetime) -> digests.Digest:
    """Dana's weekly digest of the week from `start`, made at `now`."""
    return digests.digest_for(
        kind=digests.WEEKLY,
        start=start,
        end=start + timedelta(days=7),
        name="dana",
        connections=[lab],
        price_book=pricing.default_price_book(),
        budgets=[],
        csv_query={},
        now=now,
    )


def test_a_digest_lists_the_periods_anomalies_with_their_causes(lab: Connection) -> None:
    anomaly = spike(lab)
    week = anomaly.day  # 2025-03-31, a Monday
    start = datetime(week.year, week.month, week.day, tzinfo=UTC)
    digest = dana_week(lab, start, now=start + timedelta(days=8))
    lines = digest.text.splitlines()
    at_ = lines.index("Anomalies (1):")
    assert lines[at_ + 1].startswith(f"- {SPIKE_DAY}: {CAUSE}")
    Anomaly.objects.update(feedback=Anomaly.Feedback.EXPECTED)
    again = dana_week(lab, start, now=start + timedelta(days=8))
    assert again.text.splitlines()[at_ + 1].endswith("(marked as expected)")
    before = dana_week(lab, start - timedelta(days=7), now=start + timedelta(days=8))
    assert "Anomalies" not in before.text


def test_a_teams_digest_goes_to_its_channels_once_resolved_to_its_current_admins(
    world: World, receiver: Receiver, local: None
) -> None:
    """The team's channels replace its admins' own emails; a viewer who opted in keeps theirs;
    the team's email channel reaches the admins as they are when it is sent (A8)."""
    w = world
    monday = datetime(2026, 3, 16, 7, tzinfo=UTC)
    for user in (w.team_admin, w.team_member, w.owner):
        user.email = f"{user.username}@example.com"
        user.save()
    Membership.objects.filter(team=w.team, user=w.team_viewer).update(team_digest=True)
    admins = channels.channel_add(
        actor=w.team_admin, kind="email", name="Admins", team=w.team, to_team_admins=True
    )
    slack = channels.channel_add(
        actor=w.team_admin, kind="slack", name="Team chat", team=w.team, url=receiver.url
    )
    digests.digests_send(now=monday)
    team_ones = [d for d in Delivery.objects.order_by("pk") if "team Vision" in d.subject]
    assert sorted((d.channel, d.target, d.via_id or 0) for d in team_ones) == sorted(
        [("email", "finance@example.com", 0), ("email", "", admins.pk), ("slack", "", slack.pk)]
    )
    assert digests.digests_send(now=monday) == 0  # once per period
    # Made an admin after it was queued: the team's email reaches them too when it is sent.
    roster.team_member_set_role(team=w.team, actor=w.team_admin, user=w.owner, role="admin")
    for delivery in team_ones:
        assert notify.delivery_send(delivery.pk) == "sent"
    to = sorted(sorted(m.to) for m in mail.outbox)
    assert to == [["admin@example.com", "owner@example.com"], ["finance@example.com"]]
    [request] = receiver.received
    body = json.loads(request["body"])
    assert slack_problems(body) == [] and "team Vision" in body["text"]
    # A team without channels: its admins by email, as before.
    Channel.objects.filter(team=w.team).delete()
    DigestSent.objects.all().delete()
    Delivery.objects.all().delete()
    digests.digests_send(now=monday)
    targets = {d.target for d in Delivery.objects.all() if "team Vision" in d.subject}
    assert targets == {"admin@example.com", "owner@example.com", "finance@example.com"}


# --- Retention (R4) ---------------------------------------------------------------------------


def test_anomalies_are_kept_13_months_and_while_a_kept_message_names_them(
    lab: Connection, settings: Any
) -> None:
    import io

    from django.core.management import call_command

    from reports import retention

    now = datetime(2026, 6, 15, 12, tzinfo=UTC)

    def anomaly(day: str) -> Anomaly:
        return Anomaly.objects.create(
            connection=lab,
            column=TRAINING_16,
            day=datetime.fromisoformat(day).date(),
            actual=1.0,
            expected_low=0.0,
            expected_high=0.5,
        )

    def message(about: Anomaly, state: str, age_days: int) -> Delivery:
        return Delivery.objects.create(
            key=f"k{about.pk}",
            channel="email",
            target="dana@example.com",
            subject="s",
            text="t",
            anomaly=about,
            state=state,
            created_at=now - timedelta(days=age_days),
        )

    old = anomaly("2025-05-31")  # the month before the 13 kept (June 2025 to June 2026)
    named_by_waiting = anomaly("2025-05-10")
    message(named_by_waiting, Delivery.State.PENDING, 400)
    named_by_old_sent = anomaly("2025-05-11")
    message(named_by_old_sent, Delivery.State.SENT, 390)  # past OSAI_RETAIN_DELIVERIES_DAYS
    kept = [anomaly("2025-06-01"), anomaly("2026-06-14")]
    assert anomaly_alerts.anomalies_kept_from(now).isoformat() == "2025-06-01"

    out = io.StringIO()
    from unittest import mock

    with mock.patch("django.utils.timezone.now", return_value=now):
        call_command("prune", "--dry-run", stdout=out)
        assert "anomalies: would delete 2" in out.getvalue().splitlines()
        assert Anomaly.objects.count() == 5
        counts = retention.prune()
    assert counts["anomalies"] == 2
    assert set(Anomaly.objects.values_list("pk", flat=True)) == {
        named_by_waiting.pk,
        *(a.pk for a in kept),
    }
    assert not Anomaly.objects.filter(pk__in=[old.pk, named_by_old_sent.pk]).exists()
    # However short the setting, this month's and last month's stay.
    settings.OSAI_RETAIN_ANOMALIES_MONTHS = 0
    last_month = anomaly("2026-05-01")
    assert retention.prune(now=now)["anomalies"] == 1  # 2025-06-01
    assert set(Anomaly.objects.values_list("pk", flat=True)) == {
        named_by_waiting.pk,
        kept[1].pk,
        last_month.pk,
    }


def test_only_an_account_that_verified_an_address_silences_its_anomaly_emails(
    lab: Connection,
) -> None:
    """A12 and S14: an account made by single sign-on on someone else's address, which its
    provider did not verify, turns off "Email me about usage anomalies": the address's owner,
    a team admin, still gets the team's anomaly email. Their own opt-out stops it."""
    admin = make_user("ada", email="ada@example.com")
    squatter = make_user("squatter", email="ADA@example.com")
    EmailAddress.objects.create(user=squatter, email="ADA@example.com", verified=False)
    DigestPreference.objects.create(user=squatter, anomalies=False)
    team = make_team("Vision", admins=[admin], members=[lab.owner])
    share_with(team, lab)
    channels.channel_add(actor=admin, kind="email", name="Admins", team=team, to_team_admins=True)
    spike(lab)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    assert notify.anomaly_alerts_stopped(["ada@example.com"]) == set()
    assert send_all() == ["sent", "sent"]
    assert sorted(m.to for m in mail.outbox) == [["ada@example.com"], ["dana@example.com"]]

    DigestPreference.objects.create(user=admin, anomalies=False)
    assert notify.anomaly_alerts_stopped(["Ada@example.com"]) == {"ada@example.com"}


def test_an_address_single_sign_on_left_unverified_is_never_emailed(lab: Connection) -> None:
    """S14 and A8: a team admin and a connection's owner whose accounts single sign-on made
    with an address its provider did not verify get no anomaly email, neither the team's "to
    the team's admins" nor the owner's own; the admin who verified theirs does."""
    verified_admin = make_user("ada", email="ada@example.com")
    EmailAddress.objects.create(user=verified_admin, email="ada@example.com", verified=True)
    unverified_admin = make_user("eve", email="bob@example.com")
    EmailAddress.objects.create(user=unverified_admin, email="bob@example.com", verified=False)
    EmailAddress.objects.create(user=lab.owner, email="dana@example.com", verified=False)
    team = make_team("Vision", admins=[verified_admin, unverified_admin], members=[lab.owner])
    share_with(team, lab)
    channels.channel_add(
        actor=verified_admin, kind="email", name="Admins", team=team, to_team_admins=True
    )
    spike(lab)
    anomaly_alerts.anomaly_alerts_queue(lab, now=FOUND)
    assert send_all() == ["sent"]
    assert [m.to for m in mail.outbox] == [["ada@example.com"]]

    # Once a sign-in where the provider vouches for it verifies the address, it is emailed.
    assert [a.emails for a in anomaly_alerts.audiences(lab)] == [[]]  # the team's alone
    EmailAddress.objects.filter(user=lab.owner).update(verified=True)
    assert [a.emails for a in anomaly_alerts.audiences(lab)] == [["dana@example.com"], []]
