"""Report forms opened from their URL, "run again" and saved views (reports/pages/links.py):
pre-filled and checked, never a 500 and never a request (S4, I1); a preset stays relative
and a custom range fixed; team links and views for the team's admins only (S2)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.urls import reverse

from reports.models import Granularity, Report, SavedView
from reports.pages import links
from tests.factories import make_connection, make_done_report, make_user
from tests.support.clock import clock_held_at
from tests.support.web import client_for, page_text
from tests.support.world import World

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)


_frozen = clock_held_at(NOW)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


# --- Pre-filled forms ----------------------------------------------------------------------------


def test_the_form_opens_prefilled_from_its_url_and_requests_nothing(world: World) -> None:
    second = make_connection(world.owner, "Second")
    url = reverse("report_new") + (
        f"?preset=last_quarter&granularity=week&categories=datasets,models&connections={second.pk}"
    )
    before = Report.objects.count()
    response = client_for(world.owner).get(url)
    assert response.status_code == 200
    form = response.context["form"]
    assert form.is_valid(), form.errors
    assert form.cleaned_data["preset"] == "last_quarter"
    assert form.cleaned_data["granularity"] == Granularity.WEEK
    assert (form.cleaned_data["period_start"], form.cleaned_data["period_end"]) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 4, 1, tzinfo=UTC),
    )
    assert form.flags() == {
        "include_datasets": True,
        "include_manipulations": False,
        "include_models": True,
        "include_rented_devices": False,
        "include_predictions": False,
    }
    assert list(form.cleaned_data["connections"]) == [second]
    assert Report.objects.count() == before
    body = response.content.decode()
    assert '<option value="last_quarter" selected>Last quarter</option>' in body


def test_without_parameters_the_form_is_as_before_and_this_quarter_is_understood(
    world: World,
) -> None:
    client = client_for(world.owner)
    response = client.get(reverse("report_new"))
    assert not response.context["form"].is_bound
    form = client.get(reverse("report_new") + "?date_from=2026-02-01&date_to=2026-02-28").context[
        "form"
    ]
    assert form.is_valid() and form.cleaned_data["preset"] == "custom"
    response = client.get(reverse("report_new") + "?preset=this_quarter")
    form = response.context["form"]
    assert form.is_valid() and form.cleaned_data["preset"] == "quarter_to_date"
    assert form.cleaned_data["granularity"] == Granularity.MONTH  # the form's default
    assert list(form.cleaned_data["connections"]) == [world.connection]  # all of them
    assert all(form.flags().values())


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("preset=last_century", "Select a valid choice"),
        ("preset=last_month&granularity=year", "Select a valid choice"),
        ("preset=last_month&categories=datasets,gold", "Unknown category “gold” in the link"),
        ("preset=last_month&categories=", "Choose at least one category of usage."),
        ("preset=custom&date_from=2026-13-01&date_to=2026-01-05", "Enter a valid date."),
        ("preset=custom&date_from=2026-03-01", "Enter the last day of the custom range."),
        ("preset=custom&date_from=2026-05-01&date_to=2026-06-30", "cannot be in the future"),
        ("preset=custom&date_from=2026-05-10&date_to=2026-05-01", "must be on or after"),
        ("connections=abc", "is not a valid value"),
        ("connections=99999", "Select a valid choice"),
        ("preset=%00%FF&granularity=" + "x" * 5000, "Select a valid choice"),
    ],
)
def test_bad_parameters_are_form_errors_never_a_500_nor_a_request(
    world: World, query: str, message: str
) -> None:
    before = Report.objects.count()
    response = client_for(world.owner).get(f"{reverse('report_new')}?{query}")
    assert response.status_code == 200
    form = response.context["form"]
    assert not form.is_valid()
    assert message in page_text(response.content).replace("&#x27;", "'").replace("&quot;", '"')
    assert Report.objects.count() == before


def test_someone_elses_connection_in_a_link_is_not_a_choice(world: World) -> None:
    url = f"{reverse('report_new')}?connections={world.admin_connection.pk}"
    form = client_for(world.owner).get(url).context["form"]
    assert "connections" in form.errors
    assert "Admin lab" not in client_for(world.owner).get(url).content.decode()


def test_a_team_form_link_opens_for_the_teams_admins_only(world: World) -> None:
    url = reverse("team_report_new", args=[world.team.pk]) + "?preset=last_quarter&granularity=day"
    for role in ("owner", "team_member", "other_admin", "stranger"):
        assert client_for(world.user(role)).get(url).status_code == 404, role
    response = client_for(None).get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    response = client_for(world.team_admin).get(url)
    assert response.status_code == 200
    form = response.context["form"]
    assert form.is_valid() and form.cleaned_data["granularity"] == Granularity.DAY
    response = client_for(world.team_admin).get(
        reverse("team_report_new", args=[world.team.pk]) + "?preset=nope"
    )
    assert response.status_code == 200 and not response.context["form"].is_valid()


# --- Run again -----------------------------------------------------------------------------------


def test_run_again_keeps_a_preset_relative_and_a_custom_range_fixed(world: World) -> None:
    owner = world.owner
    preset_report = make_done_report(owner, [world.connection])
    Report.objects.filter(pk=preset_report.pk).update(preset="last_quarter")
    preset_report.refresh_from_db()
    assert query_of(links.run_again_url(preset_report)) == {
        "preset": "last_quarter",
        "granularity": "month",
        "connections": str(world.connection.pk),
    }
    custom = world.personal_report  # 2025-10-01 to 2026-01-01, no preset
    Report.objects.filter(pk=custom.pk).update(include_predictions=False)
    custom.refresh_from_db()
    params = query_of(links.run_again_url(custom))
    assert params == {
        "preset": "custom",
        "date_from": "2025-10-01",
        "date_to": "2025-12-31",  # "to" is included
        "granularity": "month",
        "categories": "datasets,manipulations,models,rented_devices",
        "connections": str(world.connection.pk),
    }
    # The link opens the form as the report was asked for.
    form = client_for(owner).get(links.run_again_url(custom)).context["form"]
    assert form.is_valid()
    assert (form.cleaned_data["period_start"], form.cleaned_data["period_end"]) == (
        custom.period_start,
        custom.period_end,
    )
    assert not form.cleaned_data["include_predictions"]
    # A team report runs again on the team's form.
    url = links.run_again_url(world.team_report)
    assert url.startswith(reverse("team_report_new", args=[world.team.pk]) + "?")
    assert "connections" not in query_of(url)


def test_history_and_the_report_page_offer_run_again(world: World) -> None:
    client = client_for(world.owner)
    url = links.run_again_url(world.personal_report).replace("&", "&amp;")
    assert url in client.get(reverse("report_history")).content.decode()
    page = client.get(reverse("report_detail", args=[world.personal_report.pk]))
    assert url in page.content.decode() and "Run again" in page.content.decode()


# --- Saved views ---------------------------------------------------------------------------------


def _form_post(connection_ids: list[int], **fields: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "preset": "last_quarter",
        "granularity": "week",
        "include_datasets": "on",
        "include_models": "on",
        "connections": connection_ids,
        "view_name": "Quarterly review",
    }
    data.update(fields)
    return data


def test_a_person_saves_a_view_and_it_is_one_click_from_the_overview(world: World) -> None:
    client = client_for(world.owner)
    response = client.post(reverse("saved_view_create"), _form_post([world.connection.pk]))
    view = SavedView.objects.get()
    assert (view.owner, view.team, view.name) == (world.owner, None, "Quarterly review")
    # All of the person's connections: kept as "all" (no list), so new ones count too.
    assert view.params == {
        "preset": "last_quarter",
        "granularity": "week",
        "categories": "datasets,models",
    }
    assert response.status_code == 302 and response["Location"] == links.view_url(view)
    assert Report.objects.count() == 3  # the world's: saving requests nothing
    home = client.get(reverse("home")).content.decode()
    assert "Quarterly review" in home and links.view_url(view).replace("&", "&amp;") in home
    assert "Last quarter, weekly, datasets, models" in page_text(home.encode())
    form_page = client.get(links.view_url(view))
    assert form_page.context["form"].is_valid()
    assert "Quarterly review" in form_page.content.decode()  # listed on the form too
    # The same name again replaces the view's choices.
    client.post(
        reverse("saved_view_create"),
        _form_post([world.connection.pk], preset="last_month", granularity="day"),
    )
    view.refresh_from_db()
    assert SavedView.objects.count() == 1 and view.params["preset"] == "last_month"


def test_a_saved_relative_view_follows_the_calendar_and_a_custom_one_stays(world: World) -> None:
    client = client_for(world.owner)
    client.post(reverse("saved_view_create"), _form_post([world.connection.pk]))
    client.post(
        reverse("saved_view_create"),
        _form_post(
            [world.connection.pk],
            preset="custom",
            date_from="2026-02-01",
            date_to="2026-02-28",
            view_name="February",
        ),
    )
    relative = SavedView.objects.get(name="Quarterly review")
    fixed = SavedView.objects.get(name="February")
    assert fixed.params["date_from"] == "2026-02-01" and fixed.params["date_to"] == "2026-02-28"
    with time_machine.travel(datetime(2026, 8, 2, tzinfo=UTC), tick=False):
        client = client_for(world.owner)  # signed in again, months later
        later = client.get(links.view_url(relative)).context["form"]
        assert later.is_valid()
        assert later.cleaned_data["period_start"] == datetime(2026, 4, 1, tzinfo=UTC)
        assert later.cleaned_data["period_end"] == datetime(2026, 7, 1, tzinfo=UTC)
        same = client.get(links.view_url(fixed)).context["form"]
        assert same.cleaned_data["date_from"] == date(2026, 2, 1)
        assert same.cleaned_data["period_end"] == datetime(2026, 3, 1, tzinfo=UTC)


def test_a_subset_of_connections_is_kept(world: World) -> None:
    second = make_connection(world.owner, "Second")
    client_for(world.owner).post(reverse("saved_view_create"), _form_post([second.pk]))
    assert SavedView.objects.get().params["connections"] == str(second.pk)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"view_name": "  "}, "Give the view a name."),
        ({"view_name": "x" * 81}, "at most 80 characters"),
        ({"preset": "custom", "date_from": "2026-06-01", "date_to": "2026-06-02"}, "future"),
        ({"include_datasets": "", "include_models": ""}, "category"),
    ],
)
def test_a_bad_view_is_not_saved_and_the_form_comes_back_as_sent(
    world: World, fields: dict[str, str], message: str
) -> None:
    client = client_for(world.owner)
    data = {k: v for k, v in _form_post([world.connection.pk], **fields).items() if v != ""}
    response = client.post(reverse("saved_view_create"), data, follow=True)
    assert SavedView.objects.count() == 0
    text = page_text(response.content).replace("&#x27;", "'")
    assert "The view was not saved" in text
    assert message in text
    assert response.context["form"]["preset"].value() == data["preset"]


def test_team_views_are_saved_and_opened_by_the_teams_admins_only(world: World) -> None:
    w = world
    url = reverse("team_saved_view_create", args=[w.team.pk])
    data = _form_post([])
    del data["connections"]
    for role in ("owner", "team_member", "other_admin", "stranger"):
        assert client_for(w.user(role)).post(url, data).status_code == 404, role
    assert SavedView.objects.count() == 0
    response = client_for(w.team_admin).post(url, data)
    view = SavedView.objects.get()
    assert (view.team, view.owner) == (w.team, w.team_admin)
    assert response["Location"] == links.view_url(view)
    assert response["Location"].startswith(reverse("team_report_new", args=[w.team.pk]))
    team_page = client_for(w.team_admin).get(reverse("team_detail", args=[w.team.pk]))
    assert "Quarterly review" in team_page.content.decode()
    assert "saved by admin" in page_text(team_page.content)
    member_page = client_for(w.team_member).get(reverse("team_detail", args=[w.team.pk]))
    assert "Quarterly review" not in member_page.content.decode()
    # Another admin of the team may delete it; nobody else may.
    delete = reverse("saved_view_delete", args=[view.pk])
    for role in ("owner", "team_member", "other_admin", "stranger"):
        assert client_for(w.user(role)).post(delete).status_code == 404, role
    second_admin = make_user()
    from reports.teams import roster

    roster.team_member_add(team=w.team, actor=w.team_admin, who=second_admin.username, role="admin")
    assert client_for(second_admin).post(delete).status_code == 302
    assert SavedView.objects.count() == 0


def test_personal_views_are_their_owners_alone(world: World) -> None:
    client_for(world.owner).post(reverse("saved_view_create"), _form_post([world.connection.pk]))
    view = SavedView.objects.get()
    delete = reverse("saved_view_delete", args=[view.pk])
    for role in ("team_admin", "team_member", "stranger"):
        assert client_for(world.user(role)).post(delete).status_code == 404
        assert "Quarterly review" not in client_for(world.user(role)).get("/").content.decode()
    assert client_for(world.owner).get(delete).status_code == 405  # GET changes nothing
    assert client_for(world.owner).post(delete).status_code == 302
    assert not SavedView.objects.exists()


def test_saving_and_deleting_need_a_csrf_token(world: World) -> None:
    client = client_for(world.owner, enforce_csrf_checks=True)
    response = client.post(reverse("saved_view_create"), _form_post([world.connection.pk]))
    assert response.status_code == 403 and not SavedView.objects.exists()
