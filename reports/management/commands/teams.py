"""Run teams from scripts: the operator's side of what team admins do on the team page.

    manage.py teams create NAME --admin USER
    manage.py teams add NAME USER [--role admin|member|viewer]   (USER: username or email)
    manage.py teams invite NAME EMAIL [--role admin|member|viewer]  (prints the link)
    manage.py teams remove NAME USER
    manage.py teams role NAME USER --role admin|member|viewer
    manage.py teams share NAME --user USER --connection LABEL
    manage.py teams unshare NAME --user USER --connection LABEL
    manage.py teams list

`add` adds an existing account directly (the operator's act); `invite` emails an invitation
(M6), as the team page does, and prints its link: it works once, for OSAI_INVITATION_DAYS.
Every change is in the audit log, as made from the command line (M7).

The same rules hold as on the pages: a team keeps at least one admin; removing someone ends
their sharing at once; sharing needs the owner to be a member or an admin (a viewer, finance,
reads the team's spend and shares nothing: making someone a viewer ends their sharing).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from reports.management.cli import AuditedCommand
from reports.models import Connection, Membership, Team
from reports.teams import TeamError, invitations, roster, sharing

ROLES = list(Membership.Role.values)


class Command(AuditedCommand):
    help = "Create teams, add and remove people, change roles, share connections."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        create = actions.add_parser("create", help="create a team with its first admin")
        create.add_argument("name")
        create.add_argument("--admin", required=True, help="username or email")
        add = actions.add_parser("add", help="add someone to a team")
        add.add_argument("name")
        add.add_argument("user", help="username or email")
        add.add_argument("--role", choices=ROLES, default=Membership.Role.MEMBER)
        invite = actions.add_parser("invite", help="email an invitation and print its link")
        invite.add_argument("name")
        invite.add_argument("email")
        invite.add_argument("--role", choices=ROLES, default=Membership.Role.MEMBER)
        remove = actions.add_parser("remove", help="remove someone from a team")
        remove.add_argument("name")
        remove.add_argument("user", help="username or email")
        role = actions.add_parser("role", help="change someone's role")
        role.add_argument("name")
        role.add_argument("user", help="username or email")
        role.add_argument("--role", choices=ROLES, required=True)
        for verb in ("share", "unshare"):
            sharing = actions.add_parser(verb, help=f"{verb} a member's connection with a team")
            sharing.add_argument("name")
            sharing.add_argument("--user", required=True, help="the connection's owner")
            sharing.add_argument("--connection", required=True, help="the connection's label")
        actions.add_parser("list", help="teams, their members and shared connections")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "create":
                team = roster.team_create(
                    name=options["name"], admin=roster.find_user(options["admin"])
                )
                self.stdout.write(f"Created team {team.name!r} (id {team.pk}).")
            elif action == "list":
                self._list()
            else:
                getattr(self, f"_{action}")(self._team(options["name"]), options)
        except TeamError as exc:
            raise CommandError(str(exc)) from None

    def _team(self, name: str) -> Team:
        team = Team.objects.filter(name=name).first()
        if team is None:
            raise CommandError(f"No team {name!r}.")
        return team

    def _add(self, team: Team, options: dict[str, Any]) -> None:
        user = roster.team_member_add(
            team=team, actor=None, who=options["user"], role=options["role"]
        )
        self.stdout.write(f"Added {user.get_username()} to {team.name} as {options['role']}.")

    def _invite(self, team: Team, options: dict[str, Any]) -> None:
        sent = invitations.invitation_send(
            team=team, actor=None, email=options["email"], role=options["role"]
        )
        mailed = "Emailed" if sent.emailed else "Could not email"
        self.stdout.write(
            f"{mailed} an invitation of {sent.invitation.email} to {team.name} as "
            f"{options['role']}. Its link (it works once, until "
            f"{invitations.expires(sent.invitation)}):"
        )
        self.stdout.write(sent.link)

    def _remove(self, team: Team, options: dict[str, Any]) -> None:
        user = roster.find_user(options["user"])
        roster.team_member_remove(team=team, actor=None, user=user)
        self.stdout.write(
            f"Removed {user.get_username()} from {team.name}; their sharing with it ended."
        )

    def _role(self, team: Team, options: dict[str, Any]) -> None:
        user = roster.find_user(options["user"])
        roster.team_member_set_role(team=team, actor=None, user=user, role=options["role"])
        self.stdout.write(f"{user.get_username()} is now {options['role']} of {team.name}.")

    def _share(self, team: Team, options: dict[str, Any], *, share: bool = True) -> None:
        user = roster.find_user(options["user"])
        connection = Connection.objects.filter(owner=user, label=options["connection"]).first()
        if connection is None:
            raise CommandError(
                f"{user.get_username()} has no connection {options['connection']!r}."
            )
        shared = set(Connection.objects.filter(owner=user, shared_with_teams=team))
        shared = shared | {connection} if share else shared - {connection}
        labels = sharing.team_sharing_set(team=team, user=user, connections=shared)
        self.stdout.write(
            f"{user.get_username()} shares with {team.name}: {', '.join(labels) or 'nothing'}."
        )

    def _unshare(self, team: Team, options: dict[str, Any]) -> None:
        self._share(team, options, share=False)

    def _list(self) -> None:
        for team in Team.objects.order_by("name"):
            self.stdout.write(team.name)
            for membership in roster.team_members(team):
                self.stdout.write(f"  {membership.user.get_username()} ({membership.role})")
            for connection in sharing.team_shared_connections(team):
                self.stdout.write(
                    f"  shared: {connection.owner.get_username()} / {connection.label}"
                )
