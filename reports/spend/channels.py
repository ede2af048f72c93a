"""Channels: where budget alerts and digests go, a person's own or a team's.

A channel is owned by a person or by a team (its admins manage it: `MANAGE_CHANNELS` in
reports/access.py). Kinds: email (addresses; a team's may also go "to the team's admins",
resolved when each message is sent, A8), a signed webhook (URL and signing secret, A3), a
Slack incoming webhook and a Microsoft Teams workflow webhook. Every URL is checked like a
budget webhook's when it is added (A2: https, every address the host resolves to public) and
again when it is used (reports/spend/outbound.py); URLs and secrets are encrypted at rest and
never shown again (pages show the host and last four characters).

"Send a test" queues one message through the outbox (reports/spend/notify.py), like an alert.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet

from reports import audit, crypto
from reports.access import Capability, team_addresses_refused, teams_where
from reports.models import Channel, Delivery, Team, has_control_characters
from reports.spend import notify
from reports.spend.messages import channel_test_message
from reports.spend.outbound import WebhookRefused, check_target

MAX_EMAILS = 20
MAX_SECRET = 500
MAX_URL = 2000


class ChannelError(Exception):
    """A channel that cannot be added or used; the message is for the form or the command."""


def parse_emails(values: Iterable[str]) -> list[str]:
    emails: list[str] = []
    for value in values:
        for address in str(value).replace(";", ",").split(","):
            address = address.strip()
            if not address:
                continue
            try:
                validate_email(address)
            except ValidationError:
                raise ChannelError(f"{address!r} is not an email address.") from None
            if address not in emails:
                emails.append(address)
    if len(emails) > MAX_EMAILS:
        raise ChannelError(f"A channel emails at most {MAX_EMAILS} addresses.")
    return emails


def check_url(url: str) -> str:
    """The URL, if it may be posted to (A2); ChannelError with the reason otherwise."""
    url = (url or "").strip()
    if not url:
        raise ChannelError("Give the webhook's URL.")
    if len(url) > MAX_URL:
        raise ChannelError("The URL is too long.")
    try:
        check_target(url, allow_local=settings.ALERT_WEBHOOK_ALLOW_LOCAL)
    except WebhookRefused as exc:
        raise ChannelError(str(exc)) from None
    return url


def channels_managed_by(user: User) -> QuerySet[Channel]:
    """A person's own channels and those of the teams whose channels they manage (admins)."""
    if not user.is_authenticated:
        return Channel.objects.none()
    return Channel.objects.filter(
        Q(owner=user) | Q(team__in=teams_where(user, Capability.MANAGE_CHANNELS))
    )


def refuse_non_admin_addresses(
    team: Team | None,
    addresses: Iterable[str],
    why: str,
    error: type[Exception] = ChannelError,
) -> None:
    """Raises `error`, naming them and then `why`, if any of `addresses` is one a team's alerts
    may not go to (`team_addresses_refused`). A person's own alerts go anywhere."""
    if team is not None and (
        wrong := team_addresses_refused(team, Capability.RECEIVE_ALERTS, addresses)
    ):
        raise error(f"{', '.join(wrong)}: {why}")


def channels_usable(user: User, team: Team | None) -> QuerySet[Channel]:
    """The channels a budget or digest of `team` (None: the person's own) may send to."""
    if team is None:
        return (
            Channel.objects.filter(owner=user) if user.is_authenticated else Channel.objects.none()
        )
    return Channel.objects.filter(team=team)


@transaction.atomic
def channel_add(
    *,
    actor: User,
    kind: str,
    name: str,
    team: Team | None = None,
    emails: Sequence[str] = (),
    to_team_admins: bool = False,
    url: str = "",
    secret: str = "",
) -> Channel:
    """Add a channel of the actor's own, or of a team whose channels they manage."""
    if (
        team is not None
        and not teams_where(actor, Capability.MANAGE_CHANNELS).filter(pk=team.pk).exists()
    ):
        raise ChannelError("Only the team's admins add its channels.")
    name = (name or "").strip()
    if not name or len(name) > 120 or has_control_characters(name):
        raise ChannelError("Give the channel a name of one line, at most 120 characters.")
    if kind not in Channel.Kind.values:
        raise ChannelError("Choose email, a signed webhook, Slack or Microsoft Teams.")
    channel = Channel(
        owner=None if team else actor, team=team, kind=kind, name=name, created_by=actor
    )
    if kind == Channel.Kind.EMAIL:
        addresses = parse_emails(emails)
        refuse_non_admin_addresses(
            team, addresses, "a team's messages go to its admins, never to its viewers or members."
        )
        channel.to_team_admins = bool(team is not None and to_team_admins)
        if not addresses and not channel.to_team_admins:
            raise ChannelError("Give at least one address.")
        channel.emails = addresses
    else:
        channel.set_url(check_url(url))
        if kind == Channel.Kind.WEBHOOK:
            if not secret:
                raise ChannelError("A signed webhook needs a secret to sign its messages with.")
            if len(secret) > MAX_SECRET:
                raise ChannelError("The webhook secret is too long.")
            channel.secret_encrypted = crypto.encrypt_secret(secret)
    channel.save()
    _record("channel.add", actor, channel, None, _audited(channel))
    return channel


