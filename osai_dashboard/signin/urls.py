"""allauth's views as this site offers them, under /accounts/.

`login` and `logout` name allauth's login and logout too (LOGIN_URL, templates, tests).
Password reset exists only where mail is configured (S12), throttled per client address and
per email as an account is matched to it (any case, any Unicode compatibility form); sign-up
is closed (adapters.AccountAdapter); single sign-on answers only when configured (oidc.py).
"""

from __future__ import annotations

from allauth.account import views as account
from allauth.socialaccount import views as social
from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path, re_path
from django.views.decorators.http import require_http_methods
from django_ratelimit.decorators import ratelimit

from osai_dashboard.signin import oidc, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("login/", views.login, name="account_login"),
    path("login/", views.login, name="login"),
    path("logout/", account.logout, name="account_logout"),
    path("logout/", account.logout, name="logout"),
    path("inactive/", account.account_inactive, name="account_inactive"),
    path("signup/", account.signup, name="account_signup"),
    path("reauthenticate/", account.reauthenticate, name="account_reauthenticate"),
    path("password/change/", account.password_change, name="account_change_password"),
    path("password/set/", account.password_set, name="account_set_password"),
    path("2fa/", include("allauth.mfa.urls")),
    path("3rdparty/login/cancelled/", social.login_cancelled, name="socialaccount_login_cancelled"),
    path("3rdparty/login/error/", social.login_error, name="socialaccount_login_error"),
    path("3rdparty/signup/", social.signup, name="socialaccount_signup"),
    path("3rdparty/", social.connections, name="socialaccount_connections"),
    re_path(r"^oidc/(?P<provider_id>[^/]+)/login/$", oidc.login, name="openid_connect_login"),
    re_path(
        r"^oidc/(?P<provider_id>[^/]+)/login/callback/$",
        oidc.callback,
        name="openid_connect_callback",
    ),
]

if settings.PASSWORD_RESET_ENABLED:
    rate = settings.PASSWORD_RESET_RATE
    reset = ratelimit(key="reports.views.http.client_ip_key", rate=rate, method="POST")(
        ratelimit(key="reports.views.http.reset_email_key", rate=rate, method="POST")(
            require_http_methods(["GET", "POST"])(account.password_reset)
        )
    )
    urlpatterns += [
        path("password/reset/", reset, name="account_reset_password"),
        path(
            "password/reset/done/", account.password_reset_done, name="account_reset_password_done"
        ),
        re_path(
            r"^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$",
            account.password_reset_from_key,
            name="account_reset_password_from_key",
        ),
        path(
            "password/reset/key/done/",
            account.password_reset_from_key_done,
            name="account_reset_password_from_key_done",
        ),
    ]
