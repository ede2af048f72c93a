"""Re-write the spend ledger: `manage.py reprice [--book NAME]`.

Each held bucket's cost is written once, when it finishes, and again when its price book's
versions change (in the background). This does the second part now, for one book or all: after
editing rates outside the app, or to check that the ledger matches the rates. Idempotent.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from reports.models import PriceBook
from reports.spend import ledger


class Command(BaseCommand):
    help = "Re-price the spend ledger for one price book (--book NAME) or all of them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--book", help="the price book's name (default: every book)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["book"]:
            book = PriceBook.objects.filter(name=options["book"]).first()
            if book is None:
                raise CommandError(f"No price book is called {options['book']!r}.")
            written = ledger.ledger_reprice(book)
        else:
            written = ledger.ledger_reprice_all()
        self.stdout.write(f"Wrote {written} ledger rows.")