def _audited(channel: Channel) -> dict[str, Any]:
    """What the audit log keeps of a channel (M7): its kind, its addresses, and of a URL only
    its host and last four characters (a Slack or Teams URL is a secret); never the secret."""
    kept: dict[str, Any] = {"kind": channel.kind, "name": channel.name}
    if channel.kind == Channel.Kind.EMAIL:
        kept["emails"] = list(channel.emails)
        kept["to_team_admins"] = channel.to_team_admins
    else:
        kept["address"] = channel.url_hint
    return kept


def _record(
    action: str,
    actor: User,
    channel: Channel,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> None:
    audit.record(
        action,
        actor=actor,
        object_type="channel",
        object_id=channel.pk,
        label=f"{channel.get_kind_display()} channel {channel.name}",
        team=channel.team_id,
        owner=channel.owner_id,
        before=before,
        after=after,
    )


@transaction.atomic
def channel_delete(*, actor: User, channel: Channel) -> None:
    if not channels_managed_by(actor).filter(pk=channel.pk).exists():
        raise ChannelError("You cannot remove this channel.")
    before, pk = _audited(channel), channel.pk
    channel.delete()
    channel.pk = pk
    _record("channel.delete", actor, channel, before, None)


def channel_send_test(*, actor: User, channel: Channel) -> Delivery:
    """Queue one test message to the channel, through the outbox like any alert."""
    if not channels_managed_by(actor).filter(pk=channel.pk).exists():
        raise ChannelError("You cannot test this channel.")
    message = channel_test_message(channel.name)
    with transaction.atomic():
        [delivery] = notify.deliveries_create(
            subject=message.title,
            text=message.text,
            payload={"text": message.title, "test": True},
            emails=[],
            channels=[channel],
            message=message,
        )
    return delivery


def email_channel_for(
    *, actor: User, team: Team | None, addresses: Sequence[str], name: str = ""
) -> Channel:
    """An email channel to exactly these addresses, of the person or the team: the one that
    exists, or a new one (what a budget's typed addresses become)."""
    owner = channels_usable(actor, team).filter(kind=Channel.Kind.EMAIL, to_team_admins=False)
    for channel in owner:
        if list(channel.emails) == list(addresses):
            return channel
    label = name or "Email " + ", ".join(addresses)
    return channel_add(
        actor=actor,
        kind=Channel.Kind.EMAIL,
        name=label[:119] + ("…" if len(label) > 119 else ""),
        team=team,
        emails=addresses,
    )


def webhook_channel_for(
    *, actor: User, team: Team | None, url: str, secret: str | None, among: Iterable[Channel]
) -> Channel:
    """The signed webhook channel among `among` (a budget's) that posts to `url`, its secret
    replaced when one is given (None keeps it); or a new one, which needs a secret."""
    url = check_url(url)
    for channel in among:
        if channel.kind != Channel.Kind.WEBHOOK:
            continue
        try:
            same = channel.url == url
        except crypto.TokenDecryptionError:
            continue
        if same:
            if secret:
                if len(secret) > MAX_SECRET:
                    raise ChannelError("The webhook secret is too long.")
                channel.secret_encrypted = crypto.encrypt_secret(secret)
                channel.save(update_fields=["secret_encrypted"])
            return channel
    host = urlsplit(url).hostname or "its host"
    return channel_add(
        actor=actor,
        kind=Channel.Kind.WEBHOOK,
        name=f"Webhook to {host}"[:120],
        team=team,
        url=url,
        secret=secret or "",
    )
