"""Re-encrypt every stored token and JWT under the primary OSAI_TOKEN_KEYS key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from reports import crypto
from reports.pipeline import connections


class Command(BaseCommand):
    help = (
        "Key rotation: put the new key first in OSAI_TOKEN_KEYS (keep the old one after it), "
        "run this, then remove the old key. Safe to run more than once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            rows, changed = connections.connections_reencrypt()
        except (crypto.TokenDecryptionError, crypto.TokenKeyError) as exc:
            raise CommandError(
                f"{exc} Keep the old key in OSAI_TOKEN_KEYS (after the new one) until this "
                "command has finished."
            ) from None
        self.stdout.write(f"Re-encrypted {rows} connections ({changed} were under an older key).")
