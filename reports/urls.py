"""URL map. Every URL with an object id scopes the lookup to the signed-in user (404 otherwise)."""

from django.urls import path, re_path, register_converter

from reports.views import (
    account,
    anomalies,
    api,
    audit,
    budgets,
    channels,
    connections,
    exports,
    home,
    invitations,
    price_books,
    reports,
    saved_views,
    teams,
    webhooks,
)
from reports.views.http import IdConverter

# Every object id in a path is `<id:…>`: a number no database column holds is a 404, not a 500.
register_converter(IdConverter, "id")

urlpatterns = [
    path("", home.home, name="home"),
    path("overview/", home.overview, name="overview"),
    # Anomalies (N5): one's own connections', or a team's (`?team=`); answering one.
    path("anomalies/", anomalies.anomaly_list, name="anomaly_list"),
    path("anomalies.csv", anomalies.anomaly_export_csv, name="anomaly_export_csv"),
    path("anomalies/<id:pk>/feedback/", anomalies.anomaly_feedback, name="anomaly_feedback"),
    path("channels/", channels.channel_list, name="channel_list"),
    path("channels/<id:pk>/delete/", channels.channel_delete, name="channel_delete"),
    path("channels/<id:pk>/test/", channels.channel_test, name="channel_test"),
    path("budgets/", budgets.budget_list, name="budget_list"),
    path("budgets/<id:pk>/", budgets.budget_detail, name="budget_detail"),
    path("budgets/<id:pk>/delete/", budgets.budget_delete, name="budget_delete"),
    path("spend.csv", exports.spend_export_csv, name="spend_export_csv"),
    # Every page's "Download CSV": the page's rows, scoped as the page is (C5).
    path("overview.csv", exports.overview_export_csv, name="overview_export_csv"),
    path("budgets/export.csv", exports.budget_list_export_csv, name="budget_list_export_csv"),
    path("budgets/alerts.csv", exports.budget_alerts_export_csv, name="budget_alerts_export_csv"),
    path("budgets/<id:pk>/export.csv", exports.budget_export_csv, name="budget_export_csv"),
    path("budgets/<id:pk>/alerts.csv", exports.budget_alert_log_csv, name="budget_alert_log_csv"),
    path("activity/export.csv", exports.activity_export_csv, name="activity_export_csv"),
    path("reports/export.csv", exports.report_history_export_csv, name="report_history_export_csv"),
    path("account/digests/", account.digest_settings, name="digest_settings"),
    path("account/api-tokens/", account.api_token_list, name="api_token_list"),
    path("account/api-tokens/<id:pk>/revoke/", account.api_token_revoke, name="api_token_revoke"),
    # Integrations: OSAI's worker webhooks (the secret is the credential; with or without the
    # final slash, as OSAI may post either), the activity feed, and the read-only API.
    re_path(
        r"^hooks/osai/(?P<secret>[A-Za-z0-9_-]{1,128})/?$",
        webhooks.osai_webhook,
        name="osai_webhook",
    ),
    path("activity/", webhooks.activity, name="activity"),
    path("activity/feed/", webhooks.activity_feed, name="activity_feed"),
    path("api/v1/", api.api.urls),
    # Connections (a user's OSAI access tokens).
    path("connections/", connections.connection_list, name="connection_list"),
    path("connections/new/", connections.connection_create, name="connection_create"),
    path("connections/<id:pk>/edit/", connections.connection_edit, name="connection_edit"),
    path("connections/<id:pk>/token/", connections.connection_token, name="connection_token"),
    path("connections/<id:pk>/delete/", connections.connection_delete, name="connection_delete"),
    path("connections/<id:pk>/webhook/", webhooks.connection_webhook, name="connection_webhook"),
    path(
        "connections/<id:pk>/webhook/rotate/",
        webhooks.connection_webhook_rotate,
        name="connection_webhook_rotate",
    ),
    # Reports.
    path("reports/", reports.report_history, name="report_history"),
    path("reports/new/", reports.report_new, name="report_new"),
    path("reports/<id:pk>/", reports.report_detail, name="report_detail"),
    path("reports/<id:pk>/status/", reports.report_status, name="report_status"),
    path("reports/<id:pk>/charts/", reports.report_charts, name="report_charts"),
    path("reports/<id:pk>/comparison/", reports.report_comparison, name="report_comparison"),
    path("reports/<id:pk>/cancel/", reports.report_cancel, name="report_cancel"),
    path("reports/<id:pk>/retry/", reports.report_retry, name="report_retry"),
    path(
        "reports/<id:pk>/buckets/<id:bucket_pk>/osai.json",
        reports.bucket_raw_json,
        name="bucket_raw_json",
    ),
    path("reports/<id:pk>/export.csv", exports.report_export_csv, name="report_export_csv"),
    # Saved views: a report form's choices by name; opening one is the pre-filled form.
    path("saved-views/new/", saved_views.saved_view_create, name="saved_view_create"),
    path("saved-views/<id:pk>/delete/", saved_views.saved_view_delete, name="saved_view_delete"),
    # Teams.
    # The audit log (M7): one's own entries (staff: ?all=1), a team's for its admins.
    path("audit/", audit.audit_log, name="audit_log"),
    path("audit.csv", audit.audit_log_csv, name="audit_log_csv"),
    path("teams/<id:pk>/audit/", audit.team_audit, name="team_audit"),
    path("teams/<id:pk>/audit.csv", audit.team_audit_csv, name="team_audit_csv"),
    path("teams/", teams.team_list, name="team_list"),
    path("teams/<id:pk>/", teams.team_detail, name="team_detail"),
    path("teams/<id:pk>/sharing/", teams.team_sharing, name="team_sharing"),
    path("teams/<id:pk>/spend.csv", exports.team_spend_export_csv, name="team_spend_export_csv"),
    path("teams/<id:pk>/members/", teams.team_member_add, name="team_member_add"),
    path(
        "teams/<id:pk>/members/<id:user_pk>/role/",
        teams.team_member_role,
        name="team_member_role",
    ),
    path(
        "teams/<id:pk>/members/<id:user_pk>/remove/",
        teams.team_member_remove,
        name="team_member_remove",
    ),
    path(
        "teams/<id:pk>/invitations/<id:invitation_pk>/withdraw/",
        invitations.invitation_withdraw,
        name="invitation_withdraw",
    ),
    # An invitation's link: the token is its credential (only its hash is stored: M6).
    re_path(
        r"^invitations/(?P<token>[A-Za-z0-9_-]{20,128})/$",
        invitations.invitation,
        name="invitation",
    ),
    path(
        "invitations/mine/<id:pk>/accept/",
        invitations.invitation_accept_mine,
        name="invitation_accept_mine",
    ),
    path(
        "invitations/mine/<id:pk>/decline/",
        invitations.invitation_decline_mine,
        name="invitation_decline_mine",
    ),
    path("teams/<id:pk>/price-book/", teams.team_price_book, name="team_price_book"),
    path("teams/<id:pk>/digest/", teams.team_digest, name="team_digest"),
    path("teams/<id:pk>/two-factor/", teams.team_two_factor, name="team_two_factor"),
    path("teams/<id:pk>/channels/", channels.team_channels, name="team_channels"),
    path("teams/<id:pk>/price-books/new/", price_books.price_book_copy, name="price_book_copy"),
    path(
        "teams/<id:pk>/price-books/<id:book_pk>/",
        price_books.price_book_detail,
        name="team_price_book_detail",
    ),
    path(
        "teams/<id:pk>/price-books/<id:book_pk>/versions/",
        price_books.price_book_version_add,
        name="price_book_version_add",
    ),
    path(
        "teams/<id:pk>/price-books/<id:book_pk>/versions/<id:version_pk>/delete/",
        price_books.price_book_version_delete,
        name="price_book_version_delete",
    ),
    path(
        "teams/<id:pk>/price-books/<id:book_pk>/settings/",
        price_books.price_book_settings,
        name="price_book_settings",
    ),
    path(
        "teams/<id:pk>/price-books/<id:book_pk>/use/",
        price_books.price_book_use,
        name="price_book_use",
    ),
    path(
        "teams/<id:pk>/saved-views/new/",
        saved_views.team_saved_view_create,
        name="team_saved_view_create",
    ),
    path("teams/<id:pk>/reports/new/", teams.team_report_new, name="team_report_new"),
    path(
        "teams/<id:pk>/reports/<id:report_pk>/",
        teams.team_report_detail,
        name="team_report_detail",
    ),
    path(
        "teams/<id:pk>/reports/<id:report_pk>/export.csv",
        exports.team_report_export_csv,
        name="team_report_export_csv",
    ),
]
