"""The login page: allauth's view, with the single sign-on button when it is configured and the
password form unless OSAI_PASSWORD_LOGIN is off."""

from __future__ import annotations

from typing import Any

from allauth.account.views import LoginView
from django.conf import settings

from osai_dashboard.signin import oidc


class SignInView(LoginView):
    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)
        context["password_login"] = settings.OSAI_PASSWORD_LOGIN
        if oidc.enabled():
            context["sso_name"] = settings.OSAI_OIDC_NAME
            context["sso_url"] = oidc.login_url()
        return context


login = SignInView.as_view()
