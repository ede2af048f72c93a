"""The pages: authorization matrix (S2), CSRF (S4), the status badge (S5, S6, P5, P7), tokens
never shown (T2), bad report requests (I1), history without N+1, and no off-site assets.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from reports import formatting
from reports.models import (
    Anomaly,
    Bucket,
    BucketFile,
    Channel,
    Connection,
    Delivery,
    Granularity,
    Invitation,
    Membership,
    Report,
    Team,
)
from reports.pipeline import connections
from tests import factories
from tests.support import figures
from tests.support.world import OWNER_TOKEN, World
from tests.support.world import ROLES as WORLD_ROLES

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
FEB = datetime(2026, 2, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
LOGIN_URL = "/accounts/login/"


@pytest.fixture(autouse=True)
def _frozen_time() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


def page_text(body: str) -> str:
    """The visible text of a page: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def first_bucket(report: Report) -> Bucket:
    bucket = Bucket.objects.filter(report_buckets__report=report).order_by("pk").first()
    assert bucket is not None
    return bucket


def client_for(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


# --- S2: the authorization matrix ---------------------------------------------------------------

ROLES = (*WORLD_ROLES, "anonymous")


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    url: Callable[[World], str]
    allowed: tuple[str, ...]  # roles that may use it; every other signed-in role gets 404
    ok_status: int
    htmx: bool = False
    # Something that must stay unchanged when the request is refused.
    snapshot: Callable[[World], Any] = lambda w: None


# Team reports show other people's spend: only the team's current admins and viewers see them,
# not the members whose connections they cover ("owner" owns the shared connection); only
# roles that may request a team report (admins) cancel or retry one (reports/access.py).
REPORT_ROLES = ("team_admin", "team_viewer")
REPORT_ACTION_ROLES = ("team_admin",)
PERSONAL_ROLES = ("owner",)
CONNECTION_ROLES = ("owner",)  # nobody else ever manages a connection

# (view, method, status when allowed, an htmx partial); a POST may change the report's state.
REPORT_VIEWS = (
    ("report_detail", "get", 200, False),
    ("report_status", "get", 286, True),
    ("report_charts", "get", 200, True),
    ("report_cancel", "post", 302, False),
    ("report_retry", "post", 302, False),
    ("bucket_raw_json", "get", 200, False),
)
# (view, method, status when allowed, what a refused request must leave unchanged)
CONNECTION_VIEWS: tuple[tuple[str, str, int, Callable[[Connection], Any] | None], ...] = (
    ("connection_edit", "get", 200, None),
    ("connection_edit", "post", 302, lambda c: c.label),
    ("connection_token", "get", 200, None),
    # No token given: the form again, nothing changed.
    ("connection_token", "post", 200, lambda c: c.token_encrypted),
    ("connection_delete", "get", 200, None),
    ("connection_delete", "post", 302, lambda c: "kept"),
)


def _report_endpoint(view: str, method: str, status: int, htmx: bool, kind: str) -> Endpoint:
    def url(w: World) -> str:
        report = getattr(w, kind)
        if view == "bucket_raw_json":
            return reverse(view, args=[report.pk, first_bucket(report).pk])
        return reverse(view, args=[report.pk])

    def state(w: World) -> Any:
        return Report.objects.get(pk=getattr(w, kind).pk).state if method == "post" else None

    if kind != "team_report":
        roles = PERSONAL_ROLES
    else:
        roles = REPORT_ACTION_ROLES if view in ("report_cancel", "report_retry") else REPORT_ROLES
    return Endpoint(f"{view}[{kind}]", method, url, roles, status, htmx=htmx, snapshot=state)


def _connection_endpoint(
    view: str, method: str, status: int, kept: Callable[[Connection], Any] | None
) -> Endpoint:
    def url(w: World) -> str:
        return reverse(view, args=[w.connection.pk])

    def state(w: World) -> Any:
        if kept is None:
            return None
        connection = Connection.objects.filter(pk=w.connection.pk).first()
        return "deleted" if connection is None else kept(connection)

    name = f"{view}[post]" if method == "post" else view
    return Endpoint(name, method, url, CONNECTION_ROLES, status, snapshot=state)


# Every page's CSV (reports/pages/downloads.py): of one's own connection's feed, its owner
# alone; the lists (the overview, budgets, alert logs, the feed, the history) hold only what
# each person sees, so everyone signed in gets one.
CSV_LISTS = (
    "overview_export_csv",
    "budget_list_export_csv",
    "budget_alerts_export_csv",
    "activity_export_csv",
    "report_history_export_csv",
)


def _csv_endpoints() -> list[Endpoint]:
    def feed(w: World) -> str:
        return reverse("activity_export_csv") + f"?connection={w.connection.pk}"

    lists = [
        Endpoint(name, "get", lambda w, n=name: reverse(n), WORLD_ROLES, 200) for name in CSV_LISTS
    ]
    return [*lists, Endpoint("activity_export_csv[connection]", "get", feed, CONNECTION_ROLES, 200)]


def _own_channel(w: World) -> Channel:
    return Channel.objects.get_or_create(
        owner=w.owner, kind="email", name="Mine", defaults={"emails": ["owner@example.com"]}
    )[0]


def _team_channel(w: World) -> Channel:
    return Channel.objects.get_or_create(
        team=w.team, kind="email", name="Admins", defaults={"to_team_admins": True}
    )[0]


def _channel_state(w: World) -> Any:
    """Channels and test messages: a refused request adds, removes and queues nothing."""
    return (
        sorted(Channel.objects.values_list("pk", flat=True)),
        Delivery.objects.count(),
    )


# Channels: a person's own, its owner alone; a team's, its admins (MANAGE_CHANNELS).
TEAM_CHANNEL_ROLES = ("team_admin",)


def _channel_endpoints() -> list[Endpoint]:
    found = [
        Endpoint("channel_list", "get", lambda w: reverse("channel_list"), WORLD_ROLES, 200),
        Endpoint(
            "team_channels",
            "get",
            lambda w: reverse("team_channels", args=[w.team.pk]),
            TEAM_CHANNEL_ROLES,
            200,
        ),
        Endpoint(
            "team_channels[post]",
            "post",
            lambda w: reverse("team_channels", args=[w.team.pk]),
            TEAM_CHANNEL_ROLES,
            200,  # nothing given: the form again, nothing added
            snapshot=_channel_state,
        ),
    ]
    for view in ("channel_test", "channel_delete"):
        for whose, channel, roles in (
            ("own", _own_channel, PERSONAL_ROLES),
            ("team", _team_channel, TEAM_CHANNEL_ROLES),
        ):
            found.append(
                Endpoint(
                    f"{view}[{whose}]",
                    "post",
                    lambda w, v=view, c=channel: reverse(v, args=[c(w).pk]),
                    roles,
                    302,
                    snapshot=_channel_state,
                )
            )
    return found


def _anomaly_of(connection: Callable[[World], Connection]) -> Callable[[World], Anomaly]:
    def anomaly(w: World) -> Anomaly:
        found = Anomaly.objects.filter(connection=connection(w)).first()
        return found or factories.make_anomaly(connection(w), datetime(2026, 3, 10).date())

    return anomaly


def _anomaly_endpoints() -> list[Endpoint]:
    """The Anomalies page and its CSV (one's own for everyone; a team's for its admins and
    viewers), and answering one: its connection's owner, and for a connection shared with a
    team, that team's admins (ANSWER_ANOMALIES); anyone else 404, nothing changed (N5)."""
    team_roles = ("team_admin", "team_viewer")
    found = [
        Endpoint("anomaly_list", "get", lambda w: reverse("anomaly_list"), WORLD_ROLES, 200),
        Endpoint(
            "anomaly_list[team]",
            "get",
            lambda w: reverse("anomaly_list") + f"?team={w.team.pk}",
            team_roles,
            200,
        ),
        Endpoint(
            "anomaly_export_csv", "get", lambda w: reverse("anomaly_export_csv"), WORLD_ROLES, 200
        ),
        Endpoint(
            "anomaly_export_csv[team]",
            "get",
            lambda w: reverse("anomaly_export_csv") + f"?team={w.team.pk}",
            team_roles,
            200,
        ),
    ]
    for whose, connection, roles in (
        ("shared", lambda w: w.connection, ("owner", "team_admin")),
        ("admin_lab", lambda w: w.admin_connection, ("team_admin",)),
        ("other_team", lambda w: w.other_connection, ("other_admin",)),
    ):
        anomaly = _anomaly_of(connection)
        found.append(
            Endpoint(
                f"anomaly_feedback[{whose}]",
                "post",
                lambda w, a=anomaly: reverse("anomaly_feedback", args=[a(w).pk]),
                roles,
                302,
                snapshot=lambda w, a=anomaly: Anomaly.objects.get(pk=a(w).pk).feedback,
            )
        )
    return found


# The audit log (M7): one's own entries and CSV for everyone signed in; a team's for its admins.
TEAM_AUDIT_ROLES = ("team_admin",)


def _invitation(w: World, team: str, email: str) -> Invitation:
    """A pending invitation (its token is not needed here: it is never stored)."""
    return Invitation.objects.get_or_create(
        team=getattr(w, team),
        email=email,
        defaults={
            "role": "member",
            "token_sha256": f"{team}-{email}".ljust(64, "0")[:64],
            "expires_at": timezone.now() + timedelta(days=7),
        },
    )[0]


def _invitation_state(w: World) -> Any:
    """What a refused withdraw, accept or decline must leave as it was."""
    return (
        sorted(Invitation.objects.values_list("pk", "accepted_at", "declined_at", "withdrawn_at")),
        sorted(Membership.objects.values_list("team_id", "user_id", "role")),
    )


def _audit_endpoints() -> list[Endpoint]:
    found = [
        Endpoint("audit_log", "get", lambda w: reverse("audit_log"), WORLD_ROLES, 200),
        Endpoint("audit_log_csv", "get", lambda w: reverse("audit_log_csv"), WORLD_ROLES, 200),
    ]
    for view in ("team_audit", "team_audit_csv"):
        found.append(
            Endpoint(
                view,
                "get",
                lambda w, v=view: reverse(v, args=[w.team.pk]),
                TEAM_AUDIT_ROLES,
                200,
            )
        )
    # Withdrawing one of the team's invitations: its admins. Accepting or declining one's own
    # (to finance@example.com, the viewer's address, into the other team): its invitee alone.
    found.append(
        Endpoint(
            "invitation_withdraw",
            "post",
            lambda w: reverse(
                "invitation_withdraw",
                args=[w.team.pk, _invitation(w, "team", "invitee@example.com").pk],
            ),
            ("team_admin",),
            302,
            snapshot=_invitation_state,
        )
    )
    for view in ("invitation_accept_mine", "invitation_decline_mine"):
        found.append(
            Endpoint(
                view,
                "post",
                lambda w, v=view: reverse(
                    v, args=[_invitation(w, "other_team", "finance@example.com").pk]
                ),
                ("team_viewer",),
                302,
                snapshot=_invitation_state,
            )
        )
    return found


def _endpoints() -> list[Endpoint]:
    return [
        *(
            _report_endpoint(*view, kind)
            for kind in ("team_report", "personal_report")
            for view in REPORT_VIEWS
        ),
        *(_connection_endpoint(*view) for view in CONNECTION_VIEWS),
        *_csv_endpoints(),
        *_channel_endpoints(),
        *_anomaly_endpoints(),
        *_audit_endpoints(),
    ]


ENDPOINTS = _endpoints()
MATRIX_RESULTS: list[tuple[str, bool]] = []


def _post_data(endpoint: Endpoint) -> dict[str, str]:
    if endpoint.name == "connection_edit[post]":
        return {"label": "Renamed"}
    if endpoint.name.startswith("anomaly_feedback"):
        return {"feedback": "expected"}
    return {}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: e.name)
