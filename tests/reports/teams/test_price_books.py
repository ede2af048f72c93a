"""A team's own price books (reports/teams/price_books.py): copies, who changes what, rates
from today on, the limits of a rate, the currency a budget fixes, and where a change of
prices re-priced a report (pricing.repriced_by)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission

from reports.metrics import RATE_FIELDS
from reports.models import Budget, PriceBook, PriceBookVersion, Report, Team
from reports.spend import pricing
from reports.teams import TeamError, price_books, roster
from tests.factories import ensure_example_price_book, make_done_report, make_team, make_user
from tests.support.clock import clock_held_at

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)
TODAY = NOW.date()


_frozen = clock_held_at(NOW)


def rates(value: str = "1.5", **overrides: str) -> dict[str, Decimal]:
    return {field: Decimal(overrides.get(field, value)) for field in RATE_FIELDS}


def staff_user() -> Any:
    user = make_user(is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_pricebook"))
    return type(user).objects.get(pk=user.pk)  # a fresh instance: permissions are cached


@pytest.fixture
def setup() -> tuple[Team, Any, Any, PriceBook]:
    """A team with an admin and a member, and the shipped example book."""
    admin, member = make_user(), make_user()
    team = make_team(admins=[admin], members=[member])
    return team, admin, member, ensure_example_price_book()


def own_copy(team: Team, admin: Any, source: PriceBook, name: str = "Our prices") -> PriceBook:
    return price_books.price_book_copy(team=team, actor=admin, source=source, name=name)


# --- Copies ------------------------------------------------------------------------------------


def test_an_admin_copies_the_example_with_its_currency_and_every_version(setup: Any) -> None:
    team, admin, _, example = setup
    PriceBookVersion.objects.create(
        price_book=example, effective_from=datetime(2026, 3, 1, tzinfo=UTC), **rates("2")
    )
    book = own_copy(team, admin, example, "  Vision   prices ")
    assert (book.name, book.currency, book.team_id) == ("Vision prices", "EUR", team.pk)
    assert book.is_example  # the example's rates, until the team sets its own
    assert not book.is_default
    copied = list(book.versions.order_by("effective_from"))
    source = list(example.versions.order_by("effective_from"))
    assert [v.effective_from for v in copied] == [v.effective_from for v in source]
    assert [v.created_at for v in copied] == [v.created_at for v in source]  # re-prices nothing
    for mine, theirs in zip(copied, source, strict=True):
        assert all(getattr(mine, f) == getattr(theirs, f) for f in RATE_FIELDS)


def test_only_admins_copy_and_only_books_their_team_may_see(setup: Any) -> None:
    team, admin, member, example = setup
    with pytest.raises(TeamError, match="admins"):
        own_copy(team, member, example)
    other_admin = make_user()
    other = make_team(admins=[other_admin])
    theirs = own_copy(other, other_admin, example, "Their prices")
    with pytest.raises(TeamError, match="another team"):
        own_copy(team, admin, theirs)
    assert list(price_books.books_for_team(team)) == [example]
    assert set(price_books.books_for_team(other)) == {example, theirs}


def test_a_name_in_use_is_refused_and_nothing_is_made(setup: Any) -> None:
    team, admin, _, example = setup
    before = PriceBook.objects.count()
    with pytest.raises(TeamError, match="already a price book"):
        own_copy(team, admin, example, example.name)
    with pytest.raises(TeamError, match="name"):
        own_copy(team, admin, example, "   ")
    assert PriceBook.objects.count() == before


# --- Versions: from today on, within 0 to 1,000 -------------------------------------------------


def test_an_admin_adds_rates_from_today_and_replaces_a_days_rates(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    version, created = price_books.price_book_version_save(
        book=book, team=team, actor=admin, effective=TODAY, rates=rates("3")
    )
    assert created and version.effective_from == datetime(2026, 5, 14, tzinfo=UTC)
    assert version.created_at == NOW
    book.refresh_from_db()
    assert not book.is_example  # the team's own rates now
    again, created = price_books.price_book_version_save(
        book=book, team=team, actor=admin, effective=TODAY, rates=rates("4"), note="typo"
    )
    assert not created and again.pk == version.pk
    again.refresh_from_db()
    assert again.training_8gb_per_hour == Decimal(4) and again.note == "typo"
    assert book.versions.count() == 2


def test_rates_before_today_are_refused_for_admins_and_change_nothing(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    with pytest.raises(TeamError, match="from today"):
        price_books.price_book_version_save(
            book=book, team=team, actor=admin, effective=TODAY - timedelta(days=1), rates=rates()
        )
    assert book.versions.count() == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [("-0.01", "cannot be negative"), ("1000.000001", "at most 1,000"), ("NaN", "negative")],
)
def test_a_rate_out_of_bounds_is_refused_with_its_metric(
    setup: Any, value: str, message: str
) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    with pytest.raises(TeamError, match=f"Image storage: .*{message}"):
        price_books.price_book_version_save(
            book=book,
            team=team,
            actor=admin,
            effective=TODAY,
            rates=rates(image_storage_per_gb_month=value),
        )
    assert book.versions.count() == 1


def test_the_bounds_themselves_are_rates(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    version, _ = price_books.price_book_version_save(
        book=book,
        team=team,
        actor=admin,
        effective=TODAY,
        rates=rates("1000", manipulation_per_hour="0"),
    )
    assert version.training_8gb_per_hour == 1000 and version.manipulation_per_hour == 0


def test_a_shared_book_is_read_only_for_admins_but_staff_may_back_date_it(setup: Any) -> None:
    team, admin, _, example = setup
    with pytest.raises(TeamError, match="shared price book"):
        price_books.price_book_version_save(
            book=example, team=team, actor=admin, effective=TODAY, rates=rates()
        )
    staff = staff_user()
    roster.team_member_add(team=team, actor=admin, who=staff.username, role="admin")
    version, created = price_books.price_book_version_save(
        book=example, team=team, actor=staff, effective=date(2026, 1, 1), rates=rates("9")
    )
    assert created and version.effective_from == datetime(2026, 1, 1, tzinfo=UTC)
    example.refresh_from_db()
    assert example.is_example  # a shared book's label is staff's to change


def test_admins_delete_versions_from_today_on_never_the_last(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    past = book.versions.get()
    with pytest.raises(TeamError, match="from today on"):
        price_books.price_book_version_delete(version=past, team=team, actor=admin)
    upcoming, _ = price_books.price_book_version_save(
        book=book, team=team, actor=admin, effective=TODAY + timedelta(days=10), rates=rates()
    )
    price_books.price_book_version_delete(version=upcoming, team=team, actor=admin)
    assert list(book.versions.all()) == [past]
    staff = staff_user()
    roster.team_member_add(team=team, actor=admin, who=staff.username, role="admin")
    with pytest.raises(TeamError, match="at least one"):
        price_books.price_book_version_delete(version=past, team=team, actor=staff)


# --- Name and currency ---------------------------------------------------------------------------


def _budget(owner: Any, scope: str, team: Team | None = None) -> Budget:
    return Budget.objects.create(
        owner=owner, scope=scope, team=team, amount=Decimal(100), thresholds=[100]
    )


def test_the_currency_is_fixed_once_a_team_budget_uses_the_book(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    price_books.price_book_settings_set(
        book=book, team=team, actor=admin, name="Our prices", currency="usd"
    )
    book.refresh_from_db()
    assert book.currency == "USD"
    _budget(admin, Budget.Scope.TEAM, team)
    assert not price_books.currency_locked(book)  # the team still uses the default book
    roster.team_price_book_set(team=team, actor=admin, price_book=book)
    assert price_books.currency_locked(book)
    with pytest.raises(TeamError, match="currency stays USD"):
        price_books.price_book_settings_set(
            book=book, team=team, actor=admin, name="Our prices", currency="EUR"
        )
    price_books.price_book_settings_set(
        book=book, team=team, actor=admin, name="Renamed", currency="USD"
    )
    book.refresh_from_db()
    assert (book.name, book.currency) == ("Renamed", "USD")


def test_the_default_book_is_used_by_personal_budgets_and_teams_without_a_book(
    setup: Any,
) -> None:
    team, admin, _, example = setup
    assert not price_books.currency_locked(example)
    budget = _budget(admin, Budget.Scope.PERSON)
    assert price_books.currency_locked(example)
    budget.delete()
    _budget(admin, Budget.Scope.TEAM, team)
    assert price_books.currency_locked(example)


def test_bad_settings_are_refused(setup: Any) -> None:
    team, admin, _, example = setup
    book = own_copy(team, admin, example)
    for currency in ("EU", "EURO", "€€€", "12A"):
        with pytest.raises(TeamError, match="three letters"):
            price_books.price_book_settings_set(
                book=book, team=team, actor=admin, name="X", currency=currency
            )
    with pytest.raises(TeamError, match="already a price book"):
        price_books.price_book_settings_set(
            book=book, team=team, actor=admin, name=example.name, currency="EUR"
        )
    book.refresh_from_db()
    assert (book.name, book.currency) == ("Our prices", "EUR")


def test_a_team_cannot_choose_another_teams_book(setup: Any) -> None:
    team, admin, _, example = setup
    other_admin = make_user()
    other = make_team(admins=[other_admin])
    theirs = own_copy(other, other_admin, example, "Theirs")
    with pytest.raises(TeamError, match="another team"):
        roster.team_price_book_set(team=team, actor=admin, price_book=theirs)
    team.refresh_from_db()
    assert team.price_book is None


# --- Re-priced figures say so ---------------------------------------------------------------------


def test_a_version_saved_after_a_report_and_in_force_in_its_period_repriced_it(
    setup: Any,
) -> None:
    """The rule the report page follows: a version saved after the report was requested
    and in force during part of its period; nothing for versions saved before, or in force
    only after the period."""
    _, admin, _, example = setup
    report = make_done_report(
        admin, start=datetime(2026, 1, 1, tzinfo=UTC), end=datetime(2026, 4, 1, tzinfo=UTC)
    )
    period = (report.period_start, report.period_end)
    since = report.requested_at
    assert pricing.repriced_by(example, *period, since=since) == []
    later = PriceBookVersion.objects.create(
        price_book=example, effective_from=datetime(2026, 6, 1, tzinfo=UTC), **rates()
    )
    example = PriceBook.objects.get(pk=example.pk)
    assert pricing.repriced_by(example, *period, since=since) == []  # after the period
    back_dated = PriceBookVersion.objects.create(
        price_book=example, effective_from=datetime(2026, 3, 1, tzinfo=UTC), **rates("7")
    )
    example = PriceBook.objects.get(pk=example.pk)
    assert pricing.repriced_by(example, *period, since=since) == [back_dated]
    assert pricing.repriced_by(example, *period, since=NOW) == []  # a report of now
    assert pricing.versions_in(example, *period)[-1] == back_dated
    assert later not in pricing.versions_in(example, *period)
    (note,) = pricing.repricing_notes([back_dated])
    assert note.startswith("Prices changed on 2026-05-14 from 2026-03-01 (UTC)")


def test_pages_with_current_figures_note_only_back_dated_versions(setup: Any) -> None:
    example = setup[3]
    month_start = datetime(2026, 4, 1, tzinfo=UTC)
    today = PriceBookVersion.objects.create(
        price_book=example, effective_from=datetime(2026, 5, 14, tzinfo=UTC), **rates()
    )
    example = PriceBook.objects.get(pk=example.pk)
    assert pricing.repriced_by(example, month_start, NOW, since=month_start) == [today]
    assert (
        pricing.repriced_by(example, month_start, NOW, since=month_start, back_dated_only=True)
        == []
    )
    back = PriceBookVersion.objects.create(
        price_book=example, effective_from=datetime(2026, 5, 2, tzinfo=UTC), **rates()
    )
    example = PriceBook.objects.get(pk=example.pk)
    assert pricing.repriced_by(
        example, month_start, NOW, since=month_start, back_dated_only=True
    ) == [back]


def test_versions_from_before_the_save_time_existed_are_never_noted(setup: Any) -> None:
    _, admin, _, example = setup
    PriceBookVersion.objects.filter(price_book=example).update(created_at=None)
    example = PriceBook.objects.get(pk=example.pk)
    report = make_done_report(admin)
    assert report.requested_at < NOW
    assert (
        pricing.repriced_by(
            example, report.period_start, report.period_end, since=datetime(2000, 1, 1, tzinfo=UTC)
        )
        == []
    )
    assert Report.objects.count() == 1
