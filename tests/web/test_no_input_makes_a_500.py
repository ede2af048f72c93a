"""No input makes a 500 (I4): generated edge values sent to every route of the URLconf (GET and
POST, path ids real and bogus), every form field, every documented query and API parameter and
the OSAI webhook receiver, as each role of the world, anonymous and a staff user.

Each request runs in a savepoint that is rolled back, so every example starts from the same
world. What must hold: no answer is a 5xx (an exception in a view counts as one), and a refused
request (a 4xx, or a form shown again with errors) changes the number of rows of no model of
the app (nor of users). Nothing reaches OSAI: a token check is refused before it signs in,
and what the pipeline would enqueue is recorded (`queue`).

The figures "I4 generated inputs" and "I4 5xx answers" are printed at the end of the run.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote

import pytest
from django.apps import apps
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.db import transaction
from django.forms import BaseForm
from django.test import Client
from django.test.utils import ContextList
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports.metrics import RATE_FIELDS
from reports.models import (
    Anomaly,
    ApiToken,
    Bucket,
    Budget,
    Connection,
    Invitation,
    PriceBook,
    PriceBookVersion,
    Report,
    SavedView,
    Team,
)
from reports.pipeline import connections
from reports.teams import invitations
from reports.views import account, forms
from tests.factories import PASSWORD, make_anomaly, make_user
from tests.support import figures
from tests.support.world import ROLES, World

# How many generated requests each test sends, and the seconds it may take at most (on a busy
# machine it sends fewer): the whole file takes about a minute on two cores.
EXAMPLES = {"pages": 700, "forms": 700, "api": 400, "webhook": 250}
SECONDS = {"pages": 28, "forms": 28, "api": 12, "webhook": 8}
CALLERS = (*ROLES, "anonymous", "staff")

# --- The values --------------------------------------------------------------------------------

BIG = [str(2**31), str(2**63 - 1), str(2**63), str(2**64), "9" * 40, "-" + str(2**63 + 1)]
EDGES: list[str] = [
    "",
    " ",
    "0",
    "-1",
    "1",
    "01",
    "+1",
    "1.5",
    "1e309",
    "-1e309",
    "NaN",
    "inf",
    "-0",
    "0x10",
    "1_000",
    "²",
    "٣",
    "\uff11\uff12",  # fullwidth digits
    "Ⅻ",
    "\x00",
    "a\x00b",
    "1\x00",
    "\r\n",
    "\t",
    "\x1b[31m",
    "\u202e",
    "\ufeff1",
    "x" * 10_000,
    "1" * 5_000,
    "[" * 3_000 + "]" * 3_000,
    '{"a":' * 500 + "1" + "}" * 500,
    "null",
    "true",
    "[]",
    "{}",
    "2026-02-30",
    "2026-13-01",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "-0001-01-01",
    "2026-1-1",
    "20260101",
    "2026-01-01T00:00:00",
    "=cmd|' /C calc'!A0",
    "<script>alert(1)</script>",
    "../../etc/passwd",
    "%00",
    "' OR 1=1 --",
    "😀",
    *BIG,
]
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)
SCALAR = st.one_of(
    st.sampled_from(EDGES),
    TEXT,
    st.integers().map(str),
    st.floats().map(str),
    st.dates().map(lambda d: d.isoformat()),
)


def values(real: list[str]) -> st.SearchStrategy[Any]:
    """A value, a real one (an id, a choice) or a list of values where one is expected."""
    one = st.one_of(SCALAR, st.sampled_from(real)) if real else SCALAR
    return st.one_of(one, one, one, st.lists(one, min_size=2, max_size=3))


# --- The targets -------------------------------------------------------------------------------


def _fields(*form_classes: type) -> list[str]:
    return [name for form in form_classes for name in form.base_fields]


# The form (or fields) behind each route's POST (reports/views/forms.py and the views).
FORM_FIELDS: dict[str, list[str]] = {
    "report_new": _fields(forms.ReportForm),
    "team_report_new": _fields(forms.TeamReportForm),
    "saved_view_create": _fields(forms.ReportForm, forms.SavedViewForm),
    "team_saved_view_create": _fields(forms.TeamReportForm, forms.SavedViewForm),
    "connection_create": _fields(forms.ConnectionCreateForm),
    "connection_edit": _fields(forms.ConnectionEditForm),
    "connection_token": _fields(forms.ConnectionTokenForm),
    "team_list": _fields(forms.TeamCreateForm),
    "team_sharing": _fields(forms.SharingForm),
    "team_member_add": _fields(forms.MemberAddForm),
    "invitation": ["username", "password1", "password2"],
    "team_member_role": _fields(forms.MemberRoleForm),
    "team_price_book": _fields(forms.TeamPriceBookForm),
    "team_digest": ["team_digest"],
    "team_two_factor": ["require_two_factor"],
    "price_book_copy": _fields(forms.PriceBookCopyForm),
    "price_book_version_add": [*_fields(forms.PriceBookVersionForm), *RATE_FIELDS],
    "price_book_settings": _fields(forms.PriceBookSettingsForm),
    "budget_list": _fields(forms.BudgetForm),
    "budget_detail": _fields(forms.BudgetForm),
    "digest_settings": ["weekly", "monthly", "anomalies"],
    "api_token_list": _fields(account.ApiTokenForm),
    "login": ["login", "password", "next"],
    "account_login": ["login", "password", "next"],
    "account_change_password": ["oldpassword", "password1", "password2"],
    "account_set_password": ["password1", "password2"],
    "account_reset_password": ["email"],
    "account_reauthenticate": ["password"],
    "mfa_authenticate": ["code"],
    "mfa_activate_totp": ["code"],
}
# The query parameters the pages, partials and CSVs read, and a report form's link's.
LINK_PARAMS = ["preset", "date_from", "date_to", "granularity", "categories", "connections"]
QUERY_PARAMS = [
    "period",
    "by",
    "view",
    "page",
    "seen",
    "connection",
    "after",
    "team",
    "from",
    "to",
    "cost",
    "format",
    "next",
    "q",
    "o",
    "p",
    *LINK_PARAMS,
]
ALL_NAMES = sorted({*QUERY_PARAMS, *(n for names in FORM_FIELDS.values() for n in names)})


@dataclass
class Route:
    name: str  # "admin:…" for the admin's
    kwargs: list[str]  # the path's parameters
    params: list[str] = field(default_factory=list)


def _routes() -> list[Route]:
    found: list[Route] = []

    def walk(patterns: list[Any], namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "api":
                    continue  # the API has its own test below
                walk(pattern.url_patterns, pattern.namespace or namespace)
            elif isinstance(pattern, URLPattern) and pattern.name:
                name = f"{namespace}:{pattern.name}" if namespace else pattern.name
                found.append(Route(name, list(pattern.pattern.regex.groupindex)))

    walk(get_resolver().url_patterns, "")
    for route in found:
        route.params = FORM_FIELDS.get(route.name, []) + QUERY_PARAMS
    return found


ROUTES = _routes()


def _ids(world: World, staff: Any, invitation_token: str) -> dict[str, list[str]]:
    """Real ids of what each path parameter names, by route and parameter."""

    def pks(model: Any) -> list[str]:
        return [str(pk) for pk in model.objects.values_list("pk", flat=True)[:12]]

    secrets_ = [c.webhook_secret for c in Connection.objects.all()]
    return {
        "report": pks(Report),
        "bucket": pks(Bucket),
        "budget": pks(Budget),
        "token": pks(ApiToken),
        "connection": pks(Connection),
        "view": pks(SavedView),
        "team": pks(Team),
        "user": pks(User),
        "book": pks(PriceBook),
        "version": pks(PriceBookVersion),
        "anomaly": pks(Anomaly),
        "secret": secrets_,
        "invitation": pks(Invitation),
        # Raw invitation tokens are never stored: the one the world's invitation was sent with.
        "invitation_token": [invitation_token],
        "admin": [str(staff.pk), *pks(Report), *pks(Connection)],
        "app_label": ["reports", "auth"],
    }


def _kind(route: str, kwarg: str) -> str:
    if kwarg == "app_label":
        return "app_label"
    if route.startswith("admin:"):
        return "admin"
    if kwarg != "pk":
        return {
            "bucket_pk": "bucket",
            "user_pk": "user",
            "book_pk": "book",
            "version_pk": "version",
            "report_pk": "report",
            "secret": "secret",
            "invitation_pk": "invitation",
            "token": "invitation_token" if route == "invitation" else "admin",
        }.get(kwarg, "admin")
    for prefix, kind in (
        ("budget", "budget"),
        ("anomaly", "anomaly"),
        ("api_token", "token"),
        ("invitation", "invitation"),
        ("connection", "connection"),
        ("saved_view", "view"),
        ("report", "report"),
        ("bucket", "report"),
    ):
        if route.startswith(prefix):
            return kind
    return "team"


BOGUS_INT_IDS = ["0", "999999", str(2**63 - 1), str(2**63), str(2**64), "9" * 40]
BOGUS_TEXT_IDS = ["x", "-", "A" * 128, "²", "0", "reports", "auth", str(2**63), "9" * 40]


# --- The check ---------------------------------------------------------------------------------

MODELS = [*apps.get_app_config("reports").get_models(), User]


def _counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


@dataclass
class Tally:
    tried: int = 0
    errors: list[str] = field(default_factory=list)  # 5xx, with the request and the cause
    changed: list[str] = field(default_factory=list)  # refused, yet rows changed
    refused: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


def _refused(response: Any, method: str) -> bool:
    """A 4xx, a POST answered with its form again, showing errors, or one that redirects with
    an error message."""
    if response.status_code >= 400:
        return True
    if method == "POST" and any(
        message.level >= messages.WARNING for message in get_messages(response.wsgi_request)
    ):
        return True
    if method != "POST" or response.status_code != 200 or response.context is None:
        return False
    contexts = response.context if isinstance(response.context, ContextList) else [response.context]
    return any(
        isinstance(value, BaseForm) and value.is_bound and bool(value.errors)
        for context in contexts
        for value in context.flatten().values()
    )


def _send(tally: Tally, client: Client, method: str, path: str, **kwargs: Any) -> Any:
    """One request in a savepoint rolled back afterwards; a 5xx, or rows changed by a refused
    request, is recorded with what was sent."""
    cache.clear()  # rate limits count per example, not across them
    client.cookies.pop("messages", None)  # only this request's messages say it was refused
    tally.tried += 1
    with transaction.atomic():
        before = _counts()
        send = client.post if method == "POST" else client.get
        response = send(path, **kwargs)
        if response.streaming and response.status_code < 500:
            try:  # a CSV fails while it streams: after its 200, a broken download
                response.content_read = b"".join(response.streaming_content)
            except Exception as exc:
                response.status_code = 500
                response.exc_info = (type(exc), exc, exc.__traceback__)
        after = _counts()
        transaction.set_rollback(True)
    tally.statuses[response.status_code] += 1
    sent = f"{method} {path[:200]!r} {str(kwargs.get('data'))[:300]}"
    if response.status_code >= 500:
        exc = getattr(response, "exc_info", None)
        cause = repr(exc[1])[:300] if exc else response.content[:200]
        tally.errors.append(f"{response.status_code} {sent}: {cause}")
    elif _refused(response, method):
        tally.refused += 1
        if before != after:
            diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            tally.changed.append(f"{response.status_code} {sent}: {diff}")
    return response


@pytest.fixture
def fuzz(world: World, queue: list[Any], own_cache: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Clients signed in as every caller, the ids to put in paths, and a tally."""

    def no_osai(connection: Any, access_token: str) -> None:
        raise connections.ConnectionCheckError("(test) OSAI is not asked.")

    monkeypatch.setattr(connections, "_verify_and_store_token", no_osai)
    staff = make_user("staffer", is_staff=True, is_superuser=True)
    budget_owner = world.owner
    Budget.objects.create(owner=budget_owner, scope="person", amount=100, thresholds=[50, 100])
    Budget.objects.create(owner=world.team_admin, scope="team", team=world.team, amount=50)
    make_anomaly(world.connection, date(2026, 3, 1))  # for the Anomalies page and its answers
    clients: dict[str, Client] = {}
    for caller in CALLERS:
        client = Client(raise_request_exception=False)
        user = staff if caller == "staff" else world.user(caller)
        if user is not None:
            client.force_login(user)
        clients[caller] = client
    sent = invitations.invitation_send(
        team=world.team, actor=None, email="fuzz@example.com", role="member"
    )
    return clients, _ids(world, staff, sent.token), Tally(), _bases(world)


