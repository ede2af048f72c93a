"""Integrations over HTTP: OSAI's webhook receiver (W1), the activity feed and its polling
partial, the webhook and API-token pages, and the read-only JSON API (W2) with its scoping
matrix (owner, team admin, team member, other team's admin, stranger; no, bad or revoked token).
"""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from reports.integrations import api_tokens, webhooks
from reports.models import ApiToken, Bucket, Connection, Report, WebhookEvent
from tests.factories import make_anomaly, make_connection, make_done_bucket, make_user
from tests.support import figures
from tests.support.clock import clock_held_at
from tests.support.web import client_for
from tests.support.world import JWT, OWNER_TOKEN, ROLES, SIGNED_LINK, World

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


_frozen_time = clock_held_at(NOW)


@pytest.fixture(autouse=True)
def _roomy_limits(settings: Any) -> None:
    """The rate limits count in the shared cache; tests of them set their own."""
    settings.API_RATE = "10000/m"
    settings.API_FAILED_AUTH_RATE = "10000/m"


def api(token: str | None, path: str, method: str = "get", **extra: Any) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return getattr(Client(), method)(f"/api/v1/{path}", **headers, **extra)


def hook_url(connection: Connection) -> str:
    return reverse("osai_webhook", args=[connection.webhook_secret])


