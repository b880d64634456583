"""The delivery loop: claim -> build -> send -> record, batch after batch, then the retry rounds for what a 4xx
deferred; one DeliveryReport returned. The claimer (digest.delivery.claim) owns the ledger writes that make the
exactly-once guarantee, the builder (digest.delivery.build) ranks each claimed batch and renders it, the transport
(digest.delivery.transport) hands messages over; this module only puts them in order and counts.

A recipient's refusal is their outcome; 10 failures in a row to different recipients mean the server is down
(ServerDownError); a server that cannot be used at all (DeliveryError) or a ledger that cannot be written
(StoreError) ends the loop too. Whatever ends it is the report's `error`, never an exception that carries the
report. It must not decide who is due or what they get (digest.pipeline does).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..errors import DigestError, ServerDownError
from ..log import log_event
from ..store.deliveries import BOUNCE_LIMIT
from ..store.fleet import LeaseHolder
from .build import SKIPPED_REASON, Builder
from .claim import Claimer
from .senders import Handed, InlineSender, Sender, ThreadedSender
from .transport import Transport
from .work import Built, Letter, Outcome, Settlement

log = logging.getLogger("digest.delivery")

# Letters claimed (marked 'sending') per commit, and ranked together. Ranking 50 profiles at a time cost about 0.55 ms
# each against 0.3 in bigger chunks: benchmarks/send.py (10,000 x 1,000) 1.99/1.92 ms of CPU per email with 50,
# 1.61/1.62/1.78 with 200, 1.70/1.71 with 500. A crash leaves at most this many rows 'sending': the next run (or,
# on PostgreSQL, the worker that takes the lease over) sends those that were never handed over.
CHUNK = 200
RETRY_DELAYS = (5.0, 30.0)  # seconds before each extra round over the letters a 4xx deferred
# A delivery still deferred when its run ends waits before a run tries it again (the planner leaves it out until then):
# FIRST_WAIT after the first run that deferred it, twice as long after each next one, never more than LONGEST_WAIT.
# Greylisting asks for a few minutes (postgrey's default is 300 s); a full mailbox for hours. Postfix backs off the
# same way (minimal_backoff_time 300 s, maximal 4000 s). Without it a daemon knocked every minute, 35 s of pauses each.
FIRST_WAIT = timedelta(minutes=5)
LONGEST_WAIT = timedelta(hours=1)
SERVER_DOWN_AFTER = 10  # failed deliveries in a row, to different recipients, that stop the loop


def retry_wait(attempts: int) -> timedelta:
    """How long a delivery deferred after `attempts` hand-overs waits for its next run: each run makes up to
    1 + len(RETRY_DELAYS) of them, so the runs that deferred it are counted from the attempts."""
    runs = min(-(-max(attempts, 1) // (1 + len(RETRY_DELAYS))), 16)
    return min(LONGEST_WAIT, FIRST_WAIT * 2 ** (runs - 1))


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery loop did. `not_attempted`: letters never handed over (stopped, server down, a ledger that
    could not be written), back to 'pending'; `left_sending`: rows left 'sending' because even releasing them failed.
    `timings`: rank, render and build summed over the workers that built, send the time spent handing over and
    recording."""

    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped: int = 0  # ranked here with nothing to show (skip_empty): recorded 'skipped', no message
    not_attempted: int = 0
    left_sending: int = 0
    elsewhere: int = 0  # letters other workers finished or hold (several workers on one PostgreSQL database)
    gone: tuple[LeaseHolder, ...] = ()  # holders of some of those with no session on the database (died, or reconnecting)
    stopped: bool = False
    workers: int = 0
    timings: Mapping[str, float] = field(default_factory=dict)
    error: DigestError | None = None  # what ended the loop early: the server down or unusable, the ledger unwritable


class _Tally:
    """The loop's own counts while it runs (one thread; frozen into the DeliveryReport at the end)."""

    def __init__(self, progress: Callable[[int], None] | None) -> None:
        self.sent = self.failed = self.deferred = self.skipped = self.claimed = 0
        self.rank = self.render = self.build = self.send = 0.0
        self.streak: set[str] = set()  # recipients of the failures in a row
        self.to_retry: dict[int, Built] = {}  # deferred by a 4xx, not yet given up on: their delivery id -> message
        self.progress = progress

    def finished(self, state: str) -> None:
        setattr(self, state, getattr(self, state) + 1)
        if self.progress is not None:
            self.progress(1)


