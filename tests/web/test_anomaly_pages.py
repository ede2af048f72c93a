"""The anomalies shown (N5): the Anomalies page, its filters, answering one (with and without
htmx), its CSV (C1, C5), the command listing exactly the page's rows, and the flags where
spend is shown: the overview, the team page per member, a report's period; one query each.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from reports.models import Anomaly
from reports.pages import anomalies as anomaly_pages
from tests import factories
from tests.support.clock import clock_held_at
from tests.support.web import client_for, page_text
from tests.support.world import OWNER_TOKEN, World

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_frozen_time = clock_held_at(NOW)
URL = "/anomalies/"


@pytest.fixture
def found(world: World) -> dict[str, Anomaly]:
    """The owner's Main: a spike on 10 March and idle storage on 20 February; the admin's
    shared "Admin lab": a spike on 12 March; the other team's lab: a spike on 11 March."""
    return {
        "main": factories.make_anomaly(world.connection, date(2026, 3, 10)),
        "idle": factories.make_anomaly(
            world.connection,
            date(2026, 2, 20),
            kind="idle_storage",
            column="models_kb_min",
            actual=5e9,
        ),
        "admin": factories.make_anomaly(world.admin_connection, date(2026, 3, 12)),
        "other": factories.make_anomaly(world.other_connection, date(2026, 3, 11)),
    }


def ids_on(body: bytes) -> list[int]:
    text = body.decode()
    return [int(part.split('"', 1)[0]) for part in text.split('<tr id="anomaly-')[1:]]


# --- The page -----------------------------------------------------------------------------------


def test_a_person_sees_their_own_connections_anomalies_newest_first(
    world: World, found: dict[str, Anomaly]
) -> None:
    response = client_for(world.owner).get(URL)
    assert response.status_code == 200
    assert ids_on(response.content) == [found["main"].pk, found["idle"].pk]
    text = page_text(response.content)
    assert "2026-03-10 Main Spike training on 16 GB workers on Main: EUR" in text
    assert "Idle storage model storage on Main: EUR" in text
    assert "Needs a look" in text and text.count("Not expected") == 2  # a pair of buttons each
    assert OWNER_TOKEN[-4:] not in text  # no token ending, no account name
    assert world.connection.account_name not in text


def test_a_teams_admins_and_viewers_see_its_counting_connections_members_do_not(
    world: World, found: dict[str, Anomaly]
) -> None:
    team = f"{URL}?team={world.team.pk}"
    admin = client_for(world.team_admin).get(team)
    viewer = client_for(world.team_viewer).get(team)
    assert ids_on(admin.content) == ids_on(viewer.content)
    assert ids_on(admin.content) == [found["admin"].pk, found["main"].pk, found["idle"].pk]
    # Admins answer for the team's connections; a viewer answers nothing.
    assert page_text(admin.content).count("Not expected") == 3
    assert "Not expected" not in page_text(viewer.content).replace("Not expected:", "")
    assert page_text(viewer.content).count("Its owner answers") == 3
    for who in (world.owner, world.team_member, world.stranger):
        assert client_for(who).get(team).status_code == 404
    # A plain member sees only their own connections' anomalies.
    assert ids_on(client_for(world.team_member).get(URL).content) == []
    assert "No anomalies yet" in page_text(client_for(world.team_member).get(URL).content)


def test_filters_kind_and_needs_a_look(world: World, found: dict[str, Anomaly]) -> None:
    client = client_for(world.owner)
    assert ids_on(client.get(URL, {"kind": "idle_storage"}).content) == [found["idle"].pk]
    Anomaly.objects.filter(pk=found["main"].pk).update(feedback="expected")
    assert ids_on(client.get(URL, {"look": "1"}).content) == [found["idle"].pk]
    none = client.get(URL, {"look": "1", "kind": "spike"})
    assert "No anomaly matches these filters" in page_text(none.content)
    for bad in ({"kind": "huge"}, {"look": "yes"}, {"team": "x"}, {"team": "9" * 30}):
        response = client.get(URL, bad)
        assert response.status_code == 400 and response.content.startswith(b"?")


