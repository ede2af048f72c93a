"""A team's price books on the pages: who reaches them (S2), what bad input does (A6, I1:
a clear message and nothing changed), the team page's choices, the re-pricing notes and the
example banner, and the Django admin's own checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.forms import modelform_factory
from django.urls import reverse

from reports.admin import PriceBookForm, PriceBookVersionInline
from reports.metrics import RATE_FIELDS
from reports.models import Budget, PriceBook, PriceBookVersion, Report, Team
from reports.teams import price_books, roster
from tests.factories import make_done_report, make_user
from tests.support.clock import clock_held_at
from tests.support.web import client_for, page_text
from tests.support.world import World

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)
TODAY = "2026-05-14"


_frozen = clock_held_at(NOW)


def own_book(w: World, name: str = "Vision prices") -> PriceBook:
    example = PriceBook.objects.get(is_default=True)
    return price_books.price_book_copy(team=w.team, actor=w.team_admin, source=example, name=name)


def other_teams_book(w: World) -> PriceBook:
    """The other team's own copy, "Elsewhere prices": never to be reached from this team."""
    example = PriceBook.objects.get(is_default=True)
    return price_books.price_book_copy(
        team=w.other_team, actor=w.other_admin, source=example, name="Elsewhere prices"
    )


def version_post(effective: str = TODAY, value: str = "2.5", **overrides: str) -> dict[str, str]:
    data = {field: overrides.get(field, value) for field in RATE_FIELDS}
    return {"effective": effective, "note": "", **data}


def book_url(team: Team, book: PriceBook, view: str = "team_price_book_detail") -> str:
    return reverse(view, args=[team.pk, book.pk])


def snapshot(book: PriceBook) -> Any:
    book = PriceBook.objects.get(pk=book.pk)
    versions = list(
        PriceBookVersion.objects.filter(price_book=book).values_list("effective_from", *RATE_FIELDS)
    )
    return (book.name, book.currency, book.is_example, versions)


# --- S2: only the team's admins, and only books the team may see -------------------------------

ROLES = ("owner", "team_admin", "team_member", "other_admin", "stranger")


@pytest.mark.parametrize("role", [*ROLES, "anonymous"])
def test_price_book_pages_answer_only_the_teams_admins(world: World, role: str) -> None:
    w = world
    book = own_book(w)
    theirs = other_teams_book(w)
    before = snapshot(book), snapshot(theirs)
    books_before = PriceBook.objects.count()
    version = book.versions.get()
    requests = [
        ("get", book_url(w.team, book), {}),
        ("post", book_url(w.team, book, "price_book_version_add"), version_post()),
        ("post", book_url(w.team, book, "price_book_settings"), {"name": "X", "currency": "USD"}),
        ("post", book_url(w.team, book, "price_book_use"), {}),
        (
            "post",
            reverse("price_book_version_delete", args=[w.team.pk, book.pk, version.pk]),
            {},
        ),
        ("post", reverse("price_book_copy", args=[w.team.pk]), {"source": book.pk, "name": "Y"}),
    ]
    client = client_for(w.user(role))
    for method, url, data in requests:
        response = getattr(client, method)(url, data)
        if role == "anonymous":
            assert response.status_code == 302 and "/accounts/login/" in response["Location"]
        elif role == "team_admin":
            assert response.status_code in (200, 302), url
        else:
            assert response.status_code == 404, (role, url)
    if role != "team_admin":
        assert (snapshot(book), snapshot(theirs)) == before
        assert PriceBook.objects.count() == books_before
    # Another team's book under this team's address: 404 even for this team's admin.
    if role == "team_admin":
        for url in (
            book_url(w.team, theirs),
            book_url(w.team, theirs, "price_book_use"),
            book_url(w.team, theirs, "price_book_version_add"),
        ):
            send = client.get if url.endswith(f"/{theirs.pk}/") else client.post
            assert send(url).status_code == 404
        assert snapshot(theirs) == before[1]


