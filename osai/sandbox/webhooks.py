"""The sandbox's worker webhooks: plausible "task finished" events posted to registered URLs.

OSAI posts to a URL the user gives it when a worker task finishes. The sandbox does the same for
URLs registered with `POST /__sandbox__/webhooks` ({"url", "token", "interval"}): every
`interval` seconds it posts one event for the token's account, while its simulated usage
accrues. The kind of task follows where the account's usage of the day so far went (training,
conversion, prediction, manipulation, device rental; some trainings are re-trainings), with a
typical mix blended in, and the 8/16 GB class follows the day's split of that kind; about one
task in eight fails.
`POST /__sandbox__/webhooks/fire` posts events at once (tests; a repeat, or a given body).

Nothing is posted until a URL is registered, and a reset forgets every registration, so tests
that register none get no webhook. OSAI documents no payload schema; these payloads are one
plausible shape, which the app reads without depending on it (osai/webhooks.py).
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from osai import contract
from osai.sandbox.usage import account_totals

SEND_TIMEOUT_SECONDS: Final = 5.0
MIN_INTERVAL_SECONDS: Final = 0.2
FAILURE_SHARE: Final = 0.12
RETRAINING_SHARE: Final = 0.25
DAY_SHARE: Final = 0.6  # how much the kind of task follows the day's usage so far
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Task kinds and the day's totals (OSAI's fields) their usage shows up in, by worker class.
_KIND_TOTALS: Final[Mapping[str, Mapping[int | None, str]]] = {
    "Training": {
        8: contract.TRAINING_SECONDS_8GB.field,
        16: contract.TRAINING_SECONDS_16GB.field,
    },
    "Conversion": {
        8: contract.CONVERSION_SECONDS_8GB.field,
        16: contract.CONVERSION_SECONDS_16GB.field,
    },
    "Prediction": {
        8: contract.PREDICTION_SECONDS_8GB.field,
        16: contract.PREDICTION_SECONDS_16GB.field,
    },
    "Manipulation": {None: contract.MANIPULATION_SECONDS.field},
    "DeviceRental": {None: contract.DEVICE_RENTAL_SECONDS.field},
}
# A typical mix of tasks.
_QUIET_DAY_WEIGHTS: Final = {
    "Training": 4,
    "Conversion": 2,
    "Prediction": 3,
    "Manipulation": 2,
    "DeviceRental": 1,
}
_FAILURES: Final = {
    "Training": "CUDA out of memory on the worker",
    "Conversion": "The model cannot be converted to the chosen target",
    "Prediction": "The input image could not be decoded",
    "Manipulation": "The dataset has no images to augment",
    "DeviceRental": "The device disconnected",
}


def _iso7(moment: datetime) -> str:
    """.NET's format, as OSAI's other timestamps: 7 fractional digits and Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def task_event(account_id: str, sequence: int, now: datetime | None = None) -> dict[str, Any]:
    """One plausible "worker task finished" payload for an account (deterministic per
    account, sequence number and minute)."""
    now = now or datetime.now(UTC)
    rng = random.Random(f"{account_id}\x1f{sequence}\x1f{now:%Y%m%d%H%M}")
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    totals = account_totals(account_id, midnight, now) if now > midnight else {}
    by_kind = {
        kind: {gb: float(totals.get(f, 0) or 0) for gb, f in fields.items()}
        for kind, fields in _KIND_TOTALS.items()
    }
    # Mostly where the day's usage went; partly a typical mix, so that a day of one kind of
    # work (or none yet) still shows the others now and then.
    day = {kind: sum(split.values()) for kind, split in by_kind.items()}
    day_total = sum(day.values())
    typical_total = sum(_QUIET_DAY_WEIGHTS.values())
    weights = {
        kind: DAY_SHARE * (day[kind] / day_total if day_total else 0.0)
        + (1 - DAY_SHARE if day_total else 1.0) * _QUIET_DAY_WEIGHTS[kind] / typical_total
        for kind in _KIND_TOTALS
    }
    kinds = [k for k, w in weights.items() if w > 0]
    kind = rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
    split = by_kind[kind]
    gb: int | None = None
    if None not in split:
        share_16 = split[16] / (split[8] + split[16]) if split[8] + split[16] else 0.25
        gb = 16 if rng.random() < share_16 else 8
    task_type = "Re-training" if kind == "Training" and rng.random() < RETRAINING_SHARE else kind
    succeeded = rng.random() >= FAILURE_SHARE
    duration = int(rng.lognormvariate(6.5, 0.9)) + 5
    event: dict[str, Any] = {
        "eventId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event": "WorkerTaskFinished",
        "taskType": task_type,
        "taskId": rng.randint(100_000, 999_999),
        "accountId": account_id,
        "status": "Succeeded" if succeeded else "Failed",
        "success": succeeded,
        "startedAt": _iso7(now - timedelta(seconds=duration)),
        "finishedAt": _iso7(now),
        "durationSeconds": duration,
    }
    if gb is not None:
        event["workerMemoryGB"] = gb
    if not succeeded:
        event["errorMessage"] = _FAILURES[kind]
    return event


