"""URL map. Every URL with an object id scopes the lookup through reports/access.py."""

from django.urls import path

from reports import spend_views, views

urlpatterns = [
    path("", views.home, name="home"),
    # Connections (a user's OSAI access tokens).
    path("connections/", views.connection_list, name="connection_list"),
    path("connections/new/", views.connection_create, name="connection_create"),
    path("connections/<int:pk>/edit/", views.connection_edit, name="connection_edit"),
    path("connections/<int:pk>/token/", views.connection_token, name="connection_token"),
    path("connections/<int:pk>/delete/", views.connection_delete, name="connection_delete"),
    # Reports.
    path("reports/", views.report_history, name="report_history"),
    path("reports/new/", views.report_new, name="report_new"),
    path("reports/<int:pk>/", views.report_detail, name="report_detail"),
    path("reports/<int:pk>/status/", views.report_status, name="report_status"),
    path("reports/<int:pk>/charts/", views.report_charts, name="report_charts"),
    path("reports/<int:pk>/cancel/", views.report_cancel, name="report_cancel"),
    path("reports/<int:pk>/retry/", views.report_retry, name="report_retry"),
    path(
        "reports/<int:pk>/buckets/<int:bucket_pk>/osai.json",
        views.bucket_raw_json,
        name="bucket_raw_json",
    ),
    # Spend: CSV exports and teams.
    path("reports/<int:pk>/export.csv", spend_views.report_export_csv, name="report_export_csv"),
    path("teams/", spend_views.team_list, name="team_list"),
    path("teams/<int:pk>/", spend_views.team_detail, name="team_detail"),
    path("teams/<int:pk>/sharing/", spend_views.team_sharing, name="team_sharing"),
    path("teams/<int:pk>/reports/new/", spend_views.team_report_new, name="team_report_new"),
    path(
        "teams/<int:pk>/reports/<int:report_pk>/",
        spend_views.team_report_detail,
        name="team_report_detail",
    ),
    path(
        "teams/<int:pk>/reports/<int:report_pk>/export.csv",
        spend_views.team_report_export_csv,
        name="team_report_export_csv",
    ),
]
