"""The delivery ledger: one row per (subscriber, edition) and the papers each subscriber has been sent.

States: pending -> sending -> sent | failed | skipped; deferred (a 4xx) is retried by the next run.
'sent' and its SentPaper rows are written in one transaction, right after the server accepted the
message, so a run killed at any instant resends at most the message that was in flight.
It must not send mail, rank or render. Core statements (not ORM sessions) keep one write to a fraction
of a millisecond: the ledger is written twice per message.
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.compiler import SQLCompiler

from ..log import log_event
from ..models import Delivery, Subscriber, table_of
from . import dialect_insert, is_locked, read_rows, wrap_db_error
from .editions import read_replay, record_edition_contents

log = logging.getLogger("digest.store")

LOCK_PATIENCE = 60.0  # seconds a ledger write keeps trying while the database is locked (each try waits the busy timeout)
SETTLE_PATIENCE = 300.0  # the same when a stopped run puts its ledger right: worth a longer wait than one message
LOCK_PAUSE = 0.5  # seconds between tries (SQLite may answer "locked" at once, without waiting)
DONE_STATES = ("sent", "skipped", "failed")  # the edition is finished for this subscriber
OPEN_STATES = ("pending", "sending", "deferred")  # a run (re)sends these
BOUNCE_LIMIT = 3  # hard bounces in a row before a subscriber is marked 'bounced'

_delivery = table_of(Delivery)
_subscriber = table_of(Subscriber)


@dataclass(frozen=True)
class LedgerRow:
    id: int
    subscriber_id: int
    edition: str
    state: str
    attempts: int
    message_id: str | None
    # A deferred row's contents: a copy that may have arrived (its answer never came) showed these papers, and a
    # resend under the same Message-ID shows them again (record_deferred). None for every other row.
    replay: tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[int, ...]] | None = None
    replay_until: datetime | None = None  # where that copy's window ended


@dataclass(frozen=True)
class EditionSummary:
    edition: str
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    pending: int = 0  # pending or sending: not finished

    @property
    def total(self) -> int:
        return self.sent + self.skipped + self.failed + self.deferred + self.pending


def write(target: Engine | Connection, work: Callable[[Connection], object], *, patience: float | None = None) -> object:
    """Run `work(conn)` in one transaction, on a new connection from an Engine or on a Connection the
    caller keeps open (the sender does: no pool checkout per message); database errors become StoreError.

    While another connection holds the write lock longer than SQLite's busy timeout, the transaction
    (rolled back whole) is tried again for `patience` seconds (default LOCK_PATIENCE): a backup or a
    person's sqlite3 shell then delays a run instead of stopping it between a message and its record."""
    engine = target if isinstance(target, Engine) else target.engine
    deadline = None
    while True:
        try:
            if isinstance(target, Connection):
                with target.begin():
                    return work(target)
            with target.begin() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            if not is_locked(exc):
                raise wrap_db_error(exc, engine) from None
            now = time.monotonic()
            if deadline is None:
                deadline = now + (LOCK_PATIENCE if patience is None else patience)
                log_event(log, "database-locked", logging.WARNING, note=f"another connection holds the write lock; trying again for up to {deadline - now:.0f}s")
            if now >= deadline:
                raise wrap_db_error(exc, engine) from None
            time.sleep(min(LOCK_PAUSE, deadline - now))


# --- queries ----------------------------------------------------------------------------------------


