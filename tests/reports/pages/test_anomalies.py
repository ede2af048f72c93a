"""The anomalies selector (reports/pages/anomalies.py, N5): whose anomalies a scope holds,
that its rows are `anomalies.listed`'s, the filters, who may answer one, and the flags'
blocks (the overview's last 30 days, a period's days), one query each."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
import time_machine
from django.db import connection as db_connection
from django.test.utils import CaptureQueriesContext

from reports.models import Anomaly, Connection
from reports.pages import anomalies as anomaly_pages
from reports.spend import anomalies, pricing
from tests import factories
from tests.support.world import World

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen_time() -> Any:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def found(world: World) -> dict[str, Anomaly]:
    return {
        "main": factories.make_anomaly(world.connection, date(2026, 3, 10)),
        "old": factories.make_anomaly(world.connection, date(2026, 1, 3), feedback="expected"),
        "idle": factories.make_anomaly(
            world.connection, date(2026, 2, 20), kind="idle_storage", column="images_kb_min"
        ),
        "admin": factories.make_anomaly(world.admin_connection, date(2026, 3, 12)),
        "other": factories.make_anomaly(world.other_connection, date(2026, 3, 11)),
    }


def ids(rows: list[dict[str, object]]) -> list[object]:
    return [row["id"] for row in rows]


def test_a_persons_scope_is_their_own_connections_as_listed_writes_them(
    world: World, found: dict[str, Anomaly]
) -> None:
    scope = anomaly_pages.scope_of(world.owner)
    assert scope is not None and scope.team is None and scope.answers_all
    rows = anomaly_pages.rows(scope)
    assert rows == anomalies.listed([world.connection], pricing.default_price_book())
    assert ids(rows) == [found["main"].pk, found["idle"].pk, found["old"].pk]


def test_a_teams_scope_is_for_roles_that_see_its_spend_and_admins_answer(
    world: World, found: dict[str, Anomaly]
) -> None:
    admin = anomaly_pages.scope_of(world.team_admin, world.team.pk)
    viewer = anomaly_pages.scope_of(world.team_viewer, world.team.pk)
    assert admin is not None and viewer is not None
    assert admin.answers_all and not viewer.answers_all
    expected = anomalies.listed(Connection.objects.counting_for_team(world.team), admin.book)
    assert anomaly_pages.rows(admin) == anomaly_pages.rows(viewer) == expected
    assert found["other"].pk not in ids(expected) and found["admin"].pk in ids(expected)
    for who in (world.owner, world.team_member, world.stranger, world.other_admin):
        assert anomaly_pages.scope_of(who, world.team.pk) is None
    # A connection no longer shared drops out of the team's scope at once (M1).
    world.connection.shared_with_teams.remove(world.team)
    assert ids(anomaly_pages.rows(admin)) == [found["admin"].pk]


def test_filters(world: World, found: dict[str, Anomaly]) -> None:
    scope = anomaly_pages.scope_of(world.owner)
    assert scope is not None

    def listed(**filters: Any) -> list[object]:
        return ids(anomaly_pages.rows(scope, anomaly_pages.AnomalyFilter(**filters)))

    assert listed(kind="idle_storage") == [found["idle"].pk]
    assert listed(needs_look=True) == [found["main"].pk, found["idle"].pk]
    assert listed(since=date(2026, 2, 20), until=date(2026, 3, 9)) == [found["idle"].pk]


def test_who_may_answer(world: World, found: dict[str, Anomaly]) -> None:
    assert anomaly_pages.answerable(world.owner, found["main"].pk) is not None
    assert anomaly_pages.answerable(world.team_admin, found["main"].pk) is not None  # shared
    assert anomaly_pages.answerable(world.team_admin, found["other"].pk) is None
    assert anomaly_pages.answerable(world.other_admin, found["other"].pk) is not None
    for who in (world.team_viewer, world.team_member, world.stranger):
        assert anomaly_pages.answerable(who, found["main"].pk) is None
    world.connection.shared_with_teams.remove(world.team)
    assert anomaly_pages.answerable(world.team_admin, found["main"].pk) is None
    answered = anomaly_pages.anomaly_feedback_set(anomaly=found["main"], feedback="expected")
    assert not Anomaly.objects.get(pk=answered.pk).alerting
    with pytest.raises(anomaly_pages.FeedbackError):
        anomaly_pages.anomaly_feedback_set(anomaly=found["main"], feedback="")


def test_the_overviews_block_is_the_last_30_days_in_one_query(
    world: World, found: dict[str, Anomaly]
) -> None:
    book = pricing.default_price_book()
    assert book is not None
    pricing.price_book_versions(book)  # the page has read them already
    with CaptureQueriesContext(db_connection) as queries:
        block = anomaly_pages.recent([world.connection.pk], book, now=NOW)
    assert len(queries) == 1
    assert block["count"] == 2 and block["needs_look"] == 2  # 3 Jan is older than 30 days
    assert [item["day"] for item in block["newest"]] == [date(2026, 3, 10), date(2026, 2, 20)]
    assert str(block["newest"][0]["cause"]).startswith("training on 16 GB workers on Main")


def test_a_periods_causes_by_connection_in_one_query(
    world: World, found: dict[str, Anomaly]
) -> None:
    book = pricing.default_price_book()
    ids_ = [world.connection.pk, world.admin_connection.pk]
    with CaptureQueriesContext(db_connection) as queries:
        between = anomaly_pages.between(ids_, datetime(2026, 3, 1, tzinfo=UTC), NOW)
    assert len(queries) == 1
    causes = anomaly_pages.causes_by_connection(between, book)
    assert set(causes) == {world.connection.pk, world.admin_connection.pk}
    assert causes[world.connection.pk][0].startswith("10 Mar: training on 16 GB workers on Main")
    # [start, end): a period ending at midnight leaves that day out.
    march_10 = anomaly_pages.between(
        ids_, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    )
    assert march_10 == []
    assert anomaly_pages.between([], datetime(2026, 3, 1, tzinfo=UTC), NOW) == []