def test_authorization_matrix(world: World, endpoint: Endpoint, role: str) -> None:
    cell = f"{endpoint.name} x {role}"
    passed = False
    try:
        url = endpoint.url(world)
        before = endpoint.snapshot(world)
        client = client_for(world.user(role))
        send = client.post if endpoint.method == "post" else client.get
        response = send(url, _post_data(endpoint))
        if role == "anonymous":
            assert response.status_code == 302
            assert response["Location"].startswith(f"{LOGIN_URL}?next=")
            if endpoint.htmx:
                htmx = send(
                    url, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=f"http://testserver{url}"
                )
                assert htmx.status_code == 200
                assert htmx["HX-Redirect"].startswith(f"{LOGIN_URL}?next=")
            assert endpoint.snapshot(world) == before
        elif role in endpoint.allowed:
            assert response.status_code == endpoint.ok_status, response.content[:300]
        else:
            assert response.status_code == 404
            assert endpoint.snapshot(world) == before
        passed = True
    finally:
        MATRIX_RESULTS.append((cell, passed))


def test_authorization_matrix_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the matrix (file order) and prints its size; any failed cell fails here too."""
    failures = [cell for cell, ok in MATRIX_RESULTS if not ok]
    figures.matrix("S2 authorization matrix", len(MATRIX_RESULTS), failures, capsys)
    assert not failures, failures


def test_a_team_admin_cannot_reach_a_members_personal_report_by_its_bucket(world: World) -> None:
    """The bucket id of a team report, asked for under a report the admin may not see: 404."""
    bucket = first_bucket(world.team_report)
    url = reverse("bucket_raw_json", args=[world.personal_report.pk, bucket.pk])
    assert client_for(world.team_admin).get(url).status_code == 404


def test_a_bucket_of_another_report_is_404_even_for_the_owner(world: World) -> None:
    other = factories.make_done_report(
        factories.make_user(),
        start=datetime(2025, 1, 1, tzinfo=UTC),
        end=datetime(2025, 2, 1, tzinfo=UTC),
    )
    url = reverse("bucket_raw_json", args=[world.personal_report.pk, first_bucket(other).pk])
    assert client_for(world.owner).get(url).status_code == 404


def test_raw_json_is_an_attachment_named_after_the_osai_report(world: World) -> None:
    bucket = first_bucket(world.personal_report)
    response = client_for(world.owner).get(
        reverse("bucket_raw_json", args=[world.personal_report.pk, bucket.pk])
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == (
        f'attachment; filename="osai-report-{bucket.osai_report_id}.json"'
    )
    assert response.content == b'{"status": 0}'


def test_raw_json_without_an_archived_file_is_404(world: World) -> None:
    bucket = Bucket.objects.filter(report_buckets__report=world.personal_report).order_by("-pk")[0]
    assert not BucketFile.objects.filter(bucket=bucket).exists()
    url = reverse("bucket_raw_json", args=[world.personal_report.pk, bucket.pk])
    assert client_for(world.owner).get(url).status_code == 404


def test_a_team_report_hides_connections_no_longer_shared(world: World) -> None:
    world.connection.shared_with_teams.remove(world.team)
    response = client_for(world.team_admin).get(
        reverse("report_detail", args=[world.team_report.pk])
    )
    assert response.status_code == 200
    assert "Main" not in response.content.decode().split('id="report-body"')[1]
    bucket = first_bucket(world.team_report)
    url = reverse("bucket_raw_json", args=[world.team_report.pk, bucket.pk])
    assert client_for(world.team_admin).get(url).status_code == 404


# --- S4: CSRF ----------------------------------------------------------------------


def _running(report: Report) -> Report:
    Report.objects.filter(pk=report.pk).update(state=Report.State.RUNNING, finished_at=None)
    report.refresh_from_db()
    return report


def _partly_failed(owner: Any) -> Report:
    report = factories.make_done_report(
        owner,
        start=datetime(2025, 5, 1, tzinfo=UTC),
        end=datetime(2025, 7, 1, tzinfo=UTC),
        state=Report.State.PARTIAL,
    )
    Bucket.objects.filter(pk=first_bucket(report).pk).update(
        state=Bucket.State.ERROR, error_message="OSAI said no"
    )
    Report.objects.filter(pk=report.pk).update(buckets_done=1, buckets_failed=1)
    return report


def _state_changing_requests(
    world: World,
) -> list[tuple[str, str, dict[str, Any], Callable[[], Any]]]:
    running = _running(world.personal_report)
    partial = _partly_failed(world.owner)
    conn = world.connection
    return [
        (
            "connection_create",
            reverse("connection_create"),
            {"label": "New", "region": "sandbox", "access_token": "osai-sandbox-csrf-0001"},
            lambda: Connection.objects.count(),
        ),
        (
            "connection_edit",
            reverse("connection_edit", args=[conn.pk]),
            {"label": "Renamed"},
            lambda: Connection.objects.get(pk=conn.pk).label,
        ),
        (
            "connection_token",
            reverse("connection_token", args=[conn.pk]),
            {"access_token": "osai-sandbox-csrf-0002"},
            lambda: Connection.objects.get(pk=conn.pk).token_encrypted,
        ),
        (
            "report_new",
            reverse("report_new"),
            {
                "connections": [conn.pk],
                "preset": "last_month",
                "granularity": "month",
                "include_models": "on",
            },
            lambda: Report.objects.count(),
        ),
        (
            "report_cancel",
            reverse("report_cancel", args=[running.pk]),
            {},
            lambda: Report.objects.get(pk=running.pk).state,
        ),
        (
            "report_retry",
            reverse("report_retry", args=[partial.pk]),
            {},
            lambda: Report.objects.get(pk=partial.pk).state,
        ),
        # Last: the reports above need the connection.
        (
            "connection_delete",
            reverse("connection_delete", args=[conn.pk]),
            {},
            lambda: Connection.objects.filter(pk=conn.pk).exists(),
        ),
    ]


def test_every_state_changing_endpoint_rejects_a_post_without_csrf_token(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connections, "_check_token", lambda connection, token: "acct")
    client = client_for(world.owner, enforce_csrf_checks=True)
    checked = 0
    for name, url, data, state in _state_changing_requests(world):
        before = state()
        response = client.post(url, data)
        assert response.status_code == 403, name
        assert state() == before, name
        checked += 1
    figures.figure("S4 CSRF-checked endpoints", checked)


def test_the_same_posts_with_a_csrf_token_do_change_state(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: with the token, each endpoint acts."""
    monkeypatch.setattr(connections, "_check_token", lambda connection, token: "acct")
    client = client_for(world.owner, enforce_csrf_checks=True)
    client.get(reverse("home"))  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    for name, url, data, state in _state_changing_requests(world):
        before = state()
        response = client.post(url, {**data, "csrfmiddlewaretoken": token})
        assert response.status_code == 302, (name, response.content[:500])
        assert state() != before, name