# --- The page ----------------------------------------------------------------------------------


def test_an_admin_sees_a_shared_book_read_only_with_a_way_to_copy_it(world: World) -> None:
    example = PriceBook.objects.get(is_default=True)
    response = client_for(world.team_admin).get(book_url(world.team, example))
    text = page_text(response.content)
    assert response.status_code == 200
    assert "only Django staff change it" in text
    assert "New rates" not in text and "Name and currency" not in text
    assert "Training, 8 GB GPU-hour 1.20" in text  # the example's rate, per metric
    assert "Image storage GB-month 0.08" in text
    assert "Prices Vision's reports" in text  # the team uses the default book
    assert "Django staff edit shared price books; a team's admins can make and edit" in text
    # A version posted anyway changes nothing and says why.
    for view, data in (
        ("price_book_version_add", version_post()),
        ("price_book_settings", {"name": "Mine now", "currency": "USD"}),
    ):
        response = client_for(world.team_admin).post(
            book_url(world.team, example, view), data, follow=True
        )
        assert "is a shared price book: only staff change it" in page_text(response.content)
    assert example.versions.count() == 1
    example.refresh_from_db()
    assert (example.name, example.currency) == ("Example price book", "EUR")


def test_an_admin_makes_the_teams_own_book_sets_a_rate_and_uses_it(world: World) -> None:
    w = world
    client = client_for(w.team_admin)
    example = PriceBook.objects.get(is_default=True)
    response = client.post(
        reverse("price_book_copy", args=[w.team.pk]),
        {"source": example.pk, "name": "Vision prices"},
    )
    book = PriceBook.objects.get(name="Vision prices")
    assert response.status_code == 302 and response["Location"] == book_url(w.team, book)
    page = client.get(book_url(w.team, book))
    form = page.context["version_form"]
    assert form["effective"].value().isoformat() == TODAY  # from today
    assert form["training_8gb_per_hour"].value() == "1.20"  # the rates of now
    response = client.post(
        book_url(w.team, book, "price_book_version_add"),
        version_post(value="1.2", training_8gb_per_hour="3.10"),
    )
    assert response.status_code == 302
    version = book.versions.get(effective_from=datetime(2026, 5, 14, tzinfo=UTC))
    assert version.training_8gb_per_hour == Decimal("3.10")
    assert client.post(book_url(w.team, book, "price_book_use")).status_code == 302
    w.team.refresh_from_db()
    assert w.team.price_book == book
    text = page_text(client.get(book_url(w.team, book)).content)
    assert "Prices Vision's reports" in text and "3.10" in text and "in force" in text
    assert "Example prices" not in text  # the team's own rates now


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"effective": "2026-05-13"}, "Rates apply from today (2026-05-14 UTC) or later"),
        ({"effective": "14/05/2026"}, "Enter a valid date"),
        ({"training_16gb_per_hour": "-1"}, "Training, 16 GB: a rate cannot be negative."),
        (
            {"image_storage_per_gb_month": "1000.5"},
            "Image storage: a rate is at most 1,000 per GB-month.",
        ),
        ({"device_rental_per_hour": "1001"}, "Device rental: a rate is at most 1,000 per hour."),
        ({"manipulation_per_hour": "cheap"}, "Augmentation: enter a number"),
        ({"prediction_8gb_per_hour": ""}, "Prediction, 8 GB: enter a rate (0 if it is free)."),
    ],
)
def test_bad_rates_get_a_clear_message_and_change_nothing(
    world: World, overrides: dict[str, str], message: str
) -> None:
    book = own_book(world)
    before = snapshot(book)
    data = {**version_post(), **overrides}
    response = client_for(world.team_admin).post(
        book_url(world.team, book, "price_book_version_add"), data
    )
    assert response.status_code == 400
    assert message in page_text(response.content).replace("&#x27;", "'")
    assert snapshot(book) == before


