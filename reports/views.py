"""Pages: connections, report requests, the report page with its live status badge, history.

Views parse input, call a service, choose a template. Every object lookup is scoped to the
signed-in user (reports/access.py): someone else's object is a 404, never a 403, so ids
reveal nothing. htmx endpoints use `htmx_login_required`, which answers an expired session
with HX-Redirect instead of letting htmx swap the login form into the badge (S5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import wraps
from typing import Any, Literal
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import (
    Case,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
    prefetch_related_objects,
)
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import (
    HttpResponseClientRedirect,
    HttpResponseStopPolling,
    trigger_client_event,
)
from django_htmx.middleware import HtmxDetails

from reports import charts, costs, services, teams
from reports.access import recent_reports_visible_to, report_visible_to, reports_visible_to
from reports.forms import (
    ConnectionCreateForm,
    ConnectionEditForm,
    ConnectionTokenForm,
    ReportForm,
)
from reports.models import Bucket, BucketFile, Connection, PriceBook, Report, Team
from reports.periods import EARLIEST_PERIOD_START, previous_period
from reports.usage import UsageRow, display_value, rows_from_buckets, sum_rows

ViewMode = Literal["usage", "cost"]
HISTORY_PAGE_SIZE = 25
RECENT_REPORTS = 5
# Events the status endpoint sends (HX-Trigger) so the report body reloads without a refresh.
EVENT_FINISHED = "report-finished"
EVENT_PROGRESS = "report-progress"


class HtmxHttpRequest(HttpRequest):
    """A request seen by django-htmx's middleware, in a view behind a login check."""

    htmx: HtmxDetails
    user: User


def htmx_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`login_required` that answers htmx requests with HX-Redirect to the login page.

    A plain 302 would be followed by the browser's XHR and the login form swapped into the
    badge. The `next` is the page the person is on, not the partial's URL.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        htmx: HtmxDetails | None = getattr(request, "htmx", None)
        if htmx:
            next_url = htmx.current_url_abs_path or request.get_full_path()
            login_url = resolve_url(settings.LOGIN_URL)
            return HttpResponseClientRedirect(f"{login_url}?{urlencode({'next': next_url})}")
        return redirect_to_login(request.get_full_path())

    return wrapper


def _view_mode(request: HttpRequest) -> ViewMode:
    return "cost" if request.GET.get("view") == "cost" else "usage"


def _visible_report(request: HttpRequest, pk: int) -> Report:
    """The report if the user may see it (own, or a team report of a team they administer)."""
    report = report_visible_to(request.user, pk)
    if report is None:
        raise Http404("No such report.")
    return report


def _own_connection(request: HtmxHttpRequest, pk: int) -> Connection:
    """Only the owner manages a connection; team admins never do (they only see labels)."""
    return get_object_or_404(Connection, pk=pk, owner=request.user)


# --- Home -------------------------------------------------------------------------------------


@login_required
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    connections = list(Connection.objects.filter(owner=request.user))
    recent = recent_reports_visible_to(request.user, RECENT_REPORTS)
    prefetch_related_objects(recent, "team", "connections")
    return render(
        request,
        "reports/home.html",
        {"connections": connections, "reports": _with_periods(recent)},
    )


def _with_periods(reports: Iterable[Report]) -> list[tuple[Report, str]]:
    """Each report with its period as UTC days, the last day included."""
    return [(r, charts.period_label(r.period_start, r.period_end, "total")) for r in reports]


# --- Connections ------------------------------------------------------------------------------


@login_required
@require_GET
def connection_list(request: HtmxHttpRequest) -> HttpResponse:
    connections = Connection.objects.filter(owner=request.user).prefetch_related(
        "shared_with_teams"
    )
    return render(request, "reports/connection_list.html", {"connections": connections})


