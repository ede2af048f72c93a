"""Running a team: who is in it, with which role, and its price book (M4)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from reports import audit
from reports.access import Capability, may, roles_that_may
from reports.models import Membership, PriceBook, Team, has_control_characters
from reports.teams import TeamError, sharing

Role = Membership.Role


def memberships_of(user: User) -> QuerySet[Membership]:
    """The user's memberships with their teams, by team name."""
    return Membership.objects.filter(user=user).select_related("team").order_by("team__name")


def membership_for(
    user: User, team_pk: int, capability: Capability = Capability.SEE_TEAM
) -> Membership | None:
    """The user's membership of the team if its role may do `capability`, or None. One query."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(user=user, team_id=team_pk, role__in=roles_that_may(capability))
        .select_related("team")
        .first()
    )


def team_members(team: Team) -> QuerySet[Membership]:
    """The team's memberships, admins first, then by username."""
    return (
        Membership.objects.filter(team=team)
        .select_related("user")
        .order_by("role", "user__username")  # "admin" < "member" < "viewer"
    )


def lock_roster(team: Team) -> None:
    """Lock the team's memberships until the transaction ends (M4). Two admins changing
    roles at once (demoting each other) are served one after the other, each deciding on
    the roster the other left, so the second change finds the team without another admin
    and is refused. (On SQLite, IMMEDIATE transactions serialize them already.)"""
    list(
        Membership.objects.select_for_update()
        .filter(team=team)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def require(team: Team, actor: User | None, capability: Capability) -> None:
    """`actor`'s role in the team must allow `capability`; None is the operator (the command
    line), who may do everything."""
    if actor is not None and membership_for(actor, team.pk, capability) is None:
        raise TeamError("Only the team's admins can do that.")


def _keep_an_admin(team: Team) -> None:
    """Raise (and so roll back the change) if the team would be left without someone who may
    run it (M4)."""
    runners = roles_that_may(Capability.MANAGE_MEMBERS)
    if not Membership.objects.filter(team=team, role__in=runners).exists():
        raise TeamError(
            f"{team.name} must keep at least one admin: make someone else an admin first."
        )


def check_role(role: str) -> None:
    if role not in Role.values:
        names = [label.lower() for label in Role.labels]
        raise TeamError(f"Choose a role: {', '.join(names[:-1])} or {names[-1]}.")


def find_user(who: str) -> User:
    """A user by username or email address (case-insensitive for the email)."""
    who = (who or "").strip()
    if not who:
        raise TeamError("Give a username or an email address.")
    users = get_user_model().objects
    user = users.filter(username=who).first()
    if user is None and "@" in who:
        matches = list(users.filter(email__iexact=who)[:2])
        if len(matches) > 1:
            raise TeamError(f"Several accounts use {who}: give the username instead.")
        user = matches[0] if matches else None
    if user is None:
        raise TeamError(f"Nobody here has the username or email {who!r}.")
    return user


def record_member(
    action: str,
    team: Team,
    actor: User | None,
    user: User,
    pk: int | None,
    *,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
) -> None:
    """The audit entry of a change to `user`'s membership `pk` of the team (the roster's and
    invitations')."""
    audit.record(
        action,
        actor=actor,
        object_type="membership",
        object_id=pk,
        label=f"{user.get_username()} in {team.name}",
        team=team,
        owner=user,
        before=before,
        after=after,
    )


@transaction.atomic
def team_create(*, name: str, admin: User) -> Team:
    """A new team with `admin` as its first admin."""
    if has_control_characters(name or ""):
        raise TeamError(
            "Give the name as one line of text: no line breaks, tabs or other control characters."
        )
    name = " ".join((name or "").split())
    if not name:
        raise TeamError("Give the team a name.")
    if len(name) > Team._meta.get_field("name").max_length:  # type: ignore[operator]
        raise TeamError("That name is too long.")
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name)
    except IntegrityError:
        raise TeamError(f"There is already a team called {name!r}.") from None
    Membership.objects.create(team=team, user=admin, role=Role.ADMIN)
    audit.record(
        "team.create",
        actor=admin,
        object_type="team",
        object_id=team.pk,
        label=team.name,
        team=team,
    )
    first = Membership.objects.get(team=team, user=admin)
    record_member("member.add", team, admin, admin, first.pk, after={"role": first.role})
    return team


