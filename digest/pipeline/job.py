"""The daily job, shared by `digest run`, `digest send` and `digest serve`: sources -> store -> rank ->
render -> deliver -> record, under one lock, with every step written to the delivery ledger.

Exactly-once as far as SMTP allows: a row is marked 'sending' (committed) before its message is handed
over and 'sent' (committed, with the papers it carried) right after the server accepted it, so a rerun
or a run after SIGKILL sends only what was not accepted and at most the message in flight twice.
This module decides who is due and what they get; digest.dispatch builds and delivers. It must not parse
feeds, score papers, write templates or speak SMTP itself: those are the other steps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterator

from sqlalchemy.engine import Engine

from ..config import Settings
from ..deliver import Transport, check_sender_settings, make_message_id, transport_for
from ..dispatch import Composer, Sender, compose, make_links, produce
from ..errors import DigestError, LockedError
from ..rank import RankResult
from ..render import RenderedEmail
from ..store import deliveries as ledger
from .plan import Due, EditionPlan, Unplanned, due_subscribers, one_line, plan_editions, plan_for, rank_plans


@dataclass
class RunReport:
    """What one run did. `seconds` is the whole run; `timings` the seconds of each stage."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    due: int = 0
    not_attempted: int = 0  # due but left for the next run (stopped, server down)
    left_sending: int = 0  # left 'sending' because the ledger could not be put right (the database stayed locked)
    dry_run: bool = False
    stopped: bool = False
    workers: int = 0  # processes that rendered the emails (0: the calling thread did)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # fetch, plan, rank, render, build, send (summed over threads/workers)
    editions: list[str] = field(default_factory=list)
    fetched: list = field(default_factory=list)  # ingest.SourceReport per source
    fetch_error: str | None = None  # the fetch as a whole failed; what was already stored was still sent

    @property
    def unserved(self) -> int:
        """Due subscribers who got neither their email nor a deliberate skip."""
        return self.failed + self.deferred + self.not_attempted

    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: would send {self.sent}, skip {self.skipped} (nothing sent or recorded) in {self.seconds:.1f}s"
        left = f", not attempted {self.not_attempted}" if self.not_attempted else ""
        stuck = f", left 'sending' {self.left_sending}" if self.left_sending else ""
        return f"sent {self.sent}, skipped {self.skipped}, failed {self.failed}, deferred {self.deferred}{left}{stuck} in {self.seconds:.1f}s"


