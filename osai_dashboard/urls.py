from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Signing in: django-allauth's views with our rules (osai_dashboard/signin/).
    path("accounts/", include("osai_dashboard.signin.urls")),
    path("", include("reports.urls")),
]
