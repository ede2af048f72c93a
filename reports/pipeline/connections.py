"""Connections: a person's OSAI access tokens, and the OSAI client made from one.

Keyword-only services named `connection_<action>`, called by views and commands. A token is
checked by signing in to OSAI before it is stored (encrypted, reports/crypto.py) and is never
shown again beyond its last four characters. `osai_client_for` is the one place where an
`osai.client.OsaiClient` is configured from settings.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone

from osai.client import OsaiClient
from osai.errors import OsaiAuthError, OsaiError
from osai.parse import jwt_expiry
from reports import audit, crypto
from reports.models import Bucket, Connection, Report, has_control_characters
from reports.pipeline import progress

MAX_TOKEN_LENGTH = 4096


class ConnectionCheckError(Exception):
    """The access token could not be checked with OSAI; the message is for the form."""


def region_choices() -> list[tuple[str, str]]:
    labels = settings.OSAI_REGION_LABELS
    return [(key, labels.get(key, key.upper())) for key in settings.OSAI_REGIONS]


def osai_client_for(connection: Connection, *, access_token: str | None = None) -> OsaiClient:
    """A client for the connection's region, signed in with its stored (cached) JWT.

    Raises crypto.TokenDecryptionError before any request if the token cannot be read.
    A fresh JWT from a (re-)sign-in is stored encrypted, with its expiry.
    """
    if connection.region not in settings.OSAI_REGIONS:
        raise OsaiError(
            f"The region {connection.region!r} is not offered by this server any more.",
            permanent=True,
        )
    token = (
        access_token
        if access_token is not None
        else crypto.decrypt_secret(connection.token_encrypted)
    )
    jwt: str | None = None
    if (
        access_token is None
        and connection.jwt_encrypted
        and connection.jwt_expires_at
        and connection.jwt_expires_at > timezone.now() + timedelta(seconds=30)
    ):
        try:
            jwt = crypto.decrypt_secret(connection.jwt_encrypted)
        except crypto.TokenDecryptionError:
            jwt = None  # sign in again; the token itself decrypted fine

    def remember_jwt(new_jwt: str) -> None:
        if connection.pk is None:
            return
        expires = jwt_expiry(new_jwt) or timezone.now() + timedelta(minutes=30)
        connection.jwt_encrypted = crypto.encrypt_secret(new_jwt)
        connection.jwt_expires_at = expires
        Connection.objects.filter(pk=connection.pk).update(
            jwt_encrypted=connection.jwt_encrypted, jwt_expires_at=expires
        )

    return OsaiClient(
        settings.OSAI_REGIONS[connection.region],
        token,
        jwt=jwt,
        on_new_jwt=remember_jwt,
        sandbox=connection.region == "sandbox",
        timeout=settings.OSAI_HTTP_TIMEOUT_SECONDS,
        download_hosts=settings.OSAI_DOWNLOAD_HOSTS,
        retry_after_cap=settings.OSAI_RETRY_AFTER_CAP_SECONDS,
        max_download_bytes=settings.OSAI_DOWNLOAD_MAX_BYTES,
    )


def person_key(user: User) -> str:
    """A person, as the key of a rate limit (webhooks per person, connections added): their
    id and when they joined, so an id used again (a test database's) is another person."""
    return f"{user.pk}.{user.date_joined.timestamp():.6f}"


def _clean_token(access_token: str) -> str:
    token = (access_token or "").strip()
    if not token:
        raise ConnectionCheckError("Paste the access token you generated in OSAI.")
    if len(token) > MAX_TOKEN_LENGTH or any(ch.isspace() for ch in token):
        raise ConnectionCheckError("That does not look like an OSAI access token.")
    return token


def _check_token(connection: Connection, token: str) -> str:
    """Sign in with the token and read the OSAI account name; raise ConnectionCheckError."""
    client = osai_client_for(connection, access_token=token)
    try:
        client.sign_in()
        user = client.user_info()
    except OsaiAuthError:
        raise ConnectionCheckError(
            "OSAI did not accept this access token. Check that you copied all of it and "
            "that it has not been revoked."
        ) from None
    except OsaiError as exc:
        raise ConnectionCheckError(f"Could not check the token with OSAI: {exc.message}") from None
    if client.jwt:
        connection.jwt_encrypted = crypto.encrypt_secret(client.jwt)
        connection.jwt_expires_at = jwt_expiry(client.jwt) or timezone.now() + timedelta(minutes=30)
    connection.osai_account_id = user.account_id  # one token, one account: one shared cap
    return user.account_name


def _verify_and_store_token(connection: Connection, access_token: str) -> None:
    """Sign in with the token (ConnectionCheckError if OSAI refuses it), then set it on the
    connection, encrypted, with the OSAI account name; the caller saves."""
    token = _clean_token(access_token)
    connection.account_name = _check_token(connection, token)
    connection.token_encrypted = crypto.encrypt_secret(token)
    connection.token_last4 = token[-4:]
    connection.status = Connection.Status.OK
    connection.status_message = ""
    connection.last_verified_at = timezone.now()


def _clean_label(label: str) -> str:
    """The label, stripped; one line (A7: it reaches email subjects and log lines)."""
    label = (label or "").strip()
    if has_control_characters(label):
        raise ConnectionCheckError(
            "Give the label as one line of text: no line breaks, tabs or other control characters."
        )
    return label


def _check_add_limits(owner: User) -> None:
    """F2 for connections: each new one signs in to OSAI and starts tracking (dozens of OSAI
    reports), so a person adds at most OSAI_CONNECTION_ADDS_PER_HOUR in an hour (counted in
    the cache, so deleting one does not give the try back), and none while the OSAI reports
    waiting for them are at their cap (OSAI_MAX_WAITING_BUCKETS_PER_PERSON)."""
    limit = settings.OSAI_CONNECTION_ADDS_PER_HOUR
    prefix = getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:")  # django-ratelimit's too
    key = f"{prefix}osai-connection-adds:{person_key(owner)}"
    now = time.time()
    recent = [t for t in cache.get(key, []) if t > now - 3600]
    if len(recent) >= limit:
        again = datetime.fromtimestamp(min(recent) + 3600, tz=UTC)
        raise ConnectionCheckError(
            f"You added {limit} connections in the last hour, the most we take from one "
            f"person: each starts fetching its history from OSAI. Try again after "
            f"{again:%H:%M} UTC."
        )
    waiting = Bucket.objects.waiting_for_person(owner).count()
    cap = settings.OSAI_MAX_WAITING_BUCKETS_PER_PERSON
    if waiting >= cap:
        raise ConnectionCheckError(
            f"Your reports and connections still wait for {waiting} OSAI reports, the most "
            "that may wait for one person; a new connection would add its history to them. "
            "Add it when they are done."
        )
    cache.set(key, [*recent, now], timeout=3600)


def connection_create(*, owner: User, label: str, region: str, access_token: str) -> Connection:
    """Check the token by signing in, then save the connection with the token encrypted.

    Bounded per person (`_check_add_limits`): an attempt counts once the token is about to be
    checked with OSAI, whether or not OSAI accepts it."""
    label = _clean_label(label)
    if not label:
        raise ConnectionCheckError("Give the connection a label, such as 'Production'.")
    if region not in settings.OSAI_REGIONS:
        raise ConnectionCheckError("Choose one of the offered regions.")
    if Connection.objects.filter(owner=owner, label=label).exists():
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.")
    _check_add_limits(owner)
    connection = Connection(owner=owner, label=label, region=region)
    _verify_and_store_token(connection, access_token)
    try:
        connection.save()
    except IntegrityError:
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.") from None
    _record(
        "connection.add",
        connection,
        after={"label": label, "region": region, "token": f"…{connection.token_last4}"},
    )
    return connection


def _record(
    action: str,
    connection: Connection,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    by_system: bool = False,
) -> None:
    """Into the audit log (M7), as its owner's act, or `by_system` the system's (the worker's,
    even when a page's request got there): never a token, only "…last4"."""
    with audit.acting(audit.Via.SYSTEM) if by_system else nullcontext():
        audit.record(
            action,
            actor=None if by_system else connection.owner,
            object_type="connection",
            object_id=connection.pk,
            label=connection.label,
            owner=connection.owner_id,
            before=before,
            after=after,
        )


def connection_replace_token(*, connection: Connection, access_token: str) -> Connection:
    """Check a new token and store it in place of the old one."""
    old_hint = f"…{connection.token_last4}"
    _verify_and_store_token(connection, access_token)
    with transaction.atomic():
        connection.save()
        _record(
            "connection.token",
            connection,
            before={"token": old_hint},
            after={"token": f"token replaced (…{connection.token_last4})"},
        )
    return connection


def connection_relabel(*, connection: Connection, label: str) -> Connection:
    label = _clean_label(label)
    if not label:
        raise ConnectionCheckError("The label cannot be empty.")
    if Connection.objects.filter(owner=connection.owner, label=label).exclude(pk=connection.pk):
        raise ConnectionCheckError(f"You already have a connection labelled {label!r}.")
    before = connection.label
    connection.label = label
    with transaction.atomic():
        connection.save(update_fields=["label"])
        if before != label:
            _record(
                "connection.label", connection, before={"label": before}, after={"label": label}
            )
    return connection


def connection_mark_needs_token(*, connection: Connection, message: str) -> None:
    """OSAI refused the token even after a fresh sign-in: stop using it until replaced. The
    first time, the owner's audit log says so, as the system's act (M7): nobody clicked it."""
    found = Connection.objects.filter(pk=connection.pk)
    with transaction.atomic():
        was = found.select_for_update().values_list("status", flat=True).first()
        found.update(
            status=Connection.Status.NEEDS_TOKEN,
            status_message=message[:300],
            jwt_encrypted="",
            jwt_expires_at=None,
        )
        if was is not None and was != Connection.Status.NEEDS_TOKEN:
            _record(
                "connection.status",
                connection,
                before={"status": Connection.Status(was).label},
                after={"status": f"{Connection.Status.NEEDS_TOKEN.label}: OSAI refused it"},
                by_system=True,
            )


def connection_delete(*, connection: Connection) -> int:
    """Delete a connection, its buckets and archived files. Returns how many reports went.

    Reports that covered only this connection would be empty, so they go too; reports that
    combined it with others keep the rest of their buckets and are recounted.
    """
    with transaction.atomic():
        report_ids = list(connection.reports.values_list("pk", flat=True))
        pk = connection.pk
        connection.delete()
        connection.pk = pk
        _record(
            "connection.delete",
            connection,
            before={"label": connection.label, "token": f"…{connection.token_last4}"},
        )
        emptied = Report.objects.filter(pk__in=report_ids, connections__isnull=True)
        emptied.delete()
        for report_pk in Report.objects.filter(pk__in=report_ids).values_list("pk", flat=True):
            progress.report_refresh(report_pk)
    return len(report_ids) - Report.objects.filter(pk__in=report_ids).count()