def test_staff_may_back_date_on_the_same_page(world: World) -> None:
    staff = make_user("staffer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="change_pricebook"))
    roster.team_member_add(team=world.team, actor=world.team_admin, who="staffer", role="admin")
    example = PriceBook.objects.get(is_default=True)
    client = client_for(staff)
    text = page_text(client.get(book_url(world.team, example)).content)
    assert "As staff you may back-date" in text
    response = client.post(
        book_url(world.team, example, "price_book_version_add"), version_post("2026-01-01")
    )
    assert response.status_code == 302
    assert example.versions.filter(effective_from=datetime(2026, 1, 1, tzinfo=UTC)).exists()


def test_the_currency_form_says_a_budget_fixes_it(world: World) -> None:
    book = own_book(world)
    roster.team_price_book_set(team=world.team, actor=world.team_admin, price_book=book)
    Budget.objects.create(
        owner=world.team_admin, scope="team", team=world.team, amount=100, thresholds=[100]
    )
    client = client_for(world.team_admin)
    url = book_url(world.team, book, "price_book_settings")
    response = client.post(url, {"name": "Vision prices", "currency": "USD"})
    assert response.status_code == 400
    assert "The currency stays EUR: a budget uses this price book" in page_text(response.content)
    response = client.post(url, {"name": "Vision prices", "currency": "E1R"})
    assert "three letters" in page_text(response.content)
    assert PriceBook.objects.get(pk=book.pk).currency == "EUR"
    assert client.post(url, {"name": "Lab rates", "currency": "eur"}).status_code == 302
    assert PriceBook.objects.get(pk=book.pk).name == "Lab rates"


def test_admins_delete_an_upcoming_version_not_a_past_one(world: World) -> None:
    book = own_book(world)
    client = client_for(world.team_admin)
    client.post(book_url(world.team, book, "price_book_version_add"), version_post("2026-06-01"))
    upcoming = book.versions.get(effective_from=datetime(2026, 6, 1, tzinfo=UTC))
    past = book.versions.exclude(pk=upcoming.pk).get()
    url = reverse("price_book_version_delete", args=[world.team.pk, book.pk, past.pk])
    response = client.post(url, follow=True)
    assert "Only versions from today on can be deleted" in page_text(response.content)
    url = reverse("price_book_version_delete", args=[world.team.pk, book.pk, upcoming.pk])
    assert client.post(url).status_code == 302
    assert list(book.versions.all()) == [past]


def test_a_bad_copy_changes_nothing_and_says_why(world: World) -> None:
    before = PriceBook.objects.count()
    example = PriceBook.objects.get(is_default=True)
    response = client_for(world.team_admin).post(
        reverse("price_book_copy", args=[world.team.pk]),
        {"source": example.pk, "name": example.name},
    )
    assert response.status_code == 400
    assert "There is already a price book called" in page_text(response.content)
    assert PriceBook.objects.count() == before


# --- The team page -------------------------------------------------------------------------------


def test_the_team_page_offers_shared_and_own_books_never_another_teams(world: World) -> None:
    w = world
    mine = own_book(w)
    theirs = other_teams_book(w)
    client = client_for(w.team_admin)
    response = client.get(reverse("team_detail", args=[w.team.pk]))
    choices = {
        book.pk for book in response.context["price_book_form"].fields["price_book"].queryset
    }
    assert mine.pk in choices and theirs.pk not in choices
    body = response.content.decode()
    assert "Make our own price book" in body and book_url(w.team, mine) in body
    assert "Elsewhere prices" not in body
    response = client.post(reverse("team_price_book", args=[w.team.pk]), {"price_book": theirs.pk})
    w.team.refresh_from_db()
    assert w.team.price_book is None
    response = client.post(reverse("team_price_book", args=[w.team.pk]), {"price_book": mine.pk})
    w.team.refresh_from_db()
    assert w.team.price_book == mine


# --- Re-priced figures say so, on the pages ------------------------------------------------------


def _back_date(book: PriceBook, day: datetime, value: str = "5") -> PriceBookVersion:
    """What staff do in the admin: a version in force before the day it is saved."""
    return PriceBookVersion.objects.create(
        price_book=book, effective_from=day, **{f: Decimal(value) for f in RATE_FIELDS}
    )


def test_a_report_says_it_was_repriced_and_which_rates_price_it(world: World) -> None:
    report = world.personal_report  # Oct-Dec 2025, requested before NOW
    client = client_for(world.owner)

    def cost_view(shown: Report) -> str:
        url = reverse("report_detail", args=[shown.pk]) + "?view=cost"
        return page_text(client.get(url).content)

    def same_report_again() -> Report:
        return make_done_report(
            world.owner, [world.connection], start=report.period_start, end=report.period_end
        )

    text = cost_view(report)
    assert "Priced with “Example price book” (EUR): rates from 2020-01-01 (UTC)." in text
    assert "Prices changed" not in text
    example = PriceBook.objects.get(is_default=True)
    _back_date(example, datetime(2025, 12, 1, tzinfo=UTC))
    text = cost_view(report)
    assert "rates from 2020-01-01, from 2025-12-01 (UTC)" in text
    assert (
        "Prices changed on 2026-05-14 from 2025-12-01 (UTC): these figures were re-priced" in text
    )
    # A report requested after the change shows no note: its figures were never others.
    later_text = cost_view(same_report_again())
    assert "Prices changed" in later_text  # requested 5 minutes before the change (factory)
    with time_machine.travel(NOW + timedelta(hours=1), tick=False):
        fresh_text = cost_view(same_report_again())
    assert "Prices changed" not in fresh_text


def test_the_team_page_and_overview_note_a_back_dated_version(world: World) -> None:
    example = PriceBook.objects.get(is_default=True)
    team_url = reverse("team_detail", args=[world.team.pk])
    note = "Prices changed on 2026-05-14 from 2026-05-02 (UTC)"
    assert note not in page_text(client_for(world.team_admin).get(team_url).content)
    _back_date(example, datetime(2026, 5, 14, tzinfo=UTC))  # today: not back-dated
    assert "Prices changed" not in page_text(client_for(world.team_admin).get(team_url).content)
    _back_date(example, datetime(2026, 5, 2, tzinfo=UTC))
    assert note in page_text(client_for(world.team_admin).get(team_url).content)
    assert note in page_text(client_for(world.owner).get(reverse("home")).content)
    assert note not in page_text(client_for(world.team_member).get(team_url).content)


# --- The Django admin ----------------------------------------------------------------------------


def test_the_admin_keeps_the_currency_a_budget_uses_and_rates_in_bounds(world: World) -> None:
    example = PriceBook.objects.get(is_default=True)
    Budget.objects.create(owner=world.owner, scope="person", amount=100, thresholds=[100])
    data = {"name": example.name, "currency": "USD", "is_default": True, "is_example": True}
    form = PriceBookForm(data, instance=example)
    assert not form.is_valid()
    assert "The currency stays EUR" in str(form.errors["currency"])
    book = own_book(world)
    form = PriceBookForm(
        {"name": book.name, "currency": "EUR", "team": world.team.pk, "is_default": True},
        instance=book,
    )
    assert not form.is_valid() and "cannot be the default" in str(form.errors)
    # The admin's version forms check each rate with the model's validators.
    version_form = modelform_factory(PriceBookVersion, fields=RATE_FIELDS)(
        {**{f: "1" for f in RATE_FIELDS}, "model_storage_per_gb_month": "1000.01"}
    )
    assert not version_form.is_valid()
    assert "at most 1,000 per hour or per GB-month" in str(version_form.errors)
    assert PriceBookVersionInline.readonly_fields == ("created_at",)