def finished_editions(engine: Engine, since: str) -> dict[int, str]:
    """The newest finished (sent, skipped or failed) edition per subscriber id, of the editions `since` (YYYY-MM-DD)
    and later: those who finished none have no entry. The callers ask from the oldest edition their rule can compare
    (digest.editions.earliest_local_day): grouping the whole ledger grew with its age (87 ms at 120 days for 1,000
    subscribers, a second at a year; benchmarks/retention.py), the edition index reads a few days of it."""
    # SQLite's planner, left to itself, read more than the range: given the state in WHERE, it took ix_delivery_state
    # (nearly every row is finished); given the GROUP BY, it walked all of uq_delivery (subscriber_id, edition). So the
    # range is read first, by ix_delivery_edition, in a subquery that its ORDER BY keeps SQLite from flattening into
    # the grouping, and the state is tested inside the max. At 120 days of 1,000 subscribers: 68 ms -> 2 ms (sqlite3).
    d = _delivery.c
    recent = sa.select(d.subscriber_id, d.edition, d.state).where(d.edition >= since).order_by(d.edition).subquery()
    finished = sa.func.max(sa.case((recent.c.state.in_(DONE_STATES), recent.c.edition)))
    rows = read_rows(engine, sa.select(recent.c.subscriber_id, finished).group_by(recent.c.subscriber_id))
    return {sub: edition for sub, edition in rows if edition is not None}


@dataclass(frozen=True)
class DeferredRow:
    subscriber_id: int
    edition: str
    attempts: int
    at: datetime  # when it was last deferred


def deferred_rows(engine: Engine, since: str) -> list[DeferredRow]:
    """The deliveries of the editions `since` (YYYY-MM-DD) and later that a 4xx left 'deferred' (few: ix_delivery_state)."""
    d = _delivery.c
    query = sa.select(d.subscriber_id, d.edition, d.attempts, sa.func.coalesce(d.updated_at, d.created_at)).where(d.state == "deferred", d.edition >= since)
    return [DeferredRow(*row) for row in read_rows(engine, query)]


def deliveries_for(engine: Engine, edition: str | None = None, subscriber_id: int | None = None) -> list[Delivery]:
    """Ledger rows, oldest first, optionally of one edition or one subscriber."""
    query = sa.select(_delivery).order_by(_delivery.c.edition, _delivery.c.subscriber_id)
    if edition is not None:
        query = query.where(_delivery.c.edition == edition)
    if subscriber_id is not None:
        query = query.where(_delivery.c.subscriber_id == subscriber_id)
    return [Delivery.model_validate(dict(row._mapping)) for row in read_rows(engine, query)]


@dataclass(frozen=True)
class UnfinishedDelivery:
    subscriber_id: int
    email: str
    edition: str
    state: str  # pending, sending or deferred
    last_error: str | None
    since: datetime  # when it entered that state
    attempts: int = 0  # hand-overs so far (a deferred one's retry wait grows with them: digest.delivery.loop.retry_wait)


def unfinished_deliveries(engine: Engine) -> list[UnfinishedDelivery]:
    """Every delivery not finished (pending, sending, deferred), by edition and address."""
    d, s = _delivery.c, _subscriber.c
    query = (sa.select(d.subscriber_id, s.email, d.edition, d.state, d.last_error, sa.func.coalesce(d.updated_at, d.created_at), d.attempts)
             .join(_subscriber, s.id == d.subscriber_id).where(d.state.in_(OPEN_STATES)).order_by(d.edition, s.email))
    return [UnfinishedDelivery(*row) for row in read_rows(engine, query)]


def editions_summary(engine: Engine, limit: int = 14) -> list[EditionSummary]:
    """Per edition (newest first), how many deliveries were sent, skipped, failed, deferred or unfinished."""
    # The newest `limit` editions first (ix_delivery_edition, read backwards): counting the whole ledger grew with its
    # age, 1.45 s of `digest status` for a year of 1,000 subscribers (benchmarks/retention.py).
    newest = sa.select(_delivery.c.edition).group_by(_delivery.c.edition).order_by(_delivery.c.edition.desc()).limit(limit).subquery()
    rows = read_rows(engine, sa.select(_delivery.c.edition, _delivery.c.state, sa.func.count())
                     .where(_delivery.c.edition.in_(sa.select(newest.c.edition))).group_by(_delivery.c.edition, _delivery.c.state))
    counts: dict[str, dict[str, int]] = {}
    for edition, state, n in rows:
        key = "pending" if state in ("pending", "sending") else state
        bucket = counts.setdefault(edition, {})
        bucket[key] = bucket.get(key, 0) + n
    return [EditionSummary(edition, **counts[edition]) for edition in sorted(counts, reverse=True)]


