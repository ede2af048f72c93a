"""This round's schema, in one migration (none of it was on a deployed database yet):

- Retention (reports/retention.py, R1-R3): the daily prune's schedule exists from the first
  migrate, as the others do; a worker start keeps it (reports/schedules.py).
- Anomalies (reports/spend/anomalies.py, N1-N4): the Anomaly rows and each connection's
  last judged day.
- Channels (issue 22): where alerts and digests go, a model of its own. A budget's addresses and its webhook (URL and signing secret) become channels of the budget's
  owner (a team budget's: of its team), linked to the budget, and the old columns go: one path
  for every message. A webhook delivery already made is linked to its channel and its target (the
  URL, kept in plain text until now) emptied, so no URL stays readable in the database; the URL
  is encrypted under OSAI_TOKEN_KEYS like every other secret (reports/crypto.py). A budget's
  addresses become the one email channel of its owner with exactly those addresses.
"""

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import reports.models


def add_schedule(apps, schema_editor):
    # First at the next 03:00 UTC (reports/schedules.py PRUNE_HOUR), then daily.
    now = datetime.now(UTC)
    first = now.replace(hour=3, minute=0, second=0, microsecond=0)
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name="osai-prune",
        defaults={
            "func": "reports.tasks.retention_prune",
            "schedule_type": "D",  # daily
            "repeats": -1,
            "next_run": first if first > now else first + timedelta(days=1),
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="osai-prune").delete()


def budget_fields_to_channels(apps, schema_editor):
    from reports import crypto  # the functions, not the models: the historical models are used

    Budget = apps.get_model("reports", "Budget")
    Channel = apps.get_model("reports", "Channel")
    Delivery = apps.get_model("reports", "Delivery")
    for budget in Budget.objects.all().order_by("pk"):
        owner = {"team_id": budget.team_id} if budget.team_id else {"owner_id": budget.owner_id}
        linked = []
        emails = list(budget.emails or [])
        if emails:
            channel = next(
                (
                    c
                    for c in Channel.objects.filter(kind="email", to_team_admins=False, **owner)
                    if list(c.emails) == emails
                ),
                None,
            )
            if channel is None:
                name = "Email " + ", ".join(emails)
                channel = Channel.objects.create(
                    kind="email",
                    name=name[:119] + ("…" if len(name) > 119 else ""),
                    emails=emails,
                    created_by_id=budget.channels_set_by_id,
                    **owner,
                )
            linked.append(channel)
        if budget.webhook_url:
            url = budget.webhook_url
            host = (urlsplit(url).hostname or "")[:255]
            channel = Channel.objects.create(
                kind="webhook",
                name=f"Webhook to {host or 'its host'} (budget {budget.pk})"[:120],
                url_encrypted=crypto.encrypt_secret(url),
                url_host=host,
                url_last4=url.rstrip("/")[-4:],
                secret_encrypted=budget.webhook_secret_encrypted,
                created_by_id=budget.channels_set_by_id,
                **owner,
            )
            linked.append(channel)
            Delivery.objects.filter(budget_id=budget.pk, channel="webhook").update(
                via=channel, target=""
            )
        budget.channels.set(linked)


def channels_to_budget_fields(apps, schema_editor):
    """Back: a budget's email channels' addresses and its first signed webhook."""
    from reports import crypto

    Budget = apps.get_model("reports", "Budget")
    for budget in Budget.objects.all():
        emails = []
        for channel in budget.channels.filter(kind="email"):
            emails += [e for e in channel.emails if e not in emails]
        hook = budget.channels.filter(kind="webhook").first()
        budget.emails = emails[:20]
        if hook is not None:
            budget.webhook_url = crypto.decrypt_secret(hook.url_encrypted)[:500]
            budget.webhook_secret_encrypted = hook.secret_encrypted
        budget.save()


class Migration(migrations.Migration):
    dependencies = [
        ("reports", "0012_held_data_teams_and_hardening"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(add_schedule, remove_schedule),
        migrations.AddField(
            model_name="connection",
            name="anomalies_checked_through",
            field=models.DateField(blank=True, editable=False, null=True),
        ),
        migrations.CreateModel(
            name="Anomaly",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[("spike", "Spike"), ("idle_storage", "Idle storage")],
                        default="spike",
                        max_length=12,
                    ),
                ),
                ("column", models.CharField(max_length=40)),
                ("day", models.DateField()),
                ("actual", models.FloatField()),
                ("expected_low", models.FloatField()),
                ("expected_high", models.FloatField()),
                (
                    "feedback",
                    models.CharField(
                        blank=True,
                        choices=[
                            ("", "No feedback"),
                            ("expected", "Expected"),
                            ("not_expected", "Not expected"),
                        ],
                        default="",
                        max_length=12,
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "connection",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="anomalies",
                        to="reports.connection",
                    ),
                ),
            ],
            options={
                "ordering": ["-day", "connection", "column"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("connection", "column", "day"),
                        name="one_anomaly_per_metric_and_day",
                    )
                ],
            },
        ),
        migrations.AlterField(
            model_name="delivery",
            name="channel",
            field=models.CharField(
                choices=[
                    ("email", "Email"),
                    ("webhook", "Webhook"),
                    ("slack", "Slack"),
                    ("teams", "Microsoft Teams"),
                ],
                max_length=8,
            ),
        ),
        migrations.AlterField(
            model_name="delivery",
            name="target",
            field=models.TextField(blank=True),
        ),
        migrations.CreateModel(
            name="Channel",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("email", "Email"),
                            ("webhook", "Signed webhook"),
                            ("slack", "Slack"),
                            ("teams", "Microsoft Teams"),
                        ],
                        max_length=8,
                    ),
                ),
                (
                    "name",
                    models.CharField(max_length=120, validators=[reports.models.validate_one_line]),
                ),
                ("emails", models.JSONField(blank=True, default=list)),
                ("to_team_admins", models.BooleanField(default=False)),
                ("url_encrypted", models.TextField(blank=True, editable=False)),
                ("url_host", models.CharField(blank=True, editable=False, max_length=255)),
                ("url_last4", models.CharField(blank=True, editable=False, max_length=4)),
                ("secret_encrypted", models.TextField(blank=True, editable=False)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        editable=False,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "owner",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="channels",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "team",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="channels",
                        to="reports.team",
                    ),
                ),
            ],
            options={
                "ordering": ["name", "pk"],
            },
        ),
        migrations.AddField(
            model_name="budget",
            name="channels",
            field=models.ManyToManyField(blank=True, related_name="budgets", to="reports.channel"),
        ),
        migrations.AddField(
            model_name="delivery",
            name="via",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="deliveries",
                to="reports.channel",
            ),
        ),
        migrations.AddField(
            model_name="digestpreference",
            name="channels",
            field=models.ManyToManyField(
                blank=True, related_name="digest_preferences", to="reports.channel"
            ),
        ),
        migrations.AddConstraint(
            model_name="channel",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("owner__isnull", False), ("team__isnull", True)),
                    models.Q(("owner__isnull", True), ("team__isnull", False)),
                    _connector="OR",
                ),
                name="channel_has_one_owner",
            ),
        ),
        migrations.RunPython(budget_fields_to_channels, channels_to_budget_fields),
        migrations.RemoveField(
            model_name="budget",
            name="emails",
        ),
        migrations.RemoveField(
            model_name="budget",
            name="webhook_secret_encrypted",
        ),
        migrations.RemoveField(
            model_name="budget",
            name="webhook_url",
        ),
    ]
