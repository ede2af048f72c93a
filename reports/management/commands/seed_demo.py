"""Seed a local demo: a "demo" user with a sandbox connection and a few reports, and a team
("Demo team") that demo runs, with a second member ("dana") who shares her connection, and a
team report, so a first visitor sees a team admin's view too. `register_demo_webhooks` gives
the sandbox the demo connections' webhook URLs, so its worker webhooks fill the activity feed,
and `inject_demo_spike` adds a day of heavy training to Dana's lab, so the team page and the
Anomalies page show one anomaly (`run_dev` calls both once the sandbox answers).

Idempotent: running it again finds what is there and adds nothing twice. The password is a
fixed, printed one on purpose: this is for `make run` on one machine, against the local OSAI
sandbox. It refuses to run where the sandbox region is not configured (production).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from osai.sandbox.server import account_id_for_token
from osai.sandbox.usage import account_totals
from reports import crypto
from reports.integrations import webhooks
from reports.management.cli import AuditedCommand
from reports.metrics import OSAI_FIELD_TO_COLUMN, all_flags
from reports.models import Budget, Connection, Granularity, Membership, Report, Team
from reports.periods import PRESETS, preset_period, utc_midnight
from reports.pipeline import report_requests
from reports.spend import budgets, pricing, tracking
from reports.spend.anomalies import usual_range
from reports.spend.usage import UsageRow
from reports.teams import roster, sharing, team_reports

ONE_DAY = timedelta(days=1)
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-osai-usage"  # noqa: S105 (a published local-demo password)
DEMO_TOKEN = "osai-sandbox-demo-account"  # noqa: S105 (any osai-sandbox-* token is a sandbox account)
DEMO_CONNECTION = "Sandbox demo"
DEMO_EMAIL = "demo@example.com"
DEMO_TEAM = "Demo team"
# The demo's monthly budget is this month's spend so far divided by this share, rounded down
# to cents: past the 80 % threshold, so the first tracking refresh sends an alert to var/mail.
DEMO_BUDGET_SHARE = Decimal("0.85")
ALERT_THRESHOLD = 80  # of the default thresholds, the one the README promises is passed
SMALLEST_BUDGET = Decimal("0.01")  # a budget is a positive amount in cents
MEMBER_USERNAME = "dana"
MEMBER_TOKEN = "osai-sandbox-dana-lab"  # noqa: S105 (a sandbox account, like DEMO_TOKEN)
MEMBER_CONNECTION = "Dana's lab"
# The team report a first visitor finds: the last 12 months, month by month.
TEAM_REPORT = ("last_12_months", Granularity.MONTH)
# (preset, granularity): the reports a first visitor finds, finished by the worker.
DEMO_REPORTS: tuple[tuple[str, str], ...] = (
    ("last_12_months", Granularity.MONTH),
    ("last_30_days", Granularity.DAY),
    ("last_month", Granularity.TOTAL),
)


class Command(AuditedCommand):
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
        user.email = user.email or DEMO_EMAIL
        user.save()
        self.stdout.write(f"{'Created' if created else 'Found'} the user {DEMO_USERNAME!r}.")

        connection = self._connection(user, DEMO_CONNECTION, DEMO_TOKEN)
        # One moment for the reports, the budget and the tracking refresh: the budget is set
        # from exactly the spend that refresh fetches.
        now = timezone.now().replace(microsecond=0)

        flags = all_flags()
        for preset, granularity in DEMO_REPORTS:
            label = f"{PRESETS[preset]}, {Granularity(granularity).label.lower()}"
            if Report.objects.filter(owner=user, preset=preset, granularity=granularity).exists():
                self.stdout.write(f"Found the report {label!r}.")
                continue
            start, end = preset_period(preset, now)
            report = report_requests.report_request(
                owner=user,
                connections=[connection],
                period_start=start,
                period_end=end,
                granularity=granularity,
                flags=flags,
                preset=preset,
                compare=True,
            )
            self.stdout.write(
                f"Requested the report {label!r} ({report.buckets_total} OSAI reports); "
                "the worker builds it."
            )
        self._team(user, now)
        self._budget(user, now)
        # Tracking fills in the overview; the schedule would start within a minute anyway.
        started = sum(
            len(tracking.tracking_refresh(c, now=now))
            for c in Connection.objects.filter(owner__username__in=[DEMO_USERNAME, MEMBER_USERNAME])
        )
        self.stdout.write(f"Started tracking this month ({started} OSAI reports to fetch).")
        self.stdout.write(
            self.style.SUCCESS(f"Demo login: {DEMO_USERNAME} / {options['password']}")
        )

    def _connection(self, owner: User, label: str, token: str) -> Connection:
        # Written directly: the sandbox may not be up yet to check the token by signing in.
        connection, created = Connection.objects.get_or_create(
            owner=owner,
            label=label,
            defaults={
                "region": "sandbox",
                "token_encrypted": crypto.encrypt_secret(token),
                "token_last4": token[-4:],
                "account_name": owner.get_username(),
                "last_verified_at": timezone.now(),
            },
        )
        self.stdout.write(f"{'Created' if created else 'Found'} the connection {label!r}.")
        return connection

    def _team(self, admin: User, now: datetime) -> None:
        """Demo runs a team; dana is a member who shares her connection with it."""
        team = Team.objects.filter(name=DEMO_TEAM).first()
        if team is None:
            team = roster.team_create(name=DEMO_TEAM, admin=admin)
            self.stdout.write(f"Created the team {DEMO_TEAM!r}, run by {admin.get_username()}.")
        member, created = get_user_model().objects.get_or_create(username=MEMBER_USERNAME)
        if created:
            member.set_unusable_password()  # a demo colleague, not a login
            member.save()
        if not Membership.objects.filter(team=team, user=member).exists():
            roster.team_member_add(team=team, actor=admin, who=MEMBER_USERNAME)
        connection = self._connection(member, MEMBER_CONNECTION, MEMBER_TOKEN)
        own = Connection.objects.filter(owner=admin, label=DEMO_CONNECTION)
        sharing.team_sharing_set(team=team, user=member, connections=[connection])
        sharing.team_sharing_set(team=team, user=admin, connections=own)
        preset, granularity = TEAM_REPORT
        if Report.objects.filter(team=team, preset=preset, granularity=granularity).exists():
            self.stdout.write("Found the team report.")
            return
        start, end = preset_period(preset, now)
        report = team_reports.team_report_request(
            team=team,
            admin=admin,
            period_start=start,
            period_end=end,
            granularity=granularity,
            flags=all_flags(),
            preset=preset,
            compare=True,
        )
        self.stdout.write(
            f"Requested a team report ({report.buckets_total} OSAI reports) for {DEMO_TEAM}."
        )

    def _budget(self, user: User, now: datetime) -> None:
        """A budget for all of demo's connections that this month's spend so far has passed
        80 % of (a budget of a few cents early in a month), so that the check after the first
        tracking refresh alerts. Rounded down to cents, never up: rounded up, a budget could
        end below 80 % when the month's spend is a few cents."""
        if Budget.objects.filter(owner=user, scope=Budget.Scope.PERSON).exists():
            self.stdout.write("Found the demo budget.")
            return
        spent = demo_month_to_date(now)
        amount = max(
            (spent / DEMO_BUDGET_SHARE).quantize(SMALLEST_BUDGET, rounding=ROUND_DOWN),
            SMALLEST_BUDGET,
        )
        budget = budgets.budget_set(
            actor=user, scope=Budget.Scope.PERSON, amount=amount, emails=[DEMO_EMAIL]
        )
        self.stdout.write(
            f"Set a monthly budget of {budget.amount} (alerts to {DEMO_EMAIL}, into var/mail)."
        )
        if spent * 100 < ALERT_THRESHOLD * budget.amount:
            # Only in a month's first hours: no budget is small enough to be 80 % spent yet.
            currency = budget_currency()
            self.stdout.write(
                f"This month's spend so far ({currency} {spent:.4f}) is under "
                f"{ALERT_THRESHOLD} % of the smallest budget ({currency} {budget.amount}): the "
                "alert comes with the hourly refresh that passes it."
            )