# --- the lock ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """One run at a time across cron, the timer, the daemon and the terminal; never waits.

    flock(2) on settings.lock_path: the kernel grants it to one process and drops it when that process
    dies, even by SIGKILL, so a stale lock file never blocks the next run.
    """
    from filelock import FileLock, Timeout

    settings.home.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.lock_path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise LockedError(f"another digest run holds the lock {settings.lock_path}") from None
    try:
        yield
    finally:
        lock.release()


def is_empty(result: RankResult) -> bool:
    """Nothing to show: no pick and no trending paper (only then does skip_empty skip)."""
    return not result.picks and not result.trending


def preview_email(engine: Engine, settings: Settings, now: datetime, email: str, *, edition: str | None = None) -> tuple[RenderedEmail, bytes, RankResult]:
    """Exactly the email the next run would send to `email`, whatever their schedule; nothing sent or recorded."""
    plan = plan_for(engine, email, now, settings, edition=edition)
    try:
        result = rank_plans([plan], settings, now, engine=engine)[0]
        if isinstance(result, Exception):
            raise result
        rendered, message = compose(settings, plan, result, message_id=make_message_id(settings.from_address, plan.subscriber.id, plan.edition), date_=now)
    except DigestError:
        raise
    except Exception as exc:  # noqa: BLE001 - one line for the operator; -v shows the traceback
        raise DigestError(f"cannot build the edition of {plan.subscriber.email}: {one_line(exc)}", "`digest -v preview` shows the traceback") from exc
    return rendered, message, result


# --- the job ----------------------------------------------------------------------------------------


def run_job(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    fetch: bool = True,
    only: str | None = None,
    dry_run: bool = False,
    transport: Transport | None = None,
    client=None,
    stop_event: threading.Event | None = None,
    log: logging.Logger | None = None,
    edition: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int], None] | None = None,
    on_plan: Callable[[int], None] | None = None,
) -> RunReport:
    """Do whatever is due at `now`: fetch (optional), then rank, render and deliver each due edition.

    LockedError when another run holds the lock; ServerDownError when too many deliveries fail in a row;
    DeliveryError when the server cannot be used at all; StoreError when the database stays locked past
    ledger.LOCK_PATIENCE (each with `.report`, what was done until then). `on_plan(n)` is told
    how many subscribers are due before sending starts, `progress(k)` as each k more are done.
    """
    log = log or logging.getLogger("digest.pipeline")
    stop_event = stop_event or threading.Event()
    started = time.monotonic()
    report = RunReport(dry_run=dry_run)
    with run_lock(settings):
        try:
            _run_locked(engine, settings, now, report, fetch=fetch, only=only, dry_run=dry_run, transport=transport, client=client, stop_event=stop_event, log=log, edition=edition, sleep=sleep, progress=progress, on_plan=on_plan, started=started)
        except DigestError as exc:  # the server down, the database locked: what was done so far goes with it
            report.seconds = time.monotonic() - started
            exc.report = report  # type: ignore[attr-defined]
            raise
    report.seconds = time.monotonic() - started
    # A daemon checks every minute: a run that had nothing due is a debug line, not an info line a minute.
    level = logging.INFO if report.due or report.fetched else logging.DEBUG
    log.log(level, "event=run-done sent=%d skipped=%d failed=%d deferred=%d not_attempted=%d seconds=%.1f", report.sent, report.skipped, report.failed, report.deferred, report.not_attempted, report.seconds)
    return report


def _stage(report: RunReport, name: str, since: float) -> float:
    now = time.perf_counter()
    report.timings[name] = report.timings.get(name, 0.0) + now - since
    return now


def _run_locked(engine, settings, now, report, *, fetch, only, dry_run, transport, client, stop_event, log, edition, sleep, progress, on_plan, started) -> None:
    mark = time.perf_counter()
    if fetch:
        from ..ingest import fetch_sources

        try:
            report.fetched = fetch_sources(engine, settings, now, client=client)
        except Exception as exc:  # noqa: BLE001 - a wall: a fetch that breaks must not also stop the day's email
            report.fetch_error = one_line(exc)
            log.error("event=fetch-failed error=%s note=sending what is already stored", report.fetch_error, exc_info=None if isinstance(exc, DigestError) else exc)
        mark = _stage(report, "fetch", mark)
    dues = due_subscribers(engine, settings, now, only=only, edition=edition)
    report.due = len(dues)
    report.editions = sorted({d.edition for d in dues})
    if on_plan is not None:
        on_plan(len(dues))
    if not dues:
        _stage(report, "plan", mark)
        return
    make_links(settings, dues[0].subscriber, [])  # no secret_key: fail before anything is sent
    check_sender_settings(settings)  # nor with a From, Reply-To or base_url no message can carry
    planned = plan_editions(engine, settings, now, dues)
    mark = _stage(report, "plan", mark)
    plans = [p for p in planned if isinstance(p, EditionPlan)]
    ranked = iter(rank_plans(plans, settings, now, engine=engine))
    results: list[RankResult | Exception] = [p.error if isinstance(p, Unplanned) else next(ranked) for p in planned]
    mark = _stage(report, "rank", mark)

    def stamp() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    if dry_run:
        for due, result in zip(dues, results):
            try:
                if isinstance(result, Exception):
                    raise result
                if settings.skip_empty and is_empty(result):
                    report.skipped += 1
                else:
                    compose(settings, due, result, message_id=make_message_id(settings.from_address, due.subscriber.id, due.edition), date_=now, timings=report.timings)
                    report.sent += 1
            except Exception as exc:  # noqa: BLE001 - this subscriber's edition cannot be built; the others go on
                report.failed += 1
                _log_unbuilt(log, due, exc)
            if progress:
                progress(1)
        return

    rows = ledger.open_deliveries(engine, [(d.subscriber.id, d.edition) for d in dues], stamp(), lambda sub, ed: make_message_id(settings.from_address, sub, ed))
    resumed = [r for r in rows.values() if r.state == "sending"]
    if resumed:
        log.warning("event=resume deliveries=%d note=a message in flight when the last run died may arrive twice", len(resumed))
    work, skipped, unranked = _plan_messages(settings, dues, results, rows)
    ledger.record_skipped(engine, skipped, "nothing new for this subscriber", stamp())
    report.skipped = len(skipped)
    _record_unbuilt(engine, unranked, stamp(), log)
    report.failed += len(unranked)
    if progress and (skipped or unranked):
        progress(len(skipped) + len(unranked))
    own = transport is None
    transport = transport or transport_for(settings)
    composer = Composer(settings, work, stamp(), report)  # before the sender thread: workers fork a one-thread process
    sender = Sender(engine, settings, transport, report, now, stamp, sleep, stop_event, log, progress)
    sender.start()
    try:
        produce(engine, work, composer, sender, stamp, stop_event)
    finally:
        composer.close()
        sender.finish()
        if own:
            transport.close()
        report.timings["send"] = sender.busy
        never = [item.row.id for item in sender.unsent]
        report.not_attempted = len(never) + sender.unplanned
        report.failed += sender.build_failed
        report.stopped = stop_event.is_set()
        unsettled = _settle(engine, report, never, sender.unrecorded, stamp(), log)
    if sender.error is not None:
        raise sender.error
    if unsettled is not None:
        raise unsettled


def _settle(engine: Engine, report: RunReport, never: list[int], unrecorded: list[tuple], now: datetime, log: logging.Logger) -> DigestError | None:
    """Only a message handed to the server may stay 'sending': the rest go back to 'pending', and each message
    handed over whose record failed is recorded now (ledger.settle waits while the database is locked).
    Returns the StoreError when even that fails, having logged what is left 'sending', never raising over
    the error that stopped the run."""
    try:
        ledger.settle(engine, never, [record for _, record in unrecorded], now)
    except DigestError as exc:
        report.left_sending = len(never) + len(unrecorded)
        log.error("event=ledger-unsettled sending=%d handed_over=%d error=%s note=the next run sends them (those handed over may arrive twice)",
                  report.left_sending, len(unrecorded), exc)
        return exc
    for kind, _ in unrecorded:  # recorded late, but recorded: count them as the run would have
        setattr(report, kind, getattr(report, kind) + 1)
    if unrecorded:
        log.warning("event=recorded-late deliveries=%d note=their record waited for the database lock", len(unrecorded))
    return None


def _plan_messages(settings: Settings, dues, results, rows) -> tuple[list[tuple], list[int], list[tuple]]:
    """(what to compose: (due, result, ledger row, Message-ID) in order, ledger ids to skip,
    (due, ledger row, exception) of those who could not be ranked)."""
    work, skipped, unranked = [], [], []
    for due, result in zip(dues, results):
        row = rows[(due.subscriber.id, due.edition)]
        if isinstance(result, Exception):
            unranked.append((due, row, result))
        elif settings.skip_empty and is_empty(result):
            skipped.append(row.id)
        else:
            work.append((due, result, row, row.message_id or make_message_id(settings.from_address, due.subscriber.id, due.edition)))
    return work, skipped, unranked


def _record_unbuilt(engine: Engine, unranked: list[tuple], now: datetime, log: logging.Logger) -> None:
    """Each subscriber whose edition cannot be built: a 'failed' delivery with the error, in one transaction."""
    if not unranked:
        return

    def work(conn) -> None:
        for due, row, exc in unranked:
            ledger.record_failed(conn, row.id, due.subscriber.id, f"cannot build the edition: {one_line(exc)}", 0, now, bounce=False)

    ledger.write(engine, work)
    for due, _, exc in unranked:
        _log_unbuilt(log, due, exc)


def _log_unbuilt(log: logging.Logger, due: Due, exc: Exception) -> None:
    # A DigestError says what is wrong; anything else is a bug or a row edited by hand: keep its traceback.
    log.warning("event=failed subscriber=%s edition=%s error=%s", due.subscriber.email, due.edition, f"cannot build the edition: {one_line(exc)}",
                exc_info=None if isinstance(exc, DigestError) else exc)