def test_get_never_changes_state(world: World) -> None:
    client = client_for(world.owner)
    running = _running(world.personal_report)
    reports_before = Report.objects.count()
    for name in ("report_cancel", "report_retry"):
        assert client.get(reverse(name, args=[running.pk])).status_code == 405
    assert Report.objects.get(pk=running.pk).state == Report.State.RUNNING
    assert client.get(reverse("connection_delete", args=[world.connection.pk])).status_code == 200
    assert Connection.objects.filter(pk=world.connection.pk).exists()
    client.get(reverse("report_new"), {"preset": "last_month", "granularity": "month"})
    assert Report.objects.count() == reports_before


# --- The status badge: S5, S6, P5, P7 -----------------------------------------------------------


def _status(client: Client, report: Report, seen: int | None = None, **headers: Any) -> Any:
    query = {} if seen is None else {"seen": seen}
    return client.get(
        reverse("report_status", args=[report.pk]), query, HTTP_HX_REQUEST="true", **headers
    )


def test_status_answers_286_without_polling_attributes_when_report_done(world: World) -> None:
    response = _status(client_for(world.owner), world.personal_report)
    assert response.status_code == 286
    body = response.content.decode()
    assert "hx-get" not in body and "hx-trigger" not in body and "every 2s" not in body
    assert "Done" in body and "3 of 3 buckets done" in body and "Generated at" in body
    assert response["HX-Trigger"] == '{"report-finished": {}}'


