"""CSV exports of a report and of a team report, streamed (C4), scoped like the pages (C5)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, StreamingHttpResponse
from django.views.decorators.http import require_GET

from reports import exports, pricing, teams
from reports.access import counted_buckets
from reports.models import Report
from reports.views.http import AuthenticatedRequest, membership_or_404, visible_report_or_404


def _with_cost(request: AuthenticatedRequest) -> bool:
    return request.GET.get("cost", "1") not in ("0", "false", "no")


@login_required
@require_GET
def report_export_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    # A team report is visible only to the team's current admins (reports/access.py).
    report = visible_report_or_404(request, pk)
    return _export(request, report)


@login_required
@require_GET
def team_report_export_csv(
    request: AuthenticatedRequest, pk: int, report_pk: int
) -> StreamingHttpResponse:
    membership = membership_or_404(request, pk, admin=True)
    report = teams.team_report_for(membership.team, report_pk)
    if report is None:
        raise Http404("No such report.")
    return _export(request, report)


def _export(request: AuthenticatedRequest, report: Report) -> StreamingHttpResponse:
    team = report.team_id is not None
    rows = exports.export_rows(
        counted_buckets(report),
        team=team,
        with_cost=_with_cost(request),
        price_book=pricing.price_book_for(report),
    )
    kind = ("osai-usage-team", report.team_id, "report") if team else ("osai-usage-report",)
    filename = exports.safe_filename(
        *kind, report.pk, f"{report.period_start:%Y-%m-%d}", f"{report.period_end:%Y-%m-%d}"
    )
    return exports.csv_response(rows, filename)
