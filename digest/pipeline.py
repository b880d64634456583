"""The daily job, shared by `digest run`, `digest send` and `digest serve`: sources -> store -> rank ->
render -> deliver -> record, under one lock, with every step written to the delivery ledger.

Exactly-once as far as SMTP allows: a row is marked 'sending' (committed) before its message is handed
over and 'sent' (committed, with the papers it carried) right after the server accepted it, so a rerun
or a run after SIGKILL sends only what was not accepted and at most the message in flight twice.
Rendering and building run in the calling thread while a sender thread talks SMTP, so the two overlap.
It must not parse feeds, score papers, write templates or speak SMTP itself: those are the other steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Callable, Iterator, Sequence

from sqlalchemy.engine import Engine

from .config import Settings
from .deliver import Transport, build_message, make_message_id, transport_for
from .editions import due_edition, parse_frequency, WEEKDAYS
from .errors import DeliveryError, DigestError, InputError, LockedError, PermanentDeliveryError, ServerDownError, TransientDeliveryError
from .models import Subscriber
from .rank import RankResult
from .render import Links, RenderedEmail
from .store import deliveries as ledger
from .store import session_scope
from .tokens import action_url, make_token

RETRY_DELAYS = (5.0, 30.0)  # seconds before each extra round over the deliveries a 4xx deferred
SERVER_DOWN_AFTER = 10  # failed deliveries in a row, to different recipients, that stop the run
CHUNK = 50  # messages marked 'sending' per commit
QUEUE_SIZE = 200  # built messages waiting for the sender thread
POOL_FROM = 1000  # messages from which rendering is spread over worker processes
MAX_WORKERS = 4


@dataclass
class RunReport:
    """What one run did. `seconds` is the whole run; `timings` the seconds of each stage."""

    sent: int = 0
    skipped: int = 0
    failed: int = 0
    deferred: int = 0
    due: int = 0
    not_attempted: int = 0  # due but left for the next run (stopped, server down)
    dry_run: bool = False
    stopped: bool = False
    workers: int = 0  # processes that rendered the emails (0: the calling thread did)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # fetch, plan, rank, render, build, send (summed over threads/workers)
    editions: list[str] = field(default_factory=list)
    fetched: list = field(default_factory=list)  # ingest.SourceReport per source

    @property
    def unserved(self) -> int:
        """Due subscribers who got neither their email nor a deliberate skip."""
        return self.failed + self.deferred + self.not_attempted

    def summary(self) -> str:
        if self.dry_run:
            return f"dry run: would send {self.sent}, skip {self.skipped} (nothing sent or recorded) in {self.seconds:.1f}s"
        left = f", not attempted {self.not_attempted}" if self.not_attempted else ""
        return f"sent {self.sent}, skipped {self.skipped}, failed {self.failed}, deferred {self.deferred}{left} in {self.seconds:.1f}s"


@dataclass(frozen=True)
class Due:
    subscriber: Subscriber
    edition: str
    since: datetime  # the subscriber's candidates were first seen after this


@dataclass
class _Outgoing:
    due: Due
    row: ledger.LedgerRow
    message: bytes
    paper_ids: list[int]
    attempts: int = 0


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


# --- who is due, and what they get ------------------------------------------------------------------


def due_subscribers(engine: Engine, settings: Settings, now: datetime, *, only: str | None = None, edition: str | None = None, log: logging.Logger | None = None) -> list[Due]:
    """Active subscribers whose edition is due at `now` (or who have not finished `edition`), by id."""
    from .store.subscribers import get_subscriber, list_subscribers

    log = log or logging.getLogger("digest.pipeline")
    with session_scope(engine) as session:
        if only:
            sub = get_subscriber(session, only)
            if sub.status != "active":
                raise InputError(f"{sub.email} is {sub.status}, not active: nothing to send", "`digest subscribers resume` makes them active again")
            subs = [sub]
        else:
            subs = sorted(list_subscribers(session, status="active"), key=lambda s: s.id)
    if edition is not None:
        done = {d.subscriber_id for d in ledger.deliveries_for(engine, edition=edition) if d.state in ledger.DONE_STATES}
        weekday = WEEKDAYS[date.fromisoformat(edition).weekday()]
    else:
        finished = ledger.finished_editions(engine)
    out = []
    for sub in subs:
        try:
            if edition is not None:
                frequency = parse_frequency(sub.frequency)
                wanted = None if sub.id in done or (frequency != "daily" and frequency[7:] != weekday) else edition
            else:
                wanted = due_edition(now, sub.send_at, sub.tz, sub.frequency, finished.get(sub.id))
        except ValueError as exc:  # one bad profile never stops the others
            log.warning("event=bad-schedule subscriber=%s error=%s", sub.email, exc)
            continue
        if wanted is not None:
            days = 7 if sub.frequency.startswith("weekly:") else settings.window_days
            floor = now - timedelta(days=days)
            since = max(sub.last_digest_at, floor) if sub.last_digest_at is not None else floor
            out.append(Due(sub, wanted, since))
    return out


def rank_due(engine: Engine, settings: Settings, now: datetime, dues: Sequence[Due]) -> list[RankResult]:
    """Every due subscriber ranked at once over one candidate pool; each excludes what they were already
    sent and what was first seen before their own window."""
    from .rank import build_profile, rank_many
    from .store.candidates import candidate_papers, profile_rows, sent_among

    if not dues:
        return []
    with_feedback = ledger.subscribers_with_feedback(engine)
    with session_scope(engine) as session:
        candidates = candidate_papers(session, min(d.since for d in dues), now)
        sent = sent_among(session, [d.subscriber.id for d in dues], [c.paper.id for c in candidates])
        too_old: dict[datetime, frozenset[int]] = {}
        profiles = []
        for d in dues:
            sub = d.subscriber
            if sub.seed_papers or sub.id in with_feedback:
                rows = profile_rows(session, sub)
                profile = build_profile(sub, rows.seed_papers, rows.liked, rows.disliked)
            else:
                profile = build_profile(sub)
            if d.since not in too_old:
                too_old[d.since] = frozenset(c.paper.id for c in candidates if c.paper.first_seen is not None and c.paper.first_seen <= d.since)
            profiles.append(dataclasses.replace(profile, exclude_paper_ids=too_old[d.since] | sent.get(sub.id, set())))
    return rank_many(candidates, profiles, now, relevance_floor=settings.relevance_floor)


def make_links(settings: Settings, subscriber: Subscriber, paper_ids: Sequence[int]) -> Links:
    """The reader's signed links under base_url (ConfigError when secret_key is missing)."""
    key, base, sub_id, version = settings.secret_key, settings.base_url, subscriber.id, subscriber.token_version

    def feedback(paper_id: int, value: int) -> str:
        return action_url(base, "feedback", make_token(key, "feedback", sub_id, version, paper_id=paper_id, value=value))

    return Links(
        unsubscribe=action_url(base, "unsubscribe", make_token(key, "unsubscribe", sub_id, version)),
        preferences=action_url(base, "preferences", make_token(key, "preferences", sub_id, version)),
        like={p: feedback(p, 1) for p in paper_ids},
        dislike={p: feedback(p, -1) for p in paper_ids},
    )


