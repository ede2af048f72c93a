"""The outbox: alerts and digests sent by email and webhook, each exactly as often as needed.

A message is a `Delivery` row, created in the same transaction as what caused it (an alert
row, a digest row), so nothing is lost and nothing is sent twice by a second evaluation. A
django-q2 task sends it: it claims the row with a lease, sends, then records the result.
Failures are retried with back-off (ALERT_DELIVERY_RETRY_SECONDS, doubling) up to
ALERT_DELIVERY_MAX_ATTEMPTS, then shown as failed with the reason (A4). A worker killed
between sending and recording makes the lease run out and the message go again: at most one
duplicate per kill, carrying the same idempotency key (X-OSAI-Usage-Delivery) so a receiver
can drop it (A1).

No send holds a worker for long, and none is tried for ever (A7): each send, email or
webhook, ends within ALERT_DELIVERY_DEADLINE_SECONDS (never longer than the lease, so a send
is never taken over while it still runs); every claim counts an attempt, and the claim after
the last one gives up, whatever ended the attempts (an answer, an unexpected error, a
killed worker); the reason is recorded at each step, so the page never says "waiting" for
a message that cannot go.

Most messages go through a channel (`Channel`, reports/spend/channels.py): one delivery per
channel, whose addresses and URL are read from the channel when it is sent, never copied into
the delivery (a team's "to the team's admins" is resolved then too: A8). Signed webhook
bodies are JSON with a Slack-compatible `text` and are signed:
`X-OSAI-Usage-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>` (A3); Slack and Teams
get the bodies their webhooks document (reports/spend/messages.py), with the same delivery
key in X-OSAI-Usage-Delivery. No token, JWT, signed link, webhook secret or channel URL is
ever in a message or a log (A5).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Lower
from django.utils import timezone

from reports import crypto
from reports.access import (
    Capability,
    may_in_team,
    team_addresses_allowed,
    team_emails,
    verified_emails_of,
)
from reports.models import (
    Alert,
    Anomaly,
    Budget,
    Channel,
    Delivery,
    DigestPreference,
    one_line,
    prune_rows,
)
from reports.pipeline import dispatcher
from reports.pipeline.failpoints import failpoint
from reports.spend.messages import Message, slack_body, teams_body
from reports.spend.outbound import (
    Deadline,
    WebhookFailed,
    WebhookRefused,
    mail_connection,
    post_json,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-OSAI-Usage-Signature"
DELIVERY_HEADER = "X-OSAI-Usage-Delivery"
# Written by the claim over a lease that ran out: the attempt before never recorded its end.
UNFINISHED = (
    "An attempt did not finish: its worker stopped (killed, restarted or out of time) before "
    "recording the result."
)


class DeliveryRefused(Exception):
    """Not to be sent, and trying again will not help; the message is for the budget page."""


class DeliveryTimedOut(Exception):
    """The send passed its deadline (ALERT_DELIVERY_DEADLINE_SECONDS)."""


def send_deadline_seconds() -> float:
    """How long one send may take: the deadline, and never longer than the lease."""
    return float(
        min(settings.ALERT_DELIVERY_DEADLINE_SECONDS, settings.ALERT_DELIVERY_LEASE_SECONDS)
    )


def channels_stopped(budget: Budget) -> bool:
    """True for a team budget whose channels were chosen by someone who is no longer one of
    the team's admins (A8): they stop, and its alerts go to the team's admins."""
    return budget.team_id is not None and not may_in_team(
        budget.channels_set_by_id, budget.team_id, Capability.MANAGE_BUDGETS
    )


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliveries_create(
    *,
    subject: str,
    text: str,
    payload: dict[str, Any],
    emails: list[str],
    webhook_url: str = "",
    channels: list[Channel] | tuple[Channel, ...] = (),
    message: Message | None = None,
    budget: Budget | None = None,
    alert: Alert | None = None,
    anomaly: Anomaly | None = None,
) -> list[Delivery]:
    """One delivery per target, sent after commit: one email to every address in `emails`,
    one unsigned post to `webhook_url`, and one per channel. A channel's delivery keeps no
    address or URL: they are read from the channel when it is sent. Slack and Teams bodies
    are made here, from `message` (or the subject and text)."""
    rows = []
    now = timezone.now()
    message = message or Message(title=one_line(subject), text=text)
    targets: list[tuple[str, str, Channel | None]] = []
    if emails:
        targets.append((Channel.Kind.EMAIL, ", ".join(emails), None))
    if webhook_url:
        targets.append((Channel.Kind.WEBHOOK, webhook_url, None))
    targets += [(channel.kind, "", channel) for channel in channels]
    for kind, target, channel in targets:
        key = uuid.uuid4().hex
        if kind == Channel.Kind.SLACK:
            body = slack_body(message, key=key)
        elif kind == Channel.Kind.TEAMS:
            body = teams_body(message, key=key)
        elif kind == Channel.Kind.WEBHOOK:
            body = {**payload, "delivery": key}
        else:
            body = {}
        rows.append(
            Delivery.objects.create(
                key=key,
                channel=kind,
                target=target,
                via=channel,
                subject=one_line(subject)[:200],
                text=text,
                payload=body,
                budget=budget,
                alert=alert,
                anomaly=anomaly,
                next_attempt_at=now,
            )
        )
    if rows:
        dispatcher.wake()  # the dispatcher sends due deliveries too
    return rows


def delivery_send(pk: int, *, now: datetime | None = None) -> str:
    """Send one delivery (a django-q2 task). Safe to run twice: it claims a lease first.

    The claim counts the attempt. If the lease it takes over was never released, the attempt
    before did not finish, and the claim says so in `last_error`; past the attempt limit the
    delivery is failed with that reason instead of being sent again (A7).
    """
    now = now or timezone.now()
    lease = now + timedelta(seconds=settings.ALERT_DELIVERY_LEASE_SECONDS)
    claimed = (
        Delivery.objects.filter(pk=pk, state=Delivery.State.PENDING)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=lease,
            next_attempt_at=lease,
            attempts=F("attempts") + 1,
            # Read before the update: a lease still set means nobody recorded the attempt.
            last_error=Case(
                When(lease_until__isnull=False, then=Value(UNFINISHED)),
                default=F("last_error"),
            ),
        )
    )
    if not claimed:
        return "not claimed (sent, failed, or another worker holds it)"
    delivery = Delivery.objects.select_related("budget", "via", "anomaly__connection").get(pk=pk)
    if delivery.attempts > settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        made = delivery.attempts - 1
        reason = delivery.last_error.removeprefix("Retrying: ") or UNFINISHED
        _fail(delivery, f"{reason} (gave up after {made} attempt{'s' if made != 1 else ''})")
        return "gave up"
    seconds = send_deadline_seconds()
    try:
        with Deadline(seconds) as deadline:
            try:
                if reason := _anomaly_not_wanted(delivery):
                    raise DeliveryRefused(reason)
                if delivery.channel == Channel.Kind.EMAIL:
                    _send_email(delivery)
                else:
                    _send_webhook(delivery, seconds)
            except (smtplib.SMTPException, OSError):
                if deadline.fired:
                    raise DeliveryTimedOut from None
                raise
    except (WebhookRefused, DeliveryRefused) as exc:
        _fail(delivery, str(exc))
        return "refused"
    except DeliveryTimedOut:
        return _retry_or_fail(delivery, _timed_out(delivery, seconds))
    except (WebhookFailed, smtplib.SMTPException, OSError) as exc:
        reason = str(exc) if isinstance(exc, WebhookFailed) else _mail_failure(exc)
        return _retry_or_fail(delivery, reason)
    except Exception as exc:
        # Not expected, so not trusted to say anything safe: its type only, the rest to the log.
        log.exception("Delivery %s (%s) failed unexpectedly", delivery.key, delivery.channel)
        return _retry_or_fail(delivery, f"It could not be sent ({type(exc).__name__}).")
    failpoint("after_send")
    Delivery.objects.filter(pk=pk).update(
        state=Delivery.State.SENT,
        sent_at=timezone.now(),
        lease_until=None,
        next_attempt_at=None,
        last_error="",
    )
    return "sent"


def wants_anomaly_alerts(user_id: int) -> bool:
    """The person's "Email me about usage anomalies" (on unless they turned it off), asked
    when an anomaly's messages are queued (anomaly_alerts.audiences) and when they are sent."""
    return not DigestPreference.objects.filter(user_id=user_id, anomalies=False).exists()


