"""Connections: the token is checked by signing in, stored encrypted, and never shown."""

from __future__ import annotations

import io
import logging

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from reports import crypto
from reports.models import Connection
from reports.pipeline import connections
from tests.factories import make_connection, make_user

pytestmark = pytest.mark.django_db

CANARY = "osai-sandbox-CANARY-c0nn3ct10n"


def test_adding_a_connection_signs_in_and_stores_the_token_encrypted(use_sandbox):
    user = make_user()
    conn = connections.connection_create(
        owner=user, label="Prod", region="sandbox", access_token=f"  {CANARY}\n"
    )
    assert conn.account_name  # from GET /Users
    assert conn.token_last4 == CANARY[-4:]
    assert CANARY not in conn.token_encrypted
    assert crypto.decrypt_secret(conn.token_encrypted) == CANARY
    assert conn.last_verified_at is not None
    assert use_sandbox.calls("POST /api/Users/SignIn") == 1
    assert use_sandbox.calls("GET /api/Users") == 1


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-sandbox-token", "did not accept this access token"),
        ("", "Paste the access token"),
        ("two words", "does not look like"),
    ],
)
def test_a_bad_token_gets_a_clear_message_and_nothing_is_saved(use_sandbox, token, message):
    user = make_user()
    with pytest.raises(connections.ConnectionCheckError, match=message):
        connections.connection_create(
            owner=user, label="Prod", region="sandbox", access_token=token
        )
    assert Connection.objects.count() == 0


def test_a_region_outside_the_allowlist_is_refused_without_a_request(use_sandbox):
    with pytest.raises(connections.ConnectionCheckError, match="regions"):
        connections.connection_create(
            owner=make_user(), label="X", region="http://evil.example", access_token=CANARY
        )
    assert sum(use_sandbox.stats().values()) == 0


def test_an_unreachable_osai_is_named_on_the_form(settings):
    settings.OSAI_REGIONS = {**settings.OSAI_REGIONS, "sandbox": "http://127.0.0.1:9/api"}
    settings.OSAI_HTTP_TIMEOUT_SECONDS = 1
    with pytest.raises(connections.ConnectionCheckError, match="Could not check the token"):
        connections.connection_create(
            owner=make_user(), label="X", region="sandbox", access_token=CANARY
        )


def test_labels_are_unique_per_owner(use_sandbox):
    user = make_user()
    connections.connection_create(owner=user, label="Prod", region="sandbox", access_token=CANARY)
    with pytest.raises(connections.ConnectionCheckError, match="already have"):
        connections.connection_create(
            owner=user, label="Prod", region="sandbox", access_token=CANARY + "x"
        )


def test_replacing_the_token_clears_needs_token(use_sandbox):
    user = make_user()
    conn = connections.connection_create(
        owner=user, label="Prod", region="sandbox", access_token=CANARY
    )
    connections.connection_mark_needs_token(connection=conn, message="refused")
    conn.refresh_from_db()
    assert conn.status == Connection.Status.NEEDS_TOKEN and conn.jwt_encrypted == ""
    connections.connection_replace_token(connection=conn, access_token="osai-sandbox-new-9999")
    conn.refresh_from_db()
    assert conn.status == Connection.Status.OK
    assert conn.token_last4 == "9999"


def test_the_system_stopping_a_token_is_in_its_owners_audit_log(use_sandbox):
    """M7: when OSAI refuses a token for good, the owner's audit log says the system marked
    the connection, once however many steps are refused, with no token or OSAI message in
    it; the owner's /audit/ page shows it."""
    from django.test import Client

    from reports import audit
    from reports.models import AuditEntry

    user = make_user()
    conn = connections.connection_create(
        owner=user, label="Prod", region="sandbox", access_token=CANARY
    )
    for _ in range(3):
        connections.connection_mark_needs_token(connection=conn, message=f"refused {CANARY}")
    [entry] = audit.entries_of_person(user).filter(action="connection.status")
    assert (entry.actor, entry.via, entry.client_ip) == (None, AuditEntry.Via.SYSTEM, None)
    assert (entry.object_id, entry.label) == (str(conn.pk), "Prod")
    assert entry.before == {"status": "Working"}
    assert entry.after == {"status": "Needs a new token: OSAI refused it"}
    client = Client()
    client.force_login(user)
    page = client.get("/audit/").content.decode()
    assert "connection.status" in page and "Needs a new token: OSAI refused it" in page
    assert CANARY not in page and CANARY[-4:] not in str(entry.after)


