"""The app's own rows are the source of truth for the report pipeline.

A Report is what a person asked for; a Bucket is one OSAI report (one connection, one set
of flags, one period). Buckets of closed periods are unique, so a Report that covers the
same months again reuses them. See reports/pipeline/steps.py for the state machine.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Iterable
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from reports import crypto
from reports.metrics import FLAG_FIELDS, METRICS, OSAI_FIELD_TO_COLUMN, PRICED_COLUMNS, RATE_FIELDS

# --- Names and labels are one line ---------------------------------------------------------------
# A connection's label or a team's name ends up in email subjects, CSV cells and log lines: a
# line break there breaks the header (every attempt to send fails the same way, A7) or
# forges a line. Control characters and line or paragraph separators are refused wherever a
# person types one (forms, commands, services); `one_line` mends older rows where they are used.

_NOT_ONE_LINE = frozenset({"Cc", "Zl", "Zp"})


def has_control_characters(text: str) -> bool:
    """True if the text holds a control character, a line or a paragraph separator."""
    return any(unicodedata.category(ch) in _NOT_ONE_LINE for ch in text)


def validate_one_line(value: str) -> None:
    """The validator of names and labels (A7)."""
    if has_control_characters(value or ""):
        raise ValidationError(
            "Use one line of text: no line breaks, tabs or other control characters.",
            code="control_characters",
        )


def one_line(text: str) -> str:
    """The text with each run of control characters and line breaks as one space."""
    if not has_control_characters(text):
        return text
    mended = "".join(" " if unicodedata.category(ch) in _NOT_ONE_LINE else ch for ch in text)
    return re.sub(r" {2,}", " ", mended).strip()


def counts_for_team(team: Team | int, *, via: str = "") -> Q:
    """M1, the one spelling of "a connection that counts for a team": its owner is still a
    member and shares it with the team. `via` is the path to the connection ("connection__"
    from a bucket)."""
    return Q(**{f"{via}shared_with_teams": team, f"{via}owner__memberships__team": team})


class Team(models.Model):
    """People who review spend together. Its admins run it (reports/teams/); its reports
    cover the connections its members choose to share with it."""

    name = models.CharField(max_length=120, unique=True, validators=[validate_one_line])
    created_at = models.DateTimeField(auto_now_add=True)
    # The rates its reports are priced with; the default price book when empty.
    price_book = models.ForeignKey(
        "PriceBook", null=True, blank=True, on_delete=models.SET_NULL, related_name="teams"
    )
    # Members who sign in with a password must set up two-factor sign-in before anything
    # else (S15; osai_dashboard/signin/middleware.py). Single sign-on users are exempt.
    require_two_factor = models.BooleanField(default=False)

    members = models.ManyToManyField(  # type: ignore[var-annotated]
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A person in a team, with a role; what each role may see and do is the capability table
    in reports/access.py (`CAPABILITIES`), asked everywhere instead of the role itself."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Team admin"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer (finance)"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    # A viewer's choice to get the team's weekly and monthly digests (admins always get them).
    team_digest = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="unique_team_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ConnectionQuerySet(models.QuerySet["Connection"]):
    def counting_for_team(self, team: Team | int) -> ConnectionQuerySet:
        """Connections that count for the team (M1): shared with it by its current members."""
        return self.filter(counts_for_team(team))

    def counting_for_teams(self, team_ids: Iterable[int]) -> ConnectionQuerySet:
        """The same rule for several teams at once: a row per connection and team it counts
        for (the team is `shared_with_teams`)."""
        return self.filter(shared_with_teams__in=list(team_ids)).filter(
            owner__memberships__team=models.F("shared_with_teams")
        )


class Connection(models.Model):
    """One OSAI access token of a user. The token is encrypted (reports/crypto.py)."""

    class Status(models.TextChoices):
        OK = "ok", "Working"
        NEEDS_TOKEN = "needs_token", "Needs a new token"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connections"
    )
    label = models.CharField(max_length=80, validators=[validate_one_line])
    region = models.CharField(max_length=20)  # a key of settings.OSAI_REGIONS
    token_encrypted = crypto.EncryptedTextField(editable=False)
    token_last4 = models.CharField(max_length=4, editable=False)
    account_name = models.CharField(max_length=200, blank=True)
    # OSAI's own id of the account (GET /Users): connections with one token share it, and
    # with it the cap on OSAI reports in flight (F1). Empty: the connection is its own account.
    osai_account_id = models.CharField(max_length=100, blank=True, db_index=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OK)
    status_message = models.CharField(max_length=300, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    # The JWT from the last sign-in, encrypted like the token, so that each task does not
    # sign in again. Cleared on a 401.
    jwt_encrypted = crypto.EncryptedTextField(blank=True, editable=False)
    jwt_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    shared_with_teams = models.ManyToManyField(Team, blank=True, related_name="shared_connections")
    created_at = models.DateTimeField(auto_now_add=True)
    # The secret in this connection's OSAI webhook URL (reports/integrations/webhooks.py):
    # encrypted like the token, so the page can show it again, and its SHA-256, which a
    # delivery is looked up by. Rotating it makes the old URL answer 404 (W1).
    webhook_secret_encrypted = crypto.EncryptedTextField(blank=True, editable=False)
    webhook_secret_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    # A finished OSAI task asks for a refresh of the open day; the dispatcher starts it at
    # this time, so a burst of webhooks makes one refresh (reports/integrations/webhooks.py).
    refresh_due_at = models.DateTimeField(null=True, blank=True, db_index=True, editable=False)
    # The last closed held day the anomaly detector has looked at (reports/spend/anomalies.py):
    # each day is judged once, so a later re-pricing or a longer history never re-flags it.
    anomalies_checked_through = models.DateField(null=True, blank=True, editable=False)

    objects = ConnectionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "label"], name="unique_connection_label"),
            models.UniqueConstraint(
                fields=["webhook_secret_sha256"],
                condition=~Q(webhook_secret_sha256=""),
                name="unique_webhook_secret",
            ),
        ]
        ordering = ["label"]

    def __str__(self) -> str:
        return f"{self.label} ({self.region}, …{self.token_last4})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.webhook_secret_sha256:
            self.set_webhook_secret(new_webhook_secret())
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {
                    *kwargs["update_fields"],
                    "webhook_secret_encrypted",
                    "webhook_secret_sha256",
                }
        super().save(*args, **kwargs)

    def set_webhook_secret(self, secret: str) -> None:
        """Set (not save) the secret of this connection's webhook URL."""
        self.webhook_secret_encrypted = crypto.encrypt_secret(secret)
        self.webhook_secret_sha256 = webhook_secret_digest(secret)

    @property
    def webhook_secret(self) -> str:
        """The secret in the webhook URL, for its owner's eyes only."""
        return crypto.decrypt_secret(self.webhook_secret_encrypted)

    @property
    def token_hint(self) -> str:
        """The only form in which a token is ever shown."""
        return f"…{self.token_last4}"


