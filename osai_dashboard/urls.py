from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

# The admin signs in through the site's login (two-factor included, S15), not its own form.
admin.site.login = secure_admin_login(admin.site.login)  # type: ignore[method-assign]

urlpatterns = [
    path("admin/", admin.site.urls),
    # Signing in: django-allauth's views with our rules (osai_dashboard/signin/).
    path("accounts/", include("osai_dashboard.signin.urls")),
    path("", include("reports.urls")),
]
