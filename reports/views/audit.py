"""The audit log's pages and CSVs (M7): a person's own entries, a team's (its admins only:
404 for everyone else), every entry (Django staff, `?all=1`). Filters: action, date range."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from reports import audit
from reports.access import Capability
from reports.formatting import utc_z
from reports.models import AuditEntry, Team
from reports.periods import utc_midnight
from reports.spend.exports import csv_response, neutralise, safe_filename
from reports.views.http import AuthenticatedRequest, membership_or_404

PAGE_SIZE = 50
CSV_HEADER = [
    "at_utc",
    "actor",
    "action",
    "object_type",
    "object_id",
    "label",
    "team",
    "before",
    "after",
    "via",
    "client_ip",
]


def _day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _filters(request: AuthenticatedRequest) -> dict[str, str]:
    """The page's filters as given (the CSV link carries the same)."""
    return {
        key: request.GET.get(key, "")[:40]
        for key in ("action", "since", "until", "all")
        if request.GET.get(key)
    }


def _filtered(entries: QuerySet[AuditEntry], filters: dict[str, str]) -> QuerySet[AuditEntry]:
    since, until = _day(filters.get("since", "")), _day(filters.get("until", ""))
    return audit.filtered(
        entries,
        action=filters.get("action", ""),
        since=utc_midnight(since) if since else None,
        # The "until" day is included: up to the next midnight.
        until=utc_midnight(until + timedelta(days=1)) if until else None,
    )


def _scope(request: AuthenticatedRequest, team: Team | None) -> QuerySet[AuditEntry]:
    if team is not None:
        return audit.entries_of_team(team)
    if request.GET.get("all") and request.user.is_staff:
        return audit.entries_all()
    return audit.entries_of_person(request.user)


def _page(request: AuthenticatedRequest, team: Team | None, csv_name: str) -> HttpResponse:
    filters = _filters(request)
    if not request.user.is_staff:
        filters.pop("all", None)
    scope = _scope(request, team)
    entries = _filtered(scope, filters)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = urlencode(filters)
    return render(
        request,
        "reports/audit.html",
        {
            "team": team,
            "page": page,
            "entries": page.object_list,
            "filters": filters,
            "actions": audit.action_codes(scope),
            "query": query,
            "csv_url": f"{csv_name}?{query}" if query else csv_name,
            "everyone": "all" in filters,
        },
    )


def _rows(entries: QuerySet[AuditEntry]) -> Iterator[list[str]]:
    yield CSV_HEADER
    for e in entries.iterator(chunk_size=500):
        yield [
            utc_z(e.at),
            neutralise(e.actor_name or "system"),
            e.action,
            e.object_type,
            e.object_id,
            neutralise(e.label),
            neutralise(e.team.name if e.team else ""),
            neutralise(_json(e.before)),
            neutralise(_json(e.after)),
            e.via,
            e.client_ip or "",
        ]


def _json(values: object) -> str:
    return "" if values is None else json.dumps(values, ensure_ascii=False, sort_keys=True)


def _csv(request: AuthenticatedRequest, team: Team | None, *name: object) -> HttpResponseBase:
    filters = _filters(request)
    if not request.user.is_staff:
        filters.pop("all", None)
    entries = _filtered(_scope(request, team), filters)
    stamp = timezone.now().strftime("%Y-%m-%d")
    return csv_response(_rows(entries), safe_filename("osai-usage-audit", *name, stamp))


@login_required
@require_GET
def audit_log(request: AuthenticatedRequest) -> HttpResponse:
    return _page(request, None, reverse("audit_log_csv"))


@login_required
@require_GET
def audit_log_csv(request: AuthenticatedRequest) -> HttpResponseBase:
    return _csv(
        request, None, "all" if request.GET.get("all") and request.user.is_staff else "mine"
    )


@login_required
@require_GET
def team_audit(request: AuthenticatedRequest, pk: int) -> HttpResponse:
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    return _page(request, membership.team, reverse("team_audit_csv", args=[pk]))


@login_required
@require_GET
def team_audit_csv(request: AuthenticatedRequest, pk: int) -> HttpResponseBase:
    membership = membership_or_404(request, pk, Capability.MANAGE_MEMBERS)
    return _csv(request, membership.team, "team", membership.team.pk)
