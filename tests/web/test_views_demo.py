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


# --- The budget's promise (README): the first tracking refresh alerts, on every day -----------


def _fetch_like_the_sandbox() -> int:
    """Finish every unfinished bucket of the demo accounts with what the sandbox answers for
    it (its usage model, in this process: the sandbox process keeps the real clock, and the
    guard's edges may be in its future). Returns how many were finished."""
    from django.utils import timezone

    from osai.sandbox.server import account_id_for_token
    from osai.sandbox.usage import account_totals
    from reports.management.commands.seed_demo import MEMBER_TOKEN
    from reports.metrics import OSAI_FIELD_TO_COLUMN
    from reports.models import Bucket
    from reports.pipeline.buckets import bucket_done

    now = timezone.now()
    accounts = {
        "demo": account_id_for_token(DEMO_TOKEN),
        "dana": account_id_for_token(MEMBER_TOKEN),
    }
    active = list(Bucket.objects.active().select_related("connection__owner"))
    for bucket in active:
        account = accounts[bucket.connection.owner.get_username()]
        totals = account_totals(account, bucket.period_start, bucket.period_end, as_of=now)
        for field, column in OSAI_FIELD_TO_COLUMN.items():
            setattr(bucket, column, float(totals[field]))
        bucket.state = Bucket.State.DONE
        bucket.finished_at = now
        bucket.osai_created_at = now
        bucket.save()
        # As the pipeline finishes a bucket: the spend ledger writes its rows.
        bucket_done.send(sender=Bucket, bucket_id=bucket.pk)
    return len(active)


def _refresh_and_check(connection: Connection) -> list[Any]:
    """What the worker does after a tracking refresh it fetched: check the connection's
    budgets (reports/tasks.py `tracking_bucket_done`). Returns the month's alerts."""
    from reports import tasks
    from reports.models import Alert

    _fetch_like_the_sandbox()
    assert tasks.tracking_bucket_done(connection.pk).startswith("checked 1 budgets")
    return list(Alert.objects.filter(budget__owner=connection.owner).order_by("threshold"))


@pytest.mark.month_edges
def test_the_first_tracking_refresh_after_seeding_alerts_past_80_percent(
    osai_clock: Any, queue: Any, mailoutbox: list[Any]
) -> None:
    """README: seed_demo "sets a budget that this month's spend has already passed 80 % of, so
    the first tracking refresh writes an alert email". On every day: at the real clock and at
    the month edges (tests/support/clock.py). Only in a month's first hours, while less than
    80 % of the smallest budget (0.01) is spent, can no budget keep that promise: seed_demo
    says so, and the hourly refresh that passes it alerts."""
    from datetime import timedelta
    from decimal import Decimal

    import time_machine
    from django.utils import timezone

    from reports.models import Budget, Delivery
    from reports.spend import notify, tracking
    from reports.spend.monthly import budget_status

    seeded_at = timezone.now()
    out = StringIO()
    call_command("seed_demo", stdout=out)
    demo = Connection.objects.get(owner__username="demo")
    budget = Budget.objects.get(owner=demo.owner, scope=Budget.Scope.PERSON)
    alerts = _refresh_and_check(demo)
    status = budget_status(budget)
    if alerts:
        assert 80 in [a.threshold for a in alerts]
        assert status.percent >= 80
        assert "under 80 %" not in out.getvalue()
    else:
        # The first hours of a month: the smallest budget, and the seed says why no alert yet.
        assert (seeded_at.day, budget.amount) == (1, Decimal("0.01"))
        assert status.percent < 80
        assert "is under 80 % of the smallest budget" in out.getvalue()
        # The hourly refresh that passes it alerts, within the day's first hours.
        for hours in range(1, 13):
            with time_machine.travel(seeded_at + timedelta(hours=hours)):
                tracking.tracking_refresh_all()
                alerts = _refresh_and_check(demo)
            if 80 in [a.threshold for a in alerts]:
                break
        assert 80 in [a.threshold for a in alerts], "no alert in the 1st's first 12 hours"
    # An email to the demo address, naming the highest threshold passed (into var/mail when
    # `make run` sends it).
    delivery = Delivery.objects.filter(budget=budget).latest("pk")
    notify.delivery_send(delivery.pk)
    [email] = mailoutbox
    assert email.to == ["demo@example.com"]
    assert email.subject == f"Budget alert: {alerts[-1].threshold} % of All of demo's connections"


# --- The demo's anomaly (N5): `make run` shows one on the team page ---------------------------


def test_the_demos_spike_is_flagged_and_shown_on_the_team_page() -> None:
    """What `make run` does: the spike `demo_spike` gives the sandbox is in the day's bucket
    when tracking fetches it, and the detector (after the refresh) flags it: far above the
    usual of the held days before it, whatever today is."""
    from datetime import date

    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from reports import tasks
    from reports.management.commands.seed_demo import (
        DEMO_TEAM,
        MEMBER_CONNECTION,
        SPIKE_FIELD,
        demo_spike,
    )
    from reports.metrics import OSAI_FIELD_TO_COLUMN
    from reports.models import Anomaly, Bucket, Team

    call_command("seed_demo", stdout=StringIO())
    spike = demo_spike(timezone.now())
    assert spike["add"][SPIKE_FIELD] >= 36_000
    _fetch_like_the_sandbox()
    dana = Connection.objects.get(label=MEMBER_CONNECTION)
    day = date.fromisoformat(spike["day"])
    column = OSAI_FIELD_TO_COLUMN[SPIKE_FIELD]
    buckets = Bucket.objects.filter(connection=dana, period_start__date=day, tracked=True)
    held = [b for b in buckets if (b.period_end - b.period_start).days == 1]
    assert held, "tracking holds the spike's day"
    for bucket in held:  # as the sandbox answers once the spike is in
        setattr(bucket, column, getattr(bucket, column) + spike["add"][SPIKE_FIELD])
        bucket.save(update_fields=[column])
    tasks.tracking_bucket_done(dana.pk)
    anomaly = Anomaly.objects.get(connection=dana, day=day, column=column)
    assert anomaly.kind == "spike"
    team = Team.objects.get(name=DEMO_TEAM)
    client = Client()
    client.force_login(team.memberships.get(user__username="demo").user)
    body = client.get(reverse("anomaly_list") + f"?team={team.pk}").content.decode()
    assert "training on 16 GB workers on Dana&#x27;s lab" in body
    page = client.get(reverse("team_detail", args=[team.pk]) + "?period=last_12_months")
    assert 'class="anomaly-flag"' in page.content.decode()