def _report(name: str, tally: Tally, started: float) -> None:
    seconds = time.monotonic() - started
    figures.figure("I4 generated inputs", tally.tried)
    figures.figure("I4 5xx answers", len(tally.errors))
    figures.figure("I4 refused requests that changed rows", len(tally.changed))
    print(
        f"\nI4 {name}: {tally.tried} inputs ({tally.refused} refused), "
        f"{len(tally.errors)} 5xx in {seconds:.1f} s; by status {sorted(tally.statuses.items())}"
    )
    problems = tally.errors + tally.changed
    assert not problems, "\n".join(problems[:20])


FUZZ = settings(
    deadline=None,
    database=None,  # no .hypothesis/ directory in the tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _path(route: Route, ids: dict[str, list[str]], draw: Callable[..., Any]) -> str:
    kwargs: dict[str, str] = {}
    for kwarg in route.kwargs:
        real = ids[_kind(route.name, kwarg)]
        text = kwarg in ("secret", "uidb64", "token") or route.name.startswith("admin:")
        bogus = BOGUS_TEXT_IDS if text else BOGUS_INT_IDS
        kwargs[kwarg] = draw(st.sampled_from((real or bogus) + bogus))
    try:
        return reverse(route.name, kwargs=kwargs)
    except Exception:  # a bogus value its pattern does not take: the route with a real one
        real = {k: (ids[_kind(route.name, k)] or ["1"])[0] for k in kwargs}
        return reverse(route.name, kwargs=real)


def _bases(world: World) -> dict[str, dict[str, Any]]:
    """What each route takes when it is right: a generated value then replaces some of it, so
    the checks behind the first ones are reached too."""
    today = date.today().isoformat()
    flags = {"include_datasets": "on", "include_models": "on"}
    report = {"preset": "last_month", "granularity": "month", **flags}
    own: dict[str, Any] = {"connections": [str(world.connection.pk)]}
    book = PriceBook.objects.filter(team__isnull=True).values_list("pk", flat=True).first()
    return {
        "report_new": {**report, **own},
        "saved_view_create": {**report, **own, "view_name": "v"},
        "team_report_new": report,
        "team_saved_view_create": {**report, "view_name": "v"},
        "team_sharing": {"connections": [str(world.connection.pk)]},
        "connection_edit": {"label": "Main", "shared_with_teams": [str(world.team.pk)]},
        "connection_create": {"label": "New", "region": "eu", "access_token": "t" * 20},
        "connection_token": {"access_token": "t" * 20},
        "budget_list": {"scope": "person", "amount": "10", "thresholds": "50, 80, 100"},
        "budget_detail": {"scope": "person", "amount": "10", "thresholds": "50, 80, 100"},
        "price_book_version_add": {"effective": today, **dict.fromkeys(RATE_FIELDS, "1")},
        "price_book_settings": {"name": "Book", "currency": "EUR"},
        "price_book_copy": {"source": str(book), "name": "Copy"},
        "team_member_add": {"who": "someone@example.com", "role": "member"},
        "team_member_role": {"role": "viewer"},
        "team_price_book": {"price_book": str(book)},
        "team_list": {"name": "Team"},
        "anomaly_feedback": {"feedback": "expected"},
        "api_token_list": {"name": "cron"},
        "login": {"login": world.owner.username, "password": PASSWORD},
        "spend_export_csv": {"from": "2026-01-01", "to": "2026-02-01", "team": str(world.team.pk)},
        "team_detail": {"period": "last_quarter", "by": "connection"},
        "activity_export_csv": {"connection": str(world.connection.pk)},
    }


def _data(
    route: Route, draw: Callable[..., Any], ids: dict[str, list[str]], bases: dict[str, Any]
) -> dict[str, Any]:
    """Generated values for some names (the route's own mostly), over what the route takes
    when it is right or over nothing."""
    names = draw(
        st.lists(
            st.one_of(st.sampled_from(route.params), st.sampled_from(ALL_NAMES), TEXT),
            max_size=5,
            unique=True,
        )
    )
    real = ids["connection"] + ids["team"] + ids["user"] + ["on", "month", "cost", "eu"]
    base = draw(st.sampled_from([{}, bases.get(route.name, {})]))
    return {**base, **{name: draw(values(real)) for name in names}}


# --- The tests ---------------------------------------------------------------------------------


def _every_route(
    fuzz: Any,
    kind: str,
    method: str,
    draw_request: Callable[[Route, st.DataObject, dict[str, list[str]], Any], dict[str, Any]],
) -> None:
    """Sends EXAMPLES[kind] generated requests, each to a drawn route as a drawn caller; what
    else a request carries (its query or form, headers) is `draw_request`'s."""
    clients, ids, tally, bases = fuzz
    started = time.monotonic()

    @settings(FUZZ, max_examples=EXAMPLES[kind])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        route = data.draw(st.sampled_from(ROUTES))
        caller = data.draw(st.sampled_from(CALLERS))
        path = _path(route, ids, data.draw)
        request = draw_request(route, data, ids, bases)
        if time.monotonic() - started > SECONDS[kind]:
            return  # over its time (drawn as before, so hypothesis sees the same draws)
        _send(tally, clients[caller], method, path, **request)

    run()
    _report(kind, tally, started)


@pytest.mark.django_db
def test_i4_no_page_partial_or_csv_answers_5xx_to_a_generated_query(fuzz: Any) -> None:
    """Every route of the URLconf, GET, with generated query parameters and path ids."""

    def query_and_headers(
        route: Route, data: st.DataObject, ids: dict[str, list[str]], bases: Any
    ) -> dict[str, Any]:
        headers = data.draw(st.sampled_from([{}, {"HTTP_HX_REQUEST": "true"}]))
        return {"data": _data(route, data.draw, ids, bases), **headers}

    _every_route(fuzz, "pages", "GET", query_and_headers)


@pytest.mark.django_db
def test_i4_no_form_answers_5xx_or_changes_rows_when_it_refuses_a_generated_post(
    fuzz: Any,
) -> None:
    """Every route of the URLconf, POST, with generated values for its form's fields (and any
    other name); a refusal changes no rows."""

    def form(
        route: Route, data: st.DataObject, ids: dict[str, list[str]], bases: Any
    ) -> dict[str, Any]:
        return {"data": _data(route, data.draw, ids, bases)}

    _every_route(fuzz, "forms", "POST", form)


API_ENDPOINTS = [
    ("connections", []),
    ("reports", ["limit", "offset"]),
    ("reports/{id}", ["format"]),
    ("spend", ["team", "format"]),
    ("activity", ["connection", "after", "limit"]),
    ("anomalies", ["team", "kind", "from", "to"]),
    ("openapi.json", []),
]


@pytest.mark.django_db
def test_i4_no_api_answer_is_5xx_for_a_generated_parameter(fuzz: Any, world: World) -> None:
    """The API's documented parameters (reports/views/api.py), with each role's token, none, a
    bogus one and a malformed header."""
    _, ids, tally, _ = fuzz
    started = time.monotonic()
    client = Client(raise_request_exception=False)
    auth = st.one_of(
        st.sampled_from([f"Bearer {token}" for token in world.tokens.values()]),
        st.sampled_from(["", "Bearer ", "Bearer x", "Basic abc", "Bearer \x00", "bearer ²"]),
    )

    @settings(FUZZ, max_examples=EXAMPLES["api"])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        endpoint, params = data.draw(st.sampled_from(API_ENDPOINTS))
        report_id = data.draw(st.one_of(st.sampled_from(ids["report"]), SCALAR))
        path = "/api/v1/" + endpoint.replace("{id}", quote(report_id[:300], safe="") or "x")
        names = data.draw(
            st.lists(st.one_of(st.sampled_from(params or ["x"]), TEXT), max_size=4, unique=True)
        )
        query = {
            name: data.draw(values(ids["connection"] + ids["team"] + ["csv", "json"]))
            for name in names
        }
        header = data.draw(auth)
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        if data.draw(st.booleans()):
            extra["HTTP_ACCEPT"] = data.draw(st.sampled_from(["text/csv", "*/*", "\x00", "²"]))
        if time.monotonic() - started > SECONDS["api"]:
            return  # over its time (drawn as before, so hypothesis sees the same draws)
        _send(tally, client, "GET", path, data=query, **extra)

    run()
    _report("api", tally, started)


DEEP = "[" * 100_000 + "]" * 100_000
WEBHOOK_BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b"\x00",
            b"\xff\xfe",
            DEEP.encode(),
            ('{"a":' * 5000 + "1" + "}" * 5000).encode(),
            b'{"success": NaN}',
            b'{"workerMemoryGB": 1e999}',
            b'{"workerMemoryGB": "\\u00b2"}',
            b'{"taskType": "\\u0000"}',
            b'{"taskType": "\\ud800"}',
            b"x" * 70_000,
        ]
    ),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            key: values([])
            for key in (
                "taskType",
                "success",
                "workerMemoryGB",
                "taskId",
                "finishedAt",
                "message",
                "link",
                "id",
            )
        },
    ).map(lambda v: json.dumps(v).encode()),
)


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.django_db
def test_i4_the_webhook_receiver_answers_no_5xx_to_a_generated_body(
    fuzz: Any, world: World
) -> None:
    """OSAI's webhook receiver (/hooks/osai/<secret>): real and bogus secrets, any method, any
    body and content type."""
    _, ids, tally, _ = fuzz
    started = time.monotonic()
    client = Client(raise_request_exception=False)

    @settings(FUZZ, max_examples=EXAMPLES["webhook"])
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        secret = data.draw(st.sampled_from([*ids["secret"], *BOGUS_TEXT_IDS[:4]]))
        path = f"/hooks/osai/{quote(secret)}" + data.draw(st.sampled_from(["", "/", "/?x=²"]))
        body = data.draw(WEBHOOK_BODIES)
        content_type = data.draw(
            st.sampled_from(
                ["application/json", "application/json; charset=latin-1", "text/plain", "", "²"]
            )
        )
        method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET"]))
        if "latin-1" in content_type and not _utf8(body):
            content_type = "application/json"  # the test client would fail to re-encode it
        if time.monotonic() - started > SECONDS["webhook"]:
            return  # over its time (drawn as before, so hypothesis sees the same draws)
        if method == "GET":
            _send(tally, client, "GET", path)
        else:
            _send(tally, client, "POST", path, data=body, content_type=content_type)

    run()
    _report("webhook", tally, started)


