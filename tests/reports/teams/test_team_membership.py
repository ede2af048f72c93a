"""Teams run by their admins (M4) and membership that holds (M1-M3), on pages, in services,
in the pipeline (against the sandbox, counting calls per OSAI account) and on the CLI."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.urls import reverse

from reports.models import Bucket, Connection, Membership, PriceBook, PriceBookVersion, Report, Team
from reports.pipeline import report_requests, steps
from reports.spend import pricing
from reports.teams import invitations, roster, sharing
from tests.factories import (
    MARCH_2025,
    ensure_example_price_book,
    make_connection,
    make_team,
    make_user,
    request_report,
    request_team_report,
    share_with,
)
from tests.support import figures
from tests.support.pipeline import drive

pytestmark = pytest.mark.django_db(transaction=True)

ADA_TOKEN = "osai-sandbox-team-ada"
BEN_TOKEN = "osai-sandbox-team-ben"  # the member who leaves
MEMBERSHIP_CASES: list[str] = []


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def case(name: str) -> None:
    MEMBERSHIP_CASES.append(name)
    figures.figure("M membership cases", 1)


@pytest.fixture
def crew(db: Any) -> dict[str, Any]:
    ada, ben, cyd = make_user("ada"), make_user("ben"), make_user("cyd")
    ben.email = "Ben@Example.com"
    ben.save()
    team = make_team("Vision", admins=[ada], members=[ben])
    ada_conn = make_connection(ada, "Ada prod", token=ADA_TOKEN)
    ben_conn = make_connection(ben, "Ben lab", token=BEN_TOKEN)
    share_with(team, ada_conn, ben_conn)
    return {
        "ada": ada,
        "ben": ben,
        "cyd": cyd,
        "team": team,
        "ada_conn": ada_conn,
        "ben_conn": ben_conn,
    }


# --- M4: teams run by their admins -------------------------------------------------------------


def test_anyone_creates_a_team_and_becomes_its_admin_without_staff_rights() -> None:
    zoe = make_user("zoe")
    assert not zoe.is_staff
    response = client_for(zoe).post(reverse("team_list"), {"name": "  Speech   lab "})
    team = Team.objects.get(name="Speech lab")
    assert response.status_code == 302
    assert response["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=zoe).role == Membership.Role.ADMIN
    again = client_for(make_user()).post(reverse("team_list"), {"name": "Speech lab"})
    assert again.status_code == 400
    assert "already a team called" in again.content.decode()
    case("create")


def test_an_admin_invites_people_by_email_and_changes_roles(crew: dict[str, Any]) -> None:
    """The team page invites (M6): nobody is added without accepting; the operator's
    `teams add` and roster.team_member_add still add directly."""
    ada, cyd, team = crew["ada"], crew["cyd"], crew["team"]
    admin = client_for(ada)
    cyd.email = "cyd@example.com"
    cyd.save()
    response = admin.post(
        reverse("team_member_add", args=[team.pk]), {"who": "CYD@example.com", "role": "admin"}
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(team=team, user=cyd).exists()
    [invitation] = invitations.invitations_for_person(cyd)
    invitations.invitation_accept_mine(user=cyd, pk=invitation.pk)
    assert Membership.objects.get(team=team, user=cyd).role == "admin"
    # A username is not an email address: refused, whether or not it exists.
    for who in ("cyd", "nobody"):
        refused = admin.post(
            reverse("team_member_add", args=[team.pk]), {"who": who, "role": "member"}
        )
        assert refused.status_code == 400 and "Give an email address" in refused.content.decode()
    admin.post(reverse("team_member_role", args=[team.pk, cyd.pk]), {"role": "member"})
    assert Membership.objects.get(team=team, user=cyd).role == "member"
    # Directly, by the service the CLI uses: twice is refused with a message.
    Membership.objects.filter(team=team, user=cyd).delete()
    roster.team_member_add(team=team, actor=ada, who="cyd")
    with pytest.raises(roster.TeamError, match="already in Vision"):
        roster.team_member_add(team=team, actor=ada, who="cyd@example.com")
    case("invite by email, add directly, change role")


def test_plain_members_cannot_run_the_team(crew: dict[str, Any]) -> None:
    ben, cyd, team = crew["ben"], crew["cyd"], crew["team"]
    member = client_for(ben)
    before = list(Membership.objects.values_list("team", "user", "role"))
    assert (
        member.post(reverse("team_member_add", args=[team.pk]), {"who": "cyd"}).status_code == 404
    )
    ada_pk = crew["ada"].pk
    assert (
        member.post(
            reverse("team_member_role", args=[team.pk, ada_pk]), {"role": "member"}
        ).status_code
        == 404
    )
    assert member.post(reverse("team_member_remove", args=[team.pk, ada_pk])).status_code == 404
    assert member.post(reverse("team_price_book", args=[team.pk]), {}).status_code == 404
    assert (
        client_for(cyd).post(reverse("team_member_remove", args=[team.pk, ben.pk])).status_code
        == 404
    )
    assert list(Membership.objects.values_list("team", "user", "role")) == before
    case("plain members cannot run the team")


def test_a_team_always_keeps_an_admin(crew: dict[str, Any]) -> None:
    ada, ben, team = crew["ada"], crew["ben"], crew["team"]
    admin = client_for(ada)
    # The only admin can neither step down nor leave nor be removed by the CLI.
    response = admin.post(
        reverse("team_member_role", args=[team.pk, ada.pk]), {"role": "member"}, follow=True
    )
    assert "must keep at least one admin" in response.content.decode()
    response = admin.post(reverse("team_member_remove", args=[team.pk, ada.pk]), follow=True)
    assert "must keep at least one admin" in response.content.decode()
    with pytest.raises(CommandError, match="at least one admin"):
        call_command("teams", "remove", "Vision", "ada", stdout=io.StringIO())
    assert Membership.objects.get(team=team, user=ada).role == Membership.Role.ADMIN
    # With a second admin, the first may leave.
    admin.post(reverse("team_member_role", args=[team.pk, ben.pk]), {"role": "admin"})
    response = admin.post(reverse("team_member_remove", args=[team.pk, ada.pk]))
    assert response["Location"] == reverse("team_list")
    assert list(Membership.objects.filter(team=team).values_list("user__username", "role")) == [
        ("ben", "admin")
    ]
    case("a team keeps an admin")


def test_the_teams_price_book_prices_all_its_reports(crew: dict[str, Any]) -> None:
    ada, team = crew["ada"], crew["team"]
    report = Report.objects.create(
        owner=ada, team=team, period_start=MARCH_2025[0], period_end=MARCH_2025[1]
    )
    default = ensure_example_price_book()
    assert pricing.price_book_for(report) == default
    dear = PriceBook.objects.create(name="Dear", currency="USD")
    PriceBookVersion.objects.create(
        price_book=dear, effective_from=datetime(2020, 1, 1, tzinfo=UTC)
    )
    response = client_for(ada).post(
        reverse("team_price_book", args=[team.pk]), {"price_book": dear.pk}
    )
    assert response.status_code == 302
    report.refresh_from_db()
    assert pricing.price_book_for(report) == dear
    case("price book")


# --- M2: plain members see names only ----------------------------------------------------------


def test_plain_members_see_member_names_never_accounts_or_tokens(crew: dict[str, Any]) -> None:
    ada, ben, team = crew["ada"], crew["ben"], crew["team"]
    member_view = client_for(ben).get(reverse("team_detail", args=[team.pk])).content.decode()
    assert "ada" in member_view and "Ada prod" in member_view
    assert crew["ada_conn"].account_name not in member_view
    assert crew["ada_conn"].token_hint not in member_view
    assert crew["ben_conn"].token_hint in member_view  # their own
    admin_view = client_for(ada).get(reverse("team_detail", args=[team.pk])).content.decode()
    assert crew["ben_conn"].account_name in admin_view and crew["ben_conn"].token_hint in admin_view
    case("M2 names only")


# --- M1: leaving or un-sharing takes effect at once --------------------------------------------


def test_leaving_ends_sharing_and_being_added_again_shares_nothing(crew: dict[str, Any]) -> None:
    ada, ben, team = crew["ada"], crew["ben"], crew["team"]
    client_for(ben).post(reverse("team_member_remove", args=[team.pk, ben.pk]))
    assert not crew["ben_conn"].shared_with_teams.exists()
    roster.team_member_add(team=team, actor=ada, who="ben")
    assert list(sharing.team_shared_connections(team)) == [crew["ada_conn"]]
    case("leave, re-add")


def test_a_removed_member_no_longer_counts_and_their_token_is_never_used_again(
    crew: dict[str, Any], use_sandbox: Any, fast: Any, queue: Any
) -> None:
    """M1 at the sandbox: after `teams remove`, a team retry and a new team report make 0
    OSAI calls with the removed member's token; a bucket in flight stops."""
    ada, team = crew["ada"], crew["team"]
    use_sandbox.faults(report_error=True)  # the first run fails, so there is a retry to make
    report = request_team_report(team, ada)
    drive()
    report.refresh_from_db()
    assert (report.state, report.buckets_failed) == (Report.State.FAILED, 2)
    use_sandbox.clear_faults()
    in_flight = request_team_report(
        team, ada, period=(MARCH_2025[0], datetime(2025, 3, 15, tzinfo=UTC))
    )
    assert in_flight.buckets_total == 2
    ben_flight = Bucket.objects.get(report_buckets__report=in_flight, connection=crew["ben_conn"])
    assert steps.bucket_step(ben_flight.pk) == "created"  # OSAI is generating it now

    call_command("teams", "remove", "Vision", "ben", stdout=io.StringIO())
    use_sandbox.reset()

    # Buckets in flight on ben's connection stopped at once; his failed ones do not count.
    ben_flight.refresh_from_db()
    assert ben_flight.state == Bucket.State.CANCELLED
    report.refresh_from_db()
    assert (report.buckets_total, report.buckets_failed) == (1, 1)
    report_requests.report_retry(report=report)
    fresh = request_team_report(
        team, ada, period=(datetime(2025, 5, 1, tzinfo=UTC), datetime(2025, 6, 1, tzinfo=UTC))
    )
    drive()
    report.refresh_from_db()
    fresh.refresh_from_db()
    assert report.state == Report.State.DONE and fresh.state == Report.State.DONE
    assert fresh.connections.get() == crew["ada_conn"]
    assert use_sandbox.calls_with_token(BEN_TOKEN) == {}
    assert use_sandbox.calls_with_token(ADA_TOKEN)["POST /api/Reports"] == 3
    figures.figure("M1 OSAI calls with an ex-member's token", 0)
    case("removed: retry, new report, in flight")