def papers_carried(result: RankResult) -> list[int]:
    """Ids of every paper the email shows (picks, then trending), each once, in order."""
    return list(dict.fromkeys([r.paper.id for r in result.picks] + [r.paper.id for r in result.trending]))


def is_empty(result: RankResult) -> bool:
    """Nothing to show: no pick and no trending paper (only then does skip_empty skip)."""
    return not result.picks and not result.trending


def compose(settings: Settings, due: Due, result: RankResult, *, message_id: str, date_: datetime, timings: dict[str, float] | None = None) -> tuple[RenderedEmail, bytes]:
    """The rendered email and the exact bytes that would be sent to this subscriber."""
    from .render import render_digest

    sub = due.subscriber
    started = time.perf_counter()
    links = make_links(settings, sub, [r.paper.id for r in result.picks])
    rendered = render_digest(result, name=sub.name, email=sub.email, edition=date.fromisoformat(due.edition), links=links, site_name=settings.from_name, interests=sub.interests or ())
    built = time.perf_counter()
    message = build_message(rendered, to=sub.email, name=sub.name, settings=settings, message_id=message_id, unsubscribe_url=links.unsubscribe, date=date_)
    if timings is not None:
        timings["render"] = timings.get("render", 0.0) + built - started
        timings["build"] = timings.get("build", 0.0) + time.perf_counter() - built
    return rendered, message