def test_key_rotation_reencrypts_every_token_and_is_idempotent(use_sandbox, settings):
    """T4: add a key, re-encrypt, drop the old key: every token still works."""
    user = make_user()
    conn = connections.connection_create(
        owner=user, label="Prod", region="sandbox", access_token=CANARY
    )
    old_key = settings.OSAI_TOKEN_KEYS[0]
    new_key = Fernet.generate_key().decode()
    settings.OSAI_TOKEN_KEYS = [new_key, old_key]
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "1 were under an older key" in out.getvalue()
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "0 were under an older key" in out.getvalue()  # idempotent
    settings.OSAI_TOKEN_KEYS = [new_key]
    conn.refresh_from_db()
    assert crypto.decrypt_secret(conn.token_encrypted) == CANARY
    client = connections.osai_client_for(conn)
    assert client.user_info().account_name


def test_key_rotation_reencrypts_channel_urls_and_secrets_and_every_encrypted_field(
    settings: object,
) -> None:
    """T4: rotation finds every encrypted column by itself (crypto.EncryptedTextField), the
    channels' URLs and signing secrets included (a budget's webhook is a channel): after the
    old key is dropped a signed webhook still signs and posts to its URL, and a column
    encrypted later needs no change to the command."""
    from django.apps import apps

    from reports.models import Channel
    from reports.spend import budgets, notify

    settings.ALERT_WEBHOOK_ALLOW_LOCAL = True  # type: ignore[attr-defined]
    owner = make_user()
    conn = make_connection(owner, token=CANARY)
    budget = budgets.budget_set(
        actor=owner,
        scope="person",
        amount="10",
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="budget-hook-secret",
    )
    old_key = settings.OSAI_TOKEN_KEYS[0]  # type: ignore[attr-defined]
    new_key = Fernet.generate_key().decode()
    settings.OSAI_TOKEN_KEYS = [new_key, old_key]  # type: ignore[attr-defined]
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "(2 were under an older key)" in out.getvalue()
    assert "Channel 1 (1 changed)" in out.getvalue()
    settings.OSAI_TOKEN_KEYS = [new_key]  # type: ignore[attr-defined]
    [channel] = budget.channels.all()
    conn.refresh_from_db()
    assert channel.url == "http://127.0.0.1:9/hook"
    assert crypto.decrypt_secret(channel.secret_encrypted) == "budget-hook-secret"
    assert crypto.decrypt_secret(conn.token_encrypted) == CANARY
    body = b"{}"
    assert notify.sign(crypto.decrypt_secret(channel.secret_encrypted), body)
    # Twice changes nothing.
    out = io.StringIO()
    call_command("reencrypt_tokens", stdout=out)
    assert "(0 were under an older key)" in out.getvalue()

    # Found from the models: every column named *_encrypted is one rotation finds.
    found = {(m._meta.label, n) for m, names in crypto.encrypted_fields() for n in names}
    named = {
        (model._meta.label, field.attname)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if field.attname.endswith("_encrypted")
    }
    assert named == found
    assert {("reports.Channel", "url_encrypted"), ("reports.Channel", "secret_encrypted")} <= found
    assert isinstance(Channel._meta.get_field("url_encrypted"), crypto.EncryptedTextField)