def _anomaly_not_wanted(delivery: Delivery) -> str:
    """Why an anomaly's message (A12), queued earlier, is not to be sent now: the one place
    sending asks. Its anomaly was marked "expected" since; or it goes to the person's own
    channel (or, for one without channels, their own address) and that person turned off
    "Email me about usage anomalies" since. A team's channels are not a person's: they still
    go, their email leaving out an opted-out address (`_recipients_now`). Empty: send it."""
    anomaly = delivery.anomaly
    if anomaly is None:
        return ""
    if not anomaly.alerting:
        return "Not sent: its anomaly was marked as expected."
    if delivery.via is not None:
        person = delivery.via.owner_id  # None for a team's channel
    else:
        # No channel: the owner's own address (a deleted channel's delivery has no target
        # and is refused as such by `_channel_of`).
        person = anomaly.connection.owner_id if delivery.target else None
    if person is not None and not wants_anomaly_alerts(person):
        return (
            'Not sent: its owner turned off "Email me about usage anomalies" after it was queued.'
        )
    return ""


def _retry_or_fail(delivery: Delivery, reason: str) -> str:
    """After a failed attempt: try again after the back-off, or fail at the attempt limit."""
    if delivery.attempts >= settings.ALERT_DELIVERY_MAX_ATTEMPTS:
        _fail(delivery, f"{reason} (gave up after {delivery.attempts} attempts)")
        return "failed"
    delay = settings.ALERT_DELIVERY_RETRY_SECONDS * 2 ** (delivery.attempts - 1)
    Delivery.objects.filter(pk=delivery.pk).update(
        lease_until=None,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        last_error=f"Retrying: {reason}"[:500],
    )
    dispatcher.wake()
    return "will retry"