def preview_email(engine: Engine, settings: Settings, now: datetime, email: str, *, edition: str | None = None) -> tuple[RenderedEmail, bytes, RankResult]:
    """Exactly the email the next run would send to `email`, whatever their schedule; nothing sent or recorded."""
    from .editions import local_day
    from .store.subscribers import get_subscriber

    with session_scope(engine) as session:
        sub = get_subscriber(session, email)
    days = 7 if sub.frequency.startswith("weekly:") else settings.window_days
    floor = now - timedelta(days=days)
    since = max(sub.last_digest_at, floor) if sub.last_digest_at is not None else floor
    try:
        day = edition or local_day(now, sub.tz).isoformat()
    except ValueError as exc:
        raise InputError(f"{sub.email}: {exc}") from None
    due = Due(sub, day, since)
    result = rank_due(engine, settings, now, [due])[0]
    rendered, message = compose(settings, due, result, message_id=make_message_id(settings.from_address, sub.id, day), date_=now)
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

    LockedError when another run holds the lock; ServerDownError (with `.report`) when too many
    deliveries fail in a row; DeliveryError when the server cannot be used at all. `on_plan(n)` is told
    how many subscribers are due before sending starts, `progress(k)` as each k more are done.
    """
    log = log or logging.getLogger("digest.pipeline")
    stop_event = stop_event or threading.Event()
    started = time.monotonic()
    report = RunReport(dry_run=dry_run)
    with run_lock(settings):
        try:
            _run_locked(engine, settings, now, report, fetch=fetch, only=only, dry_run=dry_run, transport=transport, client=client, stop_event=stop_event, log=log, edition=edition, sleep=sleep, progress=progress, on_plan=on_plan, started=started)
        except DeliveryError as exc:
            report.seconds = time.monotonic() - started
            exc.report = report  # type: ignore[attr-defined]
            raise
    report.seconds = time.monotonic() - started
    log.info("event=run-done sent=%d skipped=%d failed=%d deferred=%d not_attempted=%d seconds=%.1f", report.sent, report.skipped, report.failed, report.deferred, report.not_attempted, report.seconds)
    return report


def _stage(report: RunReport, name: str, since: float) -> float:
    now = time.perf_counter()
    report.timings[name] = report.timings.get(name, 0.0) + now - since
    return now


def _run_locked(engine, settings, now, report, *, fetch, only, dry_run, transport, client, stop_event, log, edition, sleep, progress, on_plan, started) -> None:
    mark = time.perf_counter()
    if fetch:
        from .ingest import fetch_sources

        report.fetched = fetch_sources(engine, settings, now, client=client)
        mark = _stage(report, "fetch", mark)
    dues = due_subscribers(engine, settings, now, only=only, edition=edition, log=log)
    report.due = len(dues)
    report.editions = sorted({d.edition for d in dues})
    mark = _stage(report, "plan", mark)
    if on_plan is not None:
        on_plan(len(dues))
    if not dues:
        return
    make_links(settings, dues[0].subscriber, [])  # no secret_key: fail before anything is sent
    results = rank_due(engine, settings, now, dues)
    mark = _stage(report, "rank", mark)

    def stamp() -> datetime:
        return now + timedelta(seconds=time.monotonic() - started)

    if dry_run:
        for due, result in zip(dues, results):
            if settings.skip_empty and is_empty(result):
                report.skipped += 1
            else:
                compose(settings, due, result, message_id=make_message_id(settings.from_address, due.subscriber.id, due.edition), date_=now, timings=report.timings)
                report.sent += 1
            if progress:
                progress(1)
        return

    rows = ledger.open_deliveries(engine, [(d.subscriber.id, d.edition) for d in dues], stamp(), lambda sub, ed: make_message_id(settings.from_address, sub, ed))
    resumed = [r for r in rows.values() if r.state == "sending"]
    if resumed:
        log.warning("event=resume deliveries=%d note=a message in flight when the last run died may arrive twice", len(resumed))
    work, skipped = _plan_messages(settings, dues, results, rows)
    ledger.record_skipped(engine, skipped, "nothing new for this subscriber", stamp())
    report.skipped = len(skipped)
    if progress and skipped:
        progress(len(skipped))
    own = transport is None
    transport = transport or transport_for(settings)
    composer = _Composer(settings, work, stamp(), report)  # before the sender thread: workers fork a one-thread process
    sender = _Sender(engine, settings, transport, report, now, stamp, sleep, stop_event, log, progress)
    sender.start()
    try:
        _produce(engine, work, composer, sender, stamp, stop_event)
    finally:
        composer.close()
        sender.finish()
        if own:
            transport.close()
        report.timings["send"] = sender.busy
        never = [item.row.id for item in sender.unsent]
        ledger.unmark_sending(engine, never, stamp())
        report.not_attempted = len(never) + sender.unplanned
        report.failed += sender.build_failed
        report.stopped = stop_event.is_set()
    if sender.error is not None:
        raise sender.error


def _plan_messages(settings: Settings, dues, results, rows) -> tuple[list[tuple], list[int]]:
    """(what to compose: (due, result, ledger row, Message-ID) in order, ledger ids to skip)."""
    work, skipped = [], []
    for due, result in zip(dues, results):
        row = rows[(due.subscriber.id, due.edition)]
        if settings.skip_empty and is_empty(result):
            skipped.append(row.id)
        else:
            work.append((due, result, row, row.message_id or make_message_id(settings.from_address, due.subscriber.id, due.edition)))
    return work, skipped


_JOB: tuple = ()  # (settings, work, date) for forked composer processes, which inherit it


def _compose_at(index: int) -> tuple[int, bytes | None, str | None, float, float]:
    settings, work, date_ = _JOB
    due, result, _, message_id = work[index]
    timings: dict[str, float] = {}
    try:
        _, message = compose(settings, due, result, message_id=message_id, date_=date_, timings=timings)
    except InputError as exc:  # this subscriber's data cannot make an email (e.g. the address)
        return index, None, str(exc), 0.0, 0.0
    return index, message, None, timings["render"], timings["build"]


class _Composer:
    """The built messages, in order: in this thread, or (for a big edition in a process with no other
    thread) in forked worker processes that inherit the ranked results, so rendering uses every core
    while this process sends. Forking is skipped when threads exist (a daemon): a forked copy of a
    lock held by another thread would deadlock the worker."""

    def __init__(self, settings: Settings, work: list[tuple], date_: datetime, report: RunReport):
        global _JOB
        self.report, self.pool = report, None
        _JOB = (settings, work, date_)
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        if len(work) >= POOL_FROM and workers > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            self.pool = multiprocessing.get_context("fork").Pool(workers)
            report.workers = workers
            self.results = self.pool.imap(_compose_at, range(len(work)), chunksize=16)
        else:
            self.results = map(_compose_at, range(len(work)))

    def __iter__(self):
        for index, message, error, render_s, build_s in self.results:
            self.report.timings["render"] = self.report.timings.get("render", 0.0) + render_s
            self.report.timings["build"] = self.report.timings.get("build", 0.0) + build_s
            yield index, message, error

    def close(self) -> None:
        global _JOB
        _JOB = ()
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()


def _produce(engine, work: list[tuple], composer: _Composer, sender: "_Sender", stamp, stop_event) -> None:
    """Hand the built messages to the sender in chunks, each chunk marked 'sending' first."""
    chunk: list[_Outgoing] = []
    taken = 0

    def flush() -> bool:
        ledger.mark_sending(engine, [item.row.id for item in chunk], stamp())
        for k, item in enumerate(chunk):
            if not sender.put(item):  # the sender stopped: the rest of the chunk was never handed over
                sender.unsent.extend(chunk[k + 1 :])
                chunk.clear()
                return False
        chunk.clear()
        return True

    try:
        for index, message, error in composer:
            taken += 1
            if stop_event.is_set() or sender.error is not None:
                taken -= 1
                break
            due, result, row, _ = work[index]
            if error is not None:
                ledger.write(engine, lambda conn: ledger.record_failed(conn, row.id, due.subscriber.id, error, 0, stamp(), bounce=False))
                sender.build_failed += 1
                sender.log.warning("event=failed subscriber=%s edition=%s error=%s", due.subscriber.email, due.edition, error)
                continue
            chunk.append(_Outgoing(due, row, message, papers_carried(result)))
            if len(chunk) >= CHUNK and not flush():
                break
        if chunk and not (stop_event.is_set() or sender.error is not None):
            flush()
    finally:
        # built but never marked or handed over, and never built at all
        sender.unplanned += len(chunk) + len(work) - taken


class _Sender(threading.Thread):
    """Takes built messages from a queue, hands each to the transport and records the outcome."""

    def __init__(self, engine, settings, transport, report, now, stamp, sleep, stop_event, log, progress):
        super().__init__(name="digest-sender", daemon=True)
        self.engine, self.settings, self.transport, self.report = engine, settings, transport, report
        self.now, self.stamp, self.sleep, self.stop_event, self.log, self.progress = now, stamp, sleep, stop_event, log, progress
        self.queue: queue.Queue[_Outgoing | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.error: BaseException | None = None
        self.unsent: list[_Outgoing] = []  # marked 'sending', never handed over
        self.unplanned = 0  # due subscribers never built (the run stopped first)
        self.build_failed = 0  # counted by the producer thread
        self.retry: list[_Outgoing] = []
        self.streak: set[str] = set()  # recipients of the failures in a row
        self.busy = 0.0
        self.conn = None  # the sender's own database connection, open while it runs

    def put(self, item: _Outgoing) -> bool:
        """Queue one message; False (and the item kept as unsent) once the sender has stopped."""
        while self.is_alive() and self.error is None:
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        self.unsent.append(item)
        return False

    def finish(self) -> None:
        while self.is_alive():
            try:
                self.queue.put(None, timeout=0.2)
                break
            except queue.Full:
                continue
        self.join()
        self._drain()  # whatever the sender never took

    def _drain(self) -> None:
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                self.unsent.append(item)

    def run(self) -> None:
        try:
            with self.engine.connect() as self.conn:  # one connection for every ledger write of the run
                self._deliver_all()
        except BaseException as exc:  # ServerDownError, DeliveryError, StoreError: the run stops
            self.error = exc
            self.report.deferred += len(self.retry)
            self._drain()  # release the producer

    def _deliver_all(self) -> None:
        """Every queued message once, then the retry rounds for what a 4xx deferred."""
        while (item := self.queue.get()) is not None:
            if self.stop_event.is_set():
                self.unsent.append(item)
                continue
            self._attempt(item, last=False)
        for round_, delay in enumerate(RETRY_DELAYS, start=1):
            if not self.retry or self.stop_event.is_set():
                break
            self.log.info("event=retry-round round=%d deliveries=%d delay=%.0fs", round_, len(self.retry), delay)
            self.sleep(delay)
            batch, self.retry = self.retry, []
            for item in batch:
                self._attempt(item, last=round_ == len(RETRY_DELAYS))
        self.report.deferred += len(self.retry)
        self.retry.clear()

    def _attempt(self, item: _Outgoing, *, last: bool) -> None:
        sub = item.due.subscriber
        begun = time.perf_counter()
        item.attempts += 1
        try:
            self.transport.send(item.message, sender=self.settings.from_address, recipient=sub.email)
        except TransientDeliveryError as exc:
            self.busy += time.perf_counter() - begun
            ledger.write(self.conn, lambda conn: ledger.record_deferred(conn, item.row.id, str(exc), item.attempts, self.stamp()))
            item.attempts = 0
            self.log.warning("event=deferred subscriber=%s edition=%s error=%s", sub.email, item.due.edition, exc)
            if last:
                self.report.deferred += 1
                self._done()
            else:
                self.retry.append(item)
            self._failed(sub.email, exc)
            return
        except PermanentDeliveryError as exc:
            self.busy += time.perf_counter() - begun
            bounces = ledger.write(self.conn, lambda conn: ledger.record_failed(conn, item.row.id, sub.id, str(exc), item.attempts, self.stamp(), bounce=True))
            self.report.failed += 1
            self._done()
            self.log.warning("event=failed subscriber=%s edition=%s bounces=%s error=%s", sub.email, item.due.edition, bounces, exc)
            if bounces >= ledger.BOUNCE_LIMIT:
                self.log.warning("event=bounced subscriber=%s note=no more mail until resumed", sub.email)
            self._failed(sub.email, exc)
            return
        ledger.write(self.conn, lambda conn: ledger.record_sent(conn, item.row.id, sub.id, item.paper_ids, item.attempts, self.stamp(), self.now))
        self.busy += time.perf_counter() - begun
        self.report.sent += 1
        self.streak.clear()
        self._done()
        self.log.debug("event=sent subscriber=%s edition=%s message_id=%s", sub.email, item.due.edition, item.row.message_id)

    def _done(self) -> None:
        if self.progress:
            self.progress(1)

    def _failed(self, recipient: str, exc: DigestError) -> None:
        self.streak.add(recipient)
        if len(self.streak) >= SERVER_DOWN_AFTER:
            raise ServerDownError(f"{len(self.streak)} deliveries in a row to different recipients failed (the last: {exc.args[0]}); the run stopped, the rest stays for the next run")
