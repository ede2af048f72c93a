"""Access tokens and JWTs at rest: MultiFernet under OSAI_TOKEN_KEYS, never SECRET_KEY.

A wrong or missing key fails closed: `TokenDecryptionError`, never ciphertext passed on
as if it were a token, and so no request reaches OSAI.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


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