@pytest.mark.parametrize("state", ["partial", "failed", "timed_out", "cancelled"])
def test_status_stops_polling_in_every_terminal_state(world: World, state: str) -> None:
    Report.objects.filter(pk=world.personal_report.pk).update(state=state)
    response = _status(client_for(world.owner), world.personal_report)
    assert response.status_code == 286
    assert "hx-trigger" not in response.content.decode()


def test_status_polls_every_2s_while_running(world: World) -> None:
    report = _running(world.personal_report)
    response = _status(client_for(world.owner), report, seen=report.buckets_done)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'hx-trigger="every 2s"' in body
    assert f'hx-get="/reports/{report.pk}/status/?seen={report.buckets_done}"' in body
    assert 'hx-swap="outerHTML"' in body
    assert "HX-Trigger" not in response  # nothing new since the last poll


def test_status_announces_progress_when_a_bucket_finished_since_the_last_poll(
    world: World,
) -> None:
    report = _running(world.personal_report)
    response = _status(client_for(world.owner), report, seen=report.buckets_done - 1)
    assert response.status_code == 200
    assert response["HX-Trigger"] == '{"report-progress": {}}'


def test_report_page_polls_only_while_running(world: World) -> None:
    client = client_for(world.owner)
    done = client.get(reverse("report_detail", args=[world.personal_report.pk])).content.decode()
    assert "every 2s" not in done
    assert 'hx-trigger="report-finished from:body, report-progress from:body"' in done
    running = _running(world.personal_report)
    page = client.get(reverse("report_detail", args=[running.pk])).content.decode()
    assert page.count('hx-trigger="every 2s"') == 1


@pytest.mark.parametrize("running", [False, True], ids=["done", "running"])
def test_status_poll_runs_at_most_two_queries_and_writes_no_session(
    world: World, running: bool, django_assert_max_num_queries: Any
) -> None:
    report = _running(world.personal_report) if running else world.personal_report
    client = client_for(world.owner)
    _status(client, report)  # warm the session cache (cached_db reads it from the cache)
    with django_assert_max_num_queries(2):
        response = _status(client, report, seen=report.buckets_done)
    assert response.status_code == (200 if running else 286)
    assert not response.cookies, response.cookies  # no Set-Cookie: session untouched
    assert "Set-Cookie" not in response


