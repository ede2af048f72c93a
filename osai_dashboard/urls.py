from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth
from django.urls import include, path
from django.views.decorators.http import require_http_methods
from django_ratelimit.decorators import ratelimit

from osai_dashboard import login_throttle

accounts = [
    path(
        "login/",
        auth.LoginView.as_view(authentication_form=login_throttle.SignInForm),
        name="login",
    ),
    path("logout/", auth.LogoutView.as_view(), name="logout"),
    path("password_change/", auth.PasswordChangeView.as_view(), name="password_change"),
    path(
        "password_change/done/",
        auth.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
]
if settings.PASSWORD_RESET_ENABLED:
    # Only with mail configured (S12), and throttled per client address and per email (as
    # Django matches it to an account: any case, any Unicode compatibility form).
    rate = settings.PASSWORD_RESET_RATE
    reset = ratelimit(key="reports.views.http.client_ip_key", rate=rate, method="POST")(
        ratelimit(key="reports.views.http.reset_email_key", rate=rate, method="POST")(
            require_http_methods(["GET", "POST"])(auth.PasswordResetView.as_view())
        )
    )
    accounts += [
        path("password_reset/", reset, name="password_reset"),
        path(
            "password_reset/done/",
            auth.PasswordResetDoneView.as_view(),
            name="password_reset_done",
        ),
        path(
            "reset/<uidb64>/<token>/",
            auth.PasswordResetConfirmView.as_view(),
            name="password_reset_confirm",
        ),
        path(
            "reset/done/", auth.PasswordResetCompleteView.as_view(), name="password_reset_complete"
        ),
    ]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include(accounts)),
    path("", include("reports.urls")),
]
