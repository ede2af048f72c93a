"""Logging filters: what a log line must never carry.

Django logs the path of every 4xx/5xx answer ("Method Not Allowed: /hooks/osai/<secret>"), and
runserver logs request lines: a webhook URL's secret would end up in the logs. This filter,
on the `django.request` and `django.server` loggers, writes `<secret>` in its place.
"""

from __future__ import annotations

import logging
import re

_WEBHOOK_SECRET = re.compile(r"(/hooks/osai/)[A-Za-z0-9_-]+")


def redact(text: str) -> str:
    return _WEBHOOK_SECRET.sub(r"\1<secret>", text)


class RedactWebhookSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/hooks/osai/" in message:
            record.msg, record.args = redact(message), ()
        return True