# --- Regressions: what the generated inputs found -----------------------------------------------

# The app's routes with ids in their path (the sign-in URLs take none: a provider's name).
_APP_ROUTE_NAMES = {
    getattr(p, "name", None) for p in get_resolver().url_patterns[-1].url_patterns
} - {None}
ID_ROUTES = [route for route in ROUTES if route.name in _APP_ROUTE_NAMES and route.kwargs]
TOO_BIG = [str(2**63), "9" * 40]


@pytest.mark.django_db
def test_i4_a_path_id_no_database_column_holds_is_a_404(world: World) -> None:
    """`/teams/9223372036854775808/price-book/` reached a query that SQLite cannot run
    (OverflowError, a 500): every id in a path is `<id:…>` (reports/views/http.py), so a number
    larger than any id is a 404 for every route, in every position, GET and POST."""
    client = Client(raise_request_exception=False)
    client.force_login(world.team_admin)
    real = {"secret": world.connection.webhook_secret}
    wrong = []
    for route in ID_ROUTES:
        for position in route.kwargs:
            for big in TOO_BIG:
                path = "/" + route_path(route, {**real, position: big})
                for method, send in (("GET", client.get), ("POST", client.post)):
                    if (status := send(path).status_code) != 404:
                        wrong.append(f"{method} {path}: {status}")
    assert not wrong, wrong


