"""What every view shares: the request type, htmx-aware login, 404 scoping helpers, and a
form saved through a service."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render, resolve_url
from django_htmx.http import HttpResponseClientRedirect
from django_htmx.middleware import HtmxDetails
from django_ratelimit.core import is_ratelimited

from reports.access import Capability, report_visible_to
from reports.models import Membership, Report
from reports.teams import TeamError, roster

Saved = TypeVar("Saved")


class AuthenticatedRequest(HttpRequest):
    """A request seen by django-htmx's middleware, in a view behind a login check."""

    htmx: HtmxDetails
    user: User


def htmx_login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`login_required` that answers htmx requests with HX-Redirect to the login page (S5).

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


def visible_report_or_404(
    request: AuthenticatedRequest,
    pk: int,
    capability: Capability = Capability.SEE_TEAM_REPORTS,
) -> Report:
    """The report if the user may see it: their own, or a team report of a team where their
    role may do `capability` (see it, by default). Anything else is a 404 (S2)."""
    report = report_visible_to(request.user, pk, capability)
    if report is None:
        raise Http404("No such report.")
    return report


def membership_or_404(
    request: AuthenticatedRequest, team_pk: int, capability: Capability = Capability.SEE_TEAM
) -> Membership:
    """The user's membership of the team if their role may do `capability`, else 404 (S2)."""
    membership = roster.membership_for(request.user, team_pk, capability)
    if membership is None:
        raise Http404("No such team.")
    return membership


# --- Query parameters: validated, or a 400 that says what is wrong -------------------------------

# The largest id a database column holds (a signed 64-bit integer): a larger one is not an id
# of anything, and SQLite cannot even compare with it (OverflowError, a 500).
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


class IdConverter:
    """`<id:pk>` in a URL: an object id, ASCII digits of at most MAX_ID. A larger number is not
    an id of anything, so the URL does not match (404) instead of reaching a query that SQLite
    cannot run (OverflowError, a 500), as Django's `<int:…>` would let it (I4)."""

    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is larger than any id")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


class BadParameter(Exception):
    """A query parameter that is not what the view takes; the message says what it takes."""


def id_parameter(request: HttpRequest, name: str) -> int | None:
    """`?name=<id>`: None if absent or empty, else ASCII digits (not "²", which str.isdigit()
    takes and int() refuses) of at most MAX_ID; anything else raises BadParameter."""
    raw = request.GET.get(name, "")
    if raw == "":
        return None
    if not _DIGITS.fullmatch(raw) or int(raw) > MAX_ID:
        raise BadParameter(f"?{name}= takes an id (a whole number), not {raw[:40]!r}.")
    return int(raw)


def bad_request(exc: BadParameter) -> HttpResponse:
    """The 400 answer to a bad parameter: its message, as plain text."""
    return HttpResponseBadRequest(str(exc), content_type="text/plain; charset=utf-8")


def client_ip(request: HttpRequest) -> str | None:
    """The client's address (S10). Behind the one trusted proxy the README documents
    (DJANGO_BEHIND_PROXY), it is the right-most X-Forwarded-For entry, the address the proxy
    itself saw: entries left of it came from the client and prove nothing. Otherwise it is
    the connection's own address."""
    if settings.BEHIND_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        nearest = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(nearest))
        except ValueError:
            pass  # a proxy that sent none: fall back on the connection
    address: str | None = request.META.get("REMOTE_ADDR")
    return address


def client_ip_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit's key: the client's address as above."""
    return client_ip(request) or "unknown"


def reset_email_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit's key for password resets: the email as Django's reset form matches
    it to an account (NFKC, case-folded), so five spellings of one address are one limit."""
    email = request.POST.get("email", "")
    return unicodedata.normalize("NFKC", email).strip().casefold()


def over_rate(request: HttpRequest, *, group: str, key: str, rate: str) -> bool:
    """Count this request against `rate` for one key of `group` (a token's or a webhook
    secret's hash); True once over it (django-ratelimit)."""
    return is_ratelimited(
        request, group=group, key=lambda group, req: key, rate=rate, increment=True
    )


def too_many_requests(request: HttpRequest, exception: Exception) -> HttpResponse:
    """What a throttled request gets (django-ratelimit's RATELIMIT_VIEW)."""
    return render(request, "too_many_requests.html", status=429)


def save_form(
    request: HttpRequest,
    form: forms.Form,
    save: Callable[[], Saved],
    *,
    success: Callable[[Saved], str],
    then: Callable[[Saved], HttpResponse],
    error_field: str | None = None,
) -> HttpResponse | None:
    """A bound form's service call, `save()`: once it is done, the page `then` sends to (a
    redirect, so a reload posts nothing again), with the `success` message for it. None if
    the form is not valid or the service refused (a TeamError: its reason goes on
    `error_field`, or on the form as a whole): the caller shows the form again, with what is
    wrong, and nothing has changed (A6, I1)."""
    if not form.is_valid():
        return None
    try:
        saved = save()
    except TeamError as exc:
        form.add_error(error_field, str(exc))
        return None
    messages.success(request, success(saved))
    return then(saved)