@login_required
@require_http_methods(["GET", "POST"])
def connection_create(request: HtmxHttpRequest) -> HttpResponse:
    form = ConnectionCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            connection = services.connection_create(
                owner=request.user,
                label=form.cleaned_data["label"],
                region=form.cleaned_data["region"],
                access_token=form.cleaned_data["access_token"],
            )
        except services.ConnectionCheckError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Connected to OSAI as {connection.account_name or 'your account'}: "
                f"“{connection.label}” is ready.",
            )
            return redirect("connection_list")
    return render(request, "reports/connection_form.html", {"form": form})


@login_required
@require_http_methods(["GET", "POST"])
def connection_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    initial = {"label": connection.label, "shared_with_teams": connection.shared_with_teams.all()}
    form = ConnectionEditForm(request.POST or None, initial=initial, owner=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                services.connection_relabel(connection=connection, label=form.cleaned_data["label"])
                _share_with(connection, form.cleaned_data["shared_with_teams"], request.user)
        except services.ConnectionCheckError as exc:
            form.add_error("label", str(exc))
        else:
            messages.success(request, f"Saved “{connection.label}”.")
            return redirect("connection_list")
    return render(request, "reports/connection_edit.html", {"form": form, "connection": connection})


def _share_with(connection: Connection, chosen: Iterable[Team], user: Any) -> None:
    """Share the connection with exactly the chosen teams among the user's own teams.

    Sharing with teams the user is not in (kept from before they left) is left alone: the
    form only offers the user's teams, so it can only change those.
    """
    own_teams = set(Team.objects.filter(memberships__user=user).values_list("pk", flat=True))
    chosen_ids = {team.pk for team in chosen} & own_teams
    current = set(connection.shared_with_teams.values_list("pk", flat=True)) & own_teams
    if chosen_ids - current:
        connection.shared_with_teams.add(*(chosen_ids - current))
    if current - chosen_ids:
        connection.shared_with_teams.remove(*(current - chosen_ids))


@login_required
@require_http_methods(["GET", "POST"])
def connection_token(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    form = ConnectionTokenForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.connection_replace_token(
                connection=connection, access_token=form.cleaned_data["access_token"]
            )
        except services.ConnectionCheckError as exc:
            form.add_error("access_token", str(exc))
        else:
            messages.success(request, f"The token of “{connection.label}” was replaced.")
            return redirect("connection_list")
        connection.refresh_from_db()  # undo what the failed check set on the instance
    return render(
        request, "reports/connection_token.html", {"form": form, "connection": connection}
    )


@login_required
@require_http_methods(["GET", "POST"])
def connection_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    connection = _own_connection(request, pk)
    if request.method == "POST":
        label = connection.label
        reports_deleted = services.connection_delete(connection=connection)
        messages.success(
            request,
            f"Deleted the connection “{label}”, its stored usage and {reports_deleted} "
            "report(s) that covered only it.",
        )
        return redirect("connection_list")
    reports_using = Report.objects.filter(connections=connection).count()
    return render(
        request,
        "reports/connection_delete.html",
        {"connection": connection, "reports_using": reports_using},
    )


# --- Requesting a report ----------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def report_new(request: HtmxHttpRequest) -> HttpResponse:
    form = ReportForm(request.POST or None, owner=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            report = services.report_request(
                owner=request.user,
                connections=data["connections"],
                period_start=data["period_start"],
                period_end=data["period_end"],
                granularity=data["granularity"],
                flags=form.flags(),
                preset=form.preset_name(),
                now=form.now,
            )
        except services.ReportRequestError as exc:
            form.add_error(None, str(exc))
        else:
            return redirect("report_detail", pk=report.pk)
    has_connections = Connection.objects.filter(owner=request.user).exists()
    return render(
        request, "reports/report_new.html", {"form": form, "has_connections": has_connections}
    )


# --- The report page --------------------------------------------------------------------------


def _duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"


def badge_context(report: Report) -> dict[str, Any]:
    """What the status badge needs: the report row only (S6: no further queries)."""
    now = timezone.now()
    if report.started_at:
        elapsed = _duration((report.finished_at or now) - report.started_at)
    else:
        elapsed = _duration((report.finished_at or now) - report.requested_at)
    status_url = reverse("report_status", args=[report.pk])
    return {
        "report": report,
        "elapsed": elapsed,
        "waiting": report.started_at is None,
        "status_url": f"{status_url}?{urlencode({'seen': report.buckets_done})}",
    }


@dataclass(frozen=True)
class TileSpec:
    label: str
    columns: tuple[str, ...]
    unit: str
    flag: str
    priced: bool = True
    decimals: int = 1


TILE_SPECS: tuple[TileSpec, ...] = (
    TileSpec(
        "Training", ("training_seconds_8gb", "training_seconds_16gb"), "GPU-hours", "include_models"
    ),
    TileSpec(
        "Conversion",
        ("conversion_seconds_8gb", "conversion_seconds_16gb"),
        "GPU-hours",
        "include_models",
    ),
    TileSpec(
        "Prediction",
        ("prediction_seconds_8gb", "prediction_seconds_16gb"),
        "GPU-hours",
        "include_predictions",
    ),
    TileSpec("Augmentation", ("manipulation_seconds",), "hours", "include_manipulations"),
    TileSpec("Device rental", ("device_rental_seconds",), "hours", "include_rented_devices"),
    TileSpec("Image storage", ("images_kb_min",), "GB-months", "include_datasets", decimals=2),
    TileSpec("Model storage", ("models_kb_min",), "GB-months", "include_models", decimals=2),
    TileSpec(
        "Images existing",
        ("existing_images",),
        "images",
        "include_datasets",
        priced=False,
        decimals=0,
    ),
    TileSpec(
        "Images deleted",
        ("deleted_images",),
        "images",
        "include_datasets",
        priced=False,
        decimals=0,
    ),
)


@dataclass(frozen=True)
class Tile:
    label: str
    value: str
    unit: str  # a unit of usage after the value, or a currency before it
    detail: str  # the 8 GB / 16 GB split, or why there is no value
    change: str  # against the previous period, "" when unknown
    trend: str  # "up", "down", "flat" or "" (for the colour)
    included: bool
    is_money: bool = False


def _change(current: float | Decimal, previous: float | Decimal | None) -> tuple[str, str]:
    if previous is None:
        return "", ""
    if previous == 0:
        return ("no change", "flat") if current == 0 else ("new this period", "up")
    ratio = (Decimal(str(current)) - Decimal(str(previous))) / Decimal(str(previous))
    if abs(ratio) < Decimal("0.0005"):
        return "no change", "flat"
    return f"{ratio * 100:+.1f} % vs previous period", "up" if ratio > 0 else "down"


def _tiles(
    report: Report,
    totals: dict[str, float],
    previous: dict[str, float] | None,
    *,
    money: costs.Costs | None,
    previous_money: costs.Costs | None,
    currency: str,
) -> list[Tile]:
    """One tile per category: usage in display units, or money in the cost view."""
    tiles = []
    for spec in TILE_SPECS:
        if not getattr(report, spec.flag):
            tiles.append(Tile(spec.label, charts.EN_DASH, "", "not included", "", "", False))
            continue
        detail = ""
        if len(spec.columns) == 2:  # OSAI splits it by worker class
            gb8, gb16 = (display_value(c, totals[c]) for c in spec.columns)
            detail = f"8 GB {gb8:,.{spec.decimals}f} · 16 GB {gb16:,.{spec.decimals}f}"
        if money is not None and spec.priced:
            amount = sum((money.get(c, Decimal(0)) for c in spec.columns), Decimal(0))
            before = None
            if previous_money is not None:
                before = sum((previous_money.get(c, Decimal(0)) for c in spec.columns), Decimal(0))
            change, trend = _change(amount, before)
            detail = f"{detail} {spec.unit}" if detail else ""
            value = f"{costs.money(amount):,.2f}"
            tiles.append(Tile(spec.label, value, currency, detail, change, trend, True, True))
            continue
        usage = sum(display_value(c, totals[c]) for c in spec.columns)
        before_usage = None
        if previous is not None:
            before_usage = round(sum(display_value(c, previous[c]) for c in spec.columns), 6)
        change, trend = _change(round(usage, 6), before_usage)
        if money is not None:
            detail = "not priced"
        value = f"{usage:,.{spec.decimals}f}"
        tiles.append(Tile(spec.label, value, spec.unit, detail, change, trend, True))
    if money is not None:
        # The whole report's spend, rounded once, as the CSV's total is.
        total = money.get("total", Decimal(0))
        before_total = previous_money.get("total") if previous_money is not None else None
        change, trend = _change(total, before_total)
        value = f"{costs.money(total):,.2f}"
        tiles.insert(0, Tile("Total", value, currency, "all categories", change, trend, True, True))
    return tiles


def _report_buckets(report: Report) -> list[Bucket]:
    """The report's buckets with their connection and whether a raw file is archived.

    A team report only counts connections still shared by current members (reports/teams.py).
    """
    buckets = (
        teams.team_report_buckets(report)
        if report.team_id
        else Bucket.objects.filter(report_buckets__report=report)
    )
    return list(
        buckets.select_related("connection")
        .annotate(has_file=Exists(BucketFile.objects.filter(bucket=OuterRef("pk"))))
        .order_by("period_start", "connection__label", "pk")
    )


def _tiling(buckets: Sequence[Bucket], start: datetime, end: datetime) -> list[Bucket] | None:
    """Buckets of one connection that cover [start, end) exactly, end to end, or None."""
    by_start: dict[datetime, list[Bucket]] = {}
    for bucket in buckets:
        by_start.setdefault(bucket.period_start, []).append(bucket)
    for options in by_start.values():  # closed (final) buckets first, then the longest
        options.sort(key=lambda b: (not b.is_closed, -(b.period_end - b.period_start)))
    dead_ends: set[datetime] = set()

    def walk(cursor: datetime) -> list[Bucket] | None:
        if cursor == end:
            return []
        if cursor in dead_ends:
            return None
        for bucket in by_start.get(cursor, []):
            rest = walk(bucket.period_end)
            if rest is not None:
                return [bucket, *rest]
        dead_ends.add(cursor)
        return None

    return walk(start)


def _previous_rows(report: Report, connection_ids: Sequence[int]) -> list[UsageRow] | None:
    """Usage of the period of equal length before the report's, if it is already known.

    Known means finished buckets with the report's flags that cover the previous period
    exactly for every one of the report's connections (from any earlier report). One query;
    never asks OSAI.
    """
    start, end = previous_period(report.period_start, report.period_end)
    if not connection_ids or start < EARLIEST_PERIOD_START:
        return None
    candidates = list(
        Bucket.objects.filter(
            connection_id__in=connection_ids,
            state=Bucket.State.DONE,
            period_start__gte=start,
            period_end__lte=end,
            **report.flags(),
        )
        .defer("osai_response")  # the totals' columns are all this needs
        .order_by()
    )
    chosen: list[Bucket] = []
    for connection_id in connection_ids:
        tiling = _tiling([b for b in candidates if b.connection_id == connection_id], start, end)
        if tiling is None:
            return None
        chosen.extend(tiling)
    return rows_from_buckets(chosen)


def _report_body_context(request: HtmxHttpRequest, report: Report) -> dict[str, Any]:
    """Everything below the badge: tiles, charts with their tables, buckets, actions."""
    mode = _view_mode(request)
    buckets = _report_buckets(report)
    rows = rows_from_buckets(buckets)
    totals = sum_rows(rows)
    connection_ids = sorted({b.connection_id for b in buckets})
    previous_rows = _previous_rows(report, connection_ids) if report.is_terminal else None
    previous = sum_rows(previous_rows) if previous_rows is not None else None

    price_book: PriceBook | None = None
    row_money: list[costs.Costs] | None = None
    money = previous_money = None
    currency = ""
    pricing_notice = None
    if mode == "cost":
        price_book = costs.price_book_for(report)
        currency = price_book.currency if price_book else ""
        row_money = costs.rows_costs(rows, price_book)
        money = costs.sum_costs(row_money)
        if previous_rows is not None:
            previous_money = costs.sum_costs(costs.rows_costs(previous_rows, price_book))
        pricing_notice = costs.pricing_notice(rows, price_book)

    figures = _figures(rows, report.granularity, row_money, currency)
    failed = [b for b in buckets if b.state in Bucket.FAILED_STATES]
    done = [b for b in buckets if b.state == Bucket.State.DONE]
    as_of = [t for t in (b.osai_created_at or b.finished_at for b in done) if t is not None]
    data_as_of = max(as_of, default=None)
    return {
        "report": report,
        "mode": mode,
        "rows": rows,
        "buckets": buckets,
        "failed_buckets": failed,
        "preliminary": any(r.preliminary for r in rows),
        "data_as_of": data_as_of,
        "connection_labels": sorted({b.connection.label for b in buckets}),
        "tiles": _tiles(
            report, totals, previous, money=money, previous_money=previous_money, currency=currency
        ),
        "previous_known": previous is not None,
        "previous_period": previous_period(report.period_start, report.period_end),
        "charts": figures,
        "price_book": price_book,
        "is_example_prices": mode == "cost" and costs.is_example(price_book),
        "pricing_notice": pricing_notice,
        "charts_url": _with_mode(reverse("report_charts", args=[report.pk]), mode),
        "can_cancel": not report.is_terminal,
        "can_retry": report.is_terminal
        and (report.buckets_failed > 0 or report.state == Report.State.CANCELLED),
    }


def _with_mode(url: str, mode: ViewMode) -> str:
    return f"{url}?view=cost" if mode == "cost" else url


@dataclass(frozen=True)
class ChartBlock:
    """One chart for the template: its JSON data island id, the figure, its table."""

    id: str
    title: str
    wide: bool  # spans the page: the main chart of each view
    figure: dict[str, Any]
    table: charts.ChartTable | None
    empty_message: str


def _figures(
    rows: list[UsageRow], granularity: str, row_money: list[costs.Costs] | None, currency: str
) -> list[ChartBlock]:
    if row_money is not None:
        figures = [
            (
                "compute",
                charts.compute_hours_figure(
                    rows, granularity=granularity, costs=row_money, currency=currency
                ),
            ),
            (
                "cumulative",
                charts.cumulative_cost_figure(
                    rows, row_money, granularity=granularity, currency=currency
                ),
            ),
            ("share", charts.share_figure(rows, costs=row_money, currency=currency)),
            (
                "devices",
                charts.device_rental_figure(
                    rows, granularity=granularity, costs=row_money, currency=currency
                ),
            ),
            (
                "storage",
                charts.storage_figure(
                    rows, granularity=granularity, costs=row_money, currency=currency
                ),
            ),
            ("images", charts.images_figure(rows, granularity=granularity)),
        ]
    else:
        figures = [
            ("compute", charts.compute_hours_figure(rows, granularity=granularity)),
            ("share", charts.share_figure(rows)),
            ("devices", charts.device_rental_figure(rows, granularity=granularity)),
            ("storage", charts.storage_figure(rows, granularity=granularity)),
            ("images", charts.images_figure(rows, granularity=granularity)),
        ]
    return [
        ChartBlock(
            id=f"figure-{name}",
            title=str(fig.layout.title.text or ""),
            wide=name in ("compute", "cumulative"),
            figure=charts.figure_json(fig),
            table=charts.figure_table(fig),
            empty_message=(fig.layout.meta or {}).get("message", "")
            if charts.is_empty(fig)
            else "",
        )
        for name, fig in figures
    ]


@login_required
@require_GET
def report_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    report = _visible_report(request, pk)
    mode = _view_mode(request)
    context = {
        **badge_context(report),
        **_report_body_context(request, report),
        "period_label": charts.period_label(report.period_start, report.period_end, "total"),
        "usage_url": reverse("report_detail", args=[pk]),
        "cost_url": _with_mode(reverse("report_detail", args=[pk]), "cost"),
        "mode": mode,
    }
    return render(request, "reports/report_detail.html", context)


@htmx_login_required
@require_GET
def report_status(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The badge alone, polled every 2 s while the report runs (S6: two queries, no writes).

    Finished: 286 stops htmx polling, and the report-finished event makes the page load the
    final tiles and charts. While running, a change in the count of finished buckets since
    the last poll (`seen`) sends report-progress, so charts fill in as buckets finish.
    """
    report = _visible_report(request, pk)
    response: HttpResponse
    if report.is_terminal:
        response = HttpResponseStopPolling(
            render(
                request, "reports/report_detail.html#status-badge", badge_context(report)
            ).content
        )
        return trigger_client_event(response, EVENT_FINISHED)
    response = render(request, "reports/report_detail.html#status-badge", badge_context(report))
    if request.GET.get("seen") != str(report.buckets_done):
        trigger_client_event(response, EVENT_PROGRESS)
    return response


@htmx_login_required
@require_GET
def report_charts(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The report body (tiles, charts, tables, buckets), reloaded by htmx as buckets finish."""
    report = _visible_report(request, pk)
    return render(
        request, "reports/report_detail.html#report-body", _report_body_context(request, report)
    )


@login_required
@require_POST
def report_cancel(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    report = _visible_report(request, pk)
    if report.is_terminal:
        messages.info(request, "This report had already finished.")
    else:
        services.report_cancel(report=report)
        messages.success(request, "The report was cancelled.")
    return redirect("report_detail", pk=pk)


@login_required
@require_POST
def report_retry(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    report = _visible_report(request, pk)
    if not report.is_terminal:
        messages.info(request, "This report is still running.")
        return redirect("report_detail", pk=pk)
    before = report.state
    report = services.report_retry(report=report)
    if report.state == before:
        messages.info(request, "Nothing to retry: every part of this report finished.")
    else:
        messages.success(request, "Trying the failed parts again.")
    return redirect("report_detail", pk=pk)


@login_required
@require_GET
def bucket_raw_json(request: HtmxHttpRequest, pk: int, bucket_pk: int) -> HttpResponse:
    """The OSAI report file of one bucket, exactly as archived, as a download."""
    report = _visible_report(request, pk)
    buckets = (
        teams.team_report_buckets(report)
        if report.team_id
        else Bucket.objects.filter(report_buckets__report=report)
    )
    bucket = get_object_or_404(buckets, pk=bucket_pk)
    file = BucketFile.objects.filter(bucket=bucket).first()
    if file is None:
        raise Http404("OSAI's file for this part of the report was not archived.")
    name = f"osai-report-{bucket.osai_report_id or bucket.pk}.json"
    response = HttpResponse(bytes(file.content), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["X-Content-SHA256"] = file.sha256
    return response


# --- History ----------------------------------------------------------------------------------


def _history_queryset(user: Any) -> QuerySet[Report]:
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


@login_required
@require_GET
def report_history(request: HtmxHttpRequest) -> HttpResponse:
    paginator = Paginator(_history_queryset(request.user), HISTORY_PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    reports = list(page.object_list)
    return render(
        request,
        "reports/report_history.html",
        {
            "page": page,
            "reports": _with_periods(reports),
            "mode": _view_mode(request),
        },
    )
