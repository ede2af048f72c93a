"""Roll-ups: answering a report's periods from held buckets instead of asking OSAI again.

A *held* bucket is one tracking keeps for a connection (reports/spend/tracking.py): finished,
closed, `tracked`, every flag on; a UTC day or a calendar month. For each connection and each
period a request needs (the report's own, and those of the period it is compared with):

1. a finished closed bucket of exactly that period and those flags: reused, as always;
2. else held buckets (flags a superset of the request's) that tile the period exactly
   (`periods.tiling`: the longest first, so a held month answers for a whole month and held
   days for anything finer: days roll up into weeks, months, quarters; months into quarters
   and years): linked as they are, no OSAI report;
3. else, when held buckets tile a first part of the period (a week whose days are held up to
   today, a month whose last days are not held yet), that part is linked and the rest is one
   bucket of its own (this week = its held closed days + today so far);
4. else one bucket for the period, as before.

Only what is not held goes to OSAI. Nothing is copied or made up: the report links the held
buckets themselves (ReportBucket), so its CSV lists them as provenance, and the usage of the
categories it did not ask for is masked where it is read (reports/spend/usage.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from django.db.models import Q

from reports.metrics import FLAG_FIELDS, flags_on
from reports.models import Bucket, Connection
from reports.periods import Period, tiled_prefix, tiling, utc_midnight, within
from reports.pipeline.buckets import buckets_for


class Found(NamedTuple):
    """A finished closed bucket a request may use, as plain values (what tiling reads)."""

    pk: int
    connection_id: int
    period_start: datetime
    period_end: datetime
    is_closed: bool
    exact: bool  # the request's own flags: reused for its exact period
    held: bool  # tracked (flags a superset of the request's): tiles periods


@dataclass
class Plan:
    """What a request's periods need: finished buckets to link as they are, and per
    connection the periods that need a bucket of their own (an existing closed one of the
    same flags, else a new one: buckets.buckets_for)."""

    linked: list[int] = field(default_factory=list)
    needs: dict[int, list[Period]] = field(default_factory=dict)

    @property
    def new_buckets(self) -> int:
        """At most this many OSAI reports to make (some may exist already)."""
        return sum(len(periods) for periods in self.needs.values())


def plan_periods(
    connection_ids: Iterable[int],
    periods: list[Period],
    flags: Mapping[str, bool],
    now: datetime,
) -> Plan:
    """The plan for these periods of these connections (see the module docstring). One
    query, for the finished closed buckets of every connection over the whole span."""
    ids = list(connection_ids)
    plan = Plan(needs={pk: [] for pk in ids})
    if not periods or not ids:
        return plan
    wanted = {name: bool(flags.get(name)) for name in FLAG_FIELDS}
    found: dict[int, list[Found]] = defaultdict(list)
    rows = (
        Bucket.objects.filter(
            Q(tracked=True) | Q(**wanted),
            connection_id__in=ids,
            is_closed=True,
            state=Bucket.State.DONE,
            period_start__gte=min(start for start, _ in periods),
            period_end__lte=max(end for _, end in periods),
            **flags_on(wanted),
        )
        .order_by("period_start", "pk")
        .values_list("pk", "connection_id", "period_start", "period_end", "tracked", *FLAG_FIELDS)
    )
    for pk, connection_id, start, end, tracked, *bucket_flags in rows:
        same_flags = dict(zip(FLAG_FIELDS, bucket_flags, strict=True)) == wanted
        found[connection_id].append(Found(pk, connection_id, start, end, True, same_flags, tracked))
    closed_until = utc_midnight(now.date())
    for connection_id in ids:
        own = found.get(connection_id, [])
        exact = {(f.period_start, f.period_end): f.pk for f in own if f.exact}
        held = [f for f in own if f.held]
        starts = [f.period_start for f in held]
        needs = plan.needs[connection_id]
        for start, end in periods:
            if end <= closed_until and (start, end) in exact:
                plan.linked.append(exact[(start, end)])
                continue
            candidates = within(held, starts, start, end)
            tiles = tiling(candidates, start, end)
            if tiles is not None:
                plan.linked += [f.pk for f in tiles]
                continue
            prefix = tiled_prefix(candidates, start, end)
            plan.linked += [f.pk for f in prefix]
            needs.append((prefix[-1].period_end if prefix else start, end))
    return plan


def plan_buckets(
    plan: Plan, connections: list[Connection], flags: dict[str, bool], now: datetime
) -> list[Bucket]:
    """The buckets for what the plan needs: existing closed ones of the same flags where
    there are any, new ones for the rest (buckets.buckets_for, once for every group of
    connections that need the same periods: usually all of them at once)."""
    by_periods: dict[tuple[Period, ...], list[Connection]] = defaultdict(list)
    for connection in connections:
        needed = tuple(plan.needs.get(connection.pk, ()))
        if needed:
            by_periods[needed].append(connection)
    made: list[Bucket] = []
    for periods, group in by_periods.items():
        made += buckets_for(group, list(periods), flags, now)
    return made
