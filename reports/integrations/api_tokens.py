"""Personal tokens for the read-only JSON API (W2).

A token is `osaiu_` and 256 random bits (URL-safe base64): recognisable in a leaked config,
unguessable. Only its SHA-256 is stored (a fast hash is enough for a high-entropy secret: there
is nothing to brute-force), with its first characters to tell tokens apart; the token itself
is shown once. Revoking keeps the row (its name, when it was last used) and ends it at once.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from reports import audit
from reports.models import ApiToken, has_control_characters

TOKEN_PREFIX = "osaiu_"  # noqa: S105 (a prefix, not a secret)
SHOWN_CHARACTERS = 12  # "osaiu_" and six more: enough to tell one's tokens apart
# last_used_at is written at most this often per token, so reads do not each cost a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_NAME = 80


class ApiTokenError(ValueError):
    """A token that cannot be made; the message is for the form or the command."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """A new token for `user`; returns the row and the token, which is never shown again."""
    if has_control_characters(name or ""):
        raise ApiTokenError(
            "Give the name as one line of text: no line breaks, tabs or other control characters."
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user,
        name=(name or "").strip()[:MAX_NAME] or "API token",
        prefix=token[:SHOWN_CHARACTERS],
        token_sha256=token_digest(token),
    )
    audit.record(
        "api_token.create",
        actor=user,
        object_type="api_token",
        object_id=row.pk,
        label=f"{row.name} ({row.prefix}…)",
        owner=user,
    )
    return row, token


def api_token_revoke(*, user: User, pk: int) -> bool:
    """Revoke one of the user's tokens; False if they have no such active token."""
    with transaction.atomic():
        revoked = ApiToken.objects.filter(pk=pk, user=user, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        if revoked:
            row = ApiToken.objects.get(pk=pk)
            audit.record(
                "api_token.revoke",
                actor=user,
                object_type="api_token",
                object_id=pk,
                label=f"{row.name} ({row.prefix}…)",
                owner=user,
            )
    return bool(revoked)


def api_token_authenticate(token: str, *, now: datetime | None = None) -> ApiToken | None:
    """The active token row (with its user) for a presented token, or None. One query, and a
    write at most once a minute per token to record its use."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
        return None
    row = (
        ApiToken.objects.select_related("user")
        .filter(token_sha256=token_digest(token), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if row is None:
        return None
    now = now or timezone.now()
    if row.last_used_at is None or row.last_used_at < now - LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=row.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        row.last_used_at = now
    return row


def api_tokens_of(user: User) -> list[ApiToken]:
    """A person's tokens, active first, newest first."""
    return sorted(
        ApiToken.objects.filter(user=user),
        key=lambda t: (t.revoked_at is not None, -t.created_at.timestamp(), -t.pk),
    )
