"""Deployment checks of our own (run by `manage.py check --deploy`; S1, S13).

Only with --deploy, never at start-up: `make run`, the tests and the bench run with DEBUG off
and the development keys too. What a production deploy must not do is an error:
- the development DJANGO_SECRET_KEY or OSAI_TOKEN_KEYS (both published with this source: a
  deploy that sets no keys would run on them, and anyone could read its stored tokens);
- ALERT_WEBHOOK_ALLOW_LOCAL (budget webhooks could then reach loopback services).
- single sign-on over http (OSAI_OIDC_ISSUER must be https: the id_token's keys and the
  person's claims come from there), or half-configured, or passwords off with no single
  sign-on (nobody could sign in) (S14).
The sandbox region with DEBUG off is a warning (S13).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_production_keys(app_configs: Any, **kwargs: Any) -> list[CheckMessage]:
    from osai_dashboard import settings as defaults

    problems: list[CheckMessage] = []
    if settings.SECRET_KEY == defaults._DEV_SECRET_KEY:
        problems.append(
            Error(
                "DJANGO_SECRET_KEY is the development default, published with this source: "
                "sessions and password-reset links could be forged.",
                hint="Set DJANGO_SECRET_KEY to a long random value.",
                id="osai.E001",
            )
        )
    if defaults._DEV_TOKEN_KEY in settings.OSAI_TOKEN_KEYS:
        problems.append(
            Error(
                "OSAI_TOKEN_KEYS contains the development key, so stored access tokens and "
                "secrets are readable by anyone with this source code.",
                hint="Generate a key with Fernet.generate_key() and set OSAI_TOKEN_KEYS.",
                id="osai.E002",
            )
        )
    if "sandbox" in settings.OSAI_REGIONS and not settings.DEBUG:
        problems.append(
            Warning(
                "The OSAI sandbox region is on (OSAI_SANDBOX_URL is set) with DEBUG off: people "
                "can add connections to a local emulator instead of OSAI.",
                hint="Leave OSAI_SANDBOX_URL empty in production.",
                id="osai.W003",
            )
        )
    if settings.ALERT_WEBHOOK_ALLOW_LOCAL:
        problems.append(
            Error(
                "ALERT_WEBHOOK_ALLOW_LOCAL is on: budget webhooks may be posted over http to "
                "loopback, so anyone who sets a budget can reach services on this machine.",
                hint="Leave ALERT_WEBHOOK_ALLOW_LOCAL off (False) in production.",
                id="osai.E004",
            )
        )
    problems += _sign_in_problems()
    return problems


def _sign_in_problems() -> list[CheckMessage]:
    issuer, client = settings.OSAI_OIDC_ISSUER, settings.OSAI_OIDC_CLIENT_ID
    problems: list[CheckMessage] = []
    if issuer and not issuer.startswith("https://"):
        problems.append(
            Error(
                "OSAI_OIDC_ISSUER is not https: the sign-in service's keys and answers could "
                "be changed on the way.",
                hint="Use the issuer's https URL.",
                id="osai.E005",
            )
        )
    if bool(issuer) != bool(client) or (issuer and not settings.OSAI_OIDC_CLIENT_SECRET):
        problems.append(
            Error(
                "Single sign-on is half-configured: OSAI_OIDC_ISSUER, OSAI_OIDC_CLIENT_ID and "
                "OSAI_OIDC_CLIENT_SECRET go together.",
                hint="Set all three, or none.",
                id="osai.E006",
            )
        )
    if not settings.OSAI_PASSWORD_LOGIN and not (issuer and client):
        problems.append(
            Error(
                "OSAI_PASSWORD_LOGIN is off and single sign-on is not configured: nobody can "
                "sign in.",
                hint="Configure OSAI_OIDC_* or leave OSAI_PASSWORD_LOGIN on.",
                id="osai.E007",
            )
        )
    return problems
