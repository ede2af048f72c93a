"""Logging filters: what a log line must never carry.

Django logs the path of every 4xx/5xx answer ("Method Not Allowed: /hooks/osai/<secret>"), and
runserver logs request lines: a webhook URL's secret would end up in the logs. This filter,
on the `django.request` and `django.server` loggers, writes `<secret>` in its place; gunicorn's
access log does the same through osai_dashboard/access_log.py. Whatever follows the prefix up
to the next `/`, `?` or space is the secret, percent-encoded or not.

An invitation's link (`/invitations/<token>/`, M6) carries its token the same way, also as a
sign-in page's `next` (`%2Finvitations%2F<token>`): it is written `<secret>` too.
"""

from __future__ import annotations

import logging
import re

_WEBHOOK_SECRET = re.compile(r"(/hooks/osai/)[^/?#\s\"']+")
_INVITATION_TOKEN = re.compile(
    r"((?:/|%2F)invitations(?:/|%2F))([A-Za-z0-9_-]{20,})", re.IGNORECASE
)
_MARKERS = ("/hooks/osai/", "invitations")


def redact(text: str) -> str:
    return _INVITATION_TOKEN.sub(r"\1<secret>", _WEBHOOK_SECRET.sub(r"\1<secret>", text))


class RedactWebhookSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(marker in message for marker in _MARKERS):
            record.msg, record.args = redact(message), ()
        return True