def test_htmx_request_with_expired_session_gets_hx_redirect_to_login(world: World) -> None:
    client = client_for(world.owner)
    client.logout()  # the session is gone, as after expiry
    page = f"/reports/{world.personal_report.pk}/"
    response = _status(
        client, world.personal_report, HTTP_HX_CURRENT_URL=f"http://testserver{page}"
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == f"{LOGIN_URL}?next=%2Freports%2F{world.personal_report.pk}%2F"
    assert b"<form" not in response.content


def test_non_htmx_request_without_session_redirects_to_login(world: World) -> None:
    url = reverse("report_status", args=[world.personal_report.pk])
    response = Client().get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN_URL}?next=/reports/{world.personal_report.pk}/status/"


def test_charts_partial_is_the_report_body(world: World) -> None:
    response = client_for(world.owner).get(
        reverse("report_charts", args=[world.personal_report.pk]) + "?view=cost",
        HTTP_HX_REQUEST="true",
    )
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="report-body"')
    assert "<html" not in body
    assert 'data-figure="figure-cumulative"' in body  # the cost view's charts
    assert f'hx-get="/reports/{world.personal_report.pk}/charts/?view=cost"' in body


# --- The report page ---------------------------------------------------------------------------


def test_report_page_shows_tiles_charts_tables_and_links(world: World) -> None:
    report = world.personal_report
    response = client_for(world.owner).get(reverse("report_detail", args=[report.pk]))
    body = response.content.decode()
    text = page_text(body)
    # Seeds 1..3: training 8 GB 2+4+6 h, 16 GB 1+2+3 h.
    assert "Training 18.0 GPU-hours 8 GB 12.0 · 16 GB 6.0" in text
    assert "Images existing 1,003 images" in text  # the last month's count
    for chart in ("compute", "share", "devices", "storage", "images"):
        assert f'data-figure="figure-{chart}"' in body
        assert f'<script id="figure-{chart}" type="application/json">' in body
    assert body.count('<table class="table numbers">') == 5
    assert "Oct 2025" in body and "Dec 2025" in body
    assert reverse("report_export_csv", args=[report.pk]) in body
    assert reverse("bucket_raw_json", args=[report.pk, first_bucket(report).pk]) in body
    assert "2025-10-01 \u2013 2025-12-31" in body
    assert "no comparison" in body
    assert "vendor/plotly/plotly-basic.min." in body and "js/charts." in body


def test_report_page_marks_the_open_bucket_preliminary(world: World) -> None:
    bucket = first_bucket(world.personal_report)
    Bucket.objects.filter(pk=bucket.pk).update(is_closed=False)
    body = (
        client_for(world.owner)
        .get(reverse("report_detail", args=[world.personal_report.pk]))
        .content.decode()
    )
    assert "preliminary" in body
    assert "Oct 2025 *" in body


def test_cost_view_shows_money_and_the_example_label(world: World) -> None:
    body = (
        client_for(world.owner)
        .get(reverse("report_detail", args=[world.personal_report.pk]), {"view": "cost"})
        .content.decode()
    )
    assert "Example prices — not OSAI&#x27;s prices" in body or "Example prices" in body
    assert "Cumulative spend" in body
    assert 'aria-current="true">Cost</a>' in body
    assert f'href="/reports/{world.personal_report.pk}/?view=cost"' in body


def test_change_against_the_previous_period_when_it_is_known(world: World) -> None:
    """February as one total, compared with January: whole months compare with whole months,
    covered here by ten finished daily buckets and three weekly ones."""
    conn = factories.make_connection(world.owner, "Fresh")
    report = factories.make_done_report(
        world.owner, [conn], start=FEB, end=MAR, granularity=Granularity.TOTAL
    )
    # January: 2026-01-01 .. 2026-01-11 as days, then three whole weeks to 2026-02-01.
    days = [datetime(2026, 1, d, tzinfo=UTC) for d in range(1, 12)]
    for start, end in itertools.pairwise(days):
        factories.make_done_bucket(conn, start, end, seed=0)
    for week in range(3):
        start = datetime(2026, 1, 11, tzinfo=UTC) + timedelta(weeks=week)
        factories.make_done_bucket(conn, start, start + timedelta(weeks=1), seed=0)
    Bucket.objects.filter(
        connection=conn,
        period_start__gte=datetime(2026, 1, 1, tzinfo=UTC),
        period_end__lte=datetime(2026, 2, 1, tzinfo=UTC),
    ).update(training_seconds_8gb=3600, training_seconds_16gb=0)
    body = client_for(world.owner).get(reverse("report_detail", args=[report.pk])).content.decode()
    # Now 3 GPU-hours of training (seed 1: 2 h on 8 GB, 1 h on 16 GB); before: 13 buckets of
    # 1 h each, so -76.9 %.
    assert "compared with Jan 2026" in body
    assert "Training 3.0 GPU-hours 8 GB 2.0 · 16 GB 1.0 -76.9 % vs Jan 2026" in page_text(body)


def test_no_previous_period_when_a_day_is_missing(world: World) -> None:
    conn = world.connection
    report = factories.make_done_report(
        world.owner, [conn], start=FEB, end=FEB + timedelta(days=2), granularity=Granularity.TOTAL
    )
    factories.make_done_bucket(
        conn, datetime(2026, 1, 30, tzinfo=UTC), datetime(2026, 1, 31, tzinfo=UTC)
    )
    body = client_for(world.owner).get(reverse("report_detail", args=[report.pk])).content.decode()
    assert "no comparison" in body