def test_the_page_is_paginated_in_a_constant_number_of_queries(world: World) -> None:
    client = client_for(world.owner)
    client.get(URL)  # the session

    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured)

    factories.make_anomaly(world.connection, date(2026, 1, 1))
    one = queries()
    first = date(2025, 1, 1).toordinal()
    for n in range(58):
        factories.make_anomaly(world.connection, date.fromordinal(first + n))
    assert queries() == one
    body = client.get(URL).content
    assert len(ids_on(body)) == anomaly_pages.PAGE_SIZE and "Page 1 of 2" in page_text(body)
    assert len(ids_on(client.get(URL, {"page": 2}).content)) == 59 - anomaly_pages.PAGE_SIZE


# --- Answering ----------------------------------------------------------------------------------


def feedback_url(anomaly: Anomaly) -> str:
    return reverse("anomaly_feedback", args=[anomaly.pk])


def test_the_owner_marks_one_expected_and_it_stops_alerting(
    world: World, found: dict[str, Anomaly]
) -> None:
    response = client_for(world.owner).post(feedback_url(found["main"]), {"feedback": "expected"})
    assert response.status_code == 302 and response["Location"] == URL
    anomaly = Anomaly.objects.get(pk=found["main"].pk)
    assert anomaly.feedback == "expected" and anomaly.alerting is False
    assert "Expected" in page_text(client_for(world.owner).get(URL).content)


