"""Django admin: every page loads for a superuser; connection pages never show a token (T2)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from reports import crypto
from reports.models import Bucket, PriceBook, PriceBookVersion
from tests.factories import (
    make_connection,
    make_done_report,
    make_team,
    make_user,
    share_with,
)
from tests.support import figures

TOKEN = "osai-ADMIN-CANARY-5d1c0e9b7a-q7r2"
JWT = "eyJhbGciOiJIUzI1NiJ9.ADMIN-CANARY-JWT.c2ln"


@pytest.fixture
def admin_client(db: Any) -> Client:
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", "pw-x-1234")
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def connection(db: Any) -> Any:
    owner = make_user("owner")
    conn = make_connection(owner, "Production", token=TOKEN)
    conn.jwt_encrypted = crypto.encrypt_secret(JWT)
    conn.save()
    share_with(make_team("Vision", members=[owner]), conn)
    make_done_report(owner, [conn])
    return conn


def secret_hits(text: str, conn: Any) -> int:
    secrets = [TOKEN, TOKEN[:-4], "CANARY", conn.token_encrypted, conn.jwt_encrypted, "eyJ"]
    return sum(secret in text for secret in secrets)


def test_connection_admin_pages_never_show_the_token_or_ciphertext(
    admin_client: Client, connection: Any
) -> None:
    pages = [
        reverse("admin:reports_connection_changelist"),
        reverse("admin:reports_connection_changelist") + "?q=Production",
        reverse("admin:reports_connection_change", args=[connection.pk]),
        reverse("admin:reports_connection_delete", args=[connection.pk]),
        reverse("admin:reports_bucket_changelist"),
        reverse("admin:reports_report_changelist"),
        reverse("admin:reports_team_change", args=[connection.shared_with_teams.get().pk]),
    ]
    hits = 0
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        hits += secret_hits(response.content.decode(), connection)
    figures.figure("T2 canary hits (admin)", hits)
    assert hits == 0
    change = admin_client.get(reverse("admin:reports_connection_change", args=[connection.pk]))
    text = change.content.decode()
    assert "…q7r2" in text
    assert "owner@sandbox" in text
    assert 'name="token_encrypted"' not in text and 'name="jwt_encrypted"' not in text


def test_connections_are_read_only_in_the_admin(admin_client: Client, connection: Any) -> None:
    url = reverse("admin:reports_connection_change", args=[connection.pk])
    before = (connection.label, connection.token_encrypted)
    response = admin_client.post(url, {"label": "Hacked", "token_encrypted": "x"})
    assert response.status_code == 403
    connection.refresh_from_db()
    assert (connection.label, connection.token_encrypted) == before
    assert admin_client.get(reverse("admin:reports_connection_add")).status_code == 403


def test_report_and_bucket_lists_load_with_filters(admin_client: Client, connection: Any) -> None:
    bucket = Bucket.objects.first()
    report = bucket.reports.first()
    for url in (
        reverse("admin:reports_report_changelist") + "?state__exact=done",
        reverse("admin:reports_report_changelist") + "?granularity__exact=month",
        reverse("admin:reports_report_change", args=[report.pk]),
        reverse("admin:reports_bucket_changelist") + "?state__exact=done&is_closed__exact=1",
        reverse("admin:reports_bucket_change", args=[bucket.pk]),
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert secret_hits(response.content.decode(), connection) == 0
    listing = admin_client.get(reverse("admin:reports_bucket_changelist")).content.decode()
    assert str(bucket.osai_report_id) in listing
    assert admin_client.get(reverse("admin:reports_bucket_add")).status_code == 403


def test_price_book_admin_edits_versions_inline(admin_client: Client, db: Any) -> None:
    example = PriceBook.objects.get(name="Example price book")
    response = admin_client.get(reverse("admin:reports_pricebook_change", args=[example.pk]))
    assert response.status_code == 200
    assert "training_8gb_per_hour" in response.content.decode()
    assert admin_client.get(reverse("admin:reports_pricebook_changelist")).status_code == 200

    rates = {
        "versions-0-effective_from_0": "2026-01-01",
        "versions-0-effective_from_1": "00:00:00",
        "versions-0-training_8gb_per_hour": "1.5",
        "versions-0-note": "Contract 2026",
    }
    for field in (
        "training_16gb_per_hour",
        "conversion_8gb_per_hour",
        "conversion_16gb_per_hour",
        "prediction_8gb_per_hour",
        "prediction_16gb_per_hour",
        "manipulation_per_hour",
        "device_rental_per_hour",
        "image_storage_per_gb_month",
        "model_storage_per_gb_month",
    ):
        rates[f"versions-0-{field}"] = "0"
    response = admin_client.post(
        reverse("admin:reports_pricebook_add"),
        {
            "name": "Contract",
            "currency": "CHF",
            "is_default": "on",
            "versions-TOTAL_FORMS": "1",
            "versions-INITIAL_FORMS": "0",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
            **rates,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    book = PriceBook.objects.get(name="Contract")
    version = PriceBookVersion.objects.get(price_book=book)
    assert version.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    assert version.training_8gb_per_hour == Decimal("1.5")
    # One default book: the new default retired the example.
    assert list(PriceBook.objects.filter(is_default=True)) == [book]


def test_team_admin_manages_memberships_inline(admin_client: Client, db: Any) -> None:
    user = make_user("member1")
    response = admin_client.post(
        reverse("admin:reports_team_add"),
        {
            "name": "Research",
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-user": str(user.pk),
            "memberships-0-role": "admin",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert user.memberships.get().role == "admin"
