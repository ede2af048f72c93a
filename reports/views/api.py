"""The read-only JSON API for scripts, `/api/v1/` (django-ninja; W2).

`Authorization: Bearer <token>` with a personal API token (reports/integrations/api_tokens.py);
no session cookies, so no CSRF to check and no page to be tricked into reading. Each answer is
what the token's owner sees in the pages (the same selectors; 404 for anything else); only GET
is routed, so any other method is a 405. Requests are rate-limited per token, and failed
sign-ins per client address (django-ratelimit, 429 with JSON). Answers carry no OSAI access
token, JWT or signed link: reports give totals, never OSAI's raw answer; connections only the
token's last four characters, as the pages do.

OpenAPI schema: `/api/v1/openapi.json`. No docs page: the bundled Swagger UI needs inline
script, which the CSP forbids."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django_ratelimit.core import get_usage
from ninja import Field, NinjaAPI, Path, Query, Schema
from ninja.errors import AuthenticationError, ValidationError
from ninja.security import HttpBearer

from reports.access import (
    Capability,
    recent_reports_visible_to,
    report_visible_to,
    reports_visible_to,
    teams_where,
)
from reports.formatting import utc_z
from reports.integrations import api_tokens
from reports.models import ApiToken, Connection, Team
from reports.pages import anomalies as anomaly_pages
from reports.pages import downloads
from reports.pages.activity import feed_items
from reports.pages.overview import overview_page, spend_summary, team_overview
from reports.pages.report import report_json
from reports.spend import exports
from reports.views.http import MAX_ID, client_ip_key, over_rate

MAX_PAGE = 100
# Deeper than this, a page of reports costs more than it is worth (each page reads
# offset + limit rows); a larger offset is a 400 that says so, not a 500.
MAX_OFFSET = 10_000
# An id: a positive whole number a database column can hold (SQLite fails on a larger one).
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


class ApiRateLimited(Exception):
    """Too many requests from one token, or too many failed sign-ins from one address."""


class BearerToken(HttpBearer):
    """A personal API token in `Authorization: Bearer …`."""

    def __call__(self, request: HttpRequest) -> ApiToken | None:
        # ninja's own __call__ logs an unexpected header whole in DEBUG; this one logs nothing.
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiToken | None:
        failures = {
            "group": "api-auth-failures",
            "key": client_ip_key,
            "rate": settings.API_FAILED_AUTH_RATE,
        }
        # Looked at before the token is, so a guesser over the limit learns nothing more.
        usage = get_usage(request, **failures)
        if usage is not None and usage["count"] >= usage["limit"]:
            raise ApiRateLimited
        row = api_tokens.api_token_authenticate(token)
        if row is None:
            get_usage(request, increment=True, **failures)
            return None
        if over_rate(request, group="api", key=row.token_sha256, rate=settings.API_RATE):
            raise ApiRateLimited
        request.user = row.user
        return row


api = NinjaAPI(
    title="OSAI Usage API",
    version="1",
    description=(
        "Read-only: your connections, reports (totals in OSAI's units, and cost), this month's "
        "spend as the overview shows it, and OSAI webhook activity. Send "
        "`Authorization: Bearer <token>` with a token from the API tokens page."
    ),
    auth=BearerToken(),
    docs_url=None,
    urls_namespace="api",
)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    """No token, or one that is unknown, revoked or its owner's account disabled: 401."""
    response = api.create_response(request, {"detail": "Unauthorized"}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


@api.exception_handler(ValidationError)
def _bad_parameter(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """A parameter out of its range or of the wrong type: 400, saying which and why."""
    problems = []
    for error in exc.errors:
        where = ".".join(str(part) for part in error.get("loc", ())[1:]) or "request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return api.create_response(request, {"detail": "; ".join(problems)}, status=400)


@api.exception_handler(ApiRateLimited)
def _rate_limited(request: HttpRequest, exc: ApiRateLimited) -> HttpResponse:
    response = api.create_response(request, {"detail": "Too many requests."}, status=429)
    response["Retry-After"] = "60"
    return response


def _user(request: HttpRequest) -> Any:
    auth: ApiToken = request.auth  # type: ignore[attr-defined]
    return auth.user


def _iso(moment: datetime | None) -> str | None:
    return utc_z(moment) or None


# --- Schemas (what the OpenAPI document describes) -------------------------------------------


class ConnectionOut(Schema):
    id: int
    label: str
    region: str
    account_name: str
    token_hint: str
    status: str
    shared_with_teams: list[str]
    created_at: str


class ReportSummary(Schema):
    id: int
    team: str | None
    state: str
    preset: str
    granularity: str
    period_from: str
    period_to: str
    buckets_total: int
    buckets_done: int
    buckets_failed: int
    requested_at: str
    finished_at: str | None


class ReportList(Schema):
    count: int
    items: list[ReportSummary]


class ActivityItem(Schema):
    id: int
    connection: str
    kind: str
    kind_raw: str
    outcome: str
    worker_gb: int | None
    received_at: str
    finished_at: str | None
    task_id: str
    message: str


class Page(Schema):
    limit: int = 50
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class Format(Schema):
    """`?format=csv` answers CSV, as `Accept: text/csv` does; `?format=json` JSON whatever
    the Accept header says."""

    format: Literal["json", "csv"] | None = None


class ActivityFilter(Schema):
    connection: Id | None = None
    after: int = Field(0, ge=0, le=MAX_ID)
    limit: int = 50


class AnomalyFilter(Schema):
    team: Id | None = None
    kind: Literal["spike", "idle_storage"] | None = None
    since: date | None = Field(None, alias="from")
    until: date | None = Field(None, alias="to")


class AnomalyOut(Schema):
    id: int
    connection: str
    connection_id: int
    kind: str
    metric: str
    label: str
    day: str
    actual: float
    expected_low: float
    expected_high: float
    currency: str
    feedback: str
    alerting: bool
    cause: str
    created_at: str


# --- Endpoints ---------------------------------------------------------------------------------


@api.get("/connections", response=list[ConnectionOut], summary="Your OSAI connections")
def connections(request: HttpRequest) -> list[dict[str, Any]]:
    own = Connection.objects.filter(owner=_user(request)).prefetch_related("shared_with_teams")
    return [
        {
            "id": c.pk,
            "label": c.label,
            "region": c.region,
            "account_name": c.account_name,
            "token_hint": c.token_hint,
            "status": c.status,
            "shared_with_teams": sorted(t.name for t in c.shared_with_teams.all()),
            "created_at": _iso(c.created_at),
        }
        for c in own
    ]


@api.get("/reports", response=ReportList, summary="Your reports and your teams' reports")
def reports(request: HttpRequest, page: Query[Page]) -> dict[str, Any]:
    """Newest first: your own reports and the team reports of your teams where you see them
    (as an admin or a viewer)."""
    user = _user(request)
    limit = min(max(page.limit, 1), MAX_PAGE)
    offset = page.offset
    items = recent_reports_visible_to(user, offset + limit)[offset:]
    team_names = dict(
        Team.objects.filter(pk__in={r.team_id for r in items if r.team_id}).values_list(
            "pk", "name"
        )
    )
    return {
        "count": reports_visible_to(user).count(),
        "items": [
            {
                "id": r.pk,
                "team": team_names.get(r.team_id) if r.team_id else None,
                "state": r.state,
                "preset": r.preset,
                "granularity": r.granularity,
                "period_from": _iso(r.period_start),
                "period_to": _iso(r.period_end),
                "buckets_total": r.buckets_total,
                "buckets_done": r.buckets_done,
                "buckets_failed": r.buckets_failed,
                "requested_at": _iso(r.requested_at),
                "finished_at": _iso(r.finished_at),
            }
            for r in items
        ],
    }


def _wants_csv(request: HttpRequest, output: Format) -> bool:
    """`?format=csv`, or `Accept: text/csv` (and no `?format=json`)."""
    if output.format is not None:
        return output.format == "csv"
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def _csv(file: downloads.CsvFile) -> StreamingHttpResponse:
    return exports.csv_response(file.rows, file.filename)


@api.get("/reports/{report_id}", summary="One report: buckets and totals, with cost")
def report(request: HttpRequest, report_id: Path[Id], output: Query[Format]) -> Any:
    """Totals, the report's rows (`periods`: its period split by its granularity) and the
    buckets they come from (held days and months marked `held`; `sources` says how many of
    each) under OSAI's own field names in OSAI's units (seconds, KB-minutes, images), and
    their cost in the report's price book (money as decimal strings). Categories the report
    did not ask for are 0. As CSV (`?format=csv` or `Accept: text/csv`): the report page's
    CSV, a row per bucket with its provenance."""
    wants_csv = _wants_csv(request, output)
    # A team report's CSV: for the team's roles that may download it, as on the page.
    capability = Capability.DOWNLOAD_CSV if wants_csv else Capability.SEE_TEAM_REPORTS
    found = report_visible_to(_user(request), report_id, capability)
    if found is None:
        raise Http404("No such report.")
    if wants_csv:
        return _csv(downloads.report_csv(found, with_cost=True))
    return report_json(found, with_cost=True)


@api.get("/spend", summary="This month's spend, as the overview shows it")
def spend(request: HttpRequest, output: Query[Format], team: Query[Id | None] = None) -> Any:
    """Month to date, the same days of last month, the forecast and budgets; `?team=<id>` for
    a team whose spend you see (its admins and viewers). As CSV (`?format=csv` or
    `Accept: text/csv`): the month's held day buckets, a row per connection and day (with the
    member, for a team), whose `cost_total` adds up to `month_to_date_cost`."""
    user = _user(request)
    wants_csv = _wants_csv(request, output)
    if team is None:
        if wants_csv:
            return _csv(downloads.overview_csv(user))
        return spend_summary(overview_page(user))
    teams = teams_where(user, Capability.SEE_TEAM_SPEND)
    if wants_csv:  # the team's CSVs: for the roles that may download them, as on the pages
        teams = teams.filter(pk__in=teams_where(user, Capability.DOWNLOAD_CSV))
    found = teams.filter(pk=team).first()
    if found is None:
        raise Http404("No such team.")
    if wants_csv:
        return _csv(downloads.team_month_csv(found))
    return {"team": found.name, **spend_summary(team_overview(found))}


@api.get("/activity", response=list[ActivityItem], summary="OSAI webhook deliveries")
def activity(request: HttpRequest, filters: Query[ActivityFilter]) -> list[dict[str, Any]]:
    """Newest first, for your own connections (`?connection=<id>`); `?after=<id>` returns only
    newer deliveries, for polling."""
    user = _user(request)
    if (
        filters.connection is not None
        and not Connection.objects.filter(pk=filters.connection, owner=user).exists()
    ):
        raise Http404("No such connection.")
    items = feed_items(
        user,
        connection_id=filters.connection,
        after=max(filters.after, 0),
        limit=min(max(filters.limit, 1), MAX_PAGE),
    )
    return [
        {
            "id": item.pk,
            "connection": item.connection,
            "kind": item.kind,
            "kind_raw": item.kind_raw,
            "outcome": item.outcome,
            "worker_gb": item.worker_gb,
            "received_at": _iso(item.received_at),
            "finished_at": _iso(item.finished_at),
            "task_id": item.task_id,
            "message": item.message,
        }
        for item in items
    ]


@api.get("/anomalies", response=list[AnomalyOut], summary="Anomalies: usage spikes, idle storage")
def anomaly_list(request: HttpRequest, filters: Query[AnomalyFilter]) -> list[dict[str, Any]]:
    """Newest day first, as the Anomalies page lists them: your own connections' (priced in
    the default book), or `?team=<id>` a team's counting connections' (in its book) for its
    admins and viewers. `?kind=spike|idle_storage`, `?from=` and `?to=` (ISO dates, both
    inclusive) narrow them."""
    scope = anomaly_pages.scope_of(_user(request), filters.team)
    if scope is None:
        raise Http404("No such team.")
    chosen = anomaly_pages.AnomalyFilter(
        kind=filters.kind, since=filters.since, until=filters.until
    )
    return anomaly_pages.rows(scope, chosen)