def new_webhook_secret() -> str:
    """An unguessable secret for a webhook URL: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def webhook_secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class OsaiFlags(models.Model):
    """The five OSAI report flags. Flags that are off zero their metrics at OSAI."""

    include_datasets = models.BooleanField(default=True)
    include_manipulations = models.BooleanField(default=True)
    include_models = models.BooleanField(default=True)
    include_rented_devices = models.BooleanField(default=True)
    include_predictions = models.BooleanField(default=True)

    class Meta:
        abstract = True

    def flags(self) -> dict[str, bool]:
        return {name: getattr(self, name) for name in FLAG_FIELDS}


class Granularity(models.TextChoices):
    TOTAL = "total", "Total"
    DAY = "day", "Daily"
    WEEK = "week", "Weekly"
    MONTH = "month", "Monthly"


class PriceBook(models.Model):
    """A named, versioned set of rates in one currency. Not OSAI's prices: OSAI publishes none.

    A shared book (no team) is managed by Django staff; a team's own book (a copy its admins
    made, reports/teams/price_books.py) is edited by that team's admins and offered to no one
    else.
    """

    name = models.CharField(max_length=120, unique=True)
    currency = models.CharField(max_length=3, default="EUR")
    team = models.ForeignKey(
        Team,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="own_price_books",
        help_text="Empty: a shared book, edited by staff only. Else the team whose admins edit it.",
    )
    is_example = models.BooleanField(
        default=False, help_text="Shown on every page as an example, not OSAI's prices."
    )
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.currency})"


# The largest rate a price book takes, per hour or per GB-month: a higher one is a typo.
MAX_RATE = Decimal(1000)


def _rate() -> models.DecimalField:
    return models.DecimalField(
        max_digits=14,
        decimal_places=6,
        default=Decimal("0"),
        validators=[
            MinValueValidator(Decimal(0), "A rate cannot be negative."),
            MaxValueValidator(MAX_RATE, "A rate is at most 1,000 per hour or per GB-month."),
        ],
    )


class PriceBookVersion(models.Model):
    """Rates in force from `effective_from` (UTC) until the next version of the same book."""

    price_book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="versions")
    effective_from = models.DateTimeField()
    note = models.CharField(max_length=200, blank=True)
    # When it was saved: a version saved after a report was requested and in force during its
    # period re-priced it, and the page says so (pricing.repriced_by). Empty for versions
    # older than this field (nothing is said about them).
    created_at = models.DateTimeField(null=True, default=timezone.now, editable=False)
    # One rate column per priced metric, added from the registry below the class.

    class Meta:
        ordering = ["price_book", "effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["price_book", "effective_from"], name="unique_price_book_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.price_book.name} from {self.effective_from:%Y-%m-%d}"


# One rate per priced metric (reports/metrics.py): per hour, or per GB-month of storage.
for _rate_field in RATE_FIELDS:
    PriceBookVersion.add_to_class(_rate_field, _rate())


class BucketQuerySet(models.QuerySet["Bucket"]):
    def active(self) -> BucketQuerySet:
        """Buckets the pipeline has not finished (Bucket.ACTIVE_STATES)."""
        return self.filter(state__in=Bucket.ACTIVE_STATES)

    def counting_for_team(self, team: Team | int) -> BucketQuerySet:
        """Buckets on connections that count for the team (M1)."""
        return self.filter(counts_for_team(team, via="connection__"))

    def waiting_for_person(self, owner: User) -> BucketQuerySet:
        """The OSAI reports still to be made or finished for a person (F2's cap,
        OSAI_MAX_WAITING_BUCKETS_PER_PERSON): their reports' parts, and what tracking fetches
        for their connections (a new connection's history: dozens at once)."""
        return (
            self.active()
            .filter(
                Q(report_buckets__report__owner=owner) | Q(connection__owner=owner, tracked=True)
            )
            .distinct()
        )


class Bucket(OsaiFlags):
    """One OSAI report: a connection, flags and a period. See reports/pipeline/steps.py."""

    class State(models.TextChoices):
        NEW = "new", "Waiting"
        CREATING = "creating", "Asking OSAI"
        POLLING = "polling", "OSAI is generating"
        DOWNLOADING = "downloading", "Downloading"
        DONE = "done", "Done"
        ERROR = "error", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL_STATES = (State.DONE, State.ERROR, State.TIMED_OUT, State.CANCELLED)
    FAILED_STATES = (State.ERROR, State.TIMED_OUT, State.CANCELLED)
    # Not finished yet: the pipeline still has a step to do.
    ACTIVE_STATES = (State.NEW, State.CREATING, State.POLLING, State.DOWNLOADING)
    # An OSAI report exists (or may) and counts against the caps on reports in flight (F1).
    IN_FLIGHT_STATES = (State.CREATING, State.POLLING, State.DOWNLOADING)

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="buckets")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()  # exclusive, like OSAI's periodTo
    # A closed period can never change, so its finished bucket is reused forever. The open
    # bucket (it contains "now") is preliminary and requested again next time.
    is_closed = models.BooleanField()
    # Tracking (reports/spend/tracking.py) keeps held days and months fresh: it wants this one
    # whatever reports link it.
    tracked = models.BooleanField(default=False)
    # Asked for by tracking alone (history being filled in, the open day refreshed), not by a
    # person: the dispatcher starts it after what people asked for, in the slots they leave
    # free. A report that reuses it makes it a person's (reports/pipeline/buckets.py).
    background = models.BooleanField(default=False)
    state = models.CharField(max_length=12, choices=State.choices, default=State.NEW)

    osai_report_id = models.BigIntegerField(null=True, blank=True)
    osai_created_at = models.DateTimeField(null=True, blank=True)
    osai_creation_time_raw = models.CharField(max_length=40, blank=True)
    osai_status = models.SmallIntegerField(null=True, blank=True)
    # OSAI's final answer, as received, with the signed link's query string removed.
    osai_response = models.JSONField(null=True, blank=True)

    # How long OSAI took (reports/pipeline/eta.py), in seconds after our POST /Reports was answered
    # (`created_seen_at`, our clock): still generating at the last pending poll, and done
    # by the poll that said so. The plan for polling it: from `eta_low_seconds` until
    # `expected_ready_at` (both null for the first report of a kind: the back-off).
    created_seen_at = models.DateTimeField(null=True, blank=True)
    pending_seen_seconds = models.FloatField(null=True, blank=True)
    ready_seen_seconds = models.FloatField(null=True, blank=True)
    eta_low_seconds = models.FloatField(null=True, blank=True)
    expected_ready_at = models.DateTimeField(null=True, blank=True)

    # Pipeline bookkeeping.
    attempts = models.PositiveSmallIntegerField(default=0)  # steps started but not finished
    polls = models.PositiveIntegerField(default=0)  # GET /Reports/{id} made for this bucket
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # When the dispatcher put its step in the queue; cleared when a worker claims it. A bucket
    # whose step is queued is not queued again (F4).
    queued_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    # The totals, one column each (added from the registry below the class), so that team
    # sums are SQL aggregates.

    objects = BucketQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", *FLAG_FIELDS, "period_start", "period_end"],
                condition=Q(is_closed=True),
                name="unique_closed_bucket",
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=models.F("period_start")), name="bucket_period_order"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="bucket_due"),
            # The overview and the team page read some connections' done buckets (history
            # held, "data as of"): without it SQLite chose bucket_due (state = 'done') and
            # read every done bucket of everyone, a cost that grew with the whole table.
            models.Index(fields=["connection", "state", "period_start"], name="bucket_held"),
        ]
        ordering = ["period_start", "connection_id"]

    def __str__(self) -> str:
        return f"Bucket {self.pk} {self.period_start:%Y-%m-%d}..{self.period_end:%Y-%m-%d}"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL_STATES

    def totals(self) -> dict[str, Any]:
        """The totals under OSAI's own field names, in OSAI's raw units, as received."""
        raw = (self.osai_response or {}) if self.state == self.State.DONE else {}
        return {
            osai: raw.get(osai, getattr(self, column))
            for osai, column in OSAI_FIELD_TO_COLUMN.items()
        }


