"""OSAI's worker webhooks, read defensively.

OSAI posts to a URL the user registers when one of its worker tasks finishes (conversion,
manipulation, prediction, training, re-training, renting a device) and says whether it
succeeded. It documents no payload schema, so nothing here depends on one: a payload is any
JSON value, and `parse_task_finished` looks for the few things the feed shows under the names
such a payload plausibly uses, at the top level or one object down. Unknown fields are
ignored, odd values give "not said" (None), and nothing raises.

Plain Python, like the rest of `osai`: the sandbox sends events this module can read, and the
app stores what it reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from osai.parse import parse_osai_time, redact_url

# The kinds of worker task OSAI's webhook documentation names, as stored.
TRAINING: Final = "training"
RETRAINING: Final = "retraining"
CONVERSION: Final = "conversion"
PREDICTION: Final = "prediction"
MANIPULATION: Final = "manipulation"
DEVICE_RENTAL: Final = "device_rental"
UNKNOWN: Final = "unknown"
TASK_KINDS: Final = (TRAINING, RETRAINING, CONVERSION, PREDICTION, MANIPULATION, DEVICE_RENTAL)
# Kinds that run on an 8 GB or a 16 GB worker (OSAI's totals split them by worker class).
KINDS_WITH_WORKER_CLASS: Final = (TRAINING, RETRAINING, CONVERSION, PREDICTION)

# Words in a task's name, checked in this order ("retraining" before "training").
_KIND_WORDS: Final = (
    ("retrain", RETRAINING),
    ("train", TRAINING),
    ("convers", CONVERSION),
    ("convert", CONVERSION),
    ("predict", PREDICTION),
    ("inference", PREDICTION),
    ("manipul", MANIPULATION),
    ("augment", MANIPULATION),
    ("rent", DEVICE_RENTAL),
    ("device", DEVICE_RENTAL),
)
# Field names (lower case, letters and digits only) where each thing may be found, best first.
_KIND_KEYS: Final = (
    "tasktype",
    "taskkind",
    "type",
    "kind",
    "task",
    "jobtype",
    "job",
    "workertype",
    "eventtype",
    "event",
    "operation",
    "action",
    "name",
)
_SUCCESS_FLAG_KEYS: Final = (
    "success",
    "succeeded",
    "issuccess",
    "issucceeded",
    "successful",
    "issuccessful",
    "ok",
)
_STATUS_KEYS: Final = ("status", "taskstatus", "state", "result", "outcome", "jobstatus")
_SUCCESS_WORDS: Final = frozenset(
    {"success", "succeeded", "successful", "completed", "complete", "finished", "done", "ok"}
)
_FAILURE_WORDS: Final = frozenset(
    {
        "fail",
        "failed",
        "failure",
        "error",
        "errored",
        "cancelled",
        "canceled",
        "aborted",
        "timeout",
        "timedout",
        "crashed",
    }
)
_GB_KEYS: Final = (
    "workergb",
    "workermemorygb",
    "gpumemorygb",
    "memorygb",
    "workermemory",
    "gpumemory",
    "memory",
    "workerclass",
    "workersize",
    "worker",
    "gpu",
    "machine",
    "machinetype",
    "instancetype",
    "workertype",
)
_ID_KEYS: Final = ("taskid", "jobid", "id", "workerid", "trainingid", "modelid")
_EVENT_ID_KEYS: Final = ("eventid", "deliveryid", "webhookid", "messageid", "notificationid")
_TIME_KEYS: Final = (
    "finishedat",
    "finishtime",
    "finishedtime",
    "completedat",
    "endtime",
    "endedat",
    "enddate",
    "timestamp",
    "time",
    "date",
    "createdat",
    "creationtime",
)
_MESSAGE_KEYS: Final = ("message", "errormessage", "error", "detail", "details", "reason")
_GB_PATTERN: Final = re.compile(r"(?<!\d)(8|16)\s*-?\s*(?:gb|gib|g)(?![a-z])")
_URL: Final = re.compile(r"https?://[^\s\"'<>]+", re.IGNORECASE)
MAX_TEXT: Final = 300


@dataclass(frozen=True)
class TaskFinished:
    """What a webhook said, as far as it could be read. None: the payload did not say."""

    kind: str = UNKNOWN  # one of TASK_KINDS, or UNKNOWN
    kind_raw: str = ""  # OSAI's own word for the task, if any
    succeeded: bool | None = None
    worker_gb: int | None = None  # 8 or 16
    task_id: str = ""
    finished_at: datetime | None = None
    message: str = ""


def _norm(key: object) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower()) if isinstance(key, str) else ""


def _fields(payload: object) -> dict[str, Any]:
    """The payload's fields by normalised name: the top level first, then one object down
    (e.g. {"data": {...}} or {"task": {...}}). Not an object: no fields."""
    if not isinstance(payload, Mapping):
        return {}
    found: dict[str, Any] = {}
    nested: list[Mapping[Any, Any]] = []
    for key, value in payload.items():
        name = _norm(key)
        if name and name not in found:
            found[name] = value
        if isinstance(value, Mapping):
            nested.append(value)
    for inner in nested:
        for key, value in inner.items():
            name = _norm(key)
            if name and name not in found:
                found[name] = value
    return found


def _first(fields: Mapping[str, Any], keys: Iterable[str]) -> Iterable[Any]:
    return (fields[key] for key in keys if key in fields)


def kind_of(text: object) -> str:
    """The task kind a name such as "Re-training" or "MODEL_CONVERSION" stands for."""
    if not isinstance(text, str):
        return UNKNOWN
    word = _norm(text)
    return next((kind for part, kind in _KIND_WORDS if part in word), UNKNOWN)


def _kind(fields: Mapping[str, Any]) -> tuple[str, str]:
    raw = ""
    for value in _first(fields, _KIND_KEYS):
        if isinstance(value, str) and value.strip():
            raw = raw or value.strip()[:80]
            kind = kind_of(value)
            if kind != UNKNOWN:
                return kind, value.strip()[:80]
    return UNKNOWN, raw


def _succeeded(fields: Mapping[str, Any]) -> bool | None:
    for value in _first(fields, _SUCCESS_FLAG_KEYS):
        if isinstance(value, bool):
            return value
    for value in _first(fields, _STATUS_KEYS):
        if isinstance(value, bool):
            return value
        word = _norm(value)
        if word in _SUCCESS_WORDS:
            return True
        if word in _FAILURE_WORDS:
            return False
    error = fields.get("error") or fields.get("errormessage")
    if isinstance(error, str) and error.strip():
        return False
    return None


def gb_of(value: object) -> int | None:
    """8 or 16 from 8, 16.0, 8192 (MB), "16GB", "GPU 8 GB", "gpu-16g"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return {8: 8, 16: 16, 8192: 8, 16384: 16}.get(int(value)) if value == int(value) else None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"8", "16"}:
            return int(text)
        match = _GB_PATTERN.search(text)
        return int(match.group(1)) if match else None
    return None


