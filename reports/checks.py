"""Deployment checks of our own (run by `manage.py check --deploy`; S1, S13)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def check_production_keys(app_configs: Any, **kwargs: Any) -> list[Warning]:
    from osai_dashboard import settings as defaults

    problems = []
    if settings.SECRET_KEY == defaults._DEV_SECRET_KEY:
        problems.append(
            Warning(
                "DJANGO_SECRET_KEY is the development default.",
                hint="Set DJANGO_SECRET_KEY to a long random value.",
                id="osai.W001",
            )
        )
    if defaults._DEV_TOKEN_KEY in settings.OSAI_TOKEN_KEYS:
        problems.append(
            Warning(
                "OSAI_TOKEN_KEYS contains the development key, so stored access tokens are "
                "readable by anyone with this source code.",
                hint="Generate a key with Fernet.generate_key() and set OSAI_TOKEN_KEYS.",
                id="osai.W002",
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
    return problems