def budget_currency() -> str:
    book = pricing.default_price_book()
    return book.currency if book else ""


def demo_month_to_date(now: datetime) -> Decimal:
    """This month's spend of the demo account up to `now`, exactly as the overview and the
    budget check find it once tracking has fetched it at `now`: the sandbox's usage of each
    tracked day of this month (the closed days, then today up to `now`), priced day by day
    with the default price book, not rounded."""
    month_start = utc_midnight(now.date()).replace(day=1)
    closed, open_day = tracking.tracked_periods(now)
    days = [p for p in [*closed, open_day] if p is not None and p[0] >= month_start]
    account = account_id_for_token(DEMO_TOKEN)
    rows = []
    for start, end in days:
        totals = account_totals(account, start, end)
        usage = {column: float(totals[field]) for field, column in OSAI_FIELD_TO_COLUMN.items()}
        rows.append(UsageRow(start, end, totals=usage))
    return pricing.add_up(pricing.TotalsPricer(pricing.default_price_book()).totals(rows))


# The demo's anomaly (N5): extra training on 16 GB workers on Dana's lab, the last closed day,
# injected into the sandbox before tracking fetches that day, so the detector flags it and the
# team page shows it. At least 10 hours (the sandbox's `add` example), and well above the top
# of that day's usual range, which the sandbox's deterministic history decides.
SPIKE_FIELD = "totalTrainingSeconds16GB"
SPIKE_SECONDS = 36_000
SPIKE_OVER_USUAL = 3