# One column per OSAI total (reports/metrics.py), stored as received: doubles round-trip any
# JSON number OSAI sends, and the full answer is kept in `osai_response` too.
for _metric in METRICS:
    Bucket.add_to_class(_metric.column, models.FloatField(null=True, blank=True))


class BucketFile(models.Model):
    """The JSON file at OSAI's pre-signed `path`, archived as received, with its checksum.

    Kept apart from Bucket so that lists of buckets never load the file.
    """

    bucket = models.OneToOneField(Bucket, on_delete=models.CASCADE, related_name="file")
    content = models.BinaryField()
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveIntegerField()
    downloaded_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"File of bucket {self.bucket_id} ({self.size_bytes} bytes)"


class Report(OsaiFlags):
    """What a person asked for: connections, a period, flags and a granularity."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Generating"
        DONE = "done", "Done"
        PARTIAL = "partial", "Partly failed"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL_STATES = (State.DONE, State.PARTIAL, State.FAILED, State.TIMED_OUT, State.CANCELLED)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports"
    )
    # A team report covers the connections the team's members share with it.
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="reports"
    )
    connections = models.ManyToManyField(Connection, related_name="reports")
    buckets = models.ManyToManyField(  # type: ignore[var-annotated]
        Bucket, through="ReportBucket", related_name="reports"
    )
    price_book = models.ForeignKey(
        PriceBook, null=True, blank=True, on_delete=models.PROTECT, related_name="reports"
    )

    preset = models.CharField(max_length=20, blank=True)  # e.g. "last_12_months"; "" if custom
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()  # exclusive
    granularity = models.CharField(
        max_length=5, choices=Granularity.choices, default=Granularity.MONTH
    )

    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    # Counts kept on the row so that the status badge is one cheap query.
    buckets_total = models.PositiveIntegerField(default=0)
    buckets_done = models.PositiveIntegerField(default=0)
    buckets_failed = models.PositiveIntegerField(default=0)
    # When OSAI should have finished the last of its unfinished buckets (reports/pipeline/eta.py);
    # null while any of them has no estimate yet. The badge polls to match it.
    expected_done_at = models.DateTimeField(null=True, blank=True)
    # Without an estimate: when the worker next asks OSAI about one of its buckets (the
    # earliest such moment it has published). Nothing on the page can change before then, so
    # the badge looks just after it rather than every 2 s.
    next_check_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    # Team reports: shared connections left out because they could not be used when the
    # report was requested, as [{"owner": …, "label": …, "reason": …}] (M3).
    skipped_connections = models.JSONField(default=list, blank=True)

    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        indexes = [models.Index(fields=["owner", "-requested_at"], name="report_history")]

    def __str__(self) -> str:
        return f"Report {self.pk} ({self.get_granularity_display()}, {self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL_STATES


class ReportBucket(models.Model):
    """A bucket a report is made of, or one of the period it is compared with."""

    class Purpose(models.TextChoices):
        MAIN = "main", "The report's period"
        COMPARISON = "comparison", "The period it is compared with"

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="report_buckets")
    bucket = models.ForeignKey(Bucket, on_delete=models.CASCADE, related_name="report_buckets")
    purpose = models.CharField(max_length=10, choices=Purpose.choices, default=Purpose.MAIN)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["report", "bucket"], name="unique_report_bucket")
        ]

    def __str__(self) -> str:
        return f"Report {self.report_id} / bucket {self.bucket_id}"


class WorkerLease(models.Model):
    """A named lease held by one worker at a time (the pipeline's dispatcher)."""

    name = models.CharField(max_length=40, primary_key=True)
    holder = models.CharField(max_length=80, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} lease ({self.holder or 'free'})"


# --- Held data: the spend ledger and what tracking found (reports/spend/ledger.py) ---------


class LedgerEntry(models.Model):
    """What one held bucket costs under one price book, for the part of its period one version
    of the book was in force: the rows pages, budgets, digests and exports add up.

    Costs are whole numbers of COST_UNITS (10^-10 of the currency, the quantum every cost is
    kept at), so sums are exact in SQL on SQLite too, where decimals are floating point.
    Written when a held bucket finishes; re-written when the book's versions change.
    """

    class Span(models.TextChoices):
        DAY = "day", "Day"
        MONTH = "month", "Month"

    COST_UNITS = 10_000_000_000  # per unit of the currency

    bucket = models.ForeignKey(Bucket, on_delete=models.CASCADE, related_name="ledger_entries")
    # Copied from the bucket, so that sums need no join.
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    span = models.CharField(max_length=5, choices=Span.choices)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    # period_start as whole days since 1970-01-01 (UTC): what sums group by, read as a plain
    # integer (SQLite hands timestamps back as text to be parsed, a row at a time).
    day = models.IntegerField()
    preliminary = models.BooleanField(default=False)  # the open day: it can still grow
    price_book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="+")
    # None: the part of the period before the book's first version (no prices: costs 0).
    version = models.ForeignKey(
        PriceBookVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # One cost column per priced metric, added from the registry below the class.
    cost_total = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["bucket", "price_book", "version"],
                condition=Q(version__isnull=False),
                name="unique_ledger_entry",
            ),
            models.UniqueConstraint(
                fields=["bucket", "price_book"],
                condition=Q(version__isnull=True),
                name="unique_unpriced_ledger_entry",
            ),
        ]
        indexes = [
            models.Index(fields=["price_book", "span", "day", "connection"], name="ledger_sums")
        ]

    def __str__(self) -> str:
        return f"Ledger: bucket {self.bucket_id} in book {self.price_book_id} ({self.cost_total})"


