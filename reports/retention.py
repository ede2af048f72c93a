"""Retention: nothing grows for ever (R1-R4).

Every day a django-q2 schedule (reports/schedules.py) and, on demand, `manage.py prune
[--dry-run]` delete what nothing reads any more. Each rule lives with its data; this module
only runs them in order and counts:

- OSAI's webhooks after OSAI_RETAIN_WEBHOOK_EVENTS_DAYS (integrations/webhooks.py);
- sent and failed messages after OSAI_RETAIN_DELIVERIES_DAYS (spend/notify.py), then
- alerts before OSAI_RETAIN_ALERTS_MONTHS, never this month's or last month's, never one a
  kept message names (spend/budgets.py, A1);
- anomalies of days before OSAI_RETAIN_ANOMALIES_MONTHS, never this month's or last month's,
  never one a kept message names (spend/anomaly_alerts.py, R4);
- superseded open-period buckets (spend/tracking.py, the rule tracking's refresh uses);
- the raw OSAI JSON of buckets no report, ledger row or tracking needs, after
  OSAI_RETAIN_RAW_JSON_DAYS (spend/tracking.py).

Never pruned: a bucket a report links or the spend ledger holds (so every page, budget,
export and digest adds up the same before and after), tracking's held buckets, a message
still waiting to be sent, and the audit log (reports/audit.py, M7, R5): its entries are kept
for ever, like the invitations they name.

Deletes go a batch (models.PRUNE_BATCH) at a time: a prune's queries grow with what it
deletes, never with what it keeps.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from reports.integrations import webhooks
from reports.models import prune_rows
from reports.spend import anomaly_alerts, budgets, notify, tracking

# What a prune reports, in the order it runs (deliveries before the alerts they name).
KINDS = (
    "webhook events",
    "deliveries",
    "alerts",
    "anomalies",
    "superseded buckets",
    "raw OSAI JSON",
)


def prune(*, now: datetime | None = None, dry_run: bool = False) -> dict[str, int]:
    """Prune everything past its retention; returns how many of each kind went (with
    `dry_run`: would go, and nothing is deleted)."""
    now = now or timezone.now()
    counts = {
        "webhook events": webhooks.prune_webhook_events(now=now, dry_run=dry_run),
        "deliveries": notify.prune_deliveries(now=now, dry_run=dry_run),
    }
    counts["alerts"] = budgets.prune_alerts(now=now, dry_run=dry_run)
    counts["anomalies"] = anomaly_alerts.prune_anomalies(now=now, dry_run=dry_run)
    counts["superseded buckets"] = prune_rows(tracking.superseded_buckets(now=now), dry_run=dry_run)
    raw_before = now - timedelta(days=max(1, settings.OSAI_RETAIN_RAW_JSON_DAYS))
    counts["raw OSAI JSON"] = tracking.prune_raw_json(before=raw_before, dry_run=dry_run)
    return counts


def summary(counts: dict[str, int], *, dry_run: bool = False) -> str:
    """One line per kind: "webhook events: 12 deleted" (or "would delete")."""
    verb = "would delete" if dry_run else "deleted"
    return "\n".join(f"{kind}: {verb} {counts[kind]}" for kind in KINDS)