@dataclass
class Registration:
    url: str
    account_id: str
    interval: float
    next_at: float
    sequence: int = 0
    sent: int = 0  # answered 2xx
    failed: int = 0  # answered otherwise, or not at all
    last_status: int | None = None
    statuses: dict[str, int] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "account_id": self.account_id,
            "interval": self.interval,
            "sent": self.sent,
            "failed": self.failed,
            "last_status": self.last_status,
            "statuses": dict(self.statuses),
        }


def check_url(value: object) -> str:
    """An http(s) URL to post to; ValueError otherwise."""
    if not isinstance(value, str) or len(value) > 2000:
        raise ValueError("url must be an http or https URL")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("url must be an http or https URL")
    return value


def post_json(url: str, body: bytes) -> int:
    """POST a JSON body to a URL check_url accepted; the HTTP status, or 0 if none came."""
    request = urllib.request.Request(check_url(url), data=body, method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json; charset=utf-8")
    request.add_header("User-Agent", "osai-sandbox-webhooks")
    try:
        with _OPENER.open(request, timeout=SEND_TIMEOUT_SECONDS) as response:
            response.read(65536)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


class WebhookSender:
    """Registered URLs and a background thread that posts to each one on its interval."""

    def __init__(self, default_interval: float) -> None:
        self.default_interval = default_interval
        self._lock = threading.Lock()
        self._registrations: dict[str, Registration] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Registrations. --------------------------------------------------------------------------

    def register(self, url: str, account_id: str, interval: float | None = None) -> Registration:
        """Post to `url` for `account_id` every `interval` seconds, from one interval on."""
        every = max(MIN_INTERVAL_SECONDS, interval or self.default_interval)
        with self._lock:
            registration = Registration(check_url(url), account_id, every, time.time() + every)
            self._registrations[url] = registration
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="osai-sandbox-webhooks", daemon=True
                )
                self._thread.start()
        self._wake.set()
        return registration

    def clear(self) -> None:
        """Forget every registration (a sandbox reset)."""
        with self._lock:
            self._registrations.clear()

    def stop(self) -> None:
        self.clear()
        self._stop.set()
        self._wake.set()

    def registrations(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.public() for r in self._registrations.values()]

    def totals(self) -> dict[str, int]:
        with self._lock:
            return {
                "registered": len(self._registrations),
                "sent": sum(r.sent for r in self._registrations.values()),
                "failed": sum(r.failed for r in self._registrations.values()),
            }

    # Sending. ----------------------------------------------------------------------------------

    def fire(
        self, url: str | None = None, *, count: int = 1, repeat: bool = False, body: object = None
    ) -> list[int]:
        """Post `count` events now to one registered URL (or each); `repeat` posts each event
        twice, as a retrying sender would; `body` posts that JSON instead of an event."""
        with self._lock:
            targets = [r for r in self._registrations.values() if url is None or r.url == url]
        statuses = []
        for registration in targets:
            for _ in range(count):
                payload = body if body is not None else self._next_event(registration)
                data = json.dumps(payload).encode()
                for _ in range(2 if repeat else 1):
                    statuses.append(self._send(registration, data))
        return statuses

    def _next_event(self, registration: Registration) -> dict[str, Any]:
        with self._lock:
            registration.sequence += 1
            sequence = registration.sequence
        return task_event(registration.account_id, sequence)

    def _send(self, registration: Registration, data: bytes) -> int:
        status = post_json(registration.url, data)
        with self._lock:
            if 200 <= status < 300:
                registration.sent += 1
            else:
                registration.failed += 1
            registration.last_status = status
            key = str(status)
            registration.statuses[key] = registration.statuses.get(key, 0) + 1
        return status

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            with self._lock:
                due = [r for r in self._registrations.values() if r.next_at <= now]
                for registration in due:
                    registration.next_at = now + registration.interval
                upcoming = [r.next_at for r in self._registrations.values()]
            for registration in due:
                self._send(registration, json.dumps(self._next_event(registration)).encode())
            wait = min(upcoming, default=now + 1.0) - time.time()
            self._wake.wait(min(max(wait, 0.05), 1.0))
            self._wake.clear()