def _timed_out(delivery: Delivery, seconds: float) -> str:
    if delivery.channel == Channel.Kind.EMAIL:
        where = f"The mail server at {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    else:
        where = "The webhook's server"
    return f"{where} did not finish within {seconds:g} s."


def _fail(delivery: Delivery, reason: str) -> None:
    log.warning("Delivery %s (%s) failed: %s", delivery.key, delivery.channel, reason)
    Delivery.objects.filter(pk=delivery.pk).update(
        state=Delivery.State.FAILED, lease_until=None, next_attempt_at=None, last_error=reason[:500]
    )


def _mail_failure(exc: BaseException) -> str:
    """Why mail could not be sent, without the server's credentials."""
    host = f"{settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "The mail server refused the recipients."
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"The mail server at {host} refused our sign-in."
    if isinstance(exc, smtplib.SMTPException):
        return f"The mail server at {host} refused the message ({type(exc).__name__})."
    return f"The mail server at {host} could not be reached."


def _recipients_now(delivery: Delivery) -> list[str]:
    """Whom the email goes to, decided now (`addresses_now`); refused if nobody is left."""
    channel = _channel_of(delivery)
    if channel is not None:
        addresses = channel_addresses(channel)
    else:
        addresses = [address.strip() for address in delivery.target.split(",") if address.strip()]
    allowed = addresses_now(addresses, channel=channel, budget=delivery.budget)
    if delivery.anomaly_id is not None:
        stopped = anomaly_alerts_stopped(allowed)
        allowed = [address for address in allowed if address.lower() not in stopped]
        if not allowed:
            raise DeliveryRefused(
                "Not sent: everyone it would go to turned off emails about usage anomalies."
            )
    if not allowed:
        raise DeliveryRefused(
            "Not sent: none of its addresses gets the team's alerts any more (they go to the "
            "team's current admins)."
        )
    return allowed


def anomaly_alerts_stopped(addresses: list[str]) -> set[str]:
    """Those of `addresses` (lower case) whose account turned off "Email me about usage
    anomalies" (`DigestPreference.anomalies`, A12): an anomaly alert, resolved when it is sent,
    leaves them out of any email channel, a team's included. Only an account that has shown
    the address is its own (`access.verified_emails_of`) stops it: one made by single sign-on
    on someone else's unverified address cannot silence that person's alerts."""
    if not addresses:
        return set()
    opted_out = dict(
        DigestPreference.objects.filter(anomalies=False)
        .annotate(email_lower=Lower("user__email"))
        .filter(email_lower__in={address.lower() for address in addresses})
        .values_list("user_id", "email_lower")
    )
    if not opted_out:
        return set()
    verified = verified_emails_of(opted_out)
    return {
        email
        for user_id, email in opted_out.items()
        if email in {mine.lower() for mine in verified[user_id]}
    }


