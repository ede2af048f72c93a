"""gunicorn's access log without webhook secrets: OSAI's webhook URL carries its secret (W1).

The shipped Procfile and systemd unit start gunicorn with
`--logger-class osai_dashboard.access_log.RedactingLogger`, so every value of an access-log
line (the request line, path, query, referer, headers, environment) is written with the
secret replaced, as Django's own request logs are (osai_dashboard/log_filters.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from osai_dashboard.log_filters import redact


class RedactingLogger(Logger):
    """gunicorn's logger, its access-log atoms redacted."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> Any:
        found = super().atoms(resp, req, environ, request_time)
        return {key: redact(v) if isinstance(v, str) else v for key, v in found.items()}
