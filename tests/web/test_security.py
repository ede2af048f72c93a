"""Hardening: deploy checks (S1, S13), headers (S7), login throttling (S8), plain 500 (S9), the
client behind a proxy (S10), nothing signed in cached (S11), throttled password resets (S12)."""

from __future__ import annotations

import importlib
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.test import Client
from django.urls import clear_url_caches, reverse

from tests.factories import PASSWORD, make_done_report, make_user
from tests.support import figures

ROOT = Path(__file__).resolve().parents[2]


def production_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OSAI_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="osai_dashboard.settings",
        DJANGO_DEBUG="False",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(64),
        DJANGO_ALLOWED_HOSTS="usage.example.com",
        DJANGO_SECURE_COOKIES="True",
        DJANGO_HSTS_SECONDS="31536000",
        DJANGO_SECURE_SSL_REDIRECT="True",
        OSAI_TOKEN_KEYS=Fernet.generate_key().decode(),
    )
    env.update(overrides)
    return env


def manage(
    env: dict[str, str], *args: str, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """`python manage.py <args>` in a process of its own, started with `env` (settings are
    read once, at start-up); its output as text."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return manage(env, "check", "--deploy", "--fail-level", "WARNING")


def test_check_deploy_passes_with_production_settings():
    """S1."""
    result = check_deploy(production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    figures.figure("S1 check --deploy warnings", 0)


def test_check_deploy_refuses_the_development_keys():
    """S1: a deploy that sets no keys would run on the published development keys: errors,
    whatever the fail level (not only at --fail-level WARNING)."""
    env = production_env()
    del env["DJANGO_SECRET_KEY"], env["OSAI_TOKEN_KEYS"]
    result = manage(env, "check", "--deploy")
    assert result.returncode != 0
    assert "osai.E001" in result.stderr and "osai.E002" in result.stderr


def test_check_deploy_errors_when_budget_webhooks_may_reach_loopback():
    """A2, S1: ALERT_WEBHOOK_ALLOW_LOCAL is for development; check --deploy says so, as an
    error. Start-up does not (make run and the tests run with DEBUG off too)."""
    env = production_env(ALERT_WEBHOOK_ALLOW_LOCAL="True")
    result = manage(env, "check", "--deploy")
    assert result.returncode != 0
    assert "osai.E004" in result.stderr and "ALERT_WEBHOOK_ALLOW_LOCAL" in result.stderr
    plain = manage(env, "check")
    assert plain.returncode == 0, plain.stderr


def test_the_sandbox_region_is_off_unless_configured_and_deploy_check_warns_when_on():
    """S13."""
    show_regions = (
        "shell",
        "-c",
        "from django.conf import settings; print(','.join(sorted(settings.OSAI_REGIONS)))",
    )
    env = production_env(DJANGO_DEBUG="True")
    regions = manage(env, *show_regions, check=True)
    assert regions.stdout.strip().splitlines()[-1] == "eu,us"
    env["OSAI_SANDBOX_URL"] = "http://127.0.0.1:8765/api"
    regions = manage(env, *show_regions, check=True)
    assert regions.stdout.strip().splitlines()[-1] == "eu,sandbox,us"

    result = check_deploy(production_env(OSAI_SANDBOX_URL="http://127.0.0.1:8765/api"))
    assert result.returncode != 0
    assert "osai.W003" in result.stderr and "OSAI_SANDBOX_URL" in result.stderr


@pytest.mark.django_db
def test_pages_carry_a_strict_content_security_policy(client):
    user = make_user()
    client.force_login(user)
    response = client.get(reverse("home"))
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in csp
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_production_sends_hsts_and_secure_cookies(settings):
    """S7: the settings that production's environment turns on, in effect on a response."""
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SESSION_COOKIE_SECURE = True
    settings.CSRF_COOKIE_SECURE = True
    client = Client()
    response = client.get(reverse("login"), secure=True)
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response.cookies["csrftoken"]["secure"] is True
    user = make_user()
    response = client.post(
        reverse("login"), {"login": user.username, "password": PASSWORD}, secure=True
    )
    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] is True
    assert response.cookies["sessionid"]["httponly"] is True