def test_failed_buckets_are_listed_with_their_message_and_a_retry_button(world: World) -> None:
    report = _partly_failed(world.owner)
    body = client_for(world.owner).get(reverse("report_detail", args=[report.pk])).content.decode()
    assert "OSAI said no" in body
    assert reverse("report_retry", args=[report.pk]) in body
    assert reverse("report_cancel", args=[report.pk]) not in body


def test_cancel_stops_a_running_report(world: World) -> None:
    report = _running(world.personal_report)
    response = client_for(world.owner).post(reverse("report_cancel", args=[report.pk]))
    assert response.status_code == 302
    assert Report.objects.get(pk=report.pk).state == Report.State.CANCELLED


def test_retry_resets_the_failed_buckets(world: World) -> None:
    report = _partly_failed(world.owner)
    response = client_for(world.owner).post(reverse("report_retry", args=[report.pk]))
    assert response.status_code == 302
    assert not Report.objects.get(pk=report.pk).is_terminal
    assert not Bucket.objects.filter(
        report_buckets__report=report, state=Bucket.State.ERROR
    ).exists()


# --- T2: a saved token is never shown again --------------------------------------------------

CANARY = "osai-sandbox-CANARY-5e1f0b7a9d3c"


def _assert_no_canary(body: bytes, where: str) -> None:
    text = body.decode(errors="replace")
    assert CANARY not in text, where
    assert CANARY[:-4] not in text, where


def test_the_token_never_appears_in_any_page_partial_or_form_rerender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = factories.make_user()
    client = client_for(user)
    hits = 0

    def check(response: Any, where: str) -> None:
        nonlocal hits
        _assert_no_canary(response.content, where)
        hits += 1

    # A form shown again after an error: empty label, then OSAI refusing the token.
    check(
        client.post(
            reverse("connection_create"), {"label": "", "region": "sandbox", "access_token": CANARY}
        ),
        "empty label",
    )

    def refuse(connection: Connection, token: str) -> str:
        raise connections.ConnectionCheckError("OSAI did not accept this access token.")

    monkeypatch.setattr(connections, "_check_token", refuse)
    refused = client.post(
        reverse("connection_create"), {"label": "Lab", "region": "sandbox", "access_token": CANARY}
    )
    check(refused, "refused token")
    assert b"OSAI did not accept this access token." in refused.content
    assert not Connection.objects.filter(owner=user).exists()

    monkeypatch.setattr(connections, "_check_token", lambda connection, token: "canary-account")
    saved = client.post(
        reverse("connection_create"), {"label": "Lab", "region": "sandbox", "access_token": CANARY}
    )
    assert saved.status_code == 302
    conn = Connection.objects.get(owner=user)
    assert conn.token_last4 == CANARY[-4:]
    report = factories.make_done_report(user, [conn])

    monkeypatch.setattr(connections, "_check_token", refuse)
    check(
        client.post(reverse("connection_token", args=[conn.pk]), {"access_token": CANARY}),
        "replace refused",
    )
    for url in (
        reverse("home"),
        reverse("connection_list"),
        reverse("connection_create"),
        reverse("connection_edit", args=[conn.pk]),
        reverse("connection_token", args=[conn.pk]),
        reverse("connection_delete", args=[conn.pk]),
        reverse("report_new"),
        reverse("report_history"),
        reverse("report_detail", args=[report.pk]),
        reverse("report_detail", args=[report.pk]) + "?view=cost",
        reverse("report_status", args=[report.pk]),
        reverse("report_charts", args=[report.pk]),
    ):
        check(client.get(url), url)
    figures.figure("T2 responses checked for the canary token", hits)
    figures.figure("canary hits", 0)


def test_connection_list_shows_status_and_last4_only(world: World) -> None:
    Connection.objects.filter(pk=world.connection.pk).update(status=Connection.Status.NEEDS_TOKEN)
    body = client_for(world.owner).get(reverse("connection_list")).content.decode()
    assert "…9f2c" in body
    assert OWNER_TOKEN[:-4] not in body
    assert "Needs a new token" in body
    assert "Vision" in body  # shared with


def test_relabel_and_share_with_own_teams_only(world: World) -> None:
    foreign = Team.objects.get(name="Elsewhere")
    response = client_for(world.owner).post(
        reverse("connection_edit", args=[world.connection.pk]),
        {"label": "Production", "shared_with_teams": [foreign.pk]},
    )
    assert response.status_code == 200  # "not one of the available choices"
    assert b"Select a valid choice" in response.content
    response = client_for(world.owner).post(
        reverse("connection_edit", args=[world.connection.pk]), {"label": "Production"}
    )
    assert response.status_code == 302
    world.connection.refresh_from_db()
    assert world.connection.label == "Production"
    assert not world.connection.shared_with_teams.exists()


# --- I1: bad report requests change nothing ------------------------------------------------------

