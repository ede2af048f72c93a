"""Access tokens, JWTs and other secrets at rest: MultiFernet under OSAI_TOKEN_KEYS, never
SECRET_KEY.

A wrong or missing key fails closed: `TokenDecryptionError`, never ciphertext passed on
as if it were a token, and so no request reaches OSAI.

Every column that holds such a secret is an `EncryptedTextField`; key rotation
(`secrets_reencrypt`, `manage.py reencrypt_tokens`) finds them all by itself, so a secret
added later (a channel's) is rotated without a change to the command (T4). Secrets another
app keeps in a JSON column (two-factor sign-in's) are listed in ENCRYPTED_JSON_KEYS.
"""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.db import models, transaction


class TokenKeyError(Exception):
    """OSAI_TOKEN_KEYS is missing or malformed."""


class TokenDecryptionError(Exception):
    """A stored secret cannot be read with the configured keys."""


def _fernet() -> MultiFernet:
    keys = [k.strip() for k in settings.OSAI_TOKEN_KEYS if k and k.strip()]
    if not keys:
        raise TokenKeyError("OSAI_TOKEN_KEYS is empty: no key to encrypt access tokens with.")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError) as exc:
        raise TokenKeyError(
            "OSAI_TOKEN_KEYS holds a value that is not a Fernet key "
            "(32 url-safe base64-encoded bytes)."
        ) from exc


def encrypt_secret(plaintext: str) -> str:
    """Encrypt under the primary (first) key."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str:
    """Decrypt with any configured key; raise TokenDecryptionError otherwise."""
    if not ciphertext:
        raise TokenDecryptionError("No stored secret.")
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except (InvalidToken, TokenKeyError) as exc:
        raise TokenDecryptionError(
            "The stored OSAI token cannot be decrypted with the configured OSAI_TOKEN_KEYS."
        ) from exc


def rotate_secret(ciphertext: str) -> str:
    """Re-encrypt under the primary key (idempotent for rows already under it)."""
    try:
        return _fernet().rotate(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise TokenDecryptionError(
            "A stored secret cannot be decrypted with any configured key."
        ) from exc


def is_under_primary_key(ciphertext: str) -> bool:
    """True if the primary key alone decrypts it (nothing to rotate)."""
    primary = _fernet()._fernets[0]
    try:
        primary.decrypt(ciphertext.encode())
    except InvalidToken:
        return False
    return True


# --- Where secrets are kept, and rotating all of them ------------------------------------------


class EncryptedTextField(models.TextField):
    """A column that holds a secret encrypted with `encrypt_secret`. What key rotation looks
    for; to migrations it is a plain TextField (nothing about the column changes)."""

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs


def encrypted_fields() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with encrypted columns, and the columns' names, from the models themselves."""
    found = []
    for model in apps.get_models():
        names = [
            field.attname
            for field in model._meta.concrete_fields
            if isinstance(field, EncryptedTextField)
        ]
        if names:
            found.append((model, names))
    return found


# Secrets kept inside a JSON column of another app's model, which cannot be an
# EncryptedTextField: (model label, column, keys holding one secret, keys holding a list of
# secrets). allauth.mfa's Authenticator keeps a TOTP secret, or the recovery codes' seed (and
# codes migrated from elsewhere), encrypted by the MFA adapter (osai_dashboard/signin/).
ENCRYPTED_JSON_KEYS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("mfa.Authenticator", "data", ("secret", "seed"), ("migrated_codes",)),
]


def _rotate_json(data: Any, one: tuple[str, ...], many: tuple[str, ...]) -> Any:
    """`data` with its secrets under the primary key; the same object if none was not."""
    if not isinstance(data, dict):
        return data
    new = dict(data)
    for key in one:
        value = data.get(key)
        if isinstance(value, str) and value and not is_under_primary_key(value):
            new[key] = rotate_secret(value)
    for key in many:
        values = data.get(key)
        if isinstance(values, list) and any(
            isinstance(v, str) and v and not is_under_primary_key(v) for v in values
        ):
            new[key] = [rotate_secret(v) if isinstance(v, str) and v else v for v in values]
    return data if new == data else new


def _json_secrets_reencrypt() -> dict[str, tuple[int, int]]:
    counts = {}
    for label, column, one, many in ENCRYPTED_JSON_KEYS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue  # the app is not installed
        rows = changed = 0
        manager = model._default_manager
        for row in manager.only("pk", column).iterator():
            rows += 1
            data = getattr(row, column)
            new = _rotate_json(data, one, many)
            if new is not data:
                manager.filter(pk=row.pk).update(**{column: new})
                changed += 1
        counts[model._meta.label] = (rows, changed)
    return counts


@transaction.atomic
def secrets_reencrypt() -> dict[str, tuple[int, int]]:
    """Re-encrypt every encrypted column of every model under the primary key.

    Returns {model label: (rows, rows changed)}. Idempotent: rows already under the primary
    key are left as they are. A secret no configured key reads raises TokenDecryptionError
    and, in one transaction, nothing changes.
    """
    counts = {}
    for model, names in encrypted_fields():
        rows = changed = 0
        manager = model._default_manager
        for row in manager.only("pk", *names).iterator():
            rows += 1
            values = {name: getattr(row, name) for name in names}
            if all(not value or is_under_primary_key(value) for value in values.values()):
                continue
            manager.filter(pk=row.pk).update(
                **{name: rotate_secret(value) if value else "" for name, value in values.items()}
            )
            changed += 1
        counts[model._meta.label] = (rows, changed)
    counts.update(_json_secrets_reencrypt())
    return counts