def deliver_edition(
    letters: Sequence[Letter],
    *,
    claimer: Claimer,
    builder: Builder,
    transport: Transport | InlineSender | ThreadedSender,
    sender: str,
    stop_event: threading.Event,
    sleep: Callable[[float], object] | None = None,
    progress: Callable[[int], None] | None = None,
) -> DeliveryReport:
    """Deliver `letters` (the claimer hands them out): each claimed, built, handed to `transport` (one Transport, or
    a Sender that keeps several connections) as from `sender`, and its outcome recorded; then up to
    len(RETRY_DELAYS) more rounds for the 4xx-deferred ones. `stop_event` stops it after the messages in flight, and
    ends a pause before a retry round at once (`sleep`, default: a wait on `stop_event`); `progress(k)` is told as k
    more letters are finished."""
    tally = _Tally(progress)
    held: dict[int, Letter] = {}  # claimed, not yet recorded: released if the loop ends first
    handed: set[int] = set()  # of those, the ones submitted (perhaps in flight)
    out: Sender = transport if isinstance(transport, (InlineSender, ThreadedSender)) else InlineSender(transport, sender)
    try:
        error, settlement = _deliver(claimer, builder, out, tally, held, handed, stop_event, sleep)
    except BaseException:  # stopped at once (a second Ctrl-C) or a bug: the rows given back now, if the claimer can
        abandon = getattr(claimer, "abandon", None)
        if abandon is not None:
            abandon([letter for row, letter in held.items() if row not in handed])
        raise
    for outcome in settlement.recorded_late:  # recorded late, but recorded: counted as the run would have
        setattr(tally, outcome.state, getattr(tally, outcome.state) + 1)
    if settlement.recorded_late:
        log_event(log, "recorded-late", logging.WARNING, deliveries=len(settlement.recorded_late), note="their record waited for the database lock")
    if settlement.error is not None:
        log_event(log, "ledger-unsettled", logging.ERROR, sending=settlement.left_sending, error=str(settlement.error),
                  note="the next run sends them (those handed over may arrive twice)")
    return DeliveryReport(
        sent=tally.sent, failed=tally.failed, deferred=tally.deferred, skipped=tally.skipped, not_attempted=len(held) + len(letters) - tally.claimed - settlement.elsewhere,
        left_sending=settlement.left_sending, elsewhere=settlement.elsewhere, gone=settlement.gone, stopped=stop_event.is_set(), workers=builder.workers,
        timings={"rank": tally.rank, "render": tally.render, "build": tally.build, "send": tally.send}, error=error or settlement.error,
    )


def _deliver(claimer: Claimer, builder: Builder, out: Sender, tally: _Tally, held: dict[int, Letter], handed: set[int], stop_event: threading.Event,
             sleep: Callable[[float], object] | None) -> tuple[DigestError | None, Settlement]:
    """deliver_edition's loop, up to the claimer's release: what ended it early (or None), and how the ledger was settled."""
    error: DigestError | None = None
    try:
        for built in _claimed_and_built(claimer, builder, tally, held, stop_event):
            if stop_event.is_set():
                break
            if built.message is None:  # nothing to show (skipped), or it could not be built: the subscriber's failed delivery
                del held[built.letter.delivery_id]
                _record(claimer, [Outcome(built.letter, "skipped", attempts=0, error=SKIPPED_REASON) if built.skipped else _unbuilt(built)], tally)
                continue
            # Every connection busy: record what they finished first. Answers are collected only then (and at the
            # end), so they are recorded many to a transaction; the messages answered but not yet recorded are
            # still counted in flight, so a crash sends at most one message per connection twice, as before.
            while out.in_flight >= out.connections:
                _settle(claimer, out.collect(wait=True), tally, held)
            handed.add(built.letter.delivery_id)  # before: a stop at once in between counts it in flight
            out.submit(built)
        _drain(claimer, out, tally, held)
        _retry_rounds(claimer, out, tally, held, stop_event, stop_event.wait if sleep is None else sleep)
    except DigestError as exc:  # the server down or unusable, the ledger unwritable: the rest stays for the next run
        error = exc
        try:
            _drain(claimer, out, tally, held)  # what the other connections had in hand is recorded all the same
        except DigestError:
            pass
    tally.deferred += len(tally.to_retry)  # still deferred when the loop ended: a later run retries them, after their wait (retry_wait)
    return error, claimer.release(list(held.values()))


def _claimed_and_built(claimer: Claimer, builder: Builder, tally: _Tally, held: dict[int, Letter], stop_event: threading.Event) -> Iterator[Built]:
    """Claim CHUNK letters and build them, batch after batch. The next batch is claimed and its building started
    before this one is handed on, so a forked builder renders it while this one is sent."""

    def claim() -> list[Letter]:
        batch = [] if stop_event.is_set() else claimer.claim(CHUNK)
        tally.claimed += len(batch)
        held.update((letter.delivery_id, letter) for letter in batch)
        return batch

    batch = claim()
    built = builder.build(batch)
    while batch:
        upcoming = claim()
        upcoming_built = builder.build(upcoming)
        for item in built:
            tally.rank += item.rank_seconds
            tally.render += item.render_seconds
            tally.build += item.build_seconds
            yield item
        batch, built = upcoming, upcoming_built