def _worker_gb(fields: Mapping[str, Any]) -> int | None:
    return next((gb for gb in map(gb_of, _first(fields, _GB_KEYS)) if gb is not None), None)


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return str(value).strip()


def scrub(text: str) -> str:
    """Text with every URL's query string (a signed link's signature) redacted, shortened."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)[:MAX_TEXT]


def parse_task_finished(payload: object) -> TaskFinished:
    """What a webhook payload says about its task. Never raises; unknown fields are ignored."""
    try:
        fields = _fields(payload)
        kind, kind_raw = _kind(fields)
        task_id = next((t for t in map(_text, _first(fields, _ID_KEYS)) if t), "")
        finished = next(
            (t for t in map(parse_osai_time, _first(fields, _TIME_KEYS)) if t is not None), None
        )
        message = next((m for m in map(_text, _first(fields, _MESSAGE_KEYS)) if m), "")
        return TaskFinished(
            kind=kind,
            kind_raw=scrub(kind_raw)[:80],
            succeeded=_succeeded(fields),
            worker_gb=_worker_gb(fields),
            task_id=scrub(task_id)[:100],
            finished_at=finished,
            message=scrub(message),
        )
    except RecursionError:  # a pathologically nested value somewhere
        return TaskFinished()


def delivery_key(payload: object) -> str:
    """What makes two deliveries "the same": the event id the payload names, if any; otherwise
    the payload itself, canonically (key order and whitespace do not matter)."""
    fields = _fields(payload)
    event_id = next((t for t in map(_text, _first(fields, _EVENT_ID_KEYS)) if t), "")
    if event_id:
        basis = f"event-id\x1f{event_id}"
    else:
        try:
            basis = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            basis = repr(payload)
    return hashlib.sha256(basis.encode("utf-8", "surrogatepass")).hexdigest()
