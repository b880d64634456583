"""Read-only queries behind `digest status` and the daemon's start-up: each source's fetch health and the
newest fetch, every active subscriber's schedule, and the heartbeats of the daemons and runs. Per-edition counts and unfinished deliveries come from the
ledger (digest.store.deliveries).

It must not write, and it must not judge: digest.health decides what is a problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..models import Heartbeat, Source, Subscriber, table_of
from ..sources import FILE_KIND
from . import read_rows

FETCHED_KINDS_EXCLUDE = (FILE_KIND,)  # imported files are never fetched: no fetch health to report

_source = table_of(Source)
_subscriber = table_of(Subscriber)
_heartbeat = table_of(Heartbeat)


@dataclass(frozen=True)
class SourceHealth:
    name: str
    kind: str
    enabled: bool
    last_fetch_at: datetime | None
    last_success_at: datetime | None
    last_fetch_count: int  # papers stored by the last successful fetch that changed (a 304 keeps the count)
    last_fetch_skipped: int  # entries that fetch refused (by the record check or the database)
    consecutive_errors: int
    last_error: str | None
    disabled_reason: str | None
    created_at: datetime | None = None


def source_health(engine: Engine) -> list[SourceHealth]:
    """Every fetched source (imported files left out), by name."""
    columns = [getattr(_source.c, f) for f in SourceHealth.__dataclass_fields__]
    query = sa.select(*columns).where(_source.c.kind.notin_(FETCHED_KINDS_EXCLUDE)).order_by(_source.c.name)
    return [SourceHealth(**row._mapping) for row in read_rows(engine, query)]


def newest_fetch_at(engine: Engine) -> datetime | None:
    """When any enabled source was last fetched (tried), or None when none ever was."""
    query = sa.select(sa.func.max(_source.c.last_fetch_at)).where(_source.c.enabled.is_(True), _source.c.kind.notin_(FETCHED_KINDS_EXCLUDE))
    return read_rows(engine, query)[0][0]  # max() keeps the column's type: an aware UTC datetime


def oldest_success_at(engine: Engine, *, error_limit: int) -> tuple[bool, datetime | None]:
    """(any, when): whether there is an enabled fetched source still worth retrying (fewer than
    `error_limit` failures in a row), and the oldest last success among them (None if one never succeeded).
    `digest run` fetches again while this is older than the last scheduled fetch time, so a fetch that
    failed at 20:30 is retried by the next run instead of waiting a day."""
    query = sa.select(sa.func.count(), sa.func.min(_source.c.last_success_at), sa.func.count(_source.c.last_success_at)).where(
        _source.c.enabled.is_(True), _source.c.kind.notin_(FETCHED_KINDS_EXCLUDE), _source.c.consecutive_errors < error_limit)
    total, oldest, succeeded = read_rows(engine, query)[0]
    return total > 0, (oldest if succeeded == total else None)


@dataclass(frozen=True)
class Schedule:
    """When an active subscriber's edition is due (digest.health checks it went out)."""

    subscriber_id: int
    email: str
    send_at: str
    tz: str
    frequency: str
    active_since: datetime  # created, or confirmed if later: no edition was due to them before


def active_schedules(engine: Engine) -> list[Schedule]:
    """Every active subscriber's schedule, by address."""
    s = _subscriber.c
    query = sa.select(s.id, s.email, s.send_at, s.tz, s.frequency, s.created_at, s.confirmed_at).where(s.status == "active").order_by(s.email)
    return [Schedule(row.id, row.email, row.send_at, row.tz, row.frequency, max(row.created_at, row.confirmed_at) if row.confirmed_at else row.created_at)
            for row in read_rows(engine, query)]


@dataclass(frozen=True)
class Beat:
    """A host's heartbeat for one kind of job (daemon, run, send, worker): digest.health judges it."""

    kind: str
    host: str
    pid: int
    tick_seconds: int | None
    seen_at: datetime  # the last sign of life
    started_at: datetime | None  # the last job's start
    finished_at: datetime | None  # its end: before started_at while a job runs
    outcome: str | None  # ok | failed (None: no job finished yet)
    error: str | None
    stopped_at: datetime | None  # a daemon stopped cleanly


def heartbeats(engine: Engine) -> list[Beat]:
    """Every host's heartbeats, daemons first, then by host (one row per host and kind: a handful)."""
    columns = [getattr(_heartbeat.c, f) for f in Beat.__dataclass_fields__]
    query = sa.select(*columns).order_by((_heartbeat.c.kind != "daemon"), _heartbeat.c.host, _heartbeat.c.kind)
    return [Beat(**row._mapping) for row in read_rows(engine, query)]
