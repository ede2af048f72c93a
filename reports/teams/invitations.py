"""Invitations (M6): a team admin invites an email address with a role; the person joins by
accepting, with the account they have or one they create on the invitation's page.

- The link carries a token of 256 random bits (unguessable, so it needs no other signature);
  only its SHA-256 is stored, like API tokens. It works once, until it expires
  (OSAI_INVITATION_DAYS), and not after it is withdrawn or declined.
- Accepting locks the invitation's row: two tabs accepting at once make one membership, and
  the second is told the link was used.
- No page tells a stranger whether an email address has an account here: the team page
  invites email addresses only (a username is refused, whether or not it exists) and says the
  same "Invitation sent" for every address, which gets the same mail.
- The mail is sent at once through the configured mail backend (with the outbox's deadline),
  not through the outbox (reports/spend/notify.py): the outbox keeps each message's text in
  its Delivery row and retries it from there, and an invitation's text carries the link,
  which must never be stored. A send that fails is said on the page; the admin withdraws the
  invitation and sends a new one.
- The operator's `manage.py teams add` and the demo seeding still add people directly.
- From the teams page (no link) a person sees and accepts only invitations to an address they
  have shown is theirs (`access.verified_emails`): an account's own email field is not proof, since
  single sign-on may set it to an address its provider did not verify. The link is its own
  proof: whoever holds it may join with any account.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from reports import audit
from reports.access import Capability, verified_emails
from reports.models import Invitation, Membership, Team, one_line
from reports.spend.outbound import mail_connection
from reports.teams import TeamError, roster

log = logging.getLogger(__name__)

SENT = "Invitation sent"  # the page's words, the same for every address (M6)


class InvitationGone(TeamError):
    """The link was used, declined, withdrawn or has expired: nothing is changed."""


@dataclass(frozen=True)
class Sent:
    invitation: Invitation
    token: str  # for the link only: never stored, logged or shown on a page
    emailed: bool

    @property
    def link(self) -> str:
        return invitation_link(self.token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invitation_link(token: str) -> str:
    """The absolute link an invitation's mail carries."""
    path = reverse("invitation", args=[token])
    return settings.OSAI_USAGE_BASE_URL.rstrip("/") + path


def state(invitation: Invitation, *, now: datetime | None = None) -> str:
    """pending, accepted, declined, withdrawn or expired."""
    if invitation.accepted_at:
        return "accepted"
    if invitation.declined_at:
        return "declined"
    if invitation.withdrawn_at:
        return "withdrawn"
    if invitation.expires_at <= (now or timezone.now()):
        return "expired"
    return "pending"


def expires(invitation: Invitation) -> str:
    """When its link stops working, to the minute, in UTC."""
    return invitation.expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _record(
    action: str,
    invitation: Invitation,
    actor: User | None,
    *,
    owner: User | None = None,
    after: dict[str, str] | None = None,
) -> None:
    """The audit entry of what happened to an invitation, in its team's log."""
    audit.record(
        action,
        actor=actor,
        object_type="invitation",
        object_id=invitation.pk,
        label=f"{invitation.email} to {invitation.team.name} as {invitation.role}",
        team=invitation.team,
        owner=owner,
        after=after,
    )