for _column in PRICED_COLUMNS:
    LedgerEntry.add_to_class(f"cost_{_column}", models.BigIntegerField(default=0))


class HeldDiscrepancy(models.Model):
    """A held month whose OSAI total differs from the sum of its held days, per metric.

    The sandbox adds up by construction; real OSAI may not. The month answers for whole-month
    views and the days for anything finer; the difference is kept here and shown on the
    connection's page, never hidden.
    """

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="held_discrepancies"
    )
    month_start = models.DateTimeField()
    column = models.CharField(max_length=40)  # a usage column (reports/metrics.py)
    month_value = models.FloatField()
    days_value = models.FloatField()
    found_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "month_start", "column"], name="one_discrepancy_per_metric"
            )
        ]
        ordering = ["-month_start", "column"]

    def __str__(self) -> str:
        return f"{self.column} of {self.month_start:%Y-%m} on connection {self.connection_id}"


class Anomaly(models.Model):
    """A closed held day whose usage of a priced metric was far from its usual (a spike), or
    paid storage that sat idle (reports/spend/anomalies.py, N1-N4). Usage in OSAI's raw units,
    never money: the cause text is priced when shown, in whatever book is in force then.
    Unique on connection, metric and day: the database records each once."""

    class Kind(models.TextChoices):
        SPIKE = "spike", "Spike"
        IDLE_STORAGE = "idle_storage", "Idle storage"

    class Feedback(models.TextChoices):
        NONE = "", "No feedback"
        EXPECTED = "expected", "Expected"
        NOT_EXPECTED = "not_expected", "Not expected"

    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="anomalies")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.SPIKE)
    column = models.CharField(max_length=40)  # a priced usage column (reports/metrics.py)
    day = models.DateField()  # the UTC day (idle storage: the day the idle streak reached N)
    actual = models.FloatField()  # that day's usage, raw units
    expected_low = models.FloatField()  # the usual range of the held days before it, raw units
    expected_high = models.FloatField()
    # "expected": its owner says it was planned: it stops alerting for that metric and day.
    feedback = models.CharField(
        max_length=12, choices=Feedback.choices, default=Feedback.NONE, blank=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    # When its alert was queued (reports/spend/anomaly_alerts.py, A12): set by the one
    # conditional UPDATE that claims it, in the transaction that queues its messages, so an
    # anomaly alerts once however many workers try.
    alerted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "column", "day"], name="one_anomaly_per_metric_and_day"
            )
        ]
        ordering = ["-day", "connection", "column"]

    def __str__(self) -> str:
        return f"{self.kind} of {self.column} on {self.day} (connection {self.connection_id})"

    @property
    def alerting(self) -> bool:
        """Not accepted as expected by its owner."""
        return self.feedback != self.Feedback.EXPECTED


