"""The sending half of a run: the emails built (in this thread, or by forked worker processes for a big
edition) and handed to a sender thread that delivers each one and records the outcome in the ledger.

The order of the ledger writes is the exactly-once guarantee: 'sending' is committed before a message is
handed over, 'sent' (with the papers it carried) right after the server accepted it. It must not decide
who is due or what they get (digest.pipeline does), nor speak SMTP itself (digest.deliver does).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Callable, Sequence

from .children import die_with_parent
from .config import Settings
from .deliver import build_message
from .errors import DigestError, InputError, PermanentDeliveryError, ServerDownError, StoreError, TransientDeliveryError
from .models import Subscriber
from .rank import RankResult
from .render import Links, RenderedEmail
from .store import deliveries as ledger
from .tokens import action_url, make_token

if TYPE_CHECKING:
    from .pipeline.job import RunReport
    from .pipeline.plan import Due

RETRY_DELAYS = (5.0, 30.0)  # seconds before each extra round over the deliveries a 4xx deferred
SERVER_DOWN_AFTER = 10  # failed deliveries in a row, to different recipients, that stop the run
CHUNK = 50  # messages marked 'sending' per commit
QUEUE_SIZE = 200  # built messages waiting for the sender thread
POOL_FROM = 1000  # messages from which rendering is spread over worker processes
MAX_WORKERS = 4


@dataclass
class Outgoing:
    due: Due
    row: ledger.LedgerRow
    message: bytes
    paper_ids: list[int]
    attempts: int = 0


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


def compose(settings: Settings, due: "Due", result: RankResult, *, message_id: str, date_: datetime, timings: dict[str, float] | None = None) -> tuple[RenderedEmail, bytes]:
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


_JOB: tuple = ()  # (settings, work, date) for forked composer processes, which inherit it


def _compose_at(index: int) -> tuple[int, bytes | None, Unbuilt | None, float, float]:
    settings, work, date_ = _JOB
    due, result, _, message_id = work[index]
    timings: dict[str, float] = {}
    try:
        _, message = compose(settings, due, result, message_id=message_id, date_=date_, timings=timings)
    except InputError as exc:  # this subscriber's data cannot make an email (e.g. the address)
        return index, None, Unbuilt(str(exc)), 0.0, 0.0
    except Exception as exc:  # noqa: BLE001 - a wall: whatever one subscriber's email raises is their failed delivery
        text = " ".join(f"cannot build the edition: {type(exc).__name__}: {exc}".split())[:500]
        return index, None, Unbuilt(text, traceback.format_exc()), 0.0, 0.0
    return index, message, None, timings["render"], timings["build"]


@dataclass(frozen=True)
class Unbuilt:
    """Why one subscriber's email could not be built (a plain value: it crosses from a worker process)."""

    error: str
    trace: str | None = None  # the traceback of an unexpected exception, for the log


class Composer:
    """The built messages, in order: in this thread, or (for a big edition in a process with no other
    thread) in forked worker processes that inherit the ranked results, so rendering uses every core
    while this process sends. Forking is skipped when threads exist (a daemon): a forked copy of a
    lock held by another thread would deadlock the worker."""

    def __init__(self, settings: Settings, work: list[tuple], date_: datetime, report: "RunReport"):
        global _JOB
        self.report, self.pool = report, None
        _JOB = (settings, work, date_)
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        if len(work) >= POOL_FROM and workers > 1 and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            # Each worker dies with this process, even by SIGKILL (it would wait on the task queue forever).
            self.pool = multiprocessing.get_context("fork").Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),))
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


def produce(engine, work: list[tuple], composer: Composer, sender: "Sender", stamp, stop_event) -> None:
    """Hand the built messages to the sender in chunks, each chunk marked 'sending' first."""
    chunk: list[Outgoing] = []
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
                ledger.write(engine, lambda conn: ledger.record_failed(conn, row.id, due.subscriber.id, error.error, 0, stamp(), bounce=False))
                sender.build_failed += 1
                if error.trace:
                    sender.log.warning("event=failed subscriber=%s edition=%s error=%s traceback=%s", due.subscriber.email, due.edition, error.error, json.dumps(error.trace))
                else:
                    sender.log.warning("event=failed subscriber=%s edition=%s error=%s", due.subscriber.email, due.edition, error.error)
                continue
            chunk.append(Outgoing(due, row, message, papers_carried(result)))
            if len(chunk) >= CHUNK and not flush():
                break
        if chunk and not (stop_event.is_set() or sender.error is not None):
            flush()
    finally:
        # built but never marked or handed over, and never built at all
        sender.unplanned += len(chunk) + len(work) - taken