def test_unsharing_takes_effect_in_pages_exports_and_the_pipeline(
    crew: dict[str, Any], use_sandbox: Any, fast: Any, queue: Any
) -> None:
    ada, ben, team = crew["ada"], crew["ben"], crew["team"]
    report = request_team_report(team, ada)
    bucket = Bucket.objects.get(report_buckets__report=report, connection=crew["ben_conn"])
    # Un-shared between the request and the worker's first step (no on_commit hook ran yet
    # for this bucket): the worker's own check stops it before any OSAI call.
    Connection.shared_with_teams.through.objects.filter(connection=crew["ben_conn"]).delete()
    assert steps.bucket_step(bucket.pk) == "no report wants it any more"
    drive()
    assert use_sandbox.calls_with_token(BEN_TOKEN) == {}
    page = client_for(ada).get(reverse("report_detail", args=[report.pk]))
    assert "Ben lab" not in page.content.decode()
    export = b"".join(
        client_for(ada).get(reverse("report_export_csv", args=[report.pk])).streaming_content
    )
    assert b"Ben lab" not in export and b"Ada prod" in export
    # Sharing again brings the connection back into earlier reports, by the member's choice.
    sharing.team_sharing_set(team=team, user=ben, connections=[crew["ben_conn"]])
    assert (
        "Ben lab"
        in client_for(ada).get(reverse("report_detail", args=[report.pk])).content.decode()
    )
    case("un-share: page, export, pipeline")