# --- Cost control: budgets, alerts and what was sent (reports/spend/budgets.py, notify.py) ---


class Budget(models.Model):
    """A monthly amount of money for one connection, one person's connections, or a team.

    In the currency of the price book that prices the scope (the team's for a team budget,
    the default book otherwise). Crossing a threshold (a percentage of the amount, of the
    spend so far or, if `on_forecast`, of the month-end forecast) alerts once per month.
    """

    class Scope(models.TextChoices):
        CONNECTION = "connection", "One connection"
        PERSON = "person", "All of a person's connections"
        TEAM = "team", "A team"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="budgets"
    )
    scope = models.CharField(max_length=10, choices=Scope.choices)
    connection = models.ForeignKey(
        Connection, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    thresholds = models.JSONField(default=list)  # percentages, e.g. [50, 80, 100]
    on_forecast = models.BooleanField(default=False)
    # Where its alerts go: channels of its owner (a team budget: of its team). Migration 0013
    # made the addresses and the webhook a budget had before into channels.
    channels = models.ManyToManyField(  # type: ignore[var-annotated]
        "Channel", blank=True, related_name="budgets"
    )
    # Who last set where its alerts go (its channels): a team budget's channels
    # stop when that person is no longer one of the team's admins (A8).
    channels_set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner"], condition=Q(scope="person"), name="one_person_budget"
            ),
            models.UniqueConstraint(
                fields=["connection"], condition=Q(scope="connection"), name="one_connection_budget"
            ),
            models.UniqueConstraint(
                fields=["team"], condition=Q(scope="team"), name="one_team_budget"
            ),
            models.CheckConstraint(condition=Q(amount__gt=0), name="budget_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"Budget {self.pk} ({self.scope}, {self.amount})"


# --- Channels: where alerts and digests go (reports/spend/channels.py, notify.py) ---------------


class Channel(models.Model):
    """Somewhere to send alerts and digests, owned by a person or by a team (exactly one).

    Email: addresses (and, for a team, "the team's admins", resolved when a message is sent:
    A8). A signed webhook (a URL and the secret that signs its body, A3), a Slack incoming
    webhook or a Microsoft Teams workflow webhook: the URL is a secret of its own (whoever
    holds a Slack or Teams URL can post to the channel), so it is encrypted like access tokens
    and never shown again in full: pages show `url_hint`, its host and last four characters.
    """

    class Kind(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Signed webhook"
        SLACK = "slack", "Slack"
        TEAMS = "teams", "Microsoft Teams"

    URL_KINDS = (Kind.WEBHOOK, Kind.SLACK, Kind.TEAMS)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="channels",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="channels"
    )
    kind = models.CharField(max_length=8, choices=Kind.choices)
    name = models.CharField(max_length=120, validators=[validate_one_line])
    emails = models.JSONField(default=list, blank=True)
    # A team's email channel: also to the team's admins as they are when a message is sent.
    to_team_admins = models.BooleanField(default=False)
    url_encrypted = crypto.EncryptedTextField(blank=True, editable=False)
    # What pages show of the URL: its host and its last four characters.
    url_host = models.CharField(max_length=255, blank=True, editable=False)
    url_last4 = models.CharField(max_length=4, blank=True, editable=False)
    # A signed webhook's secret (reports/spend/notify.py `sign`).
    secret_encrypted = crypto.EncryptedTextField(blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(owner__isnull=False, team__isnull=True)
                | Q(owner__isnull=True, team__isnull=False),
                name="channel_has_one_owner",
            )
        ]
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} channel {self.name}"

    @property
    def url_hint(self) -> str:
        """The URL as pages show it: never in full."""
        return f"{self.url_host} …{self.url_last4}" if self.url_host else ""

    def set_url(self, url: str) -> None:
        self.url_encrypted = crypto.encrypt_secret(url)
        self.url_host = (urlsplit(url).hostname or "")[:255]
        self.url_last4 = url.rstrip("/")[-4:]

    @property
    def url(self) -> str:
        """The URL in full: for sending only (raises crypto.TokenDecryptionError)."""
        return crypto.decrypt_secret(self.url_encrypted)