def route_path(route: Route, values: dict[str, str]) -> str:
    """The route's path with `values` in its parameters (1 where none is given), built from
    its pattern so that values the pattern refuses can be sent too."""
    patterns = get_resolver().url_patterns[-1].url_patterns
    pattern = next(p for p in patterns if getattr(p, "name", None) == route.name)
    text = str(pattern.pattern)
    for kwarg in route.kwargs:
        text = re.sub(rf"<\w+:{kwarg}>", values.get(kwarg, "1"), text)
    return text


@pytest.mark.django_db
def test_i4_a_chosen_id_no_database_column_holds_is_not_one_of_the_choices(world: World) -> None:
    """`POST /teams/<id>/sharing/` with `connections=9223372036854775808` ran an `id__in` query
    SQLite cannot run (OverflowError, a 500; Django guards `pk=` from it, not `pk__in=`).
    Every form that takes several ids (forms.IdsChoiceField) now answers a form error and
    changes nothing, personal report, team sharing and a connection's teams alike."""
    member = Client(raise_request_exception=False)
    member.force_login(world.owner)
    connection = world.connection.pk
    report = {"preset": "last_month", "granularity": "month", "include_datasets": "on"}
    posts = [
        (reverse("team_sharing", args=[world.team.pk]), "connections", {}),
        (reverse("report_new"), "connections", report),
        (reverse("saved_view_create"), "connections", {**report, "view_name": "big"}),
        (reverse("connection_edit", args=[connection]), "shared_with_teams", {"label": "Main"}),
    ]
    for big in (str(2**63), str(-(2**63) - 1), "9_223_372_036_854_775_808", "9" * 40):
        for path, name, data in posts:
            before = _counts()
            response = member.post(path, {**data, name: [str(connection), big]})
            assert response.status_code in (200, 302), (path, big, response.status_code)
            assert _refused(response, "POST"), (path, big)
            assert _counts() == before
    shared = list(world.connection.shared_with_teams.values_list("pk", flat=True))
    assert shared == [world.team.pk]