def test_a_personal_report_on_the_same_bucket_keeps_it_going(
    crew: dict[str, Any], use_sandbox: Any, fast: Any, queue: Any
) -> None:
    ada, ben, team = crew["ada"], crew["ben"], crew["team"]
    request_team_report(team, ada)
    own = request_report(ben, [crew["ben_conn"]])
    sharing.team_sharing_set(team=team, user=ben, connections=[])
    drive()
    own.refresh_from_db()
    assert own.state == Report.State.DONE  # the shared bucket was still wanted by ben
    case("a bucket another report needs keeps going")


# --- M3: one broken connection does not block the team ----------------------------------------


def test_a_connection_that_needs_a_token_is_skipped_and_named(
    crew: dict[str, Any], use_sandbox: Any, fast: Any, queue: Any
) -> None:
    ada, team = crew["ada"], crew["team"]
    Connection.objects.filter(pk=crew["ben_conn"].pk).update(status=Connection.Status.NEEDS_TOKEN)
    response = client_for(ada).post(
        reverse("team_report_new", args=[team.pk]),
        {"preset": "last_month", "granularity": "total", "include_models": "on"},
    )
    report = Report.objects.get(team=team)
    assert response["Location"] == reverse("report_detail", args=[report.pk])
    assert report.connections.get() == crew["ada_conn"]
    assert report.skipped_connections == [
        {"owner": "ben", "label": "Ben lab", "reason": "Needs a new token"}
    ]
    drive()
    page = client_for(ada).get(reverse("report_detail", args=[report.pk])).content.decode()
    assert "Left out of this team report" in page and "Ben lab" in page
    Connection.objects.filter(pk=crew["ada_conn"].pk).update(status=Connection.Status.NEEDS_TOKEN)
    with pytest.raises(report_requests.ReportRequestError, match="needs a new token first"):
        request_team_report(team, ada)
    case("M3 skipped and named")


