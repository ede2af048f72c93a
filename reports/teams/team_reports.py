"""Team reports: asked for by a team's admins over the connections that count for it; read by
its admins and viewers (reports/access.py, CAPABILITIES)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import QuerySet

from reports.access import Capability, teams_where
from reports.models import Connection, Report, Team
from reports.pipeline import report_requests
from reports.teams.sharing import team_shared_connections


def team_report_request(
    *,
    team: Team,
    admin: User,
    period_start: datetime,
    period_end: datetime,
    granularity: str,
    flags: Mapping[str, bool],
    preset: str = "",
    compare: bool = False,
    now: datetime | None = None,
) -> Report:
    """Ask for a team report over every connection members share with the team.

    Connections that need a new token are skipped and named on the report (M3). The worker
    builds the rest, reusing finished buckets. Raises report_requests.ReportRequestError (for the
    form) if no member shares a working connection or the request is unreasonable.
    """
    if not teams_where(admin, Capability.REQUEST_TEAM_REPORT).filter(pk=team.pk).exists():
        raise report_requests.ReportRequestError("Only team admins can request team reports.")
    shared = list(team_shared_connections(team))
    if not shared:
        raise report_requests.ReportRequestError(
            "No member shares a connection with this team yet: members choose theirs on the "
            "team's sharing page."
        )
    working = [c for c in shared if c.status == Connection.Status.OK]
    skipped = [
        {"owner": c.owner.get_username(), "label": c.label, "reason": c.get_status_display()}
        for c in shared
        if c.status != Connection.Status.OK
    ]
    if not working:
        names = ", ".join(f"“{s['label']}” of {s['owner']}" for s in skipped)
        raise report_requests.ReportRequestError(
            f"Every connection shared with this team needs a new token first: {names}."
        )
    return report_requests.report_request(
        owner=admin,
        team=team,
        connections=working,
        period_start=period_start,
        period_end=period_end,
        granularity=granularity,
        flags=flags,
        preset=preset,
        skipped_connections=skipped,
        compare=compare,
        now=now,
    )


def team_reports(team: Team) -> QuerySet[Report]:
    """The team's reports, newest first."""
    return Report.objects.filter(team=team).select_related("owner").order_by("-requested_at", "-id")


def team_report_for(team: Team, report_pk: int) -> Report | None:
    return Report.objects.filter(pk=report_pk, team=team).select_related("price_book").first()