def post_hook(url: str, body: Any, client: Client | None = None, **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (client or Client()).post(url, data, content_type="application/json", **extra)


# --- W1: the webhook receiver ---------------------------------------------------------------------


def _one_character_off(secret: str) -> str:
    """The secret with its last character changed (always changed: a fixed replacement
    equalled the real one whenever the secret already ended with it, 1 run in 64)."""
    return secret[:-1] + ("B" if secret.endswith("A") else "A")


def test_w1_a_wrong_secret_is_404_and_stores_nothing(world: World) -> None:
    before = WebhookEvent.objects.count()
    wrong = [
        secrets.token_urlsafe(32),
        _one_character_off(world.connection.webhook_secret),
        world.connection.webhook_secret_sha256,  # the stored digest is not the secret
        "x",
    ]
    for secret in wrong:
        url = reverse("osai_webhook", args=[secret])
        for method in ("post", "get", "put", "delete"):
            client = Client()
            if method == "get":
                response = client.get(url)
            else:
                response = getattr(client, method)(
                    url, b'{"taskType": "Training"}', content_type="application/json"
                )
            assert response.status_code == 404, (secret, method)
            assert world.connection.webhook_secret not in response.content.decode()
    assert WebhookEvent.objects.count() == before
    assert Connection.objects.get(pk=world.connection.pk).refresh_due_at is not None  # the seed's
    figures.figure("W1 wrong-secret requests answered 404 (nothing stored)", len(wrong) * 4)


def test_w1_a_rotated_secret_is_404_at_once(world: World) -> None:
    old = hook_url(world.connection)
    response = client_for(world.owner).post(
        reverse("connection_webhook_rotate", args=[world.connection.pk])
    )
    assert response.status_code == 302
    world.connection.refresh_from_db()
    assert post_hook(old, {"taskType": "Prediction"}).status_code == 404
    assert post_hook(hook_url(world.connection), {"taskType": "Prediction"}).status_code == 200


def test_w1_a_delivery_is_stored_once_csrf_exempt_with_or_without_the_final_slash(
    world: World,
) -> None:
    url = hook_url(world.connection)
    assert not url.endswith("/")
    client = Client(enforce_csrf_checks=True)  # OSAI sends no CSRF token
    event = {"eventId": "42", "taskType": "Conversion", "status": "Succeeded"}
    first = post_hook(url, event, client)
    again = post_hook(url + "/", event, client)
    assert first.status_code == again.status_code == 200
    assert first.json()["stored"] is True
    assert again.json() == {"stored": False, "duplicate": True, "id": first.json()["id"]}
    assert WebhookEvent.objects.filter(connection=world.connection, kind="conversion").count() == 1


def test_w1_only_the_webhook_receiver_and_the_get_only_api_skip_csrf() -> None:
    exempt: set[str] = set()

    def walk(patterns: list[Any], prefix: str = "") -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and getattr(
                pattern.callback, "csrf_exempt", False
            ):
                exempt.add(prefix + str(pattern.pattern))

    walk(get_resolver().url_patterns)
    others = {p for p in exempt if not p.startswith("api/v1/")}
    assert others == {"^hooks/osai/(?P<secret>[A-Za-z0-9_-]{1,128})/?$"}


def test_w1_a_right_secret_accepts_only_post_and_never_reaches_the_logs(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    secret = world.connection.webhook_secret
    with caplog.at_level("INFO"):
        assert Client().get(hook_url(world.connection)).status_code == 405
        assert post_hook(hook_url(world.connection), b"{broken").status_code == 400
    assert "/hooks/osai/<secret>" in caplog.text
    assert secret not in caplog.text


def test_w1_bodies_are_size_capped_json(world: World, settings: Any) -> None:
    settings.OSAI_WEBHOOK_MAX_BYTES = 1024
    url = hook_url(world.connection)
    before = WebhookEvent.objects.count()
    big = {"taskType": "Training", "padding": "x" * 2000}
    assert post_hook(url, big).status_code == 413
    assert post_hook(url, b"<html>no</html>").status_code == 400
    form = Client().post(url, {"taskType": "Training"})  # a form, not JSON
    assert form.status_code == 415
    assert WebhookEvent.objects.count() == before
    odd = post_hook(url, {"whatever": [1, {"deep": None}], "taskType": 7})  # unknown shape
    assert odd.status_code == 200
    assert WebhookEvent.objects.get(pk=odd.json()["id"]).kind == "unknown"


def test_w1_a_flood_is_rate_limited_per_connection(world: World, settings: Any) -> None:
    settings.OSAI_WEBHOOK_RATE = "5/m"
    url = hook_url(world.connection)
    statuses = [post_hook(url, {"eventId": f"flood-{i}"}).status_code for i in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    other = make_connection(world.owner, "Other")
    assert post_hook(hook_url(other), {"eventId": "flood-x"}).status_code == 200  # its own limit
    stored = WebhookEvent.objects.filter(connection=world.connection, dedupe_key__isnull=False)
    assert stored.count() == 1 + 5
    refused = post_hook(url, {"eventId": "flood-9"})
    assert refused.json() == {"detail": "Too many deliveries for this connection; slow down."}
    assert refused["Retry-After"] == "60"
    figures.figure("W1 flood of 8 at 5/min: stored, refused", "5, 3")


def test_w1_a_flood_is_rate_limited_per_person_over_all_their_connections(
    world: World, settings: Any
) -> None:
    """W1: each connection has its limit, and a person's connections share one more, so
    many connections do not multiply the flood a person can send."""
    import uuid

    settings.RATELIMIT_CACHE_PREFIX = f"rl-{uuid.uuid4().hex}:"
    settings.OSAI_WEBHOOK_RATE = "5/m"
    settings.OSAI_WEBHOOK_PERSON_RATE = "6/m"
    first, second = world.connection, make_connection(world.owner, "Second")
    before = WebhookEvent.objects.filter(connection__owner=world.owner).count()
    statuses = [post_hook(hook_url(first), {"eventId": f"a-{i}"}).status_code for i in range(4)]
    statuses += [post_hook(hook_url(second), {"eventId": f"b-{i}"}).status_code for i in range(4)]
    assert statuses == [200] * 6 + [429] * 2
    refused = post_hook(hook_url(second), {"eventId": "b-9"})
    assert refused.json() == {
        "detail": "Too many deliveries for this person's connections; slow down."
    }
    assert refused["Retry-After"] == "60"
    # Someone else's connection has limits of its own.
    assert post_hook(hook_url(world.admin_connection), {"eventId": "c"}).status_code == 200
    assert WebhookEvent.objects.filter(connection__owner=world.owner).count() == before + 6
    figures.figure("W1 flood over 2 connections at 6/min per person: stored", 6)


# --- The feed -------------------------------------------------------------------------------------


def test_the_feed_shows_kind_result_time_and_worker_class_to_the_owner_only(
    world: World,
) -> None:
    post_hook(hook_url(world.connection), {"type": "Re-training", "status": "Failed"})
    page = client_for(world.owner).get(reverse("activity")).content.decode()
    assert "Training" in page and "Re-training" in page
    assert "Succeeded" in page and "Failed" in page and "16 GB" in page
    assert "2026-03-15 12:00:00" in page
    assert SIGNED_LINK not in page and "Signature" not in page
    for role in ("team_admin", "team_member", "stranger"):
        other = client_for(world.user(role)).get(reverse("activity")).content.decode()
        assert "Re-training" not in other and "16 GB" not in other


def test_the_feed_partial_answers_204_until_something_new_arrives(
    world: World, django_assert_max_num_queries: Any
) -> None:
    client = client_for(world.owner)
    latest = WebhookEvent.objects.filter(connection=world.connection).latest("pk").pk
    url = f"{reverse('activity_feed')}?after={latest}"
    client.get(url, HTTP_HX_REQUEST="true")  # the session is warm
    with django_assert_max_num_queries(2):
        quiet = client.get(url, HTTP_HX_REQUEST="true")
    assert quiet.status_code == 204 and quiet.content == b""
    post_hook(hook_url(world.connection), {"taskType": "DeviceRental", "success": True})
    fresh = client.get(url, HTTP_HX_REQUEST="true")
    assert fresh.status_code == 200
    body = fresh.content.decode()
    assert body.lstrip().startswith('<div id="activity-feed"')
    assert "Device rental" in body
    newest = WebhookEvent.objects.latest("pk").pk
    assert f"after={newest}" in body  # the next poll asks from here
    assert fresh["Cache-Control"] == "private, no-store"


def test_the_feed_of_someone_elses_connection_is_404_and_htmx_without_session_redirects(
    world: World,
) -> None:
    url = f"{reverse('activity_feed')}?connection={world.connection.pk}&after=0"
    assert client_for(world.team_admin).get(url, HTTP_HX_REQUEST="true").status_code == 404
    assert client_for(world.owner).get(url, HTTP_HX_REQUEST="true").status_code == 200
    anonymous = Client().get(url, HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL="/activity/")
    assert anonymous["HX-Redirect"].startswith("/accounts/login/?next=")


# --- Pages: who may use them, and CSRF ------------------------------------------------------------


def _pages(world: World) -> list[tuple[str, str, str, Callable[[], Any]]]:
    conn = world.connection
    return [
        ("get", reverse("connection_webhook", args=[conn.pk]), "owner", lambda: None),
        (
            "post",
            reverse("connection_webhook_rotate", args=[conn.pk]),
            "owner",
            lambda: Connection.objects.get(pk=conn.pk).webhook_secret_sha256,
        ),
        ("get", f"{reverse('activity')}?connection={conn.pk}", "owner", lambda: None),
    ]


@pytest.mark.parametrize("role", [*ROLES, "anonymous"])
def test_the_webhook_pages_are_the_owners_alone(world: World, role: str) -> None:
    for method, url, allowed, state in _pages(world):
        before = state()
        client = Client() if role == "anonymous" else client_for(world.user(role))
        response = getattr(client, method)(url)
        if role == "anonymous":
            assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        elif role == allowed:
            assert response.status_code in (200, 302), url
            continue
        else:
            assert response.status_code == 404, (url, role)
        assert state() == before


def test_the_webhook_page_shows_the_url_to_its_owner(world: World) -> None:
    page = client_for(world.owner).get(reverse("connection_webhook", args=[world.connection.pk]))
    assert f"http://testserver{hook_url(world.connection)}" in page.content.decode()
    assert OWNER_TOKEN not in page.content.decode()


def test_state_changing_integration_endpoints_enforce_csrf(world: World) -> None:
    token_row = ApiToken.objects.get(user=world.owner)
    posts = [
        (
            reverse("connection_webhook_rotate", args=[world.connection.pk]),
            {},
            lambda: Connection.objects.get(pk=world.connection.pk).webhook_secret_sha256,
        ),
        (reverse("api_token_list"), {"name": "x"}, lambda: ApiToken.objects.count()),
        (
            reverse("api_token_revoke", args=[token_row.pk]),
            {},
            lambda: ApiToken.objects.get(pk=token_row.pk).revoked_at,
        ),
    ]
    client = client_for(world.owner, enforce_csrf_checks=True)
    for url, data, state in posts:
        before = state()
        assert client.post(url, data).status_code == 403, url
        assert state() == before
    client.get(reverse("home"))
    csrf = client.cookies["csrftoken"].value
    for url, data, state in posts:
        before = state()
        assert client.post(url, {**data, "csrfmiddlewaretoken": csrf}).status_code in (200, 302)
        assert state() != before, url


# --- W2: API tokens -------------------------------------------------------------------------------


def test_w2_a_token_is_shown_once_and_stored_only_as_a_hash(world: World) -> None:
    client = client_for(world.owner)
    made = client.post(reverse("api_token_list"), {"name": "finance cron"})
    assert made.status_code == 200
    row = ApiToken.objects.get(user=world.owner, name="finance cron")
    token = next(
        word.strip('"')
        for word in made.content.decode().split()
        if word.strip('"').startswith(api_tokens.TOKEN_PREFIX) and len(word.strip('"')) > 40
    )
    assert api_tokens.token_digest(token) == row.token_sha256
    assert row.prefix == token[:12]
    later = client.get(reverse("api_token_list")).content.decode()
    assert token not in later and f"{row.prefix}…" in later
    dump = io.StringIO()
    call_command("dumpdata", "reports", "auth", stdout=dump)
    assert token not in dump.getvalue()
    assert world.connection.webhook_secret not in dump.getvalue()  # encrypted too
    assert api(token, "connections").status_code == 200
    figures.figure("W2 token length (chars), stored as", f"{len(token)}, sha256")


def test_w2_revoked_unknown_and_missing_tokens_get_401(world: World) -> None:
    token = world.tokens["owner"]
    assert api(token, "connections").status_code == 200
    row = ApiToken.objects.get(user=world.owner)
    assert row.last_used_at == NOW
    response = client_for(world.owner).post(reverse("api_token_revoke", args=[row.pk]))
    assert response.status_code == 302
    other_row = ApiToken.objects.get(user=world.stranger)
    # Someone else's token cannot be revoked by id: 404, and it keeps working.
    assert (
        client_for(world.owner).post(reverse("api_token_revoke", args=[other_row.pk])).status_code
        == 404
    )
    assert api(world.tokens["stranger"], "connections").status_code == 200
    for credentials in (token, None, "osaiu_" + "A" * 43, "not-even-prefixed", ""):
        answer = api(credentials, "connections")
        assert answer.status_code == 401, credentials
        assert answer.json() == {"detail": "Unauthorized"}
        assert answer["WWW-Authenticate"].startswith("Bearer")
    # A Basic header or a session cookie is not an API credential.
    assert api(None, "connections", HTTP_AUTHORIZATION="Basic b3duZXI6eA==").status_code == 401
    assert client_for(world.owner).get("/api/v1/connections").status_code == 401


def test_w2_a_deactivated_user_s_token_stops_working(world: World) -> None:
    world.stranger.is_active = False
    world.stranger.save()
    assert api(world.tokens["stranger"], "connections").status_code == 401


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_w2_the_api_is_read_only(world: World, method: str) -> None:
    before = (Report.objects.count(), Connection.objects.count(), WebhookEvent.objects.count())
    for path in (
        "connections",
        "reports",
        f"reports/{world.personal_report.pk}",
        "spend",
        "activity",
    ):
        response = api(world.tokens["owner"], path, method, data="{}", content_type="x/json")
        assert response.status_code == 405, path
    after = (Report.objects.count(), Connection.objects.count(), WebhookEvent.objects.count())
    assert after == before


def test_w2_requests_are_rate_limited_per_token_and_failures_per_address(
    world: World, settings: Any
) -> None:
    settings.API_RATE = "3/m"
    statuses = [api(world.tokens["owner"], "connections").status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    limited = api(world.tokens["owner"], "spend")
    assert limited.json() == {"detail": "Too many requests."} and limited["Retry-After"] == "60"
    assert api(world.tokens["team_admin"], "connections").status_code == 200  # its own count

    settings.API_FAILED_AUTH_RATE = "2/m"
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    guesses = [
        api("osaiu_" + secrets.token_urlsafe(32), "spend", REMOTE_ADDR=address).status_code
        for _ in range(4)
    ]
    assert guesses == [401, 401, 429, 429]
    figures.figure("W2 API at 3/min per token: answers", "200 200 200 429 429")


# --- W2: the scoping matrix -----------------------------------------------------------------------


@dataclass(frozen=True)
class ApiEndpoint:
    name: str
    path: Callable[[World], str]
    allowed: tuple[str, ...]  # roles that get 200; every other signed-in role gets 404


API_ENDPOINTS = (
    ApiEndpoint("report[personal]", lambda w: f"reports/{w.personal_report.pk}", ("owner",)),
    ApiEndpoint(
        "report[team]", lambda w: f"reports/{w.team_report.pk}", ("team_admin", "team_viewer")
    ),
    ApiEndpoint("spend[team]", lambda w: f"spend?team={w.team.pk}", ("team_admin", "team_viewer")),
    # CSV answers (?format=csv): the same scoping, the team's through the download capability.
    ApiEndpoint(
        "report[personal].csv", lambda w: f"reports/{w.personal_report.pk}?format=csv", ("owner",)
    ),
    ApiEndpoint(
        "report[team].csv",
        lambda w: f"reports/{w.team_report.pk}?format=csv",
        ("team_admin", "team_viewer"),
    ),
    ApiEndpoint(
        "spend[team].csv",
        lambda w: f"spend?team={w.team.pk}&format=csv",
        ("team_admin", "team_viewer"),
    ),
    ApiEndpoint("spend.csv", lambda w: "spend?format=csv", ROLES),
    ApiEndpoint(
        "activity[connection]", lambda w: f"activity?connection={w.connection.pk}", ("owner",)
    ),
    ApiEndpoint("connections", lambda w: "connections", ROLES),
    ApiEndpoint("reports", lambda w: "reports", ROLES),
    ApiEndpoint("spend", lambda w: "spend", ROLES),
    ApiEndpoint("activity", lambda w: "activity", ROLES),
    # Anomalies (N5): one's own connections' for everyone; a team's for those who see its spend.
    ApiEndpoint("anomalies", lambda w: "anomalies", ROLES),
    ApiEndpoint(
        "anomalies[team]", lambda w: f"anomalies?team={w.team.pk}", ("team_admin", "team_viewer")
    ),
)
CREDENTIALS = (*ROLES, "anonymous", "bad_token", "revoked_token")
API_MATRIX: list[tuple[str, bool]] = []


@pytest.mark.parametrize("who", CREDENTIALS)
@pytest.mark.parametrize("endpoint", API_ENDPOINTS, ids=lambda e: e.name)
def test_w2_api_scoping_matrix(world: World, endpoint: ApiEndpoint, who: str) -> None:
    passed = False
    try:
        if who == "anonymous":
            token = None
        elif who == "bad_token":
            token = "osaiu_" + secrets.token_urlsafe(32)
        elif who == "revoked_token":
            row, token = api_tokens.api_token_create(user=world.owner, name="old")
            api_tokens.api_token_revoke(user=world.owner, pk=row.pk)
        else:
            token = world.tokens[who]
        response = api(token, endpoint.path(world))
        raw = b"".join(response.streaming_content) if response.streaming else response.content
        body = raw.decode()
        if who in ("anonymous", "bad_token", "revoked_token"):
            assert response.status_code == 401
        elif who in endpoint.allowed:
            assert response.status_code == 200, body[:300]
            assert response["Cache-Control"] == "private, no-store"
        else:
            assert response.status_code == 404
        for secret in (
            OWNER_TOKEN,
            JWT,
            SIGNED_LINK,
            "Signature=",
            world.connection.webhook_secret,
        ):
            assert secret not in body
        passed = True
    finally:
        API_MATRIX.append((f"{endpoint.name} x {who}", passed))


def test_w2_api_scoping_matrix_summary(capsys: pytest.CaptureFixture[str]) -> None:
    failures = [cell for cell, ok in API_MATRIX if not ok]
    figures.matrix("W2 API scoping matrix", len(API_MATRIX), failures, capsys)
    assert not failures, failures


def test_w2_lists_hold_only_what_the_pages_show(world: World) -> None:
    def ids(role: str) -> set[int]:
        return {r["id"] for r in api(world.tokens[role], "reports").json()["items"]}

    assert ids("owner") == {world.personal_report.pk}
    assert ids("team_admin") == ids("team_viewer") == {world.team_report.pk}
    assert ids("other_admin") == {world.other_report.pk}
    assert ids("team_member") == ids("stranger") == set()

    def labels(role: str) -> list[str]:
        return [c["label"] for c in api(world.tokens[role], "connections").json()]

    assert labels("owner") == ["Main"]
    assert labels("team_admin") == ["Admin lab"]  # their own, not the one shared with them
    assert labels("team_member") == labels("team_viewer") == labels("stranger") == []
    owner_feed = api(world.tokens["owner"], "activity").json()
    assert [(e["kind"], e["outcome"], e["worker_gb"]) for e in owner_feed] == [
        ("training", "succeeded", 16)
    ]
    assert api(world.tokens["team_admin"], "activity").json() == []


def test_w2_a_report_has_buckets_totals_in_osai_units_and_cost(world: World) -> None:
    data = api(world.tokens["owner"], f"reports/{world.personal_report.pk}").json()
    assert data["id"] == world.personal_report.pk and len(data["buckets"]) == 3
    # OSAI's own names and units: seconds, as the factory stored them (7200 s x seeds 1..3).
    assert data["totals"]["totalTrainingSeconds8GB"] == 7200 * (1 + 2 + 3)
    assert data["currency"] == "EUR" and data["price_book_is_example"] is True
    bucket_totals = sum(float(b["cost"]["total"]) for b in data["buckets"])
    assert float(data["cost"]["total"]) == pytest.approx(bucket_totals, abs=0.02)
    page = client_for(world.owner).get(
        reverse("report_detail", args=[world.personal_report.pk]) + "?view=cost"
    )
    assert data["cost"]["total"].split(".")[0] in page.content.decode().replace(",", "")


def test_w2_spend_is_what_the_overview_and_spend_summary_show(world: World) -> None:
    make_done_bucket(
        world.connection,
        datetime(2026, 3, 1, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
    )
    Bucket.objects.filter(period_start=datetime(2026, 3, 1, tzinfo=UTC)).update(tracked=True)
    out = io.StringIO()
    call_command("spend_summary", "--user", "owner", "--json", stdout=out)
    assert api(world.tokens["owner"], "spend").json() == json.loads(out.getvalue())
    team = api(world.tokens["team_admin"], f"spend?team={world.team.pk}").json()
    assert team["team"] == "Vision" and team["currency"] == "EUR"


def test_w2_anomalies_are_the_pages_rows_filtered_by_kind_and_dates(world: World) -> None:
    main = make_anomaly(world.connection, date(2026, 3, 10))
    idle = make_anomaly(
        world.connection, date(2026, 2, 20), kind="idle_storage", column="images_kb_min"
    )
    shared = make_anomaly(world.admin_connection, date(2026, 3, 12))
    make_anomaly(world.other_connection, date(2026, 3, 11))

    def ids(role: str, query: str = "") -> list[int]:
        response = api(world.tokens[role], f"anomalies{query}")
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()]

    assert ids("owner") == [main.pk, idle.pk]
    assert ids("owner", "?kind=idle_storage") == [idle.pk]
    assert ids("owner", "?from=2026-03-01&to=2026-03-10") == [main.pk]
    assert ids("owner", "?to=2026-03-09") == [idle.pk]
    assert ids("team_member") == ids("team_viewer") == []
    assert ids("team_viewer", f"?team={world.team.pk}") == [shared.pk, main.pk, idle.pk]
    out = io.StringIO()
    call_command("anomalies", "--user", "owner", "--json", stdout=out)
    assert api(world.tokens["owner"], "anomalies").json() == json.loads(out.getvalue())
    row = api(world.tokens["owner"], "anomalies").json()[0]
    assert row["cause"].startswith("training on 16 GB workers on Main: EUR")
    assert set(row) >= {"connection", "kind", "day", "actual", "feedback", "alerting"}


def test_w2_the_openapi_schema_describes_the_read_only_api() -> None:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/api/v1/connections",
        "/api/v1/reports",
        "/api/v1/reports/{report_id}",
        "/api/v1/spend",
        "/api/v1/activity",
        "/api/v1/anomalies",
    }
    assert all(set(item) == {"get"} for item in schema["paths"].values())
    schemes = schema["components"]["securitySchemes"]
    assert next(iter(schemes.values()))["scheme"] == "bearer"


def test_w2_api_queries_do_not_grow_with_the_feed(
    world: World, django_assert_max_num_queries: Any
) -> None:
    token = world.tokens["owner"]
    api(token, "activity")  # records the token's use
    for i in range(30):
        post_hook(hook_url(world.connection), {"eventId": f"many-{i}", "taskType": "Prediction"})
    with django_assert_max_num_queries(3):
        assert len(api(token, "activity?limit=100").json()) == 31


# --- Commands -------------------------------------------------------------------------------------


def test_the_api_token_command_prints_the_token_once_and_stores_its_hash(world: World) -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("api_token", "--user", "stranger", "--name", "cron", stdout=out, stderr=err)
    token = out.getvalue().strip()
    assert token.startswith(api_tokens.TOKEN_PREFIX) and token not in err.getvalue()
    row = ApiToken.objects.get(user=world.stranger, name="cron")
    assert row.token_sha256 == api_tokens.token_digest(token)
    assert api(token, "connections").status_code == 200
    call_command("api_token", "--user", "stranger", "--revoke", row.prefix, stdout=out, stderr=err)
    assert api(token, "connections").status_code == 401


def test_the_webhook_url_command_prints_and_rotates_the_url(world: World, settings: Any) -> None:
    settings.OSAI_USAGE_BASE_URL = "https://usage.example.com/"
    out = io.StringIO()
    call_command("webhook_url", "--user", "owner", "--connection", "Main", stdout=out)
    first = out.getvalue().strip()
    assert first == f"https://usage.example.com{hook_url(world.connection)}"
    out = io.StringIO()
    call_command(
        "webhook_url",
        "--user",
        "owner",
        "--connection",
        "Main",
        "--rotate",
        stdout=out,
        stderr=io.StringIO(),
    )
    assert out.getvalue().strip() != first
    path = first.removeprefix("https://usage.example.com")
    assert post_hook(path, {"taskType": "Training"}).status_code == 404


def test_old_connections_got_a_webhook_secret_from_the_migration() -> None:
    """Rows made before 0009 (no secret) get one; new rows get one on save."""
    import importlib

    from django.apps import apps

    connection = make_connection(make_user())
    Connection.objects.filter(pk=connection.pk).update(
        webhook_secret_encrypted="", webhook_secret_sha256=""
    )
    migration = importlib.import_module("reports.migrations.0010_integrations")
    migration.give_connections_webhook_secrets(apps, None)
    connection.refresh_from_db()
    assert webhooks.connection_for_webhook(connection.webhook_secret) == connection


# --- Issue 23: every parameter validated -------------------------------------------------------

HUGE = "9" * 30


@pytest.mark.parametrize(
    "url",
    [
        "/spend.csv?from=2026-03-01&to=2026-03-15&team=\u00b2",  # str.isdigit() says yes
        f"/spend.csv?from=2026-03-01&to=2026-03-15&team={HUGE}",
        "/spend.csv?from=2026-03-01&to=2026-03-15&team=-1",
        "/spend.csv?from=x&to=y",
        "/spend.csv?from=2026-03-01&to=2029-03-01",
        "/activity/?connection=\u00b2",
        f"/activity/?connection={HUGE}",
        "/activity/feed/?after=\u00b2",
        f"/activity/feed/?after={HUGE}",
        "/activity/feed/?connection=1e3",
    ],
)
def test_malformed_page_parameters_are_a_400_with_a_message_never_a_500(
    world: World, url: str
) -> None:
    """Every parameter is validated: a malformed one is a 400 that says what it takes."""
    response = client_for(world.owner, raise_request_exception=False).get(url)
    assert response.status_code == 400, (url, response.status_code)
    assert response.content.decode().startswith(("?", "Give ?from="))


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (f"reports?offset={HUGE}", "offset"),
        ("reports?offset=10001", "offset"),
        ("reports?offset=-1", "offset"),
        (f"reports/{HUGE}", "report_id"),
        ("reports/0", "report_id"),
        ("spend?team=\u00b2", "team"),
        (f"spend?team={HUGE}", "team"),
        (f"activity?after={HUGE}", "after"),
        (f"activity?connection={HUGE}", "connection"),
        ("anomalies?kind=huge", "kind"),
        ("anomalies?from=2026-13-01", "from"),
        ("anomalies?to=yesterday", "to"),
        (f"anomalies?team={HUGE}", "team"),
    ],
)
def test_malformed_api_parameters_are_a_400_with_a_message_never_a_500(
    world: World, path: str, where: str
) -> None:
    """W2: a huge offset or id used to reach the database (a 500 on SQLite); out of range or
    not a number, it is a 400 naming the parameter."""
    response = api(world.tokens["owner"], path)
    assert response.status_code == 400, (path, response.status_code, response.content)
    assert response.json()["detail"].startswith(where)
