"""Several workers on one PostgreSQL database: the deliveries they claim under a lease, the heartbeat that keeps a
lease, and the advisory lock that lets one host fetch while the others wait.

A claim is one short transaction: the open rows of the editions, in id order, locked FOR UPDATE SKIP LOCKED (two
workers never wait for or take the same row) and marked 'sending' with the worker's name and a lease that ends
`lease` later on the database's clock (the hosts' clocks never have to agree). While the worker sends, its
heartbeat moves its leases on; a worker that dies stops renewing, and once its lease has passed its rows are
claimable again: at most the messages it had in flight are sent twice. PostgreSQL only (SQLite keeps the run lock
file of digest.pipeline.job). It must not send mail, rank or render.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from ..models import Delivery, table_of
from . import wrap_db_error
from .deliveries import DONE_STATES, OPEN_STATES, SETTLE_PATIENCE, write

_delivery = table_of(Delivery)
_d = _delivery.c
_LEASE = sa.bindparam("lease_", type_=sa.Interval())


def is_shared(engine: Engine) -> bool:
    """True when the database coordinates several workers (PostgreSQL): leases and advisory locks, no lock file."""
    return engine.dialect.name == "postgresql"


def _claimable():
    """A row this worker may take: pending, or sending or deferred with no live lease (its worker died, or ended
    without settling it). The first condition lets PostgreSQL use the partial index of the open rows."""
    unleased = sa.or_(_d.lease_expires_at.is_(None), _d.lease_expires_at < sa.func.now())
    return sa.and_(_d.state.in_(OPEN_STATES), sa.or_(_d.state == "pending", unleased))


@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    was: str  # its state before: 'sending' or 'deferred' means a takeover (a message may already have gone out)


def claim_deliveries(conn: Connection, editions: Sequence[str], worker: str, lease: float, n: int, now: datetime, *, skip: Sequence[int] = (), mine: frozenset[int] | None = None) -> tuple[list[Claimed], list[int]]:
    """Up to `n` claimable rows of `editions`, in id order, committed 'sending' under `worker`'s lease. Rows
    outside `mine` (planned by a worker that saw other subscribers due) are left alone and returned apart, so the
    caller skips them next time. One transaction; the caller commits nothing itself."""
    picked = sa.select(_d.id, _d.state).where(_d.edition.in_(list(editions)), _claimable()).order_by(_d.id).limit(n).with_for_update(skip_locked=True)
    if skip:
        picked = picked.where(_d.id.notin_(list(skip)))

    def work(conn: Connection) -> list[list]:
        rows = conn.execute(picked).all()
        ours = [Claimed(row.id, row.state) for row in rows if mine is None or row.id in mine]
        if ours:
            conn.execute(
                sa.update(_delivery).where(_d.id.in_([c.delivery_id for c in ours]))
                .values(state="sending", worker=worker, lease_expires_at=sa.func.now() + _LEASE, updated_at=now),
                {"lease_": timedelta(seconds=lease)},
            )
        return [ours, [row.id for row in rows if mine is not None and row.id not in mine]]

    found: list[list] = write(conn, work)  # type: ignore[assignment]
    return found[0], found[1]


def renew_leases(conn: Connection, editions: Sequence[str], worker: str, lease: float) -> int:
    """The heartbeat: every row `worker` holds ('sending', or 'deferred' awaiting its retry) leased `lease` from now.
    Returns how many rows it still holds."""
    statement = (sa.update(_delivery).where(_d.edition.in_(list(editions)), _d.state.in_(("sending", "deferred")), _d.worker == worker)
                 .values(lease_expires_at=sa.func.now() + _LEASE))
    return int(write(conn, lambda c: c.execute(statement, {"lease_": timedelta(seconds=lease)}).rowcount))  # type: ignore[call-overload]


def end_leases(engine: Engine, editions: Sequence[str], worker: str, never_sent: Sequence[int], outcomes: Sequence[Callable[[Connection], object]], now: datetime, *, keep: Sequence[int] = ()) -> None:
    """When the worker stops, in one transaction: the rows it claimed but never handed over back to 'pending', the
    `outcomes` whose record failed written now (see deliveries.settle), and the leases of its deferred rows ended,
    so the next run (any worker's) retries them; those in `keep` (whose message went unanswered and may have
    arrived) keep theirs until it runs out, so that no other worker still sending sends them again at once.
    StoreError when even that fails: the leases then run out."""
    write(engine, lambda conn: _end_leases(conn, editions, worker, never_sent, outcomes, now, keep), patience=SETTLE_PATIENCE)


def abandon_leases(engine: Engine, editions: Sequence[str], worker: str, never_sent: Sequence[int], outcomes: Sequence[Callable[[Connection], object]], now: datetime, *,
                   keep: Sequence[int] = (), seconds: float) -> None:
    """When the worker stops at once (a second Ctrl-C), in one transaction: what end_leases does, and the lease of
    every other row it leaves 'sending' (a message that may be in flight) ended now, so that the next run, any
    worker's, takes it over at once rather than when the lease runs out; as after a crash, that message may arrive
    twice. Each statement gives up after `seconds` (a row lock the stopped worker's own cut-off transaction still
    holds is released when the server sees its connection gone). StoreError when it fails: the leases then run out."""
    ms = str(max(1, int(seconds * 1000)))

    def work(conn: Connection) -> None:
        conn.execute(sa.select(sa.func.set_config("statement_timeout", ms, True), sa.func.set_config("lock_timeout", ms, True)))
        _end_leases(conn, editions, worker, never_sent, outcomes, now, keep)
        conn.execute(sa.update(_delivery).where(_d.edition.in_(list(editions)), _d.state == "sending", _d.worker == worker)
                     .values(lease_expires_at=sa.func.now(), updated_at=now))

    write(engine, work, patience=0)


def _end_leases(conn: Connection, editions: Sequence[str], worker: str, never_sent: Sequence[int], outcomes: Sequence[Callable[[Connection], object]], now: datetime,
                keep: Sequence[int]) -> None:
    if never_sent:
        conn.execute(sa.update(_delivery).where(_d.id.in_(list(never_sent)), _d.state == "sending", _d.worker == worker)
                     .values(state="pending", worker=None, lease_expires_at=None, updated_at=now))
    for outcome in outcomes:
        outcome(conn)
    deferred = sa.and_(_d.edition.in_(list(editions)), _d.state == "deferred", _d.worker == worker)
    if keep:
        deferred = sa.and_(deferred, _d.id.not_in(list(keep)))
    conn.execute(sa.update(_delivery).where(deferred).values(lease_expires_at=None))


def handled_elsewhere(engine: Engine, delivery_ids: Sequence[int], worker: str) -> int:
    """How many of `delivery_ids` another worker finished or holds under a live lease (not this run's to count)."""
    if not delivery_ids:
        return 0
    held = sa.and_(_d.state.in_(("sending", "deferred")), _d.worker != worker, _d.lease_expires_at >= sa.func.now())
    # One array parameter, not one per id: an edition of 100,000 would pass PostgreSQL's 65,535 parameters.
    ids = sa.bindparam("ids_", type_=ARRAY(sa.Integer()))
    query = sa.select(sa.func.count()).where(_d.id == sa.any_(ids), sa.or_(_d.state.in_(DONE_STATES), held))
    try:
        with engine.connect() as conn:
            return int(conn.execute(query, {"ids_": list(delivery_ids)}).scalar_one())
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None


@dataclass(frozen=True)
class OpenWork:
    """The rows of some editions not finished yet: `claimable` now, `held` under another worker's live lease."""

    claimable: int
    held: int


def open_work(engine: Engine, editions: Sequence[str]) -> OpenWork:
    """What is left of `editions` for a worker that keeps claiming until they are done ('deferred' rows wait for
    the next run, as on one host: they do not keep a worker waiting)."""
    if not editions:
        return OpenWork(0, 0)
    live = sa.and_(_d.state == "sending", _d.lease_expires_at >= sa.func.now())
    pending = sa.or_(_d.state == "pending", sa.and_(_d.state == "sending", sa.not_(live)))
    query = sa.select(sa.func.count().filter(pending), sa.func.count().filter(live)).where(_d.edition.in_(list(editions)), _d.state.in_(("pending", "sending")))
    try:
        with engine.connect() as conn:
            claimable, held = conn.execute(query).one()
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    return OpenWork(int(claimable), int(held))


@dataclass(frozen=True)
class LeaseHolder:
    """A worker holding deliveries under a lease, as the database sees it: `connected` when a session of that worker
    is open (its heartbeat holds the worker's advisory lock); a worker killed or cut off has none. The database
    cannot tell a dead worker from one whose heartbeat is reconnecting (it tries every second): it says neither."""

    worker: str
    rows: int
    seconds_left: float  # until its last lease ends, on the database's clock (negative: it has passed)
    connected: bool
    editions: tuple[str, ...] = ()

    def describe(self) -> str:
        """A few words for people: whose rows, whether that worker is there, and when they are free."""
        if self.connected and self.seconds_left > 0:
            return f"{self.worker}, connected (it renews its lease, which ends in {self.seconds_left:.0f}s)"
        who = f"{self.worker}, connected," if self.connected else f"{self.worker}, which has no session on the database (it ended or died, or is reconnecting):"
        if self.seconds_left > 0:
            return f"{who} its lease ends in {self.seconds_left:.0f}s, then any run takes them over"
        return f"{who} its lease ended {-self.seconds_left:.0f}s ago, so the next run takes them over"


def lease_holders(engine: Engine, delivery_ids: Sequence[int] | None = None, *, besides: str | None = None) -> list[LeaseHolder]:
    """The workers holding open deliveries ('sending' or 'deferred' with a lease), of `delivery_ids` or all, other than
    `besides`; most rows first. PostgreSQL only."""
    d = _d
    query = (sa.select(d.worker, sa.func.count(), sa.func.extract("epoch", sa.func.max(d.lease_expires_at) - sa.func.now()),
                       sa.func.array_agg(sa.distinct(d.edition)))
             .where(d.state.in_(("sending", "deferred")), d.worker.is_not(None), d.lease_expires_at.is_not(None)).group_by(d.worker))
    if delivery_ids is not None:
        query = query.where(d.id == sa.any_(sa.bindparam("ids_", list(delivery_ids), type_=ARRAY(sa.Integer()))))
    if besides is not None:
        query = query.where(d.worker != besides)
    # A session-level advisory lock of a bigint key shows in pg_locks as classid (high 32 bits), objid (low), objsubid 1.
    locks = sa.text("SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
            held = {(hi << 32) | lo for hi, lo in conn.execute(locks)} if rows else set()
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    holders = [LeaseHolder(worker, int(n), float(left), _lock_key(f"worker:{worker}") % (1 << 64) in held, tuple(sorted(editions or ())))
               for worker, n, left, editions in rows]
    return sorted(holders, key=lambda h: (-h.rows, h.worker))


def hold_worker_lock(conn: Connection, worker: str) -> None:
    """Mark `worker` present for as long as `conn` stays open (lease_holders reads it): a session-level advisory lock
    of its own, which PostgreSQL frees when the session ends, by a clean exit, a SIGKILL or a lost connection."""
    conn.execute(sa.select(sa.func.pg_try_advisory_lock(_lock_key(f"worker:{worker}"))))
    conn.commit()


CLOCK_SKEW_LIMIT = 30.0  # seconds between a host's clock and the database's before it is a problem


def clock_offset(engine: Engine, now: datetime) -> float:
    """Seconds this host's clock (`now`) is ahead of the database's (negative: behind). The leases never depend on
    it, but who is due, an edition's window and the papers' first_seen do: a host 2 hours ahead sends the next
    day's edition 2 hours early and moves its readers' window 2 hours into the future."""
    try:
        with engine.connect() as conn:
            database = conn.execute(sa.select(sa.func.now())).scalar_one()
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    return (now - database).total_seconds()


def clock_problem(offset: float) -> str | None:
    """One line when `offset` (clock_offset) passes CLOCK_SKEW_LIMIT, else None."""
    if abs(offset) <= CLOCK_SKEW_LIMIT:
        return None
    return (f"this host's clock is {abs(offset):.0f}s {'ahead of' if offset > 0 else 'behind'} the database's: it sends editions "
            f"{'early' if offset > 0 else 'late'} and moves its readers' windows (run NTP: chrony or systemd-timesyncd on every host)")


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for `name` (the same on every host and Python version)."""
    return int.from_bytes(hashlib.sha256(f"digest:{name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[None]:
    """Held by one session on the whole database at a time: the others wait here until it is released. PostgreSQL
    releases it when the holder's connection ends, so a host that dies while holding it blocks nobody."""
    key = _lock_key(name)
    try:
        conn = engine.connect()
        conn.execute(sa.select(sa.func.pg_advisory_lock(key)))
        conn.commit()
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    try:
        yield
    finally:
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()  # the connection is gone: so is the lock
        finally:
            conn.close()
