"""Logging filters: what a log line must never carry.

Django logs the path of every 4xx/5xx answer ("Method Not Allowed: /hooks/osai/<secret>"), and
runserver logs request lines: a webhook URL's secret would end up in the logs. This filter,
on the `django.request` and `django.server` loggers, writes `<secret>` in its place; gunicorn's
access log does the same through osai_dashboard/access_log.py. Whatever follows the prefix up
to the next `/`, `?` or space is the secret, percent-encoded or not.
"""

from __future__ import annotations

import logging
import re

_WEBHOOK_SECRET = re.compile(r"(/hooks/osai/)[^/?#\s\"']+")


def redact(text: str) -> str:
    return _WEBHOOK_SECRET.sub(r"\1<secret>", text)


class RedactWebhookSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/hooks/osai/" in message:
            record.msg, record.args = redact(message), ()
        return True