def _settle(claimer: Claimer, handed: Sequence[Handed], tally: _Tally, held: dict[int, Letter], *, final: bool = False) -> None:
    """Record the answers in `handed` (one transaction when the claimer can), then raise the first error of a message
    that was not handed over (that letter stays held, and is released). `final`: a deferral is not retried again."""
    outcomes: list[Outcome] = []
    failure: BaseException | None = None
    for item in handed:
        tally.send += item.seconds
        if item.outcome is None:
            failure = failure or item.error
            continue
        held.pop(item.built.letter.delivery_id, None)  # a retry round's letter is no longer held: it was recorded before
        outcomes.append(item.outcome)
    if outcomes:
        # An unconfirmed deferral may have arrived: the next run sends it again, not this run's retry rounds.
        retry = {} if final else {h.built.letter.delivery_id: h.built for h in handed if h.outcome is not None and not h.outcome.unconfirmed}
        _record(claimer, outcomes, tally, retry=retry)
    if failure is not None:
        raise failure


def _drain(claimer: Claimer, out: Sender, tally: _Tally, held: dict[int, Letter], *, final: bool = False) -> None:
    """Wait for every message in flight and record it."""
    failure: DigestError | None = None
    while out.in_flight:
        try:
            _settle(claimer, out.collect(wait=True), tally, held, final=final)
        except DigestError as exc:  # the connection that failed is done; the others still finish theirs
            failure = failure or exc
    if failure is not None:
        raise failure


def _unbuilt(built: Built) -> Outcome:
    assert built.problem is not None
    letter, problem = built.letter, built.problem
    # A problem with a traceback is a bug or a row edited by hand: keep the traceback in the log.
    fields: dict[str, Any] = {"traceback": json.dumps(problem.trace)} if problem.trace else {}
    log_event(log, "failed", logging.WARNING, subscriber=letter.subscriber.email, edition=letter.edition, error=problem.error, **fields)
    return Outcome(letter, "failed", attempts=0, error=problem.error)


def _record(claimer: Claimer, outcomes: Sequence[Outcome], tally: _Tally, *, retry: dict[int, Built] | None = None) -> None:
    """Record `outcomes` (one transaction with a claimer that has record_many), log and count them. A deferral whose
    message is in `retry` waits for the retry rounds; otherwise it is final. ServerDownError at SERVER_DOWN_AFTER
    failures in a row to different recipients."""
    started = time.perf_counter()
    try:
        record_many = getattr(claimer, "record_many", None)
        bounces = record_many(outcomes) if record_many is not None else [claimer.record(outcome) for outcome in outcomes]
    finally:
        tally.send += time.perf_counter() - started
    down = [outcome for outcome, bounced in zip(outcomes, bounces) if _count(outcome, bounced, tally, (retry or {}).get(outcome.letter.delivery_id))]
    if down:  # every outcome of the batch counted first: they are all recorded
        raise ServerDownError(f"{len(tally.streak)} deliveries in a row to different recipients failed (the last: {down[-1].error}); the run stopped, the rest stays for the next run")


def _count(outcome: Outcome, bounces: int, tally: _Tally, retry: Built | None) -> bool:
    """Log and count one recorded outcome; True when it makes SERVER_DOWN_AFTER failures in a row."""
    letter = outcome.letter
    tally.to_retry.pop(letter.delivery_id, None)
    who: dict[str, Any] = {"subscriber": letter.subscriber.email, "edition": letter.edition}
    if outcome.state == "sent":
        log_event(log, "sent", logging.DEBUG, **who, message_id=letter.message_id)
        tally.streak.clear()
        tally.finished("sent")
        return False
    if outcome.state == "skipped":  # never handed over: says nothing of the server
        tally.finished("skipped")
        return False
    if not outcome.attempts:  # it could not be built (logged when found): not the server's doing
        tally.finished("failed")
        return False
    if outcome.state == "deferred":
        log_event(log, "deferred", logging.WARNING, **who, error=outcome.error)
        if retry is not None:
            tally.to_retry[letter.delivery_id] = retry
        else:
            tally.finished("deferred")
    else:
        log_event(log, "failed", logging.WARNING, **who, bounces=bounces, error=outcome.error)
        if bounces >= BOUNCE_LIMIT:
            log_event(log, "bounced", logging.WARNING, subscriber=letter.subscriber.email, note="no more mail until resumed")
        tally.finished("failed")
    tally.streak.add(letter.subscriber.email)
    return len(tally.streak) >= SERVER_DOWN_AFTER


def _retry_rounds(claimer: Claimer, out: Sender, tally: _Tally, held: dict[int, Letter], stop_event: threading.Event, sleep: Callable[[float], object]) -> None:
    """Up to len(RETRY_DELAYS) more rounds over the deferred letters, after a pause each; the last round's
    deferrals are final (a later run retries them, after their wait (retry_wait))."""
    for round_, delay in enumerate(RETRY_DELAYS, start=1):
        if not tally.to_retry or stop_event.is_set():
            return
        log_event(log, "retry-round", round=round_, deliveries=len(tally.to_retry), delay=f"{delay:.0f}s")
        sleep(delay)  # a stop request (the daemon's SIGTERM) ends the pause, and the round is not sent
        if stop_event.is_set():
            return
        last = round_ == len(RETRY_DELAYS)
        for built in list(tally.to_retry.values()):
            while out.in_flight >= out.connections:
                _settle(claimer, out.collect(wait=True), tally, held, final=last)
            out.submit(built)
        _drain(claimer, out, tally, held, final=last)