# --- writes -----------------------------------------------------------------------------------------


def open_deliveries(engine: Engine, wanted: Sequence[tuple[int, str]], now: datetime, make_message_id: Callable[[int, str], str]) -> dict[tuple[int, str], LedgerRow]:
    """The ledger rows of (subscriber id, edition) pairs, created 'pending' (with a Message-ID) where missing.

    Open rows of an older edition of the same subscribers are closed as 'failed': the new edition
    supersedes them (their papers were not sent, so they can still come in the new one).
    """
    if not wanted:
        return {}
    editions = sorted({edition for _, edition in wanted})
    by_subscriber = dict(wanted)

    def work(conn: Connection) -> dict[tuple[int, str], LedgerRow]:
        existing = _rows(conn, editions)
        missing = [(sub, ed) for sub, ed in wanted if (sub, ed) not in existing]
        if missing:
            # ON CONFLICT DO NOTHING: another worker planning the same edition at the same instant (several hosts on
            # one PostgreSQL database) may insert a row between the read above and this insert; its row stands.
            at, no_papers = _driver_value(conn, _delivery.c.created_at, now), _processor(conn, _delivery.c.papers)([])
            _execute_converted(conn, _open_insert_many(conn.dialect.name), ("sub_", "edition_", "papers_", "message_id_", "at_", "at_"),
                               [(sub, ed, no_papers, make_message_id(sub, ed), at, at) for sub, ed in missing])
            existing = _rows(conn, editions)
        # A row another worker holds under a live lease is left to it (it is sending that edition right now). Leases
        # are on the database's clock (digest.store.fleet): a host whose clock ran 5 minutes ahead took every lease
        # shorter than that for passed, and closed rows another worker was sending.
        clock = sa.func.now() if conn.dialect.name == "postgresql" else now
        unleased = sa.or_(_delivery.c.lease_expires_at.is_(None), _delivery.c.lease_expires_at < clock)
        stale = conn.execute(sa.select(_delivery.c.id, _delivery.c.subscriber_id, _delivery.c.edition).where(_delivery.c.state.in_(OPEN_STATES), _delivery.c.edition < editions[-1], unleased))
        superseded = [row.id for row in stale if row.subscriber_id in by_subscriber and row.edition < by_subscriber[row.subscriber_id]]
        if superseded:
            conn.execute(
                sa.update(_delivery).where(_delivery.c.id.in_(superseded)).values(state="failed", last_error=sa.func.coalesce(_delivery.c.last_error, "") + " (superseded by a newer edition)", updated_at=now)
            )
        return {key: existing[key] for key in wanted}

    return write(engine, work)  # type: ignore[return-value]


def _rows(conn: Connection, editions: Sequence[str]) -> dict[tuple[int, str], LedgerRow]:
    d = _delivery.c
    deferred = sa.case((d.state == "deferred", d.contents)).label("replay")  # the JSON of deferred rows only (few)
    query = sa.select(d.id, d.subscriber_id, d.edition, d.state, d.attempts, d.message_id, deferred).where(d.edition.in_(editions))
    out = {}
    for r in conn.execute(query):
        replay = read_replay(r.replay) if r.replay is not None else None
        out[(r.subscriber_id, r.edition)] = LedgerRow(r.id, r.subscriber_id, r.edition, r.state, r.attempts, r.message_id, *(replay or (None, None)))
    return out


def mark_sending(target: Engine | Connection, delivery_ids: Sequence[int], now: datetime) -> None:
    """Committed before the messages are handed over: a row left 'sending' may have reached the server."""
    if delivery_ids:
        write(target, lambda conn: conn.execute(sa.update(_delivery).where(_delivery.c.id.in_(list(delivery_ids))).values(state="sending", updated_at=now)))


def _unmark(conn: Connection, delivery_ids: Sequence[int], now: datetime) -> None:
    conn.execute(sa.update(_delivery).where(_delivery.c.id.in_(list(delivery_ids)), _delivery.c.state == "sending").values(state="pending", updated_at=now))