def test_htmx_swaps_the_row_and_a_teams_admin_answers_for_a_shared_connection(
    world: World, found: dict[str, Anomaly]
) -> None:
    client = client_for(world.team_admin)
    response = client.post(
        feedback_url(found["main"]),
        {"feedback": "not_expected", "team": str(world.team.pk)},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert body.strip().startswith(f'<tr id="anomaly-{found["main"].pk}"')
    assert "<html" not in body and "Not expected" in body
    assert Anomaly.objects.get(pk=found["main"].pk).feedback == "not_expected"


@pytest.mark.parametrize("who", ["team_viewer", "team_member", "other_admin", "stranger"])
def test_anyone_else_gets_404_and_nothing_changes(
    world: World, found: dict[str, Anomaly], who: str
) -> None:
    for anomaly in (found["main"], found["admin"]):
        response = client_for(world.user(who)).post(feedback_url(anomaly), {"feedback": "expected"})
        assert response.status_code == 404
    assert set(Anomaly.objects.values_list("feedback", flat=True)) == {""}


def test_an_answer_not_offered_is_a_400_and_changes_nothing(
    world: World, found: dict[str, Anomaly]
) -> None:
    response = client_for(world.owner).post(feedback_url(found["main"]), {"feedback": "maybe"})
    assert response.status_code == 400
    assert Anomaly.objects.get(pk=found["main"].pk).feedback == ""
    assert client_for(world.owner).get(feedback_url(found["main"])).status_code == 405


def test_the_buttons_post_with_a_csrf_token(world: World, found: dict[str, Anomaly]) -> None:
    body = client_for(world.owner).get(URL).content.decode()
    form = body.split(f'action="{feedback_url(found["main"])}"', 1)[1].split("</form>", 1)[0]
    assert 'name="csrfmiddlewaretoken"' in form and 'hx-post="' in body


# --- The CSV ------------------------------------------------------------------------------------


def csv_rows(response: Any) -> list[dict[str, str]]:
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_csv_has_the_pages_rows_guarded_and_named(
    world: World, found: dict[str, Anomaly]
) -> None:
    world.connection.label = "=HYPERLINK(1)"
    world.connection.save(update_fields=["label"])
    response = client_for(world.owner).get("/anomalies.csv")
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    assert response["Content-Disposition"] == 'attachment; filename="osai-usage-anomalies.csv"'
    rows = csv_rows(response)
    assert [int(r["id"]) for r in rows] == [found["main"].pk, found["idle"].pk]
    assert rows[0]["connection"] == "'=HYPERLINK(1)"  # C1
    assert rows[0]["currency"] == "EUR" and rows[0]["alerting"] == "true"
    team = client_for(world.team_viewer).get(f"/anomalies.csv?team={world.team.pk}")
    assert team["Content-Disposition"].endswith(f'anomalies-team-{world.team.pk}.csv"')
    assert len(csv_rows(team)) == 3
    refused = client_for(world.team_member).get(f"/anomalies.csv?team={world.team.pk}")
    assert refused.status_code == 404
    body = b"".join(team.streaming_content) if team.streaming else team.content
    assert OWNER_TOKEN.encode() not in body


# --- The command lists the page's rows ----------------------------------------------------------


def command_ids(*args: str) -> list[int]:
    out = io.StringIO()
    call_command("anomalies", *args, "--json", stdout=out)
    return [row["id"] for row in json.loads(out.getvalue())]


def test_the_command_lists_exactly_what_the_page_lists(
    world: World, found: dict[str, Anomaly]
) -> None:
    own = ids_on(client_for(world.owner).get(URL).content)
    assert command_ids("--user", "owner") == own and own
    team = ids_on(client_for(world.team_admin).get(f"{URL}?team={world.team.pk}").content)
    assert command_ids("--user", "admin", "--team", "Vision") == team and len(team) == 3


# --- Flags where spend is shown -----------------------------------------------------------------


def test_the_overview_counts_the_last_30_days_in_one_query(
    world: World, found: dict[str, Anomaly]
) -> None:
    client = client_for(world.owner)
    text = page_text(client.get("/").content)
    assert "2 anomalies in the last 30 days" in text
    assert "10 Mar : training on 16 GB workers on Main" in text.replace("10 Mar:", "10 Mar :")
    assert "All anomalies" in text

    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            client.get("/")
        return len(captured)

    before = queries()
    for day in range(1, 9):
        factories.make_anomaly(world.connection, date(2026, 3, day), column="training_seconds_8gb")
    assert queries() == before
    assert "10 anomalies in the last 30 days" in page_text(client.get("/").content)


def test_the_overview_says_nothing_without_anomalies(world: World) -> None:
    body = client_for(world.owner).get("/").content.decode()
    assert 'id="anomalies-heading"' not in body and "in the last 30 days" not in body


def test_the_team_page_flags_a_members_row_with_the_causes(
    world: World, found: dict[str, Anomaly]
) -> None:
    url = reverse("team_detail", args=[world.team.pk])
    admin = page_text(client_for(world.team_admin).get(url).content)
    assert "owner" in admin and "1 anomaly" in admin
    assert "10 Mar: training on 16 GB workers on Main: EUR" in admin
    assert "12 Mar: training on 16 GB workers on Admin lab" in admin
    viewer = client_for(world.team_viewer).get(url).content.decode()
    assert "10 Mar: training on 16 GB workers on Main" in page_text(viewer.encode())
    assert world.connection.account_name not in viewer and "…" + OWNER_TOKEN[-4:] not in viewer
    # A member sees their own part only: their own connection's flag, nobody else's.
    member = page_text(client_for(world.owner).get(url).content)
    assert "on Main" in member and "Admin lab:" not in member
    assert 'class="anomaly-flag"' not in client_for(world.team_member).get(url).content.decode()


def test_the_team_page_adds_one_query(world: World, found: dict[str, Anomaly]) -> None:
    url = reverse("team_detail", args=[world.team.pk])
    client = client_for(world.team_admin)
    client.get(url)

    def queries() -> int:
        with CaptureQueriesContext(db_connection) as captured:
            client.get(url)
        return len(captured)

    before = queries()
    for day in range(1, 9):
        factories.make_anomaly(world.admin_connection, date(2026, 3, day))
    assert queries() == before


def test_a_report_names_the_anomalies_of_its_connections_and_period(world: World) -> None:
    inside = factories.make_anomaly(world.connection, date(2025, 11, 5))
    factories.make_anomaly(world.connection, date(2026, 1, 5))  # after its period
    factories.make_anomaly(world.admin_connection, date(2025, 11, 6))  # not its connection
    url = reverse("report_detail", args=[world.personal_report.pk])
    text = page_text(client_for(world.owner).get(url).content)
    assert "1 anomaly in this period" in text
    assert f"{inside.day:%d %b %Y} : training on 16 GB workers on Main: EUR 210.00" in text
    assert "Admin lab" not in text
    cost = page_text(client_for(world.owner).get(url + "?view=cost").content)
    assert "1 anomaly in this period" in cost
