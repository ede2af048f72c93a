"""Invitations (M6): sent by a team's admins (page and CLI), accepted once by a link that
expires, withdrawn, declined; the same words for every address; one membership however many
tabs accept at once."""

from __future__ import annotations

import contextlib
import io
import re
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from reports import access
from reports.models import AuditEntry, Invitation, Membership
from reports.teams import TeamError, invitations
from tests.factories import PASSWORD, make_team, make_user

LINK = re.compile(r"https?://\S+/invitations/([A-Za-z0-9_-]+)/")


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def crew(db: Any) -> dict[str, Any]:
    ada, ben = make_user("ada"), make_user("ben")
    cyd = make_user("cyd", email="cyd@example.com")
    team = make_team("Vision", admins=[ada], members=[ben])
    return {"ada": ada, "ben": ben, "cyd": cyd, "team": team}


def ada_invites(crew: dict[str, Any], email: str, role: str) -> tuple[invitations.Sent, str]:
    """Ada, the crew team's admin, invites `email`: what was sent and its link's path."""
    sent = invitations.invitation_send(team=crew["team"], actor=crew["ada"], email=email, role=role)
    return sent, urlsplit(sent.link).path


def _token(mail: Any) -> str:
    match = LINK.search(mail.body)
    assert match, mail.body
    return match.group(1)