def channel_addresses(channel: Channel) -> list[str]:
    """An email channel's addresses; a team's "to the team's admins" are its admins now."""
    addresses = list(channel.emails)
    if channel.team_id is not None and channel.to_team_admins:
        addresses += team_emails(channel.team_id, Capability.RECEIVE_ALERTS)
    return list(dict.fromkeys(addresses))


def addresses_now(
    addresses: list[str], *, channel: Channel | None, budget: Budget | None
) -> list[str]:
    """The addresses a message may go to at this moment. A team's message (a team channel's,
    or a team budget's) goes to the team's current admins (A8): an address whose account is
    no longer one that gets the team's alerts (its holder left, or took another role, since
    it was chosen or the alert queued) is left out, and so is every other address once the
    budget's channels' chooser is no longer an admin."""
    team_id = channel.team_id if channel is not None else None
    if budget is not None and budget.team_id is not None:
        team_id = budget.team_id
    addresses = list(dict.fromkeys(addresses))
    if team_id is None:
        return addresses
    if budget is not None and budget.team_id is not None and channels_stopped(budget):
        admins = {email.lower() for email in team_emails(team_id, Capability.RECEIVE_ALERTS)}
        return [address for address in addresses if address.lower() in admins]
    return team_addresses_allowed(team_id, Capability.RECEIVE_ALERTS, addresses)


def _channel_of(delivery: Delivery) -> Channel | None:
    """The delivery's channel; refused if it had one that was deleted since."""
    if delivery.via_id is not None:
        return delivery.via
    if not delivery.target:
        raise DeliveryRefused("Not sent: its channel was deleted.")
    return None


def _send_email(delivery: Delivery) -> None:
    message = EmailMessage(
        subject=one_line(delivery.subject),  # rows made before labels were one line
        connection=mail_connection(),
        body=delivery.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=_recipients_now(delivery),
        headers={DELIVERY_HEADER: delivery.key},
    )
    message.send(fail_silently=False)


def _send_webhook(delivery: Delivery, seconds: float) -> None:
    """A signed webhook, Slack or Teams: the body made when it was queued, to the URL read
    now (the channel's, decrypted), through the checked address (A2)."""
    budget = delivery.budget
    if budget is not None and channels_stopped(budget):
        raise DeliveryRefused(
            "Not sent: its channel was chosen by someone who is no longer an admin of the "
            "team; an admin saving the budget takes it over."
        )
    channel = _channel_of(delivery)
    url, secret = delivery.target, ""
    if channel is not None:
        try:
            url = channel.url
            if channel.kind == Channel.Kind.WEBHOOK and channel.secret_encrypted:
                secret = crypto.decrypt_secret(channel.secret_encrypted)
        except crypto.TokenDecryptionError:
            raise WebhookRefused(
                "The channel's URL or secret cannot be read with the configured OSAI_TOKEN_KEYS."
            ) from None
    body = json.dumps(delivery.payload, sort_keys=True).encode()
    headers = {DELIVERY_HEADER: delivery.key}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    post_json(
        url,
        body,
        headers,
        timeout=min(settings.ALERT_WEBHOOK_TIMEOUT_SECONDS, seconds),
        deadline=seconds,
        allow_local=settings.ALERT_WEBHOOK_ALLOW_LOCAL,
    )


# --- Retention (R1) -----------------------------------------------------------------------------


def deliveries_past_retention(*, now: datetime) -> QuerySet[Delivery]:
    """Sent and failed messages made more than OSAI_RETAIN_DELIVERIES_DAYS ago (the budget
    page and the alert log show the recent ones). A waiting message is never among them: it
    still has a send to make."""
    before = now - timedelta(days=max(1, settings.OSAI_RETAIN_DELIVERIES_DAYS))
    return Delivery.objects.filter(
        state__in=(Delivery.State.SENT, Delivery.State.FAILED), created_at__lt=before
    )


def prune_deliveries(*, now: datetime, dry_run: bool = False) -> int:
    """Delete `deliveries_past_retention`; returns how many (would) go."""
    return prune_rows(deliveries_past_retention(now=now), dry_run=dry_run)