def _clean_email(email: str) -> str:
    email = (email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise TeamError(
            "Give an email address: the invitation goes there, and they join with any account."
        ) from None
    return email


def invitation_send(*, team: Team, actor: User | None, email: str, role: str) -> Sent:
    """Invite `email` to the team with `role` (an admin, or the operator: actor None). An
    earlier pending invitation of the same address to the team is withdrawn. The mail is
    sent after the invitation is saved."""
    email = _clean_email(email)
    roster.check_role(role)
    now = timezone.now()
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        roster.require(team, actor, Capability.MANAGE_MEMBERS)
        Invitation.objects.pending(now=now).filter(team=team, email__iexact=email).update(
            withdrawn_at=now
        )
        invitation = Invitation.objects.create(
            team=team,
            email=email,
            role=role,
            token_sha256=token_digest(token),
            invited_by=actor,
            created_at=now,
            expires_at=now + timedelta(days=settings.OSAI_INVITATION_DAYS),
        )
        _record(
            "invitation.send",
            invitation,
            actor,
            after={"email": email, "role": role, "expires": expires(invitation)},
        )
    return Sent(invitation=invitation, token=token, emailed=_mail(invitation, token, actor))


def _mail(invitation: Invitation, token: str, actor: User | None) -> bool:
    team = invitation.team.name
    who = actor.get_username() if actor else "The operator"
    role = Membership.Role(invitation.role).label.lower()
    text = (
        f"{who} invites you to join the team {team} on OSAI Usage as a {role}.\n\n"
        "Open this link to accept, with the account you have or a new one. It works once, "
        f"until {expires(invitation)}:\n\n{invitation_link(token)}\n\n"
        "If you did not expect this invitation, ignore this message: nothing happens.\n"
    )
    message = EmailMessage(
        subject=one_line(f"Invitation to join {team} on OSAI Usage")[:200],
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[invitation.email],
        connection=mail_connection(),
    )
    try:
        message.send()
    except Exception as exc:  # any failure of the backend: said on the page
        log.warning("Invitation %s not sent: %s", invitation.pk, type(exc).__name__)
        return False
    return True


def invitation_by_token(token: str) -> Invitation | None:
    if not token or len(token) > 128:
        return None
    return (
        Invitation.objects.select_related("team", "invited_by")
        .filter(token_sha256=token_digest(token))
        .first()
    )


def ensure_pending(invitation: Invitation | None, now: datetime | None = None) -> None:
    """Raise InvitationGone, saying why, unless the invitation is pending."""
    now = now or timezone.now()
    if invitation is None:
        raise InvitationGone("This invitation link does not work.")
    current = state(invitation, now=now)
    if current != "pending":
        raise InvitationGone(
            {
                "accepted": "This invitation was already used.",
                "declined": "This invitation was declined.",
                "withdrawn": "This invitation was withdrawn by the team's admins.",
                "expired": "This invitation has expired.",
            }[current]
            + " Ask the team's admins for a new one."
        )


def _accept_locked(invitation: Invitation, user: User, now: datetime) -> Membership:
    """Inside the transaction that locked the invitation: the membership, and it is used."""
    team = invitation.team
    roster.lock_roster(team)
    membership = Membership.objects.filter(team=team, user=user).first()
    if membership is None:
        membership = Membership.objects.create(team=team, user=user, role=invitation.role)
        roster.record_member(
            "member.add",
            team,
            user,
            user,
            membership.pk,
            after={"role": invitation.role, "by": "invitation"},
        )
    Invitation.objects.filter(pk=invitation.pk).update(accepted_at=now, accepted_by=user)
    invitation.accepted_at, invitation.accepted_by = now, user
    _record("invitation.accept", invitation, user, owner=user, after={"role": membership.role})
    return membership


def _pending_by_token_locked(token: str, now: datetime) -> Invitation:
    """The link's invitation, its row locked (inside the caller's transaction); raises
    InvitationGone unless it is pending."""
    invitation = (
        Invitation.objects.select_for_update()
        .select_related("team")
        .filter(token_sha256=token_digest(token or ""))
        .first()
    )
    ensure_pending(invitation, now)
    assert invitation is not None
    return invitation


def invitation_accept(*, token: str, user: User) -> Membership:
    """Join with the link's invitation as `user` (any account). Raises InvitationGone."""
    now = timezone.now()
    with transaction.atomic():
        invitation = _pending_by_token_locked(token, now)
        return _accept_locked(invitation, user, now)


def invitation_sign_up(*, token: str, username: str, password: str) -> tuple[User, Membership]:
    """A new account (its email the invitation's) that joins with the invitation. The form
    has checked the username and the password (Django's validators)."""
    now = timezone.now()
    with transaction.atomic():
        invitation = _pending_by_token_locked(token, now)
        try:
            with transaction.atomic():
                user = get_user_model().objects.create_user(
                    username=username, email=invitation.email, password=password
                )
        except IntegrityError:
            raise TeamError("That username is taken: choose another.") from None
        audit.record(
            "account.create",
            actor=user,
            object_type="user",
            object_id=user.pk,
            label=f"{user.get_username()} (by invitation)",
            owner=user,
            team=invitation.team,
        )
        return user, _accept_locked(invitation, user, now)


def is_invited(email: str) -> bool:
    """Whether a pending invitation names this address: single sign-on may make its account
    (osai_dashboard/signin/adapters.py `may_sign_up`)."""
    return Invitation.objects.pending().filter(email__iexact=email.strip()).exists()


def _to_verified(user: User) -> Q | None:
    """Invitations to one of the person's verified addresses (any case); None if they have
    none."""
    emails = verified_emails(user)
    if not emails:
        return None
    return reduce(lambda either, email: either | Q(email__iexact=email), emails, Q())


def invitations_for_person(user: User) -> QuerySet[Invitation]:
    """A person's pending invitations: those to an address they verified (`verified_emails`);
    one to an address merely typed on their account is not listed."""
    mine = _to_verified(user)
    if mine is None:
        return Invitation.objects.none()
    return (
        Invitation.objects.pending()
        .filter(mine)
        .select_related("team", "invited_by")
        .order_by("-created_at", "-pk")
    )


def _mine_locked(user: User, pk: int) -> Invitation:
    """One of the person's invitations (to an address they verified), its row locked; any
    other is "no such invitation" (a 404 on the page)."""
    mine = _to_verified(user)
    if mine is None:
        raise InvitationGone("No such invitation.")
    invitation = (
        Invitation.objects.select_for_update().select_related("team").filter(mine, pk=pk).first()
    )
    if invitation is None:
        raise InvitationGone("No such invitation.")
    return invitation


def invitation_accept_mine(*, user: User, pk: int) -> Membership:
    """Accept an invitation to the person's own email address from their teams page."""
    now = timezone.now()
    with transaction.atomic():
        invitation = _mine_locked(user, pk)
        ensure_pending(invitation, now)
        return _accept_locked(invitation, user, now)


def invitation_decline_mine(*, user: User, pk: int) -> Invitation:
    now = timezone.now()
    with transaction.atomic():
        invitation = _mine_locked(user, pk)
        ensure_pending(invitation, now)
        Invitation.objects.filter(pk=invitation.pk).update(declined_at=now)
        invitation.declined_at = now
        _record("invitation.decline", invitation, user, owner=user)
        return invitation


def pending_for_team(team: Team) -> QuerySet[Invitation]:
    return (
        Invitation.objects.pending()
        .filter(team=team)
        .select_related("invited_by")
        .order_by("-created_at", "-pk")
    )


def invitation_withdraw(*, team: Team, actor: User | None, pk: int) -> Invitation:
    """An admin withdraws one of the team's pending invitations; its link stops working."""
    now = timezone.now()
    with transaction.atomic():
        roster.require(team, actor, Capability.MANAGE_MEMBERS)
        invitation = (
            Invitation.objects.select_for_update().select_related("team").filter(pk=pk, team=team)
        ).first()
        if invitation is None or state(invitation, now=now) != "pending":
            raise InvitationGone("No such pending invitation.")
        Invitation.objects.filter(pk=invitation.pk).update(withdrawn_at=now)
        invitation.withdrawn_at = now
        _record("invitation.withdraw", invitation, actor)
        return invitation