GOOD = {
    "preset": "custom",
    "granularity": "month",
    "include_datasets": "on",
    "include_manipulations": "on",
    "include_models": "on",
    "include_rented_devices": "on",
    "include_predictions": "on",
}

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("from after to", {"date_from": "2026-02-10", "date_to": "2026-02-01"}, "on or after"),
    ("future", {"date_from": "2026-03-01", "date_to": "2026-03-20"}, "cannot be in the future"),
    ("malformed date", {"date_from": "2026-13-45", "date_to": "2026-02-01"}, "Enter a valid date"),
    ("missing dates", {"date_from": "", "date_to": ""}, "Enter the first day"),
    (
        "too many buckets",
        {"date_from": "2016-01-01", "date_to": "2026-01-01", "granularity": "day"},
        "the limit is",
    ),
    (
        "before OSAI existed",
        {"date_from": "1999-01-01", "date_to": "1999-02-01"},
        "cannot start before",
    ),
    (
        "no category",
        {
            "date_from": "2026-01-01",
            "date_to": "2026-01-31",
            "include_datasets": "",
            "include_manipulations": "",
            "include_models": "",
            "include_rented_devices": "",
            "include_predictions": "",
        },
        "Choose at least one category",
    ),
    (
        "unknown granularity",
        {"date_from": "2026-01-01", "date_to": "2026-01-31", "granularity": "hour"},
        "Select a valid choice",
    ),
    ("unknown preset", {"preset": "forever"}, "Select a valid choice"),
    (
        "unknown connection",
        {"connections": ["999999"], "date_from": "2026-01-01", "date_to": "2026-01-31"},
        "Select a valid choice",
    ),
    (
        "no connection",
        {"connections": [], "date_from": "2026-01-01", "date_to": "2026-01-31"},
        "Choose at least one connection",
    ),
]