class Sender(threading.Thread):
    """Takes built messages from a queue, hands each to the transport and records the outcome."""

    def __init__(self, engine, settings, transport, report, now, stamp, sleep, stop_event, log, progress):
        super().__init__(name="digest-sender", daemon=True)
        self.engine, self.settings, self.transport, self.report = engine, settings, transport, report
        self.now, self.stamp, self.sleep, self.stop_event, self.log, self.progress = now, stamp, sleep, stop_event, log, progress
        self.queue: queue.Queue[Outgoing | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self.error: BaseException | None = None
        self.unsent: list[Outgoing] = []  # marked 'sending', never handed over
        self.unplanned = 0  # due subscribers never built (the run stopped first)
        self.build_failed = 0  # counted by the producer thread
        self.retry: list[Outgoing] = []
        # (kind, record) of messages handed over whose record failed (the database locked past LOCK_PATIENCE):
        # written when the run ends (ledger.settle), so an accepted message is not left 'sending' and sent again.
        self.unrecorded: list[tuple[str, Callable]] = []
        self.streak: set[str] = set()  # recipients of the failures in a row
        self.busy = 0.0
        self.conn = None  # the sender's own database connection, open while it runs

    def put(self, item: Outgoing) -> bool:
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

    def _attempt(self, item: Outgoing, *, last: bool) -> None:
        sub = item.due.subscriber
        begun = time.perf_counter()
        item.attempts += 1
        try:
            self.transport.send(item.message, sender=self.settings.from_address, recipient=sub.email)
        except TransientDeliveryError as exc:
            self.busy += time.perf_counter() - begun
            error, attempts = str(exc), item.attempts  # bound now: the record may run later (ledger.settle)
            self._record("deferred", lambda conn: ledger.record_deferred(conn, item.row.id, error, attempts, self.stamp()))
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
            error, attempts = str(exc), item.attempts
            bounces = self._record("failed", lambda conn: ledger.record_failed(conn, item.row.id, sub.id, error, attempts, self.stamp(), bounce=True))
            self.report.failed += 1
            self._done()
            self.log.warning("event=failed subscriber=%s edition=%s bounces=%s error=%s", sub.email, item.due.edition, bounces, exc)
            if bounces >= ledger.BOUNCE_LIMIT:
                self.log.warning("event=bounced subscriber=%s note=no more mail until resumed", sub.email)
            self._failed(sub.email, exc)
            return
        except DigestError:
            # Refused connection, TLS or login, a sender refused, an unwritable outbox: the message was not
            # accepted, so it goes back to 'pending' (not left 'sending', which means "may have arrived").
            self.unsent.append(item)
            raise
        attempts = item.attempts
        self._record("sent", lambda conn: ledger.record_sent(conn, item.row.id, sub.id, item.paper_ids, attempts, self.stamp(), self.now))
        self.busy += time.perf_counter() - begun
        self.report.sent += 1
        self.streak.clear()
        self._done()
        self.log.debug("event=sent subscriber=%s edition=%s message_id=%s", sub.email, item.due.edition, item.row.message_id)

    def _record(self, kind: str, record: Callable) -> object:
        """Write the outcome of a message the server was handed; kept for ledger.settle when that fails."""
        try:
            return ledger.write(self.conn, record)
        except StoreError:
            self.unrecorded.append((kind, record))
            raise

    def _done(self) -> None:
        if self.progress:
            self.progress(1)

    def _failed(self, recipient: str, exc: DigestError) -> None:
        self.streak.add(recipient)
        if len(self.streak) >= SERVER_DOWN_AFTER:
            raise ServerDownError(f"{len(self.streak)} deliveries in a row to different recipients failed (the last: {exc.args[0]}); the run stopped, the rest stays for the next run")
