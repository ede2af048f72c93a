"""The login page: allauth's view, with the single sign-on button when it is configured and the
password form unless OSAI_PASSWORD_LOGIN is off.

The button posts here, and the answer redirects to the issuer: a browser holds that redirect
to the page's CSP `form-action` (S7), so the login page, and only it, adds the issuer's origin
there."""

from __future__ import annotations

from typing import Any

from allauth.account.views import LoginView
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from osai_dashboard.signin import oidc


class SignInView(LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)
        context["password_login"] = settings.OSAI_PASSWORD_LOGIN
        if oidc.enabled():
            context["sso_name"] = settings.OSAI_OIDC_NAME
            context["sso_url"] = oidc.login_url()
        return context

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().dispatch(request, *args, **kwargs)
        origin = oidc.issuer_origin()
        if origin:
            response._csp_update = {"form-action": [origin]}  # type: ignore[attr-defined]
        return response


login = SignInView.as_view()
