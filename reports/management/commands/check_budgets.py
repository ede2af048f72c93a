"""Check every budget now, as each tracking refresh does: `manage.py check_budgets [--wait]`.

New alerts queue one message each; `--wait` returns once those deliveries were attempted (it
needs a running worker), and exits non-zero if one failed for good.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from reports.models import Delivery
from reports.spend import budgets


class Command(BaseCommand):
    help = "Check every budget against this month's spend; alert on newly crossed thresholds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--wait", action="store_true", help="wait for the deliveries")
        parser.add_argument("--timeout", type=float, default=300, help="seconds to --wait")

    def handle(self, *args: Any, **options: Any) -> None:
        checked, alerts = budgets.budgets_check()
        self.stdout.write(f"Checked {checked} budget(s): {len(alerts)} new alert(s).")
        if not options["wait"] or not alerts:
            return
        deliveries = Delivery.objects.filter(alert__in=alerts)
        deadline = time.monotonic() + options["timeout"]
        while time.monotonic() < deadline:
            if not deliveries.filter(state=Delivery.State.PENDING, attempts=0).exists():
                break
            time.sleep(0.5)
        for delivery in deliveries:
            self.stdout.write(
                f"{delivery.get_channel_display()}: {delivery.get_state_display().lower()}"
                + (f" ({delivery.last_error})" if delivery.last_error else "")
            )
        if deliveries.filter(state=Delivery.State.FAILED).exists():
            sys.exit(1)