def test_rotation_without_the_old_key_fails_closed_and_changes_nothing(use_sandbox, settings):
    conn = connections.connection_create(
        owner=make_user(), label="P", region="sandbox", access_token=CANARY
    )
    before = Connection.objects.get(pk=conn.pk).token_encrypted
    settings.OSAI_TOKEN_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CommandError, match="Keep the old key"):
        call_command("reencrypt_tokens")
    assert Connection.objects.get(pk=conn.pk).token_encrypted == before


def test_a_missing_or_malformed_key_fails_closed(settings):
    settings.OSAI_TOKEN_KEYS = []
    with pytest.raises(crypto.TokenKeyError):
        crypto.encrypt_secret(CANARY)
    with pytest.raises(crypto.TokenDecryptionError):
        crypto.decrypt_secret("gAAAA-not-a-token")
    settings.OSAI_TOKEN_KEYS = ["short"]
    with pytest.raises(crypto.TokenKeyError, match="not a Fernet key"):
        crypto.encrypt_secret(CANARY)


def test_add_connection_reads_the_token_from_stdin(use_sandbox, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    user = make_user("scripted")
    monkeypatch.setattr("sys.stdin", io.StringIO(CANARY + "\n"))
    out = io.StringIO()
    call_command(
        "add_connection", "--user", "scripted", "--label", "CLI", "--region", "sandbox", stdout=out
    )
    conn = Connection.objects.get(owner=user, label="CLI")
    assert crypto.decrypt_secret(conn.token_encrypted) == CANARY
    assert CANARY not in out.getvalue() and CANARY[-4:] in out.getvalue()
    assert CANARY not in caplog.text


def test_add_connection_has_no_token_argument():
    from reports.management.commands.add_connection import Command

    parser = Command().create_parser("manage.py", "add_connection")
    assert not any("token" in action.dest for action in parser._actions)


def test_the_token_never_appears_in_str_or_repr(use_sandbox):
    conn = connections.connection_create(
        owner=make_user(), label="P", region="sandbox", access_token=CANARY
    )
    assert CANARY not in str(conn) and CANARY not in repr(conn)
    assert conn.token_hint == "…" + CANARY[-4:]


def test_deleting_a_connection_removes_its_usage_and_the_reports_only_it_covered():
    from reports.models import Bucket, Report
    from tests.factories import make_connection, make_done_report

    user = make_user()
    gone, kept = make_connection(user, "Gone"), make_connection(user, "Kept")
    only_gone = make_done_report(user, [gone])
    combined = make_done_report(user, [gone, kept])
    assert combined.buckets_total == 6
    assert connections.connection_delete(connection=gone) == 1
    assert not Report.objects.filter(pk=only_gone.pk).exists()
    combined.refresh_from_db()
    assert (combined.state, combined.buckets_total, combined.buckets_done) == ("done", 3, 3)
    assert not Bucket.objects.filter(connection_id=gone.pk).exists()


def test_the_client_factory_configures_the_client_from_settings(settings):
    settings.OSAI_REGIONS = {**settings.OSAI_REGIONS, "eu": "https://osai.test/api/"}
    settings.OSAI_HTTP_TIMEOUT_SECONDS = 3.5
    settings.OSAI_DOWNLOAD_HOSTS = ["Files.Example"]
    settings.OSAI_RETRY_AFTER_CAP_SECONDS = 7.0
    settings.OSAI_DOWNLOAD_MAX_BYTES = 1234
    connection = make_connection(make_user(), region="eu", token=CANARY)

    client = connections.osai_client_for(connection)

    assert (client.base_url, client.timeout, client.retry_after_cap) == (
        "https://osai.test/api",
        3.5,
        7.0,
    )
    assert (client.download_hosts, client.max_download_bytes) == (
        frozenset({"files.example"}),
        1234,
    )
    assert (client.jwt, client.sandbox) == (None, False)
    assert CANARY not in repr(client)


# --- F2 for connections: each new one starts tracking, dozens of OSAI reports -------------------


@pytest.fixture
def own_limits(settings: object) -> object:
    """Rate-limit counters of this test's own (the shared file cache keeps other runs')."""
    import uuid

    settings.RATELIMIT_CACHE_PREFIX = f"rl-{uuid.uuid4().hex}:"  # type: ignore[attr-defined]
    return settings


def test_adding_connections_is_limited_per_person_per_hour_and_deleting_one_gives_no_try_back(
    use_sandbox: object, own_limits: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """F2: adding connections had no limit, and each new one queues its tracking. At most
    OSAI_CONNECTION_ADDS_PER_HOUR a person per hour, at the form, the command and the service;
    over it nothing is created and OSAI is not asked."""
    from django.test import Client
    from django.urls import reverse

    own_limits.OSAI_CONNECTION_ADDS_PER_HOUR = 2  # type: ignore[attr-defined]
    owner, other = make_user(), make_user()
    first = connections.connection_create(
        owner=owner, label="A", region="sandbox", access_token="osai-sandbox-add-a"
    )
    connections.connection_create(
        owner=owner, label="B", region="sandbox", access_token="osai-sandbox-add-b"
    )
    connections.connection_delete(connection=first)  # gives no try back
    signed_in_before = use_sandbox.calls("POST /api/Users/SignIn")  # type: ignore[attr-defined]
    with pytest.raises(connections.ConnectionCheckError, match="You added 2 connections"):
        connections.connection_create(
            owner=owner, label="C", region="sandbox", access_token="osai-sandbox-add-c"
        )
    client = Client()
    client.force_login(owner)
    page = client.post(
        reverse("connection_create"),
        {"label": "D", "region": "sandbox", "access_token": "osai-sandbox-add-d"},
    )
    assert "You added 2 connections in the last hour" in page.content.decode()
    monkeypatch.setattr("sys.stdin", io.StringIO("osai-sandbox-add-e\n"))
    with pytest.raises(CommandError, match="You added 2 connections"):
        call_command(
            "add_connection", "--user", owner.username, "--label", "E", "--region", "sandbox"
        )
    assert list(Connection.objects.filter(owner=owner).values_list("label", flat=True)) == ["B"]
    assert use_sandbox.calls("POST /api/Users/SignIn") == signed_in_before  # type: ignore[attr-defined]
    # Someone else has limits of their own.
    connections.connection_create(
        owner=other, label="A", region="sandbox", access_token="osai-sandbox-add-f"
    )


def test_a_new_connections_tracking_counts_against_the_persons_waiting_cap(
    use_sandbox: object, own_limits: object
) -> None:
    """F2: the OSAI reports tracking queues for a person's connections wait like their
    reports' parts: they count against OSAI_MAX_WAITING_BUCKETS_PER_PERSON, for a report
    request and for adding yet another connection."""
    from reports.models import Bucket
    from reports.pipeline import report_requests
    from reports.spend import tracking
    from tests.factories import request_report

    owner = make_user()
    connection = connections.connection_create(
        owner=owner, label="A", region="sandbox", access_token="osai-sandbox-cap-a"
    )
    tracking.tracking_refresh(connection, wake=False)  # its history: waiting, not yet fetched
    waiting = Bucket.objects.waiting_for_person(owner).count()
    assert waiting > 10
    own_limits.OSAI_MAX_WAITING_BUCKETS_PER_PERSON = waiting  # type: ignore[attr-defined]
    with pytest.raises(report_requests.ReportRequestError, match=f"still wait for {waiting}"):
        request_report(owner, [connection])
    with pytest.raises(connections.ConnectionCheckError, match=f"still wait for {waiting}"):
        connections.connection_create(
            owner=owner, label="B", region="sandbox", access_token="osai-sandbox-cap-b"
        )
    assert Connection.objects.filter(owner=owner).count() == 1
