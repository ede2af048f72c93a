"""Re-encrypt every stored secret under the primary OSAI_TOKEN_KEYS key (T4).

Every encrypted column is found by itself (`crypto.EncryptedTextField`): access tokens, cached
JWTs, OSAI webhook URL secrets, channels' URLs and signing secrets, and whatever is encrypted
next; and two-factor sign-in's TOTP secrets and recovery-code seeds, kept in allauth's
Authenticator (`crypto.ENCRYPTED_JSON_KEYS`).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from reports import crypto


class Command(BaseCommand):
    help = (
        "Key rotation: put the new key first in OSAI_TOKEN_KEYS (keep the old one after it), "
        "run this, then remove the old key. Safe to run more than once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            counts = crypto.secrets_reencrypt()
        except (crypto.TokenDecryptionError, crypto.TokenKeyError) as exc:
            raise CommandError(
                f"{exc} Keep the old key in OSAI_TOKEN_KEYS (after the new one) until this "
                "command has finished. Nothing was changed."
            ) from None
        rows = sum(r for r, _ in counts.values())
        changed = sum(c for _, c in counts.values())
        each = ", ".join(
            f"{label.split('.')[-1]} {r} ({c} changed)" for label, (r, c) in sorted(counts.items())
        )
        self.stdout.write(f"Re-encrypted {rows} rows ({changed} were under an older key): {each}.")