class Alert(models.Model):
    """A threshold of a budget crossed in a month. Unique, so each one alerts once (A1)."""

    class Kind(models.TextChoices):
        ACTUAL = "actual", "Spend so far"
        FORECAST = "forecast", "Month-end forecast"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="alerts")
    month = models.DateField()  # the first day of the month (UTC)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    threshold = models.PositiveSmallIntegerField()
    percent = models.DecimalField(max_digits=9, decimal_places=2)  # of the amount, when crossed
    value = models.DecimalField(max_digits=16, decimal_places=2)  # spend or forecast then
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "month", "kind", "threshold"], name="one_alert_per_threshold"
            )
        ]
        ordering = ["-created_at", "-threshold"]

    def __str__(self) -> str:
        return f"{self.threshold} % of budget {self.budget_id} ({self.kind}, {self.month})"


class Delivery(models.Model):
    """One message to send (an alert or a digest) by email or webhook: an outbox row.

    Sent by a task with a lease and retried with back-off (A4); `key` is its idempotency key,
    sent along (X-OSAI-Usage-Delivery) so a receiver can drop a duplicate (A1).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    key = models.CharField(max_length=64, unique=True)
    # How it goes: the kinds a Channel has (a message without a channel is email or webhook).
    channel = models.CharField(max_length=8, choices=Channel.Kind.choices)
    # Email addresses (comma-separated) or a webhook URL, for a message not sent through a
    # channel; empty for one that is: its channel's addresses and URL are read when sending.
    target = models.TextField(blank=True)
    via = models.ForeignKey(
        "Channel", null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    subject = models.CharField(max_length=200)
    text = models.TextField()
    payload = models.JSONField(default=dict, blank=True)  # the webhook's JSON body
    budget = models.ForeignKey(
        Budget, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    # An anomaly alert's message (A12): the anomaly it is about.
    anomaly = models.ForeignKey(
        Anomaly, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.channel} delivery {self.key} ({self.state})"


class DigestPreference(models.Model):
    """A person's choice of digest emails (weekly on Mondays, monthly on the 1st)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="digest_preference"
    )
    weekly = models.BooleanField(default=True)
    monthly = models.BooleanField(default=True)
    # "Email me about usage anomalies" (A12): off stops the person's own anomaly alerts and
    # their address in a team's email channel.
    anomalies = models.BooleanField(default=True)
    # Digests go to the person's email and to these channels of theirs.
    channels = models.ManyToManyField(Channel, blank=True, related_name="digest_preferences")

    def __str__(self) -> str:
        return f"Digests of {self.user}"