def settle(engine: Engine, never_sent: Sequence[int], outcomes: Sequence[Callable[[Connection], object]], now: datetime, *, patience: float = SETTLE_PATIENCE) -> None:
    """The ledger made true when a run ends, in one transaction: rows marked 'sending' but never handed over
    go back to 'pending', and `outcomes` (the records of messages that were handed over but whose record
    failed, e.g. while the database was locked) are written now. Tried for `patience` seconds while the
    database is locked; StoreError after that (the rows stay 'sending', and the next run resends them)."""
    if not never_sent and not outcomes:
        return

    def work(conn: Connection) -> None:
        if never_sent:
            _unmark(conn, never_sent, now)
        for outcome in outcomes:
            outcome(conn)

    write(engine, work, patience=patience)


# Built once: constructing a statement costs more than executing it (the ledger is written per message).
def _bind(name: str, column: sa.Column) -> sa.BindParameter:
    return sa.bindparam(name, type_=column.type)


_SENT = (
    sa.update(_delivery)
    .where(_delivery.c.id == sa.bindparam("delivery_id_"))
    .values(state="sent", attempts=_delivery.c.attempts + sa.bindparam("tries_"), papers=_bind("papers_", _delivery.c.papers), last_error=None, sent_at=_bind("at_", _delivery.c.sent_at), updated_at=_bind("at_", _delivery.c.updated_at))
)
_COVERED = sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("subscriber_id_")).values(last_digest_at=_bind("until_", _subscriber.c.last_digest_at), consecutive_bounces=0)
_UNSENT = (
    sa.update(_delivery)
    .where(_delivery.c.id == sa.bindparam("delivery_id_"))
    .values(state=sa.bindparam("state_"), attempts=_delivery.c.attempts + sa.bindparam("tries_"), last_error=sa.bindparam("error_"), updated_at=_bind("at_", _delivery.c.updated_at))
)
_BOUNCE = sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("subscriber_id_")).values(consecutive_bounces=_subscriber.c.consecutive_bounces + 1)
_BOUNCES = sa.select(_subscriber.c.consecutive_bounces).where(_subscriber.c.id == sa.bindparam("subscriber_id_"))
_BOUNCED = sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("subscriber_id_"), _subscriber.c.status == "active").values(status="bounced")


def record_sent(conn: Connection, delivery_id: int, subscriber_id: int, paper_ids: Sequence[int], attempts: int, now: datetime, covered_until: datetime) -> None:
    """'sent', the papers carried, the subscriber's bounce counter reset and last_digest_at moved to
    `covered_until` (the run's instant: the next edition's candidates start there). One transaction."""
    conn.execute(_SENT, {"delivery_id_": delivery_id, "tries_": attempts, "papers_": list(paper_ids), "at_": now})
    if paper_ids:
        _record_papers_carried(conn, [delivery_id])
    conn.execute(_COVERED, {"subscriber_id_": subscriber_id, "until_": covered_until})


def record_sent_many(conn: Connection, sent: Sequence[tuple[int, int, Sequence[int], int]], now: datetime, covered_until: datetime, *,
                     contents: Sequence[object]) -> None:
    """record_sent for several (delivery id, subscriber id, paper ids, attempts) at once, with each one's `contents`
    (digest.store.editions.edition_contents, in the same order): three statements with many parameter sets instead
    of four per message (the answers several SMTP connections brought back meanwhile). Every value is converted for
    the driver once per value, the instants once for all (_driver_value), and the sets go to the driver's
    executemany as tuples (_execute_converted): SQLAlchemy's processing of each set, then building a dict per set
    and a tuple from it, were most of the CPU of recording."""
    if not sent:
        return
    at, until = _driver_value(conn, _delivery.c.sent_at, now), _driver_value(conn, _subscriber.c.last_digest_at, covered_until)
    as_json = _processor(conn, _delivery.c.papers)
    _execute_converted(conn, _SENT_MANY, ("tries_", "papers_", "contents_", "at_", "at_", "delivery_id_"),
                       [(attempts, as_json(papers), as_json(shown), at, at, row) for (row, _, papers, attempts), shown in zip(sent, contents, strict=True)])
    if any(papers for _, _, papers, _ in sent):
        _record_papers_carried(conn, [row for row, _, _, _ in sent])
    _execute_converted(conn, _COVERED_MANY, ("until_", "subscriber_id_"), [(until, sub) for _, sub, _, _ in sent])