@transaction.atomic
def team_member_add(*, team: Team, actor: User | None, who: str, role: str = Role.MEMBER) -> User:
    """Add a person (by username or email) to the team. Shares nothing of theirs (M1)."""
    lock_roster(team)
    require(team, actor, Capability.MANAGE_MEMBERS)
    check_role(role)
    user = find_user(who)
    if Membership.objects.filter(team=team, user=user).exists():
        raise TeamError(f"{user.get_username()} is already in {team.name}.")
    membership = Membership.objects.create(team=team, user=user, role=role)
    record_member("member.add", team, actor, user, membership.pk, after={"role": role})
    return user


@transaction.atomic
def team_member_set_role(*, team: Team, actor: User | None, user: User, role: str) -> None:
    """Change someone's role. A role that shares nothing (a viewer) ends their sharing with
    the team at once, as leaving does (M1)."""
    lock_roster(team)  # before the checks: they read the roster as it is now
    require(team, actor, Capability.MANAGE_MEMBERS)
    check_role(role)
    before = Membership.objects.filter(team=team, user=user).first()
    if before is None:
        raise TeamError(f"{user.get_username()} is not in {team.name}.")
    Membership.objects.filter(pk=before.pk).update(role=role)
    if before.role != role:
        record_member(
            "member.role",
            team,
            actor,
            user,
            before.pk,
            before={"role": before.role},
            after={"role": role},
        )
    _keep_an_admin(team)
    if not may(role, Capability.SHARE_OWN_CONNECTIONS):
        sharing.sharing_end(team=team, user=user)


@transaction.atomic
def team_member_remove(*, team: Team, actor: User | None, user: User) -> None:
    """Remove a person from the team (an admin's act), or leave it (`actor` is `user`).

    Their sharing with the team ends with their membership, at once (M1).
    """
    lock_roster(team)
    if actor is None or actor.pk != user.pk:
        require(team, actor, Capability.MANAGE_MEMBERS)
    before = Membership.objects.filter(team=team, user=user).first()
    if before is None:
        raise TeamError(f"{user.get_username()} is not in {team.name}.")
    pk = before.pk
    before.delete()
    leaving = actor is not None and actor.pk == user.pk
    record_member(
        "member.leave" if leaving else "member.remove",
        team,
        actor,
        user,
        pk,
        before={"role": before.role},
    )
    _keep_an_admin(team)
    sharing.sharing_end(team=team, user=user)


def _record_setting(
    action: str, team: Team, actor: User | None, key: str, before: object, after: object
) -> None:
    """The audit entry of a change to one of the team's settings."""
    audit.record(
        action,
        actor=actor,
        object_type="team",
        object_id=team.pk,
        label=team.name,
        team=team,
        before={key: before},
        after={key: after},
    )


@transaction.atomic
def team_price_book_set(*, team: Team, actor: User | None, price_book: PriceBook | None) -> None:
    """The rates the team's reports are priced with (all of them, earlier ones included): a
    shared book or one of the team's own."""
    require(team, actor, Capability.CHOOSE_PRICE_BOOK)
    if price_book is not None and price_book.team_id not in (None, team.pk):
        raise TeamError("That price book belongs to another team.")
    previous = Team.objects.filter(pk=team.pk).values_list("price_book__name", flat=True).first()
    Team.objects.filter(pk=team.pk).update(price_book=price_book)
    team.price_book = price_book
    _record_setting(
        "team.price_book",
        team,
        actor,
        "price_book",
        previous,
        price_book.name if price_book else None,
    )


@transaction.atomic
def team_two_factor_set(*, team: Team, actor: User | None, required: bool) -> None:
    """Whether the team's members who sign in with a password must use two-factor sign-in
    (S15; osai_dashboard/signin/middleware.py enforces it)."""
    require(team, actor, Capability.MANAGE_MEMBERS)
    previous = Team.objects.filter(pk=team.pk).values_list("require_two_factor", flat=True).first()
    Team.objects.filter(pk=team.pk).update(require_two_factor=required)
    team.require_two_factor = required
    _record_setting("team.two_factor", team, actor, "require_two_factor", previous, required)


def team_digest_set(*, membership: Membership, wanted: bool) -> None:
    """A viewer's choice to get the team's digests (admins get them anyway)."""
    if not may(membership.role, Capability.OPT_INTO_TEAM_DIGEST):
        raise TeamError("Only the team's viewers choose whether to get its digests.")
    Membership.objects.filter(pk=membership.pk).update(team_digest=wanted)
    membership.team_digest = wanted