@pytest.mark.parametrize(
    ("case", "data", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_report_requests_show_a_form_error_and_create_nothing(
    case: str, data: dict[str, Any], message: str
) -> None:
    user = factories.make_user()
    conn = factories.make_connection(user)
    reports, buckets = Report.objects.count(), Bucket.objects.count()
    response = client_for(user).post(
        reverse("report_new"), {"connections": [conn.pk], **GOOD, **data}
    )
    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'").replace("&quot;", '"'), case
    assert 'class="errorlist' in response.content.decode()
    assert (Report.objects.count(), Bucket.objects.count()) == (reports, buckets)
    figures.figure("I1 bad report requests tried", 1)


def test_a_tampered_connection_id_of_another_user_is_refused() -> None:
    user, other = factories.make_user(), factories.make_user()
    factories.make_connection(user)
    theirs = factories.make_connection(other)
    response = client_for(user).post(
        reverse("report_new"),
        {**GOOD, "connections": [theirs.pk], "date_from": "2026-01-01", "date_to": "2026-01-31"},
    )
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    assert not Report.objects.exists()


def test_a_connection_that_needs_a_new_token_is_refused_on_the_form() -> None:
    user = factories.make_user()
    conn = factories.make_connection(user, "Old", status=Connection.Status.NEEDS_TOKEN)
    response = client_for(user).post(
        reverse("report_new"),
        {**GOOD, "connections": [conn.pk], "date_from": "2026-01-01", "date_to": "2026-01-31"},
    )
    assert b"need a new access token first: Old" in response.content
    assert not Report.objects.exists()


def test_custom_range_to_date_is_inclusive() -> None:
    user = factories.make_user()
    conn = factories.make_connection(user)
    response = client_for(user).post(
        reverse("report_new"),
        {**GOOD, "connections": [conn.pk], "date_from": "2026-01-01", "date_to": "2026-01-31"},
    )
    report = Report.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("report_detail", args=[report.pk])
    assert report.period_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert report.period_end == datetime(2026, 2, 1, tzinfo=UTC)
    assert report.buckets_total == 1


def test_custom_range_ending_today_runs_up_to_now() -> None:
    user = factories.make_user()
    conn = factories.make_connection(user)
    client_for(user).post(
        reverse("report_new"),
        {
            **GOOD,
            "connections": [conn.pk],
            "date_from": "2026-03-01",
            "date_to": "2026-03-15",
            "granularity": "day",
        },
    )
    report = Report.objects.get()
    assert report.period_end == NOW
    assert report.buckets_total == 15
    assert Bucket.objects.filter(is_closed=False).count() == 1


def test_preset_and_flags_reach_the_report() -> None:
    user = factories.make_user()
    conn, second = factories.make_connection(user), factories.make_connection(user)
    response = client_for(user).post(
        reverse("report_new"),
        {
            "connections": [conn.pk, second.pk],
            "preset": "last_month",
            "granularity": "total",
            "include_models": "on",
        },
    )
    assert response.status_code == 302
    report = Report.objects.get()
    assert (report.period_start, report.period_end) == (
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
    )
    assert report.preset == "last_month"
    assert report.flags() == {
        "include_datasets": False,
        "include_manipulations": False,
        "include_models": True,
        "include_rented_devices": False,
        "include_predictions": False,
    }
    assert set(report.connections.all()) == {conn, second}
    assert report.buckets_total == 2


def test_new_report_form_defaults_to_all_connections_and_all_flags() -> None:
    user = factories.make_user()
    conn = factories.make_connection(user)
    body = client_for(user).get(reverse("report_new")).content.decode()
    assert re.search(rf'value="{conn.pk}"[^>]*checked', body)
    assert body.count('type="checkbox" name="include_') == 5
    assert len(re.findall(r'type="checkbox" name="include_[a-z_]+"[^>]*checked', body)) == 5
    assert "inclusive" in body and "UTC" in body


# --- History: no N+1 ----------------------------------------------------------------------------


def _history_queries(client: Client) -> int:
    with CaptureQueriesContext(db_connection) as queries:
        response = client.get(reverse("report_history"))
    assert response.status_code == 200
    return len(queries)


def test_history_runs_the_same_queries_for_1_and_50_reports() -> None:
    user = factories.make_user()
    team = factories.make_team(admins=[user])
    client = client_for(user)
    factories.make_done_report(user, team=team)
    client.get(reverse("report_history"))  # warm the session cache
    one = _history_queries(client)
    for _ in range(49):
        factories.make_done_report(user)
    fifty = _history_queries(client)
    assert one == fifty, (one, fifty)
    figures.figure("P6 history queries at 1 and 50 reports", f"{one} and {fifty}")


def test_history_lists_own_reports_first_then_team_reports(world: World) -> None:
    co_admin = factories.make_user("coadmin")
    Membership.objects.create(team=world.team, user=co_admin, role=Membership.Role.ADMIN)
    client = client_for(co_admin)
    body = client.get(reverse("report_history")).content.decode()
    assert f"#{world.team_report.pk}<" in body  # requested by the other admin
    assert f"#{world.personal_report.pk}<" not in body  # a member's own report
    own = factories.make_done_report(co_admin)
    body = client.get(reverse("report_history")).content.decode()
    assert body.index(f"#{own.pk}<") < body.index(f"#{world.team_report.pk}<")
    assert "by admin" in body


def test_history_paginates(world: World) -> None:
    for _ in range(26):
        factories.make_done_report(world.stranger)
    client = client_for(world.stranger)
    assert "Page 1 of 2" in client.get(reverse("report_history")).content.decode()
    assert client.get(reverse("report_history"), {"page": 2}).status_code == 200


# --- Pages for a new user, and no off-site assets -------------------------------------------------


def test_home_tells_a_new_user_what_to_do() -> None:
    body = client_for(factories.make_user()).get(reverse("home")).content.decode()
    assert "Add a connection" in body and "Generate a report" in body


def test_home_shows_recent_reports_and_connections(world: World) -> None:
    body = client_for(world.owner).get(reverse("home")).content.decode()
    assert "Recent reports" in body and "Main" in body and "…9f2c" in body


OFF_SITE = re.compile(
    r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//",
    re.IGNORECASE,
)


def test_no_page_loads_anything_from_another_site(world: World) -> None:
    client = client_for(world.owner)
    report = world.personal_report
    urls = [
        reverse("home"),
        reverse("connection_list"),
        reverse("connection_create"),
        reverse("connection_edit", args=[world.connection.pk]),
        reverse("connection_token", args=[world.connection.pk]),
        reverse("connection_delete", args=[world.connection.pk]),
        reverse("report_new"),
        reverse("report_history"),
        reverse("report_detail", args=[report.pk]),
        reverse("report_detail", args=[report.pk]) + "?view=cost",
        reverse("report_charts", args=[report.pk]),
        reverse("overview"),
        reverse("budget_list"),
        reverse("digest_settings"),
        reverse("team_list"),
    ]
    pages = {url: client.get(url) for url in urls}
    pages[LOGIN_URL] = Client().get(LOGIN_URL)
    for url, response in pages.items():
        assert response.status_code == 200, url
        body = response.content.decode()
        assert not OFF_SITE.search(body), (url, OFF_SITE.search(body))
        assert "<script>" not in body, url  # no inline script (CSP)
        assert " style=" not in body, url  # no inline style attributes (CSP)
    detail = pages[reverse("report_detail", args=[report.pk])].content.decode()
    assert re.search(r'<script src="/static/django_htmx/htmx-2[^"]*\.js" defer>', detail)
    history = pages[reverse("report_history")].content.decode()
    assert "plotly" not in history  # the Plotly bundle only on pages with charts
    home = pages[reverse("home")].content.decode()
    assert "plotly-basic" in home  # the overview's chart


def test_login_page_and_csp_header() -> None:
    response = Client().get(LOGIN_URL)
    assert response.status_code == 200
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "unsafe-inline" not in csp


def test_hashed_static_files_are_cached_forever_and_compressed() -> None:
    from django.templatetags.static import static

    url = static("js/charts.js")
    assert re.fullmatch(r"/static/js/charts\.[0-9a-f]{12}\.js", url), url
    response = Client().get(url, HTTP_ACCEPT_ENCODING="gzip, br")
    assert response.status_code == 200
    assert "immutable" in response["Cache-Control"]
    assert response["Content-Encoding"] == "br"
    plotly = Client().get(static("vendor/plotly/plotly-basic.min.js"), HTTP_ACCEPT_ENCODING="br")
    assert plotly.status_code == 200 and "immutable" in plotly["Cache-Control"]


@pytest.mark.parametrize("view", ["usage", "cost"])
def test_report_page_queries_do_not_grow_with_its_buckets(view: str) -> None:
    user = factories.make_user()
    client = client_for(user)
    small = factories.make_done_report(
        user, start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 2, 1, tzinfo=UTC)
    )
    large = factories.make_done_report(
        user,
        [factories.make_connection(user), factories.make_connection(user)],
        start=datetime(2025, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 1, tzinfo=UTC),
    )
    counts = []
    for report in (small, large):
        client.get(reverse("report_detail", args=[report.pk]))  # warm the session cache
        with CaptureQueriesContext(db_connection) as queries:
            response = client.get(reverse("report_detail", args=[report.pk]), {"view": view})
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


@pytest.mark.django_db
def test_the_cost_view_has_a_total_tile_equal_to_the_csv_total() -> None:
    import csv
    import io
    from decimal import Decimal

    user = factories.make_user()
    report = factories.make_done_report(user, price_book=factories.ensure_example_price_book())
    client = client_for(user)
    body = client.get(reverse("report_detail", args=[report.pk]) + "?view=cost").content.decode()
    export = client.get(reverse("report_export_csv", args=[report.pk]))
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    total = formatting.to_cents(sum((Decimal(r["cost_total"]) for r in rows), Decimal(0)))
    match = re.search(
        r'tile-label">Total</div>\s*<div class="tile-value"><span class="tile-unit">EUR</span> '
        r"([\d,.]+)</div>",
        body,
    )
    assert match, "no Total tile in the cost view"
    assert match.group(1) == f"{total:,.2f}"