class DigestSent(models.Model):
    """A digest made for a person (or a team, for its admin or viewer) and a period: made
    once. A team's row without a person is its digest to the team's channels."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="digests",
    )
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE)
    kind = models.CharField(max_length=8)  # "weekly" or "monthly"
    period_start = models.DateField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind", "period_start"],
                condition=Q(team__isnull=True),
                name="one_personal_digest_per_period",
            ),
            models.UniqueConstraint(
                fields=["user", "team", "kind", "period_start"],
                condition=Q(team__isnull=False),
                name="one_team_digest_per_period",
            ),
            models.UniqueConstraint(
                fields=["team", "kind", "period_start"],
                condition=Q(user__isnull=True),
                name="one_team_channels_digest_per_period",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} digest of {self.user} from {self.period_start}"


# --- Integrations: OSAI's worker webhooks and the read-only API (reports/integrations/) ---


class WebhookEvent(models.Model):
    """One delivery of OSAI's worker webhook to a connection's URL, stored as received.

    OSAI documents no payload schema: the raw body is kept, and the fields the feed shows are
    read from it defensively (reports/integrations/webhooks.py); anything unknown stays only
    in `body`.
    """

    class Kind(models.TextChoices):
        TRAINING = "training", "Training"
        RETRAINING = "retraining", "Re-training"
        CONVERSION = "conversion", "Conversion"
        PREDICTION = "prediction", "Prediction"
        MANIPULATION = "manipulation", "Manipulation"
        DEVICE_RENTAL = "device_rental", "Device rental"
        UNKNOWN = "unknown", "Task"

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="webhook_events"
    )
    received_at = models.DateTimeField(default=timezone.now)
    # A repeated delivery has the same key and is stored once (W1).
    dedupe_key = models.CharField(max_length=64)
    body = models.TextField()  # the JSON as received (size-capped)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.UNKNOWN)
    kind_raw = models.CharField(max_length=80, blank=True)  # OSAI's own word for the task
    succeeded = models.BooleanField(null=True)  # None: the body did not say
    worker_gb = models.PositiveSmallIntegerField(null=True)  # 8 or 16, when given
    task_id = models.CharField(max_length=100, blank=True)
    finished_at = models.DateTimeField(null=True)  # when OSAI says the task ended, if it does
    message = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "dedupe_key"], name="unique_webhook_delivery"
            )
        ]
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} webhook {self.pk} of connection {self.connection_id}"


class ApiToken(models.Model):
    """A personal token for the read-only JSON API (W2). Only its SHA-256 is stored; the token
    itself is shown once, when it is made."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=80, validators=[validate_one_line])
    prefix = models.CharField(max_length=16)  # the token's first characters, to recognise it
    token_sha256 = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"API token {self.prefix}… of {self.user_id} ({self.name})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# --- Saved views: a report form's parameters, by name (reports/pages/links.py) -------------