_DRIVER_SQL: dict[tuple[int, str, tuple[str, ...]], tuple[str, Callable[[tuple], tuple] | None, tuple[str, ...] | None]] = {}


def _record_papers_carried(conn: Connection, delivery_ids: list[int]) -> None:
    """One sent_paper row per (subscriber, paper) of these deliveries, made by the database from the rows just marked
    'sent' (their papers and sent_at); a paper already sent to that reader keeps its row. No parameter set per paper to
    build and bind: 14 an email, bound from Python with executemany, were a third of the ledger's instructions (the
    ledger 0.900 -> 0.759 M instructions per email, benchmarks/instructions.py ledger)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_PAPERS_CARRIED_SQLITE, (json.dumps(delivery_ids),))
    else:
        conn.exec_driver_sql(_PAPERS_CARRIED_POSTGRESQL, (delivery_ids,))


_PAPERS_CARRIED_SQLITE = ("INSERT INTO sent_paper (subscriber_id, paper_id, delivery_id, sent_at) SELECT d.subscriber_id, j.value, d.id, d.sent_at"
                          " FROM delivery AS d, json_each(d.papers) AS j WHERE d.id IN (SELECT value FROM json_each(?))"
                          " ON CONFLICT (subscriber_id, paper_id) DO NOTHING")
_PAPERS_CARRIED_POSTGRESQL = ("INSERT INTO sent_paper (subscriber_id, paper_id, delivery_id, sent_at) SELECT d.subscriber_id, j.value::integer, d.id, d.sent_at"
                              " FROM delivery AS d CROSS JOIN LATERAL json_array_elements_text(d.papers::json) AS j(value) WHERE d.id = ANY(%s)"
                              " ON CONFLICT (subscriber_id, paper_id) DO NOTHING")


def _execute_converted(conn: Connection, statement: sa.ClauseElement, names: tuple[str, ...], rows: list[tuple]) -> None:
    """`statement` (a module-level one) with many parameter sets, each a tuple of the values of `names`, which the
    driver takes as they are (integers, JSON text, _driver_value's instants), handed to the driver's executemany in
    the dialect's own SQL. A positional driver (SQLite's) gets the tuples themselves when `names` is in the order of
    the SQL's placeholders, else reordered in C (itemgetter); a named one (psycopg's) a dict per set."""
    key = (id(statement), conn.dialect.name, names)
    entry = _DRIVER_SQL.get(key)
    if entry is None:
        compiled = cast(SQLCompiler, statement.compile(dialect=conn.dialect))
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        reorder: Callable[[tuple], tuple] | None = None
        if order is not None and order != names:
            picks = [names.index(name) for name in order]
            reorder = (lambda row, k=picks[0]: (row[k],)) if len(picks) == 1 else operator.itemgetter(*picks)
        entry = _DRIVER_SQL[key] = (str(compiled), reorder, None if order is not None else names)
    sql, reorder, named = entry
    if named is not None:
        conn.exec_driver_sql(sql, [dict(zip(named, row)) for row in rows])
    else:
        conn.exec_driver_sql(sql, rows if reorder is None else [reorder(row) for row in rows])


def _processor(conn: Connection, column: sa.Column) -> Callable[[object], object]:
    """What `column`'s type does to a value before this connection's driver gets it."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process if process is not None else (lambda value: value)


def _driver_value(conn: Connection, column: sa.Column, value: object) -> object:
    """`value` as `column`'s type hands it to this connection's driver (for a _converted parameter)."""
    return _processor(conn, column)(value)


