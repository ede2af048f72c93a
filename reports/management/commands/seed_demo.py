"""Seed a local demo: a "demo" user, a sandbox connection and a few reports for the worker.

Idempotent: running it again finds what is there and adds nothing twice. The password is a
fixed, printed one on purpose: this is for `make run` on one machine, against the local OSAI
sandbox. It refuses to run where the sandbox region is not configured (production).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from reports import crypto, services
from reports.metrics import all_flags
from reports.models import Connection, Granularity, Report
from reports.periods import PRESETS, preset_period

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-osai-usage"  # noqa: S105 (a published local-demo password)
DEMO_TOKEN = "osai-sandbox-demo-account"  # noqa: S105 (any osai-sandbox-* token is a sandbox account)
DEMO_CONNECTION = "Sandbox demo"
# (preset, granularity): the reports a first visitor finds, finished by the worker.
DEMO_REPORTS: tuple[tuple[str, str], ...] = (
    ("last_12_months", Granularity.MONTH),
    ("last_30_days", Granularity.DAY),
    ("last_month", Granularity.TOTAL),
)


class Command(BaseCommand):
    help = "Create the demo user, a sandbox connection and three reports (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password",
            default=DEMO_PASSWORD,
            help=f"The demo user's password (default: {DEMO_PASSWORD}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if "sandbox" not in settings.OSAI_REGIONS:
            raise CommandError(
                "The OSAI sandbox region is not configured (OSAI_SANDBOX_URL is empty): "
                "seed_demo is for local demos only."
            )
        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(username=DEMO_USERNAME)
        user.set_password(options["password"])  # so the printed password always works
        user.save()
        self.stdout.write(f"{'Created' if created else 'Found'} the user {DEMO_USERNAME!r}.")

        # Written directly: the sandbox may not be up yet to check the token by signing in.
        connection, created = Connection.objects.get_or_create(
            owner=user,
            label=DEMO_CONNECTION,
            defaults={
                "region": "sandbox",
                "token_encrypted": crypto.encrypt_secret(DEMO_TOKEN),
                "token_last4": DEMO_TOKEN[-4:],
                "account_name": "demo",
                "last_verified_at": timezone.now(),
            },
        )
        self.stdout.write(
            f"{'Created' if created else 'Found'} the connection {connection.label!r}."
        )

        flags = all_flags()
        for preset, granularity in DEMO_REPORTS:
            label = f"{PRESETS[preset]}, {Granularity(granularity).label.lower()}"
            if Report.objects.filter(owner=user, preset=preset, granularity=granularity).exists():
                self.stdout.write(f"Found the report {label!r}.")
                continue
            start, end = preset_period(preset, timezone.now())
            report = services.report_request(
                owner=user,
                connections=[connection],
                period_start=start,
                period_end=end,
                granularity=granularity,
                flags=flags,
                preset=preset,
            )
            self.stdout.write(
                f"Requested the report {label!r} ({report.buckets_total} OSAI reports); "
                "the worker builds it."
            )
        self.stdout.write(
            self.style.SUCCESS(f"Demo login: {DEMO_USERNAME} / {options['password']}")
        )