def _messages(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_the_page_says_the_same_for_an_address_with_and_without_an_account(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    team, admin = crew["team"], client_for(crew["ada"])
    url = reverse("team_member_add", args=[team.pk])
    said = []
    for email in ("cyd@example.com", "nobody-here@example.com"):
        response = admin.post(url, {"who": email, "role": "member"}, follow=True)
        assert response.status_code == 200
        [message] = _messages(response) or [
            m for m in re.findall(r"Invitation sent[^<]*", response.content.decode())
        ]
        said.append(message.replace(email, "EMAIL"))
    assert said[0] == said[1] and said[0].startswith("Invitation sent to EMAIL.")
    # Both got the same mail; nobody was added by it.
    assert [m.to for m in mailoutbox] == [["cyd@example.com"], ["nobody-here@example.com"]]
    bodies = [
        re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d", "WHEN", m.body.replace(m.to[0], "EMAIL")).replace(
            _token(m), "TOKEN"
        )
        for m in mailoutbox
    ]
    assert bodies[0] == bodies[1]
    assert not Membership.objects.filter(team=team, user=crew["cyd"]).exists()
    # A username is refused whether or not it exists, in the same words; nothing is sent.
    refusals = {
        admin.post(url, {"who": who, "role": "member"})
        .content.decode()
        .count("Give an email address")
        for who in ("cyd", "nobody")
    }
    assert refusals == {1}
    assert len(mailoutbox) == 2
    # The admin sees both pending, each with "Withdraw"; the raw token is nowhere on the page.
    page = admin.get(reverse("team_detail", args=[team.pk])).content.decode()
    assert "cyd@example.com" in page and "nobody-here@example.com" in page
    assert page.count("Withdraw</button>") == 2
    assert _token(mailoutbox[0]) not in page
    # Only the hash is stored.
    stored = Invitation.objects.get(email="cyd@example.com")
    assert stored.token_sha256 == invitations.token_digest(_token(mailoutbox[0]))
    assert _token(mailoutbox[0]) not in str(list(Invitation.objects.values()))


def test_a_signed_in_person_joins_once_by_the_link(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    team = crew["team"]
    _, link = ada_invites(crew, "cyd@example.com", "viewer")
    cyd = client_for(crew["cyd"])
    page = cyd.get(link)
    assert page.status_code == 200
    assert "Join Vision as viewer (finance)" in page.content.decode()
    joined = cyd.post(link)
    assert joined.status_code == 302
    assert joined["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=crew["cyd"]).role == "viewer"
    # Used: a clear page, 410, nothing changes (another account cannot use it either).
    for client in (cyd, client_for(crew["ben"]), Client()):
        assert client.get(link).status_code == 410
        again = client.post(link)
        assert again.status_code == 410 and "already used" in again.content.decode()
    assert Membership.objects.filter(team=team).count() == 3


def test_a_new_person_creates_an_account_on_the_invitation_page(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    team = crew["team"]
    _, link = ada_invites(crew, "new@example.com", "member")
    anonymous = Client()
    page = anonymous.get(link).content.decode()
    assert "Sign in to accept" in page and "Create an account" in page
    assert 'value="new@example.com" readonly' in page
    sign_in = anonymous.get(link + "?sign_in=1")
    assert sign_in.status_code == 302
    target = urlsplit(sign_in["Location"])
    assert target.path == resolve_url(settings.LOGIN_URL)
    assert parse_qs(target.query) == {"next": [link]}
    # Django's validators: the two passwords must match, and be strong enough.
    weak = anonymous.post(link, {"username": "newbie", "password1": "x", "password2": "x"})
    assert weak.status_code == 400
    mismatch = anonymous.post(
        link, {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD + "!"}
    )
    assert mismatch.status_code == 400
    taken = anonymous.post(link, {"username": "ben", "password1": PASSWORD, "password2": PASSWORD})
    assert taken.status_code == 400
    # The email is the invitation's, whatever is posted.
    created = anonymous.post(
        link,
        {
            "username": "newbie",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "email": "evil@example.com",
        },
    )
    assert created.status_code == 302
    assert created["Location"] == reverse("team_detail", args=[team.pk])
    membership = Membership.objects.select_related("user").get(team=team, user__username="newbie")
    assert membership.user.email == "new@example.com" and membership.role == "member"
    assert membership.user.check_password(PASSWORD)
    assert anonymous.get(reverse("team_detail", args=[team.pk])).status_code == 200


def test_an_expired_link_changes_nothing(
    crew: dict[str, Any], mailoutbox: list[Any], time_machine: Any, settings: Any
) -> None:
    settings.OSAI_INVITATION_DAYS = 7
    time_machine.move_to(timezone.now())
    sent, link = ada_invites(crew, "cyd@example.com", "member")
    time_machine.shift(timedelta(days=7, seconds=-5))
    assert client_for(crew["cyd"]).get(link).status_code == 200
    time_machine.shift(timedelta(seconds=10))
    cyd = client_for(crew["cyd"])
    assert cyd.get(link).status_code == 410
    gone = cyd.post(link)
    assert gone.status_code == 410 and "expired" in gone.content.decode()
    anonymous = Client().post(
        link, {"username": "late", "password1": PASSWORD, "password2": PASSWORD}
    )
    assert anonymous.status_code == 410
    assert not Membership.objects.filter(team=crew["team"], user=crew["cyd"]).exists()
    assert not Membership.objects.filter(user__username="late").exists()
    with pytest.raises(invitations.InvitationGone):
        invitations.invitation_accept(token=sent.token, user=crew["cyd"])


def test_withdrawn_by_an_admin_only(crew: dict[str, Any], mailoutbox: list[Any]) -> None:
    team = crew["team"]
    sent, link = ada_invites(crew, "cyd@example.com", "member")
    url = reverse("invitation_withdraw", args=[team.pk, sent.invitation.pk])
    # A member, or an admin of another team: 404, nothing changed.
    other_admin = make_user()
    make_team("Elsewhere", admins=[other_admin])
    assert client_for(crew["ben"]).post(url).status_code == 404
    assert client_for(other_admin).post(url).status_code == 404
    assert (
        client_for(other_admin)
        .post(reverse("invitation_withdraw", args=[team.pk + 1, sent.invitation.pk]))
        .status_code
        == 404
    )
    assert invitations.state(Invitation.objects.get(pk=sent.invitation.pk)) == "pending"
    assert client_for(crew["ada"]).post(url).status_code == 302
    gone = client_for(crew["cyd"]).post(link)
    assert gone.status_code == 410 and "withdrawn" in gone.content.decode()
    assert not Membership.objects.filter(team=team, user=crew["cyd"]).exists()
    assert client_for(crew["ada"]).post(url).status_code == 404  # not pending any more
    # Inviting the same address again withdraws the earlier pending one.
    first = invitations.invitation_send(team=team, actor=None, email="x@example.com", role="member")
    second = invitations.invitation_send(team=team, actor=None, email="X@example.com", role="admin")
    assert invitations.state(Invitation.objects.get(pk=first.invitation.pk)) == "withdrawn"
    assert invitations.state(second.invitation) == "pending"


def test_ones_own_invitations_on_the_teams_page(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    team = crew["team"]
    first, _ = ada_invites(crew, "CYD@example.com", "member")
    other = make_team("Other", admins=[crew["ben"]])
    second = invitations.invitation_send(
        team=other, actor=crew["ben"], email="cyd@example.com", role="viewer"
    )
    cyd = client_for(crew["cyd"])
    page = cyd.get(reverse("team_list")).content.decode()
    assert "Your invitations" in page and "Vision" in page and "Other" in page
    # Someone else's: 404, nothing changed.
    ben = client_for(crew["ben"])
    for name in ("invitation_accept_mine", "invitation_decline_mine"):
        assert ben.post(reverse(name, args=[first.invitation.pk])).status_code == 404
    assert invitations.state(Invitation.objects.get(pk=first.invitation.pk)) == "pending"
    assert "Your invitations" not in ben.get(reverse("team_list")).content.decode()
    accepted = cyd.post(reverse("invitation_accept_mine", args=[first.invitation.pk]))
    assert accepted["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=crew["cyd"]).role == "member"
    declined = cyd.post(reverse("invitation_decline_mine", args=[second.invitation.pk]))
    assert declined.status_code == 302
    assert not Membership.objects.filter(team=other, user=crew["cyd"]).exists()
    assert client_for(crew["cyd"]).post(urlsplit(second.link).path).status_code == 410
    assert "Your invitations" not in cyd.get(reverse("team_list")).content.decode()


def test_an_address_on_an_account_that_is_not_verified_takes_no_invitation_from_the_teams_page(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    """M6: Mallory's account carries Cyd's address, unverified (as single sign-on leaves an
    address its provider did not verify): Cyd's invitation is not on her teams page, and
    accepting or declining it there is a 404 that changes nothing. Verified, it is hers."""
    team = crew["team"]
    mallory = make_user("mallory", email="cyd@example.com")
    EmailAddress.objects.create(user=mallory, email="cyd@example.com", verified=False)
    sent, _ = ada_invites(crew, "Cyd@example.com", "admin")
    entries = AuditEntry.objects.count()
    client = client_for(mallory)
    page = client.get(reverse("team_list"))
    assert page.status_code == 200
    assert "Your invitations" not in page.content.decode() and "Vision" not in page.content.decode()
    assert not invitations.invitations_for_person(mallory).exists()
    for name in ("invitation_accept_mine", "invitation_decline_mine"):
        assert client.post(reverse(name, args=[sent.invitation.pk])).status_code == 404
    assert invitations.state(Invitation.objects.get(pk=sent.invitation.pk)) == "pending"
    assert not Membership.objects.filter(team=team, user=mallory).exists()
    assert AuditEntry.objects.count() == entries
    # Cyd's account, made by the operator (no EmailAddress row), still has it on her page.
    assert "Vision" in client_for(crew["cyd"]).get(reverse("team_list")).content.decode()
    # Once the address is verified for Mallory's account, it is hers from the teams page.
    EmailAddress.objects.filter(user=mallory).update(verified=True)
    assert "Vision" in client.get(reverse("team_list")).content.decode()
    accepted = client.post(reverse("invitation_accept_mine", args=[sent.invitation.pk]))
    assert accepted["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=mallory).role == "admin"


def test_only_verified_rows_count_once_an_account_has_any(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    """An account whose addresses allauth keeps: its verified ones count (any case), its
    `User.email` alone does not."""
    dee = make_user("dee", email="dee@example.com")
    EmailAddress.objects.create(user=dee, email="dee@example.com", verified=False)
    EmailAddress.objects.create(user=dee, email="dee@partner.test", verified=True)
    to_field, _ = ada_invites(crew, "dee@example.com", "member")
    to_verified = invitations.invitation_send(
        team=make_team("Partners", admins=[crew["ben"]]),
        actor=crew["ben"],
        email="DEE@partner.test",
        role="viewer",
    )
    assert access.verified_emails(dee) == ["dee@partner.test"]
    assert list(invitations.invitations_for_person(dee)) == [to_verified.invitation]
    assert access.verified_emails(crew["cyd"]) == ["cyd@example.com"]  # no rows
    assert access.verified_emails(crew["ada"]) == []  # no rows, no address
    client = client_for(dee)
    assert (
        client.post(reverse("invitation_accept_mine", args=[to_field.invitation.pk])).status_code
        == 404
    )
    assert invitations.state(Invitation.objects.get(pk=to_field.invitation.pk)) == "pending"
    assert (
        client.post(reverse("invitation_accept_mine", args=[to_verified.invitation.pk])).status_code
        == 302
    )


def test_the_link_is_proof_enough_whatever_the_accounts_addresses(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    """Holding the link is the proof: any account joins with it, verified or not."""
    team = crew["team"]
    eve = make_user("eve", email="eve@example.com")
    EmailAddress.objects.create(user=eve, email="eve@example.com", verified=False)
    _, link = ada_invites(crew, "someone@example.com", "member")
    response = client_for(eve).post(link)
    assert response["Location"] == reverse("team_detail", args=[team.pk])
    assert Membership.objects.get(team=team, user=eve).role == "member"


def test_only_admins_invite(crew: dict[str, Any], mailoutbox: list[Any]) -> None:
    team = crew["team"]
    with pytest.raises(TeamError, match="Only the team's admins"):
        invitations.invitation_send(
            team=team, actor=crew["ben"], email="x@example.com", role="member"
        )
    assert (
        client_for(crew["ben"])
        .post(reverse("team_member_add", args=[team.pk]), {"who": "x@example.com"})
        .status_code
        == 404
    )
    assert not Invitation.objects.exists() and not mailoutbox


def test_the_cli_invites_and_prints_a_working_link(
    crew: dict[str, Any], mailoutbox: list[Any]
) -> None:
    out = io.StringIO()
    call_command("teams", "invite", "Vision", "cyd@example.com", "--role", "admin", stdout=out)
    text = out.getvalue()
    match = LINK.search(text)
    assert match and "Emailed an invitation of cyd@example.com to Vision as admin" in text
    assert mailoutbox[0].to == ["cyd@example.com"] and match.group(0) in mailoutbox[0].body
    response = client_for(crew["cyd"]).post(urlsplit(match.group(0)).path)
    assert response.status_code == 302
    assert Membership.objects.get(team=crew["team"], user=crew["cyd"]).role == "admin"
    entry = AuditEntry.objects.get(action="invitation.send")
    assert entry.via == "cli" and entry.actor is None
    assert match.group(1) not in str(list(AuditEntry.objects.values()))


@pytest.mark.django_db(transaction=True)
def test_two_tabs_accepting_at_once_make_one_membership(
    monkeypatch: pytest.MonkeyPatch, mailoutbox: list[Any]
) -> None:
    """Two accepts of one link at the same moment (two people, or two tabs): the invitation's
    row is locked, so the second reads it used and is refused; one membership."""
    from django.db import connection

    ada, ann, bob = make_user(), make_user(), make_user()
    team = make_team(admins=[ada])
    sent = invitations.invitation_send(team=team, actor=ada, email="x@example.com", role="member")
    both_read = threading.Barrier(2, timeout=2)
    accept_locked = invitations._accept_locked

    def slow(invitation: Any, user: Any, now: Any) -> Any:
        # Widen the window: without the lock both would be here, both reading it pending.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return accept_locked(invitation, user, now)

    monkeypatch.setattr(invitations, "_accept_locked", slow)
    outcomes: dict[str, str] = {}

    def accept(user: Any) -> None:
        try:
            invitations.invitation_accept(token=sent.token, user=user)
            outcomes[user.username] = "joined"
        except TeamError as exc:
            outcomes[user.username] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=accept, args=(u,)) for u in (ann, bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    joined = [o for o in outcomes.values() if o == "joined"]
    refused = [o for o in outcomes.values() if o != "joined"]
    assert len(joined) == 1 and len(refused) == 1, outcomes
    assert "already used" in refused[0]
    assert Membership.objects.filter(team=team).count() == 2  # ada and one of them
    assert AuditEntry.objects.filter(action="invitation.accept").count() == 1