class _Converted(sa.types.TypeDecorator):
    """A UTC instant already converted by _driver_value, handed on as it is: SQLite's text (String does nothing to
    it), PostgreSQL's aware datetime (its DateTime does nothing either, and keeps the timestamptz cast)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.engine.Dialect) -> sa.types.TypeEngine:
        return dialect.type_descriptor(sa.String() if dialect.name == "sqlite" else sa.DateTime(timezone=True))


def _converted(name: str) -> sa.BindParameter:
    """A parameter whose value _driver_value converted once for every parameter set of a statement."""
    return sa.bindparam(name, type_=_Converted())


# Every value of these is a parameter of the set or SQL: _execute_converted hands the sets to the driver as they are.
_SENT_MANY = (
    sa.update(_delivery)
    .where(_delivery.c.id == sa.bindparam("delivery_id_"))
    .values(state=sa.literal_column("'sent'"), attempts=_delivery.c.attempts + sa.bindparam("tries_"), papers=_bind("papers_", _delivery.c.papers),
            contents=_bind("contents_", _delivery.c.contents), last_error=sa.null(), sent_at=_converted("at_"), updated_at=_converted("at_"))
)
_COVERED_MANY = (
    sa.update(_subscriber).where(_subscriber.c.id == sa.bindparam("subscriber_id_")).values(last_digest_at=_converted("until_"), consecutive_bounces=sa.literal_column("0"))
)


@cache
def _open_insert_many(dialect: str):
    """open_deliveries' INSERT of 'pending' rows, its values converted once for all (_execute_converted): SQLAlchemy's
    processing of a dict per row was 0.39 s of the sending process for 10,000 rows."""
    values = {"subscriber_id": sa.bindparam("sub_"), "edition": sa.bindparam("edition_"), "state": sa.literal_column("'pending'"), "attempts": sa.literal_column("0"),
              "papers": _bind("papers_", _delivery.c.papers), "message_id": sa.bindparam("message_id_"), "created_at": _converted("at_"), "updated_at": _converted("at_")}
    return dialect_insert(dialect)(_delivery).values(values).on_conflict_do_nothing(index_elements=["subscriber_id", "edition"])


def record_deferred(conn: Connection, delivery_id: int, error: str, attempts: int, now: datetime, *,
                    contents: tuple[Sequence[tuple[int, Sequence[str]]], Sequence[int]] | None = None, until: datetime | None = None) -> None:
    """'deferred'; with `contents` (picks with their reasons, trending ids) and `until` (where its window ended), a
    message that may have arrived (its answer never came) showed these: kept, a resend shows them again
    (LedgerRow.replay). A later deferral without contents keeps them: once a copy may have arrived, every copy
    carries the same papers."""
    conn.execute(_UNSENT, {"delivery_id_": delivery_id, "state_": "deferred", "tries_": attempts, "error_": error, "at_": now})
    if contents is not None and until is not None:
        record_edition_contents(conn, delivery_id, *contents, until=until)


def record_failed(conn: Connection, delivery_id: int, subscriber_id: int, error: str, attempts: int, now: datetime, *, bounce: bool) -> int:
    """'failed'; a hard bounce adds to the subscriber's counter, and BOUNCE_LIMIT in a row marks them
    'bounced' (no more mail). Returns the subscriber's consecutive bounces."""
    conn.execute(_UNSENT, {"delivery_id_": delivery_id, "state_": "failed", "tries_": attempts, "error_": error, "at_": now})
    if not bounce:
        return 0
    conn.execute(_BOUNCE, {"subscriber_id_": subscriber_id})
    bounces = conn.execute(_BOUNCES, {"subscriber_id_": subscriber_id}).scalar_one()
    if bounces >= BOUNCE_LIMIT:
        conn.execute(_BOUNCED, {"subscriber_id_": subscriber_id})
    return bounces


def record_skipped_row(conn: Connection, delivery_id: int, reason: str, now: datetime) -> None:
    """'skipped', for one row this worker has claimed (ranked, it had nothing to show: no message was handed over)."""
    conn.execute(_UNSENT, {"delivery_id_": delivery_id, "state_": "skipped", "tries_": 0, "error_": reason, "at_": now})

