"""CSV exports, streamed (C4), scoped like the pages (C5): a report and a team report, the
tracked daily spend a digest links to, and every page's "Download CSV" (the overview, budgets
and their alert logs, the activity feed, the report history: reports/pages/downloads.py)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.http import require_GET

from reports.access import Capability
from reports.models import Bucket, Budget, Connection, Granularity, Report
from reports.pages import downloads
from reports.pages.team_spend import team_period
from reports.periods import split_period, utc_midnight
from reports.spend import digests, exports, ledger
from reports.spend.monthly import budget_statuses, known_usage_days, price_book_of
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


@login_required
@require_GET
def team_spend_export_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    """The team page's spend over the period of its switch (`?period=`), per member, connection
    and day: for the team's roles that may download its CSVs."""
    membership = membership_or_404(request, pk, Capability.DOWNLOAD_CSV)
    period = team_period(request.GET.get("period"))
    csv = downloads.team_period_csv(membership.team, period)
    return exports.csv_response(csv.rows, csv.filename)


def _export(request: AuthenticatedRequest, report: Report) -> StreamingHttpResponse:
    csv = downloads.report_csv(report, with_cost=_with_cost(request))
    return exports.csv_response(csv.rows, csv.filename)


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


# --- Every page's "Download CSV" (reports/pages/downloads.py) ---------------------------------


@login_required
@require_GET
def overview_export_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    """The overview's month: one row per held day bucket of the person's connections, the days
    the month to date counts; their cost_total adds up to it exactly."""
    csv = downloads.overview_csv(request.user)
    return exports.csv_response(csv.rows, csv.filename)


def _budget_or_404(request: AuthenticatedRequest, pk: int) -> Budget:
    budget = next((b for b in downloads.csv_budgets(request.user) if b.pk == pk), None)
    if budget is None:
        raise Http404("No such budget.")
    return budget


@login_required
@require_GET
def budget_list_export_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    """Where each budget the person sees stands, as the budget list shows it."""
    now = timezone.now()
    statuses = budget_statuses(downloads.csv_budgets(request.user), now=now)
    rows = downloads.budget_rows(statuses, now)
    return exports.csv_response(rows, exports.safe_filename("osai-usage-budgets", f"{now:%Y-%m}"))


@login_required
@require_GET
def budget_alerts_export_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    """The alert log of every budget the person sees."""
    rows = downloads.alert_log_rows(downloads.csv_budgets(request.user))
    return exports.csv_response(rows, exports.safe_filename("osai-usage-budget-alerts"))


@login_required
@require_GET
def budget_export_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    """Where one budget stands (its page's bar), as one row."""
    budget = _budget_or_404(request, pk)
    now = timezone.now()
    rows = downloads.budget_rows(budget_statuses([budget], now=now), now)
    filename = exports.safe_filename("osai-usage-budget", budget.pk, f"{now:%Y-%m}")
    return exports.csv_response(rows, filename)


@login_required
@require_GET
def budget_alert_log_csv(request: AuthenticatedRequest, pk: int) -> StreamingHttpResponse:
    """One budget's alert log, without the messages' targets."""
    budget = _budget_or_404(request, pk)
    rows = downloads.alert_log_rows([budget])
    return exports.csv_response(rows, exports.safe_filename("osai-usage-budget", pk, "alerts"))


@login_required
@require_GET
def activity_export_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    """The activity feed (`?connection=<id>`, one's own only): every delivery, newest first."""
    raw = request.GET.get("connection")
    connection_id = None
    if raw:
        if not raw.isdigit():
            raise Http404("No such connection.")
        connection = get_object_or_404(Connection, pk=int(raw), owner=request.user)
        connection_id = connection.pk
    rows = downloads.activity_rows(request.user, connection_id)
    kind = ("osai-usage-activity", connection_id) if connection_id else ("osai-usage-activity",)
    return exports.csv_response(rows, exports.safe_filename(*kind))


@login_required
@require_GET
def report_history_export_csv(request: AuthenticatedRequest) -> StreamingHttpResponse:
    """The report history, one row per report, every page of it."""
    rows = downloads.history_rows(request.user)
    return exports.csv_response(rows, exports.safe_filename("osai-usage-reports"))
