"""Retention: `digest prune`, and the daily run once a day when keep_days or keep_ledger_days is set, delete what the
database no longer needs, in short transactions. It must not rank, send or render, and it never shrinks the SQLite file
itself (VACUUM takes the database for itself: docs/deployment.md says when and how).

What goes:
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
  subscriber, whatever their status), checked again inside the transaction that deletes it.
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
from datetime import date, datetime, timedelta
from typing import TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from ..config import Settings
from ..errors import ConfigError
from ..log import log_event
from ..models import Delivery, Feedback, Paper, PaperEmbedding, SentPaper, Subscriber, table_of
from . import begin_write, read_rows
from .days import day_start
from .deliveries import DONE_STATES, write
from .papers import get_paper_by_ident
from .subscribers import normalise_ident

log = logging.getLogger("digest.store")
T = TypeVar("T")

BATCH = 500  # rows deleted per transaction
DAILY_BUDGET = 300.0  # seconds the daily run gives a prune; what is left waits for the next day (a first prune is long)

_paper, _delivery, _sent = table_of(Paper), table_of(Delivery), table_of(SentPaper)
_feedback, _embedding, _subscriber = table_of(Feedback), table_of(PaperEmbedding), table_of(Subscriber)


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
        if not parts:
            return "nothing to prune: keep_days and keep_ledger_days are 0 (keep everything)"
        left = "" if self.finished else "; stopped before the end, the next prune goes on"
        return f"{verb} " + "; ".join(parts) + f" in {self.seconds:.1f}s{left}"


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
    """Delete the ledger past keep_ledger_days, then the papers past keep_days (0: keep them), `batch` rows per
    transaction; `dry_run` counts instead. Stops between batches once `budget` seconds have passed or `stop` is set
    (report.finished False). `on_batch(kind, rows)` is told of each committed batch ("deliveries" or "papers")."""
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

    if report.ledger_cutoff is not None:
        _prune_ledger(engine, report, report.ledger_cutoff, batch, stopped, on_batch)
    if report.paper_cutoff is not None and report.finished:
        _prune_papers(engine, report, report.paper_cutoff, report.ledger_cutoff, batch, stopped, on_batch)
    report.seconds = time.monotonic() - started
    return report


def prune_daily(engine: Engine, settings: Settings, now: datetime, *, candidate_days: int, stop: threading.Event | None = None) -> PruneReport | None:
    """The daily run's prune (by the run that fetched: once a day, on one host), when a horizon is set: at most
    DAILY_BUDGET seconds. A wall: whatever it raises is logged, and the run's report stands."""
    if not settings.keep_days and not settings.keep_ledger_days:
        return None
    try:
        report = prune_store(engine, now, keep_days=settings.keep_days, keep_ledger_days=settings.keep_ledger_days, candidate_days=candidate_days,
                             budget=DAILY_BUDGET, stop=stop)
    except Exception as exc:  # noqa: BLE001 - the editions are sent; a prune that fails is tried again tomorrow
        log_event(log, "prune-failed", logging.ERROR, error=str(exc), exc_info=exc, note="nothing of a failed batch was deleted; the next run's prune tries again")
        return None
    log_event(log, "pruned", logging.INFO, papers=report.papers, deliveries=report.deliveries, sent_rows=report.sent_rows, embeddings=report.embeddings,
              seconds=round(report.seconds, 1), finished=report.finished)
    return report


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
    """The ids of the stored papers that subscribers name as seeds; each identifier resolved once, as
    digest.store.candidates.profile_rows_for resolves it, and the identifiers read again for every batch."""

    def __init__(self) -> None:
        self.resolved: dict[str, int | None] = {}

    def ids(self, conn: Connection) -> set[int]:
        idents = {str(i) for row in conn.execute(sa.select(_subscriber.c.seed_papers)) for i in (row[0] or ())}
        new = idents - self.resolved.keys()
        if new:
            with Session(bind=conn) as session:
                for ident in new:
                    paper = get_paper_by_ident(session, normalise_ident(ident))
                    self.resolved[ident] = paper.id if paper is not None else None
        return {pid for ident in idents if (pid := self.resolved[ident]) is not None}


def _prune_papers(engine: Engine, report: PruneReport, cutoff: datetime, ledger_cutoff: date | None, batch: int, stopped: Callable[[], bool],
                  on_batch: Callable[[str, int], None] | None) -> None:
    unneeded = _unneeded_papers(cutoff, ledger_cutoff if report.dry_run else None)
    seeds = _Seeds()
    after = 0
    while not stopped():
        # The search for candidates is a read (no lock); the write transaction checks only the ids it found.
        found = [pid for (pid,) in read_rows(engine, sa.select(_paper.c.id).where(unneeded, _paper.c.id > after).order_by(_paper.c.id).limit(batch))]
        if not found:
            return
        after = found[-1]
        if report.dry_run:
            with engine.connect() as conn:
                doomed = [pid for pid in found if pid not in seeds.ids(conn)]
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