class SavedView(models.Model):
    """A report form saved by name: a person's own, or a team's (saved by one of its admins,
    opened by its admins). `params` are the form's parameters as its URL carries them
    (reports/pages/links.py): a preset stays relative ("last quarter" is always the last
    quarter), a custom range stays fixed."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views"
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.CASCADE, related_name="saved_views"
    )
    name = models.CharField(max_length=80)
    params = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"],
                condition=Q(team__isnull=True),
                name="unique_personal_view_name",
            ),
            models.UniqueConstraint(fields=["team", "name"], name="unique_team_view_name"),
        ]

    def __str__(self) -> str:
        return f"View “{self.name}” of {self.team or self.owner}"


# --- People and trust: invitations (reports/teams/invitations.py) and the audit log -------------


class InvitationQuerySet(models.QuerySet["Invitation"]):
    def pending(self, *, now: Any = None) -> InvitationQuerySet:
        """Neither accepted, declined nor withdrawn, and not expired."""
        return self.filter(
            accepted_at__isnull=True,
            declined_at__isnull=True,
            withdrawn_at__isnull=True,
            expires_at__gt=now or timezone.now(),
        )


class Invitation(models.Model):
    """A team admin's invitation of an email address to a team with a role (M6). Only the
    SHA-256 of its token is stored; the link carries the token, which is never kept."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(max_length=254)
    role = models.CharField(max_length=10, choices=Membership.Role.choices)
    token_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invitations_sent",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="invitations_accepted",
    )
    declined_at = models.DateTimeField(null=True, blank=True)
    withdrawn_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["email"], name="invitation_email")]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to {self.team_id} ({self.role})"


class AuditEntry(models.Model):
    """One change someone (or the system) made (M7): who, when, what, before and after, from
    where. Written by reports/audit.py only; never edited, never pruned. No token, secret,
    URL secret or password is ever in it."""

    class Via(models.TextChoices):
        PAGE = "page", "Page"
        CLI = "cli", "Command line"
        API = "api", "API"
        SYSTEM = "system", "System"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries",
    )
    actor_name = models.CharField(max_length=150, blank=True)  # kept if the account goes
    action = models.CharField(max_length=40, db_index=True)  # e.g. "budget.create"
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=40, blank=True)
    label = models.CharField(max_length=300, blank=True)
    # Whose the object is (a connection's owner, a token's user), and the team it belongs to:
    # who may read the entry (reports/audit.py).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_entries_about",
    )
    team = models.ForeignKey(
        Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    via = models.CharField(max_length=6, choices=Via.choices, default=Via.SYSTEM)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} {self.object_type} {self.object_id} at {self.at:%Y-%m-%d %H:%M}"


# --- Retention: pruning in batches (reports/retention.py) ----------------------------------------

# Rows deleted per statement: a prune's queries grow with what it deletes divided by this,
# never with the rows it keeps, and no statement holds SQLite's one writer for long.
PRUNE_BATCH = 1000


def prune_rows(queryset: models.QuerySet[Any], *, dry_run: bool = False) -> int:
    """Delete the rows of `queryset` (and what cascades from them) a batch at a time, each
    batch its own transaction; returns how many of its rows went. `dry_run` counts them."""
    if dry_run:
        return queryset.count()
    model = queryset.model
    pks = queryset.order_by("pk").values_list("pk", flat=True)
    deleted = 0
    while True:
        batch = list(pks[:PRUNE_BATCH])
        if batch:
            model._base_manager.filter(pk__in=batch).delete()
            deleted += len(batch)
        if len(batch) < PRUNE_BATCH:
            return deleted