def demo_spike(now: datetime) -> dict[str, Any]:
    """What `POST /__sandbox__/usage` is given: Dana's token, the last closed day and enough
    training on 16 GB workers to be far above its usual (computed from the same held days the
    detector reads: the sandbox's model of the days before it)."""
    day = utc_midnight(now.date()) - ONE_DAY
    account = account_id_for_token(MEMBER_TOKEN)
    first = tracking.held_days_from(utc_midnight(now.date()))
    usage = []
    moment = first
    while moment < day:
        usage.append(float(account_totals(account, moment, moment + ONE_DAY)[SPIKE_FIELD]))
        moment += ONE_DAY
    window = settings.OSAI_ANOMALY_WINDOW_DAYS
    usual = usual_range(usage[-window:] or [0.0], [x for x in usage if x > 0][-window:])
    seconds = max(SPIKE_SECONDS, int(SPIKE_OVER_USUAL * usual.high) + SPIKE_SECONDS)
    return {"token": MEMBER_TOKEN, "day": f"{day:%Y-%m-%d}", "add": {SPIKE_FIELD: seconds}}


def inject_demo_spike(
    sandbox_base_url: str, spike: dict[str, Any], *, wait_seconds: float = 30.0
) -> bool:
    """Give the sandbox the demo's spike (`POST /__sandbox__/usage`) as soon as it answers,
    before the worker fetches that day. True if it took it."""
    base = sandbox_base_url.rstrip("/")
    opener = _wait_for_sandbox(base, wait_seconds)
    return _sandbox_post(opener, f"{base}/__sandbox__/usage", spike)


def _sandbox_post(opener: urllib.request.OpenerDirector, url: str, body: dict[str, Any]) -> bool:
    """POST `body` as JSON to the local sandbox; True if it answered 200."""
    request = urllib.request.Request(  # noqa: S310 (the operator's local sandbox URL)
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(request, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _wait_for_sandbox(base: str, wait_seconds: float) -> urllib.request.OpenerDirector:
    """An opener (no proxy) once the sandbox answers its health check, or after wait_seconds."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            with opener.open(f"{base}/__sandbox__/health", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.3)
    return opener


def demo_webhook_registrations(site_url: str) -> list[dict[str, str]]:
    """The demo connections' webhook URLs on `site_url`, each with its sandbox token (which
    account's usage the sandbox's events follow)."""
    registrations = []
    for username, label, token in (
        (DEMO_USERNAME, DEMO_CONNECTION, DEMO_TOKEN),
        (MEMBER_USERNAME, MEMBER_CONNECTION, MEMBER_TOKEN),
    ):
        connection = Connection.objects.filter(owner__username=username, label=label).first()
        if connection is not None:
            registrations.append(
                {"url": webhooks.webhook_url(connection, site_url), "token": token}
            )
    return registrations


def register_demo_webhooks(
    sandbox_base_url: str, registrations: list[dict[str, str]], *, wait_seconds: float = 30.0
) -> int:
    """Register webhook URLs with the sandbox (`POST /__sandbox__/webhooks`), waiting for it to
    answer first. Returns how many it accepted."""
    base = sandbox_base_url.rstrip("/")
    opener = _wait_for_sandbox(base, wait_seconds)
    return sum(
        _sandbox_post(opener, f"{base}/__sandbox__/webhooks", registration)
        for registration in registrations
    )