# --- The command line -------------------------------------------------------------------------


def test_the_teams_command_runs_a_team(crew: dict[str, Any]) -> None:
    out = io.StringIO()
    call_command("teams", "create", "Speech", "--admin", "cyd", stdout=out)
    call_command("teams", "add", "Speech", "ben@example.com", "--role", "admin", stdout=out)
    call_command("teams", "share", "Speech", "--user", "ben", "--connection", "Ben lab", stdout=out)
    speech = Team.objects.get(name="Speech")
    assert list(sharing.team_shared_connections(speech)) == [crew["ben_conn"]]
    call_command(
        "teams", "unshare", "Speech", "--user", "ben", "--connection", "Ben lab", stdout=out
    )
    assert list(sharing.team_shared_connections(speech)) == []
    call_command("teams", "role", "Speech", "ben", "--role", "member", stdout=out)
    call_command("teams", "remove", "Speech", "ben", stdout=out)
    assert list(Membership.objects.filter(team=speech).values_list("user__username", "role")) == [
        ("cyd", "admin")
    ]
    text = out.getvalue()
    assert "Created team 'Speech'" in text and "Removed ben from Speech" in text
    with pytest.raises(CommandError, match="No team 'Nope'"):
        call_command("teams", "add", "Nope", "ben", stdout=out)
    with pytest.raises(CommandError, match="has no connection"):
        call_command("teams", "share", "Speech", "--user", "cyd", "--connection", "x", stdout=out)
    make_connection(crew["cyd"], "Cyd box")
    with pytest.raises(CommandError, match="Only members"):
        call_command(
            "teams", "share", "Vision", "--user", "cyd", "--connection", "Cyd box", stdout=out
        )


def test_generate_report_requests_a_team_report_for_an_admin(
    crew: dict[str, Any], queue: Any
) -> None:
    out = io.StringIO()
    call_command(
        "generate_report",
        "--team",
        "Vision",
        "--user",
        "ada",
        "--from",
        "2025-03-01",
        "--to",
        "2025-04-01",
        "--granularity",
        "total",
        stdout=out,
        stderr=io.StringIO(),
    )
    report = Report.objects.get(team=crew["team"])
    assert (report.owner, set(report.connections.all())) == (
        crew["ada"],
        {crew["ada_conn"], crew["ben_conn"]},
    )
    with pytest.raises(CommandError, match="Only team admins"):
        call_command(
            "generate_report",
            "--team",
            "Vision",
            "--user",
            "ben",
            "--preset",
            "last_month",
            stdout=out,
        )


@pytest.mark.parametrize("change", ["demote", "remove"])
def test_two_admins_demoting_each_other_at_once_leave_the_team_an_admin(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """M4 under a race (PostgreSQL): each admin demotes (or removes) the other at the same
    moment. Both changes are written before either checks that an admin is left; without a
    lock each check sees the other's row as it was and both commit, leaving no admin. The
    team's memberships are locked when roles change: the second waits, then finds itself
    the last admin's victim and is refused."""
    import contextlib
    import threading

    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip(
            "SQLite's IMMEDIATE transactions serialize the two changes, so they cannot race; "
            "run with DATABASE_URL=postgres://... to test the lock"
        )
    ann, bob = make_user(), make_user()
    team = make_team(admins=[ann, bob])
    both_written = threading.Barrier(2, timeout=3)
    keep_an_admin = roster._keep_an_admin

    def after_both_wrote(team: Team) -> None:
        # Widen the window: both changes written, neither checked. A broken barrier: the
        # other one waits for our lock, so there is nothing to wait for.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_written.wait()
        keep_an_admin(team)

    monkeypatch.setattr(roster, "_keep_an_admin", after_both_wrote)
    outcomes: dict[str, str] = {}

    def act(actor: Any, other: Any) -> None:
        try:
            if change == "demote":
                roster.team_member_set_role(team=team, actor=actor, user=other, role="member")
            else:
                roster.team_member_remove(team=team, actor=actor, user=other)
            outcomes[actor.username] = "done"
        except roster.TeamError as exc:
            outcomes[actor.username] = str(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=act, args=(ann, bob)),
        threading.Thread(target=act, args=(bob, ann)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    admins = Membership.objects.filter(team=team, role=Membership.Role.ADMIN).count()
    assert admins == 1, outcomes
    done, [refused] = (
        [o for o in outcomes.values() if o == "done"],
        [o for o in outcomes.values() if o != "done"],
    )
    assert len(done) == 1
    assert "admin" in refused  # "…must keep at least one admin" or "Only the team's admins…"
    figures.figure("M4 races of two admins demoting each other that kept an admin", 1)
