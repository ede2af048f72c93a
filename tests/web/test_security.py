"""Hardening: deploy checks (S1, S13), headers (S7), login throttling (S8), plain 500 (S9)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client
from django.urls import reverse

from tests.factories import PASSWORD, make_user
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


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_production_settings():
    """S1."""
    result = check_deploy(production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
    figures.figure("S1 check --deploy warnings", 0)


def test_check_deploy_refuses_the_development_keys():
    env = production_env()
    del env["DJANGO_SECRET_KEY"], env["OSAI_TOKEN_KEYS"]
    result = check_deploy(env)
    assert result.returncode != 0
    assert "osai.W001" in result.stderr and "osai.W002" in result.stderr


def test_the_sandbox_region_is_off_unless_configured_and_deploy_check_warns_when_on():
    """S13."""
    show_regions = [
        sys.executable,
        "manage.py",
        "shell",
        "-c",
        "from django.conf import settings; print(','.join(sorted(settings.OSAI_REGIONS)))",
    ]
    env = production_env(DJANGO_DEBUG="True")
    regions = subprocess.run(
        show_regions, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert regions.stdout.strip().splitlines()[-1] == "eu,us"
    env["OSAI_SANDBOX_URL"] = "http://127.0.0.1:8765/api"
    regions = subprocess.run(
        show_regions, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    )
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
        reverse("login"), {"username": user.username, "password": PASSWORD}, secure=True
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
        response = client.post(url, {"username": user.username, "password": "wrong"})
        assert response.status_code == 200  # the form again, with an error
    response = client.post(url, {"username": user.username, "password": "wrong"})
    assert response.status_code == 429  # the limit-th failure locks
    response = client.post(url, {"username": user.username, "password": PASSWORD})
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
