"""Prune what is past its retention now, as the daily schedule does: `manage.py prune
[--dry-run]` (R1-R4, reports/retention.py). Prints a line per kind: how many went (or, with
--dry-run, would go; nothing is deleted)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports import retention


class Command(BaseCommand):
    help = (
        "Delete webhook events, messages, alerts, anomalies, superseded buckets and raw OSAI "
        "JSON past "
        "their retention; never what a page, a budget, an export or the spend ledger reads."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would go; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        counts = retention.prune(dry_run=dry_run)
        self.stdout.write(retention.summary(counts, dry_run=dry_run))
