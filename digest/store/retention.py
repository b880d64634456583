"""Retention: `digest prune`, and the daily run once a day, delete what the database no longer needs, in short
transactions. It must not rank, send or render, and it never shrinks the SQLite file itself (VACUUM takes the database
for itself: docs/deployment.md says when and how).

What goes whatever keep_days and keep_ledger_days say (no history a reader wants, and rows nothing can use again):
- spent confirmation links (used_token) once the link could no longer verify anyway: a confirmation link lives 7 days
  (digest.tokens.MAX_AGE, no setting), and was signed at the latest when it was spent; LINK_MARGIN (a day) more for
  the clocks of several hosts.
- subscribe requests (pending_profile) whose confirmation link has expired, by the same horizon: nothing can apply
  them (digest.store.subscribers drops them too, but only when the same address asks again).
- an address that asked on the subscribe page and never confirmed, once its last confirmation email is
  UNCONFIRMED_KEPT (30 days) old: someone typed a stranger's address, or its owner did not want the digest; keeping it
  longer keeps personal data for no purpose. Only status "pending" with confirm_version > 0 (a confirmation was asked
  for on the web), never confirmed, no delivery, vote or sent paper, no request whose link still works, and its
  profile unchanged for as long: a pending subscriber added by hand (a `digest subscribers import` row with status
  pending) is the operator's and stays. The seed papers ticked on the subscribe form are whoever filled it in's: they
  go with the address. Deleting it weakens no cap: the caps count per inbox (confirm_inbox, digest.store.caps), apart
  from the subscriber rows, the emails of the last 24 hours (CONFIRM_WINDOW), and this address's are a month old. A
  request that records an email meanwhile keeps the address (its confirm_version is checked in the DELETE).
- the heartbeats (one row per host and kind of job) of a host not seen for HEARTBEAT_KEPT (30 days): a retired server
  or a replaced container, whose row `digest status` would list for ever. The table grows with the hosts only.

What goes as keep_days and keep_ledger_days say (0: nothing of it):
- the ledger's finished deliveries (sent, skipped, failed) of editions older than keep_ledger_days, each with the
  sent_paper rows it wrote. Deliveries still open (pending, sending, deferred) stay: `digest status` reports them.
- papers that no source has listed for keep_days (first_seen and last_seen both older), with their source links,
  embeddings and search-index rows (foreign-key cascades; SQLite's FTS5 rows by the paper_search_removed trigger).

What never goes, because something still reads it:
- a paper with a sent_paper row: the edition pages (/edition/<token> shows delivery.papers, and every paper an email
  showed has its sent_paper row), the vote links of the emails, and the "never send a paper twice" rule
  (digest.store.candidates.sent_among) read them. A sent_paper row goes only with its delivery, past keep_ledger_days,
  when its paper can no longer be a candidate: both horizons must be longer than the longest candidate window
  (`candidate_days`: window_days, or a week for weekly subscribers), and first_seen never moves.
- a paper someone voted on (feedback: the per-subscriber vote model trains on it) or named as a seed paper (any
  subscriber, whatever their status). Every seed list is read once per prune; inside the transaction that deletes a
  batch, only the lists of the subscribers whose profile changed since (profile_changed_at, indexed: migration 0012)
  are read again, so a seed named during the prune is honoured without reading 100,000 rows under the write lock.
- a paper a source still lists (last_seen is moved on at every sighting): deleted, it would come back as new.
A deleted paper that a source brings again later is new to digest, as any paper is the first time.

Each batch (at most `batch` rows) is one transaction, begun IMMEDIATE on SQLite: the web pages and a second host's
writes wait at most one batch (tens of milliseconds: benchmarks/retention.py), never the whole prune; a prune
killed at any point leaves every finished batch done and the rest untouched, and the next one goes on from there.
Which papers to delete is found by a read outside the write transaction, then checked again inside it for that batch
only (by the indexes of migration 0009), so the write lock is held for the deletes and not for the search.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from ..config import Settings
from ..errors import ConfigError
from ..log import log_event
from ..models import (
    ConfirmInbox,
    Delivery,
    Feedback,
    Heartbeat,
    InterestEmbedding,
    Paper,
    PaperEmbedding,
    PendingProfile,
    SentPaper,
    Subscriber,
    UsedToken,
    table_of,
)
from . import begin_write, read_rows
from .caps import CONFIRM_WINDOW
from .days import day_start
from .deliveries import DONE_STATES, write
from .papers import get_paper_by_ident
from .subscribers import PENDING_LIFETIME, normalise_ident

log = logging.getLogger("digest.store")
T = TypeVar("T")

BATCH = 500  # rows deleted per transaction
DAILY_BUDGET = 300.0  # seconds the daily run gives a prune; what is left waits for the next day (a first prune is long)
# A confirmation link verifies for PENDING_LIFETIME (digest.tokens.MAX_AGE["confirm"]) after it was signed; a host whose
# clock is behind the prune's verifies it that much longer, and a link is signed a moment after its request is stored.
LINK_MARGIN = timedelta(days=1)
LINK_KEPT = PENDING_LIFETIME + LINK_MARGIN  # spent links and requests older than this can never verify again
UNCONFIRMED_KEPT = timedelta(days=30)  # an address that never confirmed: a month after its last confirmation email
HEARTBEAT_KEPT = timedelta(days=30)  # a host's heartbeats, a month after it was last seen
# Seeds named since the prune read them all are found by profile_changed_at, stamped by the writer's clock: this much
# before the prune's `now` covers a host whose clock is behind and a transaction begun before the read.
SEED_MARGIN = timedelta(hours=1)
# Deleting an address must not reset a cap still counting its emails, nor cut a link that still works.
assert UNCONFIRMED_KEPT > max(CONFIRM_WINDOW, LINK_KEPT)

_paper, _delivery, _sent = table_of(Paper), table_of(Delivery), table_of(SentPaper)
_feedback, _embedding, _subscriber = table_of(Feedback), table_of(PaperEmbedding), table_of(Subscriber)
_used, _request, _interests = table_of(UsedToken), table_of(PendingProfile), table_of(InterestEmbedding)
_inbox, _heartbeat = table_of(ConfirmInbox), table_of(Heartbeat)


@dataclass
class PruneReport:
    """What a prune deleted (or, for a dry run, would delete), and how its transactions went."""

    dry_run: bool = False
    paper_cutoff: datetime | None = None  # papers no source listed since then (None: keep_days is 0)
    ledger_cutoff: date | None = None  # editions before this day (None: keep_ledger_days is 0)
    papers: int = 0
    embeddings: int = 0
    deliveries: int = 0
    sent_rows: int = 0  # sent_paper rows, with their deliveries
    used_tokens: int = 0  # spent confirmation links past LINK_KEPT
    requests: int = 0  # subscribe requests (pending_profile) whose link expired
    unconfirmed: int = 0  # pending subscribers who never confirmed, UNCONFIRMED_KEPT after their last link
    inboxes: int = 0  # confirmation counts (confirm_inbox) whose last email is over CONFIRM_WINDOW old
    heartbeats: int = 0  # heartbeat rows of hosts not seen for HEARTBEAT_KEPT
    batches: int = 0
    longest_batch: float = 0.0  # seconds of the longest write transaction
    seconds: float = 0.0
    finished: bool = True  # False: stopped (time budget, stop request) with more to delete

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        parts = []
        if self.ledger_cutoff is not None:
            parts.append(f"{self.deliveries:,} deliveries of editions before {self.ledger_cutoff.isoformat()} with their {self.sent_rows:,} sent-paper rows")
        if self.paper_cutoff is not None:
            parts.append(f"{self.papers:,} papers no source listed since {self.paper_cutoff:%Y-%m-%d} (never sent, voted on or a seed),"
                         f" with their search-index rows and {self.embeddings:,} embeddings")
        parts.append(f"{_counted(self.used_tokens, 'spent confirmation link')}, {_counted(self.requests, 'expired subscribe request')},"
                     f" {_counted(self.inboxes, 'confirmation count')} over a day old and {_counted(self.unconfirmed, 'address', 'addresses')} that never confirmed")
        if self.heartbeats:  # rare (a host retired a month ago): said only when there were some
            parts.append(f"{_counted(self.heartbeats, 'heartbeat')} of hosts not seen for {HEARTBEAT_KEPT.days} days")
        kept = "; kept every paper and delivery: keep_days and keep_ledger_days are 0" if self.paper_cutoff is None and self.ledger_cutoff is None else ""
        left = "" if self.finished else "; stopped before the end, the next prune goes on"
        return f"{verb} " + "; ".join(parts) + f" in {self.seconds:.1f}s{kept}{left}"


def _counted(count: int, noun: str, plural: str | None = None) -> str:
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def check_horizons(keep_days: int, keep_ledger_days: int, candidate_days: int) -> None:
    """ConfigError when a horizon would delete what the next editions still need: a paper that can still be a
    candidate, or the record that it was sent (which keeps it from being sent twice)."""
    for name, days in (("keep_days", keep_days), ("keep_ledger_days", keep_ledger_days)):
        if days < 0:
            raise ConfigError(f"{name} is {days}: a number of days, or 0 to keep everything")
        if 0 < days <= candidate_days:
            raise ConfigError(f"{name} is {days}, but a paper can be a candidate for {candidate_days} days (window_days, or a week for a weekly edition)",
                              f"set {name} above {candidate_days}, or 0 to keep everything")


def prune_store(engine: Engine, now: datetime, *, keep_days: int, keep_ledger_days: int, candidate_days: int, dry_run: bool = False,
                batch: int = BATCH, budget: float | None = None, stop: threading.Event | None = None,
                on_batch: Callable[[str, int], None] | None = None) -> PruneReport:
    """Delete the spent links, the expired requests and the addresses that never confirmed, then the ledger past
    keep_ledger_days and the papers past keep_days (0: keep them), `batch` rows per transaction; `dry_run` counts
    instead. Stops between batches once `budget` seconds have passed or `stop` is set (report.finished False).
    `on_batch(kind, rows)` is told of each committed batch ("used_tokens", "requests", "subscribers", "inboxes", "heartbeats", "deliveries" or
    "papers")."""
    check_horizons(keep_days, keep_ledger_days, candidate_days)
    if batch < 1:
        raise ConfigError(f"batch is {batch}: at least 1 row per transaction")
    started = time.monotonic()
    report = PruneReport(dry_run=dry_run,
                         paper_cutoff=now - timedelta(days=keep_days) if keep_days else None,
                         ledger_cutoff=(now - timedelta(days=keep_ledger_days)).date() if keep_ledger_days else None)

    def stopped() -> bool:
        late = budget is not None and time.monotonic() - started >= budget
        if late or (stop is not None and stop.is_set()):
            report.finished = False
            return True
        return False

    # The small tables first: a first prune of a large database's papers may spend the daily run's whole budget.
    report.used_tokens = _prune_old(engine, report, _used, _used.c.used_at < now - LINK_KEPT, "used_tokens", batch, stopped, on_batch)
    report.requests = _prune_old(engine, report, _request, _request.c.created_at < now - LINK_KEPT, "requests", batch, stopped, on_batch)
    _prune_unconfirmed(engine, report, now, batch, stopped, on_batch)
    # A count whose last email left the day counts nothing (digest.store.caps): the next claim starts a new row.
    report.inboxes = _prune_old(engine, report, _inbox, _inbox.c.updated_at < now - CONFIRM_WINDOW, "inboxes", batch, stopped, on_batch)
    report.heartbeats = _prune_old(engine, report, _heartbeat, _heartbeat.c.seen_at < now - HEARTBEAT_KEPT, "heartbeats", batch, stopped, on_batch)
    if report.ledger_cutoff is not None and report.finished:
        _prune_ledger(engine, report, report.ledger_cutoff, batch, stopped, on_batch)
    if report.paper_cutoff is not None and report.finished:
        _prune_papers(engine, report, report.paper_cutoff, report.ledger_cutoff, now - SEED_MARGIN, batch, stopped, on_batch)
    report.seconds = time.monotonic() - started
    return report


def prune_daily(engine: Engine, settings: Settings, now: datetime, *, candidate_days: int, stop: threading.Event | None = None) -> PruneReport | None:
    """The daily run's prune (by the run that fetched: once a day, on one host), at most DAILY_BUDGET seconds: the
    spent links, expired requests and addresses that never confirmed always, the papers and the ledger when keep_days
    and keep_ledger_days say. A wall: whatever it raises is logged (and None returned), and the run's report stands."""
    try:
        report = prune_store(engine, now, keep_days=settings.keep_days, keep_ledger_days=settings.keep_ledger_days, candidate_days=candidate_days,
                             budget=DAILY_BUDGET, stop=stop)
    except Exception as exc:  # noqa: BLE001 - the editions are sent; a prune that fails is tried again tomorrow
        log_event(log, "prune-failed", logging.ERROR, error=str(exc), exc_info=exc, note="nothing of a failed batch was deleted; the next run's prune tries again")
        return None
    log_event(log, "pruned", logging.INFO, papers=report.papers, deliveries=report.deliveries, sent_rows=report.sent_rows, embeddings=report.embeddings,
              used_tokens=report.used_tokens, requests=report.requests, unconfirmed=report.unconfirmed, inboxes=report.inboxes, heartbeats=report.heartbeats,
              seconds=round(report.seconds, 1),
              finished=report.finished)
    return report


