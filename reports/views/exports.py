"""CSV exports of a report and of a team report, streamed (C4), scoped like the pages (C5)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from reports.access import Capability, counted_buckets
from reports.models import Bucket, Connection, Granularity, Report
from reports.periods import split_period, utc_midnight
from reports.spend import digests, exports, ledger, pricing
from reports.spend.monthly import known_usage_days, price_book_of
from reports.teams import team_reports
from reports.views.http import (
    AuthenticatedRequest,
    BadParameter,
    bad_request,
    id_parameter,
    membership_or_404,
    visible_report_or_404,
)


def _with_cost(request: AuthenticatedRequest) -> bool:
    return request.GET.get("cost", "1") not in ("0", "false", "no")


@login_required
@require_GET
def report_export_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    # A team report's CSV: only for the team's roles that may download it (reports/access.py).
    report = visible_report_or_404(request, pk, Capability.DOWNLOAD_CSV)
    return _export(request, report)


@login_required
@require_GET
def team_report_export_csv(
    request: AuthenticatedRequest, pk: int, report_pk: int
) -> StreamingHttpResponse:
    membership = membership_or_404(request, pk, Capability.DOWNLOAD_CSV)
    report = team_reports.team_report_for(membership.team, report_pk)
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
        report=report,
    )
    kind = ("osai-usage-team", report.team_id, "report") if team else ("osai-usage-report",)
    filename = exports.safe_filename(
        *kind, report.pk, f"{report.period_start:%Y-%m-%d}", f"{report.period_end:%Y-%m-%d}"
    )
    return exports.csv_response(rows, filename)


@login_required
@require_GET
def spend_export_csv(request: AuthenticatedRequest) -> HttpResponse | StreamingHttpResponse:
    """The tracked daily usage and cost of a period, for a person or a team (its admins and
    viewers): the CSV a digest links to. `?from=YYYY-MM-DD&to=YYYY-MM-DD[&team=ID]`, `to`
    exclusive."""
    period = digests.period_from_query(request.GET)
    if period is None or (period[1] - period[0]).days > 400:
        return bad_request(
            BadParameter("Give ?from= and ?to= as dates (YYYY-MM-DD), at most 400 days apart.")
        )
    try:
        team_id = id_parameter(request, "team")
    except BadParameter as exc:
        return bad_request(exc)
    start, end = (utc_midnight(day) for day in period)
    team = None
    if team_id is not None:
        membership = membership_or_404(request, team_id, Capability.DOWNLOAD_CSV)
        team = membership.team
        connections = Connection.objects.counting_for_team(team)
    else:
        connections = Connection.objects.filter(owner=request.user)
    days = set(split_period(start, end, Granularity.DAY))
    price_book = price_book_of(team)
    connection_ids = list(connections.values_list("pk", flat=True))
    if price_book is not None:
        ledger.ledger_fill(connection_ids, [price_book])
    buckets = Bucket.objects.filter(
        known_usage_days(),
        connection_id__in=connection_ids,
        is_closed=True,
        period_start__gte=start,
        period_end__lte=end,
    ).only("pk", "period_start", "period_end")
    day_ids = [b.pk for b in buckets if (b.period_start, b.period_end) in days]
    rows = exports.export_rows(
        Bucket.objects.filter(pk__in=day_ids),
        team=team is not None,
        with_cost=True,
        price_book=price_book,
        from_ledger=True,
    )
    kind = ("osai-usage-team", team.pk) if team else ("osai-usage",)
    filename = exports.safe_filename(*kind, f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}")
    return exports.csv_response(rows, filename)
