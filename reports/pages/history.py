"""The home page's recent reports and the report history: what a person may see, newest first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import (
    Case,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
    prefetch_related_objects,
)

from reports.access import recent_reports_visible_to, reports_visible_to
from reports.models import Connection, Report
from reports.pages import charts

RECENT_REPORTS = 5


def with_periods(reports: Iterable[Report]) -> list[tuple[Report, str]]:
    """Each report with its period as UTC days, the last day included."""
    return [(r, charts.period_label(r.period_start, r.period_end, "total")) for r in reports]


def home_page(user: User) -> dict[str, Any]:
    """The signed-in home page: the person's connections and their newest reports."""
    connections = list(
        Connection.objects.filter(owner=user)
        .defer("token_encrypted", "jwt_encrypted", "webhook_secret_encrypted", "jwt_expires_at")
        .order_by("label")
    )
    recent = recent_reports_visible_to(user, RECENT_REPORTS)
    prefetch_related_objects(recent, "team", "connections")
    return {
        "connections": connections,
        "reports": with_periods(recent),
        "sandbox_offered": "sandbox" in settings.OSAI_REGIONS,
    }


def history_queryset(user: User) -> QuerySet[Report]:
    """Reports the user may see, their own first, newest first; connections prefetched."""
    return (
        reports_visible_to(user)
        .select_related("team", "owner")
        .prefetch_related("connections")
        .annotate(
            own_first=Case(
                When(Q(owner=user), then=Value(0)), default=Value(1), output_field=IntegerField()
            )
        )
        .order_by("own_first", "-requested_at", "-id")
    )
