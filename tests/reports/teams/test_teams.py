"""Teams: scoping of every team page and export (S2), tokens never shown (S3), spend per member."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports import formatting
from reports.access import counted_buckets
from reports.metrics import STAGE_LABELS
from reports.models import (
    Bucket,
    Budget,
    Connection,
    Invitation,
    Membership,
    PriceBook,
    Report,
    ReportBucket,
    Team,
)
from reports.pages import charts
from reports.spend import budgets, pricing
from reports.spend.usage import USAGE_COLUMNS
from reports.teams import TeamError, member_spend, sharing
from tests.factories import (
    make_connection,
    make_done_bucket,
    make_done_report,
    make_team,
    make_user,
    share_with,
)
from tests.support import figures
from tests.support.world import OWNER_TOKEN, World

JAN = datetime(2026, 1, 1, tzinfo=UTC)
APR = datetime(2026, 4, 1, tzinfo=UTC)


def client_for(user: Any | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


# --- S2: the authorization matrix ------------------------------------------------------------

ROLES = (
    "owner",
    "team member",
    "team viewer",
    "team admin",
    "other team admin",
    "unrelated",
    "anonymous",
)
# What the team's roles may do (reports/access.py, CAPABILITIES); "owner" is whoever owns the
# object of a case (the requesting admin, for the team's own objects).
SEES_TEAM = {"owner", "team member", "team viewer", "team admin"}
SHARES = {"owner", "team member", "team admin"}
READS_SPEND = {"owner", "team viewer", "team admin"}  # reports, budgets, every CSV
RUNS_TEAM = {"owner", "team admin"}


def role_users(w: World, owner: Any) -> dict[str, Any]:
    return {
        "owner": owner,
        "team member": w.team_member,
        "team viewer": w.team_viewer,
        "team admin": w.team_admin,
        "other team admin": w.other_admin,
        "unrelated": w.stranger,
        "anonymous": None,
    }


def _team_state(w: World) -> Any:
    """What a refused request must leave as it was: the team's roles, opt-ins and sharing, its
    price book, its budgets, its invitations."""
    return (
        sorted(
            Membership.objects.filter(team=w.team).values_list("user_id", "role", "team_digest")
        ),
        sorted(Connection.objects.filter(shared_with_teams=w.team).values_list("pk", flat=True)),
        Team.objects.get(pk=w.team.pk).price_book_id,
        Team.objects.get(pk=w.team.pk).require_two_factor,
        sorted(Budget.objects.filter(team=w.team).values_list("pk", "amount")),
        # Its invitations (inviting someone is how the team page adds people: M6).
        sorted(
            Invitation.objects.filter(team=w.team).values_list(
                "pk", "withdrawn_at", "accepted_at", "declined_at"
            )
        ),
    )


def _restore(w: World, budget: Budget) -> None:
    """Put the team back as the world built it, so every cell starts from the same state."""
    roles = {
        w.team_admin: Membership.Role.ADMIN,
        w.owner: Membership.Role.MEMBER,
        w.team_member: Membership.Role.MEMBER,
        w.team_viewer: Membership.Role.VIEWER,
    }
    Membership.objects.filter(team=w.team).exclude(user__in=list(roles)).delete()
    for user, role in roles.items():
        Membership.objects.update_or_create(
            team=w.team, user=user, defaults={"role": role, "team_digest": False}
        )
    share_with(w.team, w.admin_connection, w.connection)
    Team.objects.filter(pk=w.team.pk).update(price_book=None, require_two_factor=False)
    budget.save()  # back as it was, or again if a cell removed it


def test_authorization_matrix_for_team_views_and_exports(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    team_url = {"pk": w.team.pk}
    team_report = {"pk": w.team.pk, "report_pk": w.team_report.pk}
    book = PriceBook.objects.order_by("pk").first()
    assert book is not None
    budget = budgets.budget_set(
        actor=w.team_admin, scope="team", team=w.team, amount="100", emails=[]
    )
    budget_form = {"scope": "team", "team": w.team.pk, "amount": "250", "thresholds": "50, 80"}
    own_budget = budgets.budget_set(actor=w.owner, scope="person", amount="10", emails=[])
    # (url, method, data, owner, roles allowed) — everyone else signed in gets 404 and the team
    # stays as it was; anonymous people are sent to the login page.
    cases = [
        (reverse("team_detail", kwargs=team_url), "get", None, w.team_admin, SEES_TEAM),
        (reverse("team_sharing", kwargs=team_url), "get", None, w.team_admin, SHARES),
        (
            reverse("team_sharing", kwargs=team_url),
            "post",
            {"connections": []},
            w.team_admin,
            SHARES,
        ),
        (
            reverse("team_report_new", kwargs=team_url),
            "post",
            {
                "preset": "custom",
                "date_from": "2026-01-01",
                "date_to": "2026-03-31",
                "granularity": "month",
                "include_models": "on",
            },
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_member_add", kwargs=team_url),
            "post",
            {"who": "someone@example.com", "role": "viewer"},
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_member_role", kwargs={**team_url, "user_pk": w.owner.pk}),
            "post",
            {"role": "viewer"},
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_member_remove", kwargs={**team_url, "user_pk": w.owner.pk}),
            "post",
            None,
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_price_book", kwargs=team_url),
            "post",
            {"price_book": book.pk},
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_two_factor", kwargs=team_url),
            "post",
            {"require_two_factor": "on"},
            w.team_admin,
            RUNS_TEAM,
        ),
        (
            reverse("team_digest", kwargs=team_url),
            "post",
            {"team_digest": "on"},
            w.team_viewer,
            {"owner", "team viewer"},
        ),
        (
            reverse("team_report_detail", kwargs=team_report),
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (
            reverse("team_report_detail", kwargs=team_report) + "?view=cost",
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (
            reverse("team_report_export_csv", kwargs=team_report),
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (
            reverse("report_export_csv", kwargs={"pk": w.team_report.pk}),
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (
            reverse("spend_export_csv") + f"?from=2026-03-01&to=2026-03-15&team={w.team.pk}",
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (reverse("budget_detail", args=[budget.pk]), "get", None, w.team_admin, READS_SPEND),
        # A budget's CSVs (its standing, its alert log): the team's roles that read its spend
        # and download its CSVs; a personal budget's, its owner alone.
        (reverse("budget_export_csv", args=[budget.pk]), "get", None, w.team_admin, READS_SPEND),
        (
            reverse("budget_alert_log_csv", args=[budget.pk]),
            "get",
            None,
            w.team_admin,
            READS_SPEND,
        ),
        (reverse("budget_export_csv", args=[own_budget.pk]), "get", None, w.owner, {"owner"}),
        (reverse("budget_alert_log_csv", args=[own_budget.pk]), "get", None, w.owner, {"owner"}),
        (
            reverse("budget_detail", args=[budget.pk]),
            "post",
            budget_form,
            w.team_admin,
            RUNS_TEAM,
        ),
        (reverse("budget_delete", args=[budget.pk]), "post", None, w.team_admin, RUNS_TEAM),
        (
            reverse("report_export_csv", kwargs={"pk": w.personal_report.pk}),
            "get",
            None,
            w.owner,
            {"owner"},
        ),
        # Another team's report through this team's URL, and the other way round.
        (
            reverse("team_report_detail", kwargs={"pk": w.team.pk, "report_pk": w.other_report.pk}),
            "get",
            None,
            w.other_admin,
            set(),
        ),
        (
            reverse(
                "team_report_export_csv",
                kwargs={"pk": w.other_team.pk, "report_pk": w.team_report.pk},
            ),
            "get",
            None,
            w.team_admin,
            set(),
        ),
        (reverse("team_detail", kwargs={"pk": 999_999}), "get", None, w.team_admin, set()),
    ]
    cells = 0
    failures: list[str] = []
    for url, method, data, owner, allowed in cases:
        for role, user in role_users(w, owner).items():
            # Some cells change the team: restore it so every cell sees the same world.
            _restore(w, budget)
            before = _team_state(w)
            response = getattr(client_for(user), method)(url, data or {})
            if user is None:
                expected = "login"
                ok = response.status_code == 302 and response["Location"].startswith(
                    reverse("login")
                )
                ok = ok and _team_state(w) == before
            elif role in allowed:
                expected = "allowed"
                ok = response.status_code in (200, 302) and (
                    response.status_code == 200 or "login" not in response["Location"]
                )
                if method == "post" and url != reverse("team_sharing", kwargs=team_url):
                    # Each allowed change is made (sharing nothing again changes nothing).
                    ok = ok and (_team_state(w) != before or "report" in url)
            else:
                expected = "404, nothing changed"
                ok = response.status_code == 404 and _team_state(w) == before
            cells += 1
            if not ok:
                failures.append(
                    f"{method.upper()} {url} as {role}: {response.status_code}, expected {expected}"
                )
    figures.matrix("S2 (teams+exports)", cells, failures, capsys)
    assert not failures, "\n".join(failures)


def test_a_member_sees_no_team_reports_and_no_request_form(world: World) -> None:
    response = client_for(world.owner).get(reverse("team_detail", args=[world.team.pk]))
    assert response.status_code == 200
    content = response.content.decode()
    assert f'href="{reverse("report_detail", args=[world.team_report.pk])}"' not in content
    assert reverse("team_report_new", args=[world.team.pk]) not in content
    assert f'action="{reverse("team_member_add", args=[world.team.pk])}"' not in content
    admin_page = client_for(world.team_admin).get(reverse("team_detail", args=[world.team.pk]))
    admin_content = admin_page.content.decode()
    assert f'href="{reverse("report_detail", args=[world.team_report.pk])}"' in admin_content
    assert reverse("team_report_new", args=[world.team.pk]) in admin_content
    assert f'action="{reverse("team_member_add", args=[world.team.pk])}"' in admin_content


def test_the_teams_address_of_a_report_leads_its_admins_to_the_report_page(world: World) -> None:
    w = world
    url = reverse("team_report_detail", args=[w.team.pk, w.team_report.pk])
    response = client_for(w.team_admin).get(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("report_detail", args=[w.team_report.pk])
    assert client_for(w.owner).get(url).status_code == 404  # a plain member
    assert client_for(w.owner).get(response["Location"]).status_code == 404


def test_team_list_shows_the_users_teams_with_role(world: World) -> None:
    response = client_for(world.team_admin).get(reverse("team_list"))
    assert response.status_code == 200
    assert [(m.team.name, m.role) for m in response.context["memberships"]] == [
        ("Vision", Membership.Role.ADMIN)
    ]
    assert "Team admin" in response.content.decode()
    assert "Elsewhere" not in response.content.decode()
    stranger = client_for(world.stranger).get(reverse("team_list")).context["memberships"]
    assert [(m.team.name, m.role) for m in stranger] == [("Elsewhere", Membership.Role.MEMBER)]
    in_no_team = client_for(make_user()).get(reverse("team_list"))
    assert list(in_no_team.context["memberships"]) == []


# --- S3: never a token beyond its last 4 characters --------------------------------------------


def test_team_pages_never_show_a_members_token(world: World) -> None:
    w = world  # the owner's connection has a token and a JWT, both canaries
    pages = [
        (w.team_admin, reverse("team_detail", args=[w.team.pk])),
        (w.owner, reverse("team_detail", args=[w.team.pk])),
        (w.owner, reverse("team_sharing", args=[w.team.pk])),
        (w.team_admin, reverse("report_detail", args=[w.team_report.pk])),
        (w.team_admin, reverse("report_detail", args=[w.team_report.pk]) + "?view=cost"),
        (w.team_admin, reverse("report_charts", args=[w.team_report.pk]) + "?view=cost"),
        (w.team_admin, reverse("team_report_export_csv", args=[w.team.pk, w.team_report.pk])),
        (w.team_admin, reverse("report_export_csv", args=[w.team_report.pk])),
    ]
    secrets = [
        OWNER_TOKEN,
        OWNER_TOKEN[:-4],
        "CANARY",
        w.connection.token_encrypted,
        w.connection.jwt_encrypted,
        "eyJ",
    ]
    hits = 0
    for user, url in pages:
        response = client_for(user).get(url)
        assert response.status_code == 200, url
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode()
        hits += sum(secret in text for secret in secrets)
    assert hits == 0
    detail = client_for(w.team_admin).get(reverse("team_detail", args=[w.team.pk])).content.decode()
    assert "…9f2c" in detail  # the last four, and only them
    assert "Main" in detail and "owner@sandbox" in detail
    figures.figure("S3 canary hits (team pages)", hits)


# --- Sharing -----------------------------------------------------------------------------------


def test_a_member_chooses_which_own_connections_the_team_may_use(world: World) -> None:
    w = world
    spare = make_connection(w.owner, "Spare")
    url = reverse("team_sharing", args=[w.team.pk])
    response = client_for(w.owner).post(url, {"connections": [spare.pk]})
    assert response.status_code == 302
    assert response["Location"] == reverse("team_detail", args=[w.team.pk])
    assert set(sharing.team_shared_connections(w.team)) == {w.admin_connection, spare}

    # Someone else's connection is not a choice: nothing changes.
    response = client_for(w.owner).post(url, {"connections": [w.admin_connection.pk]})
    assert response.status_code == 200
    assert "connections" in response.context["form"].errors
    assert set(sharing.team_shared_connections(w.team)) == {w.admin_connection, spare}
    assert not w.admin_connection.shared_with_teams.exclude(pk=w.team.pk).exists()


def test_team_sharing_set_refuses_other_peoples_connections(world: World) -> None:
    with pytest.raises(TeamError):
        sharing.team_sharing_set(
            team=world.team, user=world.owner, connections=[world.admin_connection]
        )
    with pytest.raises(TeamError):
        sharing.team_sharing_set(team=world.team, user=world.stranger, connections=[])


def test_connections_of_people_who_left_no_longer_count(world: World) -> None:
    w = world
    Membership.objects.filter(team=w.team, user=w.owner).delete()
    assert list(sharing.team_shared_connections(w.team)) == [w.admin_connection]
    spend = member_spend.team_spend(w.team_report)
    assert [m.member for m in spend.members] == ["admin"]
    csv_text = b"".join(
        client_for(w.team_admin)
        .get(reverse("team_report_export_csv", args=[w.team.pk, w.team_report.pk]))
        .streaming_content
    ).decode()
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {(r["member"], r["connection"]) for r in rows} == {("admin", "Admin lab")}
    assert "Main" not in csv_text


# --- Requesting a team report -----------------------------------------------------------------


def test_team_admin_requests_a_report_over_the_shared_connections(world: World) -> None:
    w = world
    outsider = make_connection(w.stranger, "Outsider")
    share_with(w.team, outsider)  # shared by someone who is not a member: ignored
    data = {
        "preset": "custom",
        "date_from": "2026-01-01",
        "date_to": "2026-03-31",
        "granularity": "month",
        **{
            f: "on"
            for f in (
                "include_datasets",
                "include_manipulations",
                "include_models",
                "include_rented_devices",
                "include_predictions",
            )
        },
    }
    response = client_for(w.team_admin).post(reverse("team_report_new", args=[w.team.pk]), data)
    report = Report.objects.exclude(
        pk__in=[w.team_report.pk, w.personal_report.pk, w.other_report.pk]
    ).get()
    assert response.status_code == 302
    assert response["Location"] == reverse("report_detail", args=[report.pk])
    assert (report.owner, report.team) == (w.team_admin, w.team)
    assert set(report.connections.all()) == {w.admin_connection, w.connection}
    assert (report.period_start, report.period_end) == (JAN, APR)
    # The worker has nothing to do for the report itself: every closed bucket was reused.
    assert set(counted_buckets(report)) == set(counted_buckets(w.team_report))
    assert report.state == Report.State.DONE


def test_team_report_needs_a_shared_connection_and_says_so(world: World) -> None:
    w = world
    w.admin_connection.shared_with_teams.clear()
    w.connection.shared_with_teams.clear()
    before = Report.objects.count()
    response = client_for(w.team_admin).post(
        reverse("team_report_new", args=[w.team.pk]),
        {"preset": "last_month", "granularity": "month", "include_models": "on"},
    )
    assert response.status_code == 400
    assert "No member shares a connection" in response.content.decode()
    assert Report.objects.count() == before


def test_team_report_form_rejects_bad_dates_with_a_message(world: World) -> None:
    response = client_for(world.team_admin).post(
        reverse("team_report_new", args=[world.team.pk]),
        {
            "preset": "custom",
            "date_from": "2026-03-01",
            "date_to": "2026-01-01",
            "granularity": "month",
            "include_models": "on",
        },
    )
    assert response.status_code == 400
    assert "must be on or after" in response.content.decode()


def test_team_report_new_opens_the_form_on_get_and_requests_nothing(world: World) -> None:
    """GET is the team's form (pre-filled from a link: tests/web/test_links.py), for its
    admins only; only POST requests a report (S4)."""
    url = reverse("team_report_new", args=[world.team.pk])
    before = Report.objects.count()
    response = client_for(world.team_admin).get(url + "?preset=last_month")
    assert response.status_code == 200
    assert response.context["form"]["preset"].value() == "last_month"
    assert Report.objects.count() == before
    assert client_for(world.team_member).get(url).status_code == 404


# --- Spend per member --------------------------------------------------------------------------


def test_team_report_page_shows_spend_per_member_and_team_totals(world: World) -> None:
    w = world
    url = reverse("report_detail", args=[w.team_report.pk])
    response = client_for(w.team_admin).get(url + "?view=cost")
    assert response.status_code == 200
    members = response.context["members"]
    assert [row.member for row in members.rows] == ["admin", "owner"]
    assert members.columns == [*STAGE_LABELS.values(), "Total (EUR)"]
    # Both connections carry the factory's usage(seed) for months 1..3: equal spend.
    assert members.rows[0].values == members.rows[1].values
    expected = pricing.sum_costs(
        pricing.period_costs(
            {c: getattr(b, c) for c in USAGE_COLUMNS},
            b.period_start,
            b.period_end,
            pricing.price_book_for(w.team_report),
        )
        for b in Bucket.objects.filter(report_buckets__report=w.team_report)
    )
    team_total = formatting.money(expected["total"], "EUR").removeprefix("EUR ")
    half = formatting.money(expected["total"] / 2, "EUR").removeprefix("EUR ")
    assert (members.team.total, members.rows[0].total) == (team_total, half)
    total_tile = next(t for t in response.context["tiles"] if t.label == "Total")
    assert total_tile.value == team_total  # the page's total is the members' total
    content = response.content.decode()
    assert "Example prices" in content
    assert "Jan 2026" in content and "Mar 2026" in content
    for chart in ("members-by-kind", "members-over-time", "compute", "cumulative", "share"):
        assert f'data-figure="figure-{chart}"' in content and f'id="figure-{chart}"' in content
    by_kind = next(c for c in members.charts if c.id == "figure-members-by-kind")
    assert [t["name"] for t in by_kind.figure["data"]] == list(STAGE_LABELS.values())
    assert by_kind.figure["data"][0]["x"] == ["admin", "owner"]

    usage = client_for(w.team_admin).get(url)
    assert usage.context["mode"] == "usage"
    usage_content = usage.content.decode()
    assert "Training (GPU-hours)" in usage_content and "Compute hours per member" in usage_content


def test_team_report_compares_with_the_previous_period_like_a_personal_one(world: World) -> None:
    w = world
    day = datetime(2026, 1, 1, tzinfo=UTC)
    week = datetime(2026, 1, 8, tzinfo=UTC)
    both = [w.admin_connection, w.connection]
    first = make_done_report(
        w.team_admin, both, team=w.team, start=day, end=week, granularity="day"
    )
    second = make_done_report(
        w.team_admin,
        both,
        team=w.team,
        start=week,
        end=datetime(2026, 1, 15, tzinfo=UTC),
        granularity="day",
    )
    # Jan 1-7 is finished for both members (from the first report): known, no OSAI call.
    page = client_for(w.team_admin).get(reverse("report_detail", args=[second.pk]) + "?view=cost")
    assert page.context["previous_known"] is True
    total = next(t for t in page.context["tiles"] if t.label == "Total")
    assert total.change.endswith("vs 2026-01-01 \u2013 2026-01-07")
    first_page = client_for(w.team_admin).get(reverse("report_detail", args=[first.pk]))
    assert first_page.context["previous_known"] is False  # Dec 25-31, 2025 is unknown


def test_open_bucket_is_marked_preliminary(world: World) -> None:
    w = world
    report = Report.objects.create(
        owner=w.team_admin,
        team=w.team,
        period_start=JAN,
        period_end=datetime(2026, 2, 1, tzinfo=UTC),
    )
    bucket = make_done_bucket(
        w.admin_connection, JAN, datetime(2026, 1, 20, tzinfo=UTC), closed=False
    )
    ReportBucket.objects.create(report=report, bucket=bucket)
    spend = member_spend.team_spend(report)
    assert [c.preliminary for c in spend.cells] == [True]
    page = client_for(w.team_admin).get(reverse("report_detail", args=[report.pk]))
    assert "preliminary" in page.content.decode()


def test_team_report_page_queries_do_not_grow_with_buckets(
    world: World, django_assert_max_num_queries: Any
) -> None:
    w = world
    url = reverse("report_detail", args=[w.team_report.pk])
    client = client_for(w.team_admin)
    client.get(url)
    with CaptureQueriesContext(connection) as small:
        client.get(url + "?view=cost")
    big = make_done_report(
        w.team_admin,
        [w.admin_connection, w.connection],
        team=w.team,
        granularity="day",
        start=datetime(2025, 1, 1, tzinfo=UTC),
        end=datetime(2025, 4, 1, tzinfo=UTC),
    )
    with django_assert_max_num_queries(len(small.captured_queries)):
        client.get(reverse("report_detail", args=[big.pk]) + "?view=cost")


# --- Properties: team total = sum of members, whatever the order --------------------------------

member_usage = st.lists(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=4),
    min_size=1,
    max_size=4,
)


@pytest.mark.django_db
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(member_usage, st.randoms())
def test_team_total_is_the_sum_of_members_totals_in_any_bucket_order(
    seeds_per_member: list[list[int]], rnd: random.Random
) -> None:
    with transaction.atomic():
        admin = make_user()
        team = make_team(admins=[admin])
        months = max(len(s) for s in seeds_per_member)
        periods = [
            (datetime(2025, m, 1, tzinfo=UTC), datetime(2025, m + 1, 1, tzinfo=UTC))
            for m in range(1, months + 1)
        ]
        plan = []
        for i, seeds in enumerate(seeds_per_member):
            member = make_user()
            Membership.objects.create(team=team, user=member)
            conn = make_connection(member, f"Conn {i}")
            share_with(team, conn)
            plan += [(conn, periods[j], seed) for j, seed in enumerate(seeds)]
        rnd.shuffle(plan)  # bucket rows are written (and get their ids) in a random order
        report = Report.objects.create(
            owner=admin, team=team, period_start=periods[0][0], period_end=periods[-1][1]
        )
        for conn, (s, e), seed in plan:
            ReportBucket.objects.create(
                report=report, bucket=make_done_bucket(conn, s, e, seed=seed)
            )
        spend = member_spend.team_spend(report)
        assert spend.team.costs == pricing.sum_costs(m.costs for m in spend.members)
        assert spend.team.costs["total"] == sum(
            (m.costs["total"] for m in spend.members), Decimal(0)
        )
        # The same as pricing each bucket on its own and adding in a random order.
        buckets = list(Bucket.objects.filter(report_buckets__report=report))
        rnd.shuffle(buckets)
        per_bucket = pricing.sum_costs(
            pricing.period_costs(
                {c: getattr(b, c) for c in USAGE_COLUMNS},
                b.period_start,
                b.period_end,
                spend.price_book,
            )
            for b in buckets
        )
        assert spend.team.costs["total"] == per_bucket["total"]
        transaction.set_rollback(True)


def test_team_chart_has_one_stacked_trace_per_member() -> None:
    figure = charts.stacked_bars_figure(
        ["2026-01", "2026-02"],
        {"alice": [1.5, 2.0], "bob": [0.0, 4.25]},
        unit="EUR",
        title="Cost",
        x_title="Month (UTC)",
    )
    assert [(t.type, t.name, list(t.x), list(t.y)) for t in figure.data] == [
        ("bar", "alice", ["2026-01", "2026-02"], [1.5, 2.0]),
        ("bar", "bob", ["2026-01", "2026-02"], [0.0, 4.25]),
    ]
    assert figure.layout.barmode == "stack"
    assert figure.layout.yaxis.title.text == "EUR"
    data = charts.figure_json(figure)
    assert data["data"][0]["name"] == "alice" and "template" in data["layout"]


def test_team_posts_need_a_csrf_token_and_get_changes_nothing(world: World) -> None:
    w = world
    client = Client(enforce_csrf_checks=True)
    client.force_login(w.owner)
    sharing_url = reverse("team_sharing", args=[w.team.pk])
    assert client.post(sharing_url, {"connections": []}).status_code == 403
    assert set(sharing.team_shared_connections(w.team)) == {w.admin_connection, w.connection}
    client.force_login(w.team_admin)
    before = Report.objects.count()
    new = reverse("team_report_new", args=[w.team.pk])
    assert client.post(new, {"preset": "last_month", "granularity": "month"}).status_code == 403
    assert client.get(sharing_url + "?connections=").status_code == 200  # GET only shows the form
    assert set(sharing.team_shared_connections(w.team)) == {w.admin_connection, w.connection}
    assert Report.objects.count() == before
    figures.figure("CSRF-checked endpoints (teams)", 2)