# --- spent links, expired requests, addresses that never confirmed --------------------------------------


def _prune_old(engine: Engine, report: PruneReport, table: sa.Table, old: sa.ColumnElement[bool], kind: str, batch: int,
               stopped: Callable[[], bool], on_batch: Callable[[str, int], None] | None) -> int:
    """Delete (or count, for a dry run) the rows of a small table that `old` matches, in id order: found by a read,
    each batch deleted by id in its own transaction, `old` checked again there. Returns how many."""
    if report.dry_run:
        return cast(int, read_rows(engine, sa.select(sa.func.count()).select_from(table).where(old))[0][0])
    done, after = 0, 0
    while not stopped():
        found = [row_id for (row_id,) in read_rows(engine, sa.select(table.c.id).where(old, table.c.id > after).order_by(table.c.id).limit(batch))]
        if not found:
            break
        after = found[-1]

        def work(conn: Connection, found: Sequence[int] = found) -> int:
            begin_write(conn)
            return conn.execute(sa.delete(table).where(table.c.id.in_(found), old)).rowcount

        gone, took = _timed(lambda: cast(int, write(engine, work)))
        _count(report, took)
        done += gone
        if on_batch is not None:
            on_batch(kind, gone)
    return done


def _unconfirmed(now: datetime) -> sa.ColumnElement[bool]:
    """The pending subscribers the prune deletes at `now`, but for the times of their confirmation emails (a JSON
    list: unconfirmed_subscribers checks them, and confirm_version says they have not changed since)."""
    sub, cutoff = _subscriber, now - UNCONFIRMED_KEPT
    return sa.and_(
        sub.c.status == "pending", sub.c.confirmed_at.is_(None), sub.c.confirm_version > 0, sub.c.created_at < cutoff,
        sa.or_(sub.c.profile_changed_at.is_(None), sub.c.profile_changed_at < cutoff),
        ~sa.exists().where(_request.c.subscriber_id == sub.c.id, _request.c.created_at >= now - LINK_KEPT),  # a link that works
        *(~sa.exists().where(table.c.subscriber_id == sub.c.id) for table in (_delivery, _feedback, _sent)),
    )


