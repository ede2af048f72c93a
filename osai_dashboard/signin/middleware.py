"""A team that requires two-factor sign-in (Team.require_two_factor, S15): its members who
signed in with a password and have no authenticator app are sent to set one up, from every
page but that one (and the password prompt it may ask first), signing out and static files.
Whoever signed in by single sign-on is exempt (their sign-in service decides how they prove
who they are).

htmx partials are left alone: the page that polls them was reached through this check, and the
status badge's poll stays at its two queries (S6).
"""

from __future__ import annotations

from collections.abc import Callable

from allauth.account.internal.flows.login import AUTHENTICATION_METHODS_SESSION_KEY
from allauth.mfa.models import Authenticator
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from reports.models import Membership

SETUP = "mfa_activate_totp"


def signed_in_by_sso(request: HttpRequest) -> bool:
    records = request.session.get(AUTHENTICATION_METHODS_SESSION_KEY) or []
    return any(isinstance(r, dict) and r.get("method") == "socialaccount" for r in records)


def must_set_up_two_factor(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or signed_in_by_sso(request):
        return False
    if not Membership.objects.filter(user=user, team__require_two_factor=True).exists():
        return False
    return not Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()


def _exempt(request: HttpRequest) -> bool:
    path = request.path
    return (
        path in (reverse(SETUP), reverse("account_reauthenticate"), reverse("logout"))
        or path.startswith("/" + settings.STATIC_URL.lstrip("/"))
        or request.headers.get("HX-Request") == "true"
    )


def two_factor_required(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        if not _exempt(request) and must_set_up_two_factor(request):
            return redirect(reverse(SETUP) + "?required=1")
        return get_response(request)

    return middleware