@pytest.mark.django_db
def test_login_brute_force_is_throttled_with_a_cool_off(settings):
    """S8: after the failure limit, even the right password is refused for a while."""
    user = make_user()
    client = Client()
    url = reverse("login")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(url, {"login": user.username, "password": "wrong"})
        assert response.status_code == 200  # the form again, with an error
    response = client.post(url, {"login": user.username, "password": "wrong"})
    assert response.status_code == 429  # the limit-th failure locks
    response = client.post(url, {"login": user.username, "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many sign-in attempts" in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_crash_shows_the_plain_500_page(settings, monkeypatch):
    """S9: no traceback, no settings."""
    settings.DEBUG = False
    user = make_user()
    client = Client(raise_request_exception=False)
    client.force_login(user)

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom SECRET_KEY")

    monkeypatch.setattr("reports.views.home.render", boom)
    response = client.get(reverse("home"))
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong" in body
    for leak in ("Traceback", "kaboom", "SECRET_KEY", "settings", "DATABASES"):
        assert leak not in body


# --- S10, S11, S12: asked for by the review of the multi-tenant pipeline ---


def _reload_urls() -> None:
    """The URLconf again, after PASSWORD_RESET_ENABLED changed (the sign-in URLs read it)."""
    import osai_dashboard.signin.urls
    import osai_dashboard.urls

    importlib.reload(osai_dashboard.signin.urls)
    importlib.reload(osai_dashboard.urls)
    clear_url_caches()


@pytest.mark.django_db
def test_lock_out_counts_the_client_behind_the_proxy_not_the_proxy(settings: Any) -> None:
    """S10: five failures from one client lock that client out, not the same user elsewhere."""
    settings.BEHIND_PROXY = True
    user = make_user("locked")

    def sign_in(client_address: str, password: str) -> int:
        client = Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"6.6.6.6, {client_address}")
        response = client.post(reverse("login"), {"login": user.username, "password": password})
        return response.status_code

    for _ in range(4):
        assert sign_in("203.0.113.7", "wrong") == 200
    assert sign_in("203.0.113.7", "wrong") == 429  # the fifth failure locks this client out
    assert sign_in("203.0.113.7", PASSWORD) == 429  # even with the right password
    assert sign_in("198.51.100.2", PASSWORD) == 302  # the same user elsewhere is not


@pytest.mark.django_db
def test_signed_in_pages_partials_and_downloads_are_not_cached(client: Client) -> None:
    """S11."""
    owner = make_user()
    report = make_done_report(owner)
    client.force_login(owner)
    for url in (
        reverse("home"),
        reverse("report_detail", args=[report.pk]),
        reverse("report_status", args=[report.pk]),
        reverse("report_export_csv", args=[report.pk]),
        reverse("budget_list"),
    ):
        response = client.get(url, HTTP_HX_REQUEST="true" if "status" in url else "")
        assert "no-store" in response["Cache-Control"] and "private" in response["Cache-Control"], (
            url
        )
    figures.figure("S11 pages checked for Cache-Control", 5)


@pytest.mark.django_db
def test_password_reset_exists_only_with_mail_and_is_throttled(settings: Any) -> None:
    """S12."""
    assert Client().get("/accounts/password/reset/").status_code == 404  # no mail configured
    settings.PASSWORD_RESET_ENABLED = True
    settings.PASSWORD_RESET_RATE = "3/h"
    # The test cache is a shared file cache: counters of earlier runs must not count here.
    settings.RATELIMIT_CACHE_PREFIX = f"rl-{uuid.uuid4().hex}:"
    try:
        _reload_urls()
        client = Client(REMOTE_ADDR="192.0.2.5")
        assert client.get("/accounts/password/reset/").status_code == 200
        codes = [
            client.post("/accounts/password/reset/", {"email": f"x{i}@example.com"}).status_code
            for i in range(4)
        ]
        assert codes == [302, 302, 302, 429]
    finally:
        settings.PASSWORD_RESET_ENABLED = False
        _reload_urls()


# --- Issue 23: secrets out of the access log, resets per email, check --deploy ---


@pytest.mark.django_db
def test_the_password_reset_limit_per_email_ignores_case_and_spelling(settings: Any) -> None:
    """S12: one account's address in five spellings is one limit, not five (Django's reset
    form finds the account whatever the case)."""
    settings.PASSWORD_RESET_ENABLED = True
    settings.PASSWORD_RESET_RATE = "3/h"
    settings.RATELIMIT_CACHE_PREFIX = f"rl-{uuid.uuid4().hex}:"
    make_user(email="alice@example.com")
    fullwidth = "\uff41\uff4c\uff49\uff43\uff45@example.com"  # NFKC: alice@example.com
    spellings = [
        "alice@example.com",
        "Alice@example.com",
        "ALICE@EXAMPLE.COM",
        " alice@Example.com",
        fullwidth,
    ]
    try:
        _reload_urls()
        codes = [
            # A new client address each time: only the limit per email can stop them.
            Client(REMOTE_ADDR=f"192.0.2.{10 + i}")
            .post("/accounts/password/reset/", {"email": email})
            .status_code
            for i, email in enumerate(spellings)
        ]
        assert codes == [302, 302, 302, 429, 429]
    finally:
        settings.PASSWORD_RESET_ENABLED = False
        _reload_urls()


def _shipped_gunicorn_arguments() -> dict[str, list[str]]:
    """The gunicorn arguments of the Procfile's web process and of the systemd unit, with the
    Procfile's ${VAR:-default} as their defaults."""
    import re
    import shlex

    procfile = (ROOT / "Procfile").read_text()
    [web] = [line for line in procfile.splitlines() if line.startswith("web:")]
    web = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", web.removeprefix("web:"))
    unit = (ROOT / "deploy" / "systemd" / "osai-usage-web.service").read_text()
    [start] = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    found = {}
    for name, command in (("Procfile", web), ("systemd", start.removeprefix("ExecStart="))):
        words = shlex.split(command)
        assert words[0].endswith("gunicorn")
        found[name] = words[1:]
    return found


@pytest.mark.parametrize("shipped", ["Procfile", "systemd"])
def test_the_shipped_gunicorn_access_log_writes_webhook_paths_without_their_secret(
    shipped: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """W1: the receiver's secret is in its URL; the production access log (gunicorn, as the
    Procfile and the systemd unit start it) writes `<secret>` in its place, in the request
    line, the path and the referer alike."""
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config

    config = Config()
    parsed = config.parser().parse_args(_shipped_gunicorn_arguments()[shipped])
    for key, value in vars(parsed).items():
        if value is not None and key != "args":
            config.set(key.lower(), value)
    logger = config.logger_class(config)
    secret = "Jq4-" + secrets.token_urlsafe(32)
    path = f"/hooks/osai/{secret}/"
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": path + "?x=1",
        "PATH_INFO": path,
        "QUERY_STRING": "x=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "HTTP_REFERER": f"https://usage.example.com{path}",
        "HTTP_USER_AGENT": "OSAI",
    }
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    request = SimpleNamespace(headers=[("REFERER", f"https://usage.example.com{path}")])
    logger.access(response, request, environ, timedelta(milliseconds=3))
    logged = capsys.readouterr().out
    assert "POST /hooks/osai/<secret>/?x=1 HTTP/1.1" in logged
    assert secret not in logged and secret[:12] not in logged


@pytest.mark.django_db
def test_guessing_one_account_from_many_addresses_is_slowed_without_locking_its_owner_out(
    settings: Any, time_machine: Any
) -> None:
    """S8: django-axes counts (username, address), so an attacker with many addresses gets
    AXES_FAILURE_LIMIT guesses from each. Past LOGIN_ACCOUNT_FAILURE_LIMIT failures an account
    takes one attempt per LOGIN_ACCOUNT_SLOWDOWN_SECONDS from places it has not signed in from,
    even with the right password; its owner, where they signed in before, is not slowed, and a
    new place gets its turn after the wait: slowed, never locked out for good."""
    from datetime import timedelta

    from django.utils import timezone

    time_machine.move_to(timezone.now())
    settings.LOGIN_ACCOUNT_FAILURE_LIMIT = 6
    settings.LOGIN_ACCOUNT_SLOWDOWN_SECONDS = 60
    user = make_user()

    def sign_in(address: str, password: str) -> Any:
        client = Client(REMOTE_ADDR=address)
        return client.post(reverse("login"), {"login": user.username, "password": password})

    assert sign_in("198.51.100.9", PASSWORD).status_code == 302  # the owner, at home
    for i in range(6):  # one guess from each of six addresses: axes alone would allow all
        assert sign_in(f"203.0.113.{i}", "wrong").status_code == 200
    assert sign_in("203.0.113.50", "wrong").status_code == 200  # the minute's one attempt
    slowed = sign_in("203.0.113.51", PASSWORD)  # the right password, guessed from elsewhere
    assert slowed.status_code == 200
    assert "Too many failed sign-ins to this account from elsewhere" in slowed.content.decode()
    assert "_auth_user_id" not in slowed.client.session
    assert sign_in("198.51.100.9", PASSWORD).status_code == 302  # the owner is not slowed
    time_machine.shift(timedelta(seconds=61))
    assert sign_in("192.0.2.77", PASSWORD).status_code == 302  # a new place, after the wait
    figures.figure("S8 guesses an hour per account from new addresses, once slowed", 60)