def unconfirmed_subscribers(engine: Engine, now: datetime, *, after: int, batch: int) -> tuple[list[tuple[int, int]], int]:
    """([(id, confirm_version)] of the next `batch` pending subscribers past id `after` that the prune deletes at
    `now`, the last id read): a read, outside any write transaction."""
    rows = read_rows(engine, sa.select(_subscriber.c.id, _subscriber.c.confirm_version, _subscriber.c.confirm_emails)
                     .where(_unconfirmed(now), _subscriber.c.id > after).order_by(_subscriber.c.id).limit(batch))
    cutoff = now - UNCONFIRMED_KEPT
    found = [(sub_id, version) for sub_id, version, emails in rows if all(_aware(sent) < cutoff for sent in emails or ())]
    return found, rows[-1][0] if rows else after


def delete_unconfirmed(conn: Connection, found: Sequence[tuple[int, int]], now: datetime) -> int:
    """Delete the subscribers of `found` (unconfirmed_subscribers') that are still as they were read (confirm_version:
    no confirmation email claimed since) and still to be deleted at `now`; with their requests and interest vectors."""
    begin_write(conn)
    if not found:
        return 0
    # In the DELETE itself: on PostgreSQL a claim that commits while it waits for the row is seen by its WHERE.
    gone = list(conn.execute(sa.delete(_subscriber).where(sa.tuple_(_subscriber.c.id, _subscriber.c.confirm_version).in_(list(found)), _unconfirmed(now))
                             .returning(_subscriber.c.id)).scalars())
    for table in (_request, _interests):  # the foreign keys cascade; a database opened without them keeps no orphans
        conn.execute(sa.delete(table).where(table.c.subscriber_id.in_(gone)))
    return len(gone)


def _aware(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _prune_unconfirmed(engine: Engine, report: PruneReport, now: datetime, batch: int, stopped: Callable[[], bool],
                       on_batch: Callable[[str, int], None] | None) -> None:
    after = 0
    while not stopped():
        found, last = unconfirmed_subscribers(engine, now, after=after, batch=batch)
        if last == after:
            return
        after = last
        if report.dry_run:
            report.unconfirmed += len(found)
            continue
        if not found:
            continue

        def work(conn: Connection, found: Sequence[tuple[int, int]] = found) -> int:
            return delete_unconfirmed(conn, found, now)

        gone, took = _timed(lambda: cast(int, write(engine, work)))
        _count(report, took)
        report.unconfirmed += gone
        if on_batch is not None:
            on_batch("subscribers", gone)


# --- the ledger ---------------------------------------------------------------------------------------


def _old_deliveries(cutoff: date) -> sa.ColumnElement[bool]:
    return sa.and_(_delivery.c.edition < cutoff.isoformat(), _delivery.c.state.in_(DONE_STATES))


def _prune_ledger(engine: Engine, report: PruneReport, cutoff: date, batch: int, stopped: Callable[[], bool],
                  on_batch: Callable[[str, int], None] | None) -> None:
    if report.dry_run:
        old = sa.select(_delivery.c.id).where(_old_deliveries(cutoff))
        report.deliveries = read_rows(engine, sa.select(sa.func.count()).select_from(old.subquery()))[0][0]
        report.sent_rows = read_rows(engine, sa.select(sa.func.count()).select_from(_sent).where(
            sa.or_(_sent.c.delivery_id.in_(old), sa.and_(_sent.c.delivery_id.is_(None), _sent.c.sent_at < day_start(cutoff)))))[0][0]
        return
    after = 0
    while not stopped():
        def work(conn: Connection, after: int = after) -> tuple[int, int, int]:
            begin_write(conn)
            ids = list(conn.execute(sa.select(_delivery.c.id).where(_old_deliveries(cutoff), _delivery.c.id > after)
                                    .order_by(_delivery.c.id).limit(batch)).scalars())
            if not ids:
                return 0, 0, after
            sent = conn.execute(sa.delete(_sent).where(_sent.c.delivery_id.in_(ids))).rowcount
            gone = conn.execute(sa.delete(_delivery).where(_delivery.c.id.in_(ids), _old_deliveries(cutoff))).rowcount
            return gone, sent, ids[-1]

        (gone, sent, after), took = _timed(lambda: cast(tuple[int, int, int], write(engine, work)))
        if not gone and not sent:
            break
        _count(report, took)
        report.deliveries += gone
        report.sent_rows += sent
        if on_batch is not None:
            on_batch("deliveries", gone)
    # sent_paper rows whose delivery went by other means (its delivery_id set NULL): past the horizon, they go too.
    while not stopped():
        def orphans(conn: Connection) -> int:
            begin_write(conn)
            ids = sa.select(_sent.c.id).where(_sent.c.delivery_id.is_(None), _sent.c.sent_at < day_start(cutoff)).limit(batch)
            return conn.execute(sa.delete(_sent).where(_sent.c.id.in_(ids.scalar_subquery()))).rowcount

        orphaned, took = _timed(lambda: cast(int, write(engine, orphans)))
        if not orphaned:
            break
        _count(report, took)
        report.sent_rows += orphaned


# --- papers -------------------------------------------------------------------------------------------


def _unneeded_papers(cutoff: datetime, ledger_cutoff: date | None) -> sa.ColumnElement[bool]:
    """Papers no source listed since `cutoff`, nobody voted on, and never sent, or sent only in deliveries that the
    ledger's prune deletes (before `ledger_cutoff`): after that prune, never sent. Seeds are checked apart (they are
    identifiers, resolved as the ranking resolves them)."""
    sent = _sent.c.paper_id == _paper.c.id
    if ledger_cutoff is not None:  # for a dry run, whose ledger is still whole; a real prune has deleted those rows
        trimmed = sa.or_(
            sa.and_(_sent.c.delivery_id.is_(None), _sent.c.sent_at < day_start(ledger_cutoff)),
            sa.exists().where(_delivery.c.id == _sent.c.delivery_id, _old_deliveries(ledger_cutoff)),
        )
        sent = sa.and_(sent, sa.not_(trimmed))
    return sa.and_(
        _paper.c.first_seen < cutoff, _paper.c.last_seen < cutoff,
        ~sa.exists().where(sent),
        ~sa.exists().where(_feedback.c.paper_id == _paper.c.id),
    )


class _Seeds:
    """The ids of the stored papers that subscribers name as seeds, each identifier resolved once, as
    digest.store.candidates.profile_rows_for resolves it: every subscriber's list read once (read_all), then, inside
    each batch's write transaction, only the lists of the subscribers whose profile changed since `since`."""

    def __init__(self, since: datetime) -> None:
        self.since = since
        self.resolved: dict[str, int | None] = {}
        self.paper_ids: set[int] = set()

    def read_all(self, conn: Connection) -> None:
        self._add(conn, conn.execute(sa.select(_subscriber.c.seed_papers)))

    def ids(self, conn: Connection) -> set[int]:
        """The seeds' paper ids, with the lists changed since `since` read again (profile_changed_at's index: a few rows)."""
        self._add(conn, conn.execute(sa.select(_subscriber.c.seed_papers).where(_subscriber.c.profile_changed_at >= self.since)))
        return self.paper_ids

    def _add(self, conn: Connection, rows: sa.Result) -> None:
        new = {str(i) for row in rows for i in (row[0] or ())} - self.resolved.keys()
        if new:
            with Session(bind=conn) as session:
                for ident in new:
                    paper = get_paper_by_ident(session, normalise_ident(ident))
                    self.resolved[ident] = paper.id if paper is not None else None
                    if paper is not None:
                        self.paper_ids.add(paper.id)


def _prune_papers(engine: Engine, report: PruneReport, cutoff: datetime, ledger_cutoff: date | None, seeds_since: datetime, batch: int,
                  stopped: Callable[[], bool], on_batch: Callable[[str, int], None] | None) -> None:
    unneeded = _unneeded_papers(cutoff, ledger_cutoff if report.dry_run else None)
    seeds = _Seeds(seeds_since)
    with engine.connect() as conn:  # once per prune, outside any write transaction
        seeds.read_all(conn)
    after = 0
    while not stopped():
        # The search for candidates is a read (no lock); the write transaction checks only the ids it found.
        found = [pid for (pid,) in read_rows(engine, sa.select(_paper.c.id).where(unneeded, _paper.c.id > after).order_by(_paper.c.id).limit(batch))]
        if not found:
            return
        after = found[-1]
        if report.dry_run:
            with engine.connect() as conn:
                named = seeds.ids(conn)
                doomed = [pid for pid in found if pid not in named]
                report.papers += len(doomed)
                report.embeddings += conn.execute(sa.select(sa.func.count()).select_from(_embedding).where(_embedding.c.paper_id.in_(doomed))).scalar_one()
            continue

        def work(conn: Connection, found: Sequence[int] = found) -> tuple[int, int]:
            begin_write(conn)
            still = set(conn.execute(sa.select(_paper.c.id).where(_paper.c.id.in_(found), unneeded)).scalars())
            doomed = sorted(still - seeds.ids(conn))
            if not doomed:
                return 0, 0
            embeddings = conn.execute(sa.delete(_embedding).where(_embedding.c.paper_id.in_(doomed))).rowcount
            # ON DELETE CASCADE takes their paper_source rows; SQLite's trigger their search-index rows.
            return conn.execute(sa.delete(_paper).where(_paper.c.id.in_(doomed))).rowcount, embeddings

        (gone, embeddings), took = _timed(lambda: cast(tuple[int, int], write(engine, work)))
        _count(report, took)
        report.papers += gone
        report.embeddings += embeddings
        if on_batch is not None:
            on_batch("papers", gone)


# --- helpers ------------------------------------------------------------------------------------------


def _timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _count(report: PruneReport, took: float) -> None:
    report.batches += 1
    report.longest_batch = max(report.longest_batch, took)
