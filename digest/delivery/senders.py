"""Handing built messages over: one connection in the calling thread (InlineSender), or several SMTP connections
reused for many messages (`smtp_connections`), all driven from one I/O thread (MultiplexedSender, the default; see
digest.delivery.multiplex) or each owned by a thread of its own (ThreadedSender). Each returns what became of each
message as a typed Handed value, in the order the server answered; they never touch the ledger.

A relay across the internet answers each SMTP command in tens of milliseconds and a message takes four commands
(MAIL, RCPT, DATA, the body; two round trips with PIPELINING), so one connection moves at most a few messages a
second whatever the CPU: the connections wait on the network, not on the CPU. It must not build messages, record
outcomes or decide who is due.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..config import Settings
from ..errors import PermanentDeliveryError, TransientDeliveryError, UnconfirmedDeliveryError
from .multiplex import Multiplexer
from .pace import SharedPace
from .transport import Pace, PaceLike, SMTPTransport, Transport, transport_for
from .work import Built, Outcome


@dataclass(frozen=True)
class Handed:
    """One message's hand-over: the server's answer as an Outcome, or `error` when it was not handed over at all
    (the server cannot be used: refused connection, TLS, login; or a bug), with the seconds it took."""

    built: Built
    outcome: Outcome | None
    error: BaseException | None = None
    seconds: float = 0.0


def hand_over(transport: Transport, built: Built, sender: str) -> Handed:
    """Send one message: the outcome of a 2xx, 4xx or 5xx. Any other error means it was not handed over."""
    started = time.perf_counter()
    assert built.message is not None
    try:
        transport.send(built.message, sender=sender, recipient=built.letter.subscriber.email)
    except BaseException as exc:  # noqa: BLE001 - returned, not raised: the loop decides (it may come from a thread)
        return handed(built, exc, time.perf_counter() - started)
    return handed(built, None, time.perf_counter() - started)


def handed(built: Built, error: BaseException | None, seconds: float) -> Handed:
    """What became of a message whose hand-over raised `error` (None: accepted): 2xx sent, 4xx deferred
    (TransientDeliveryError; unconfirmed when the whole message went unanswered), 5xx failed (PermanentDeliveryError); anything else was not handed over."""
    letter = built.letter
    if error is None:
        return Handed(built, Outcome(letter, "sent", attempts=1, contents=built.contents), None, seconds)
    if isinstance(error, TransientDeliveryError):
        unconfirmed = isinstance(error, UnconfirmedDeliveryError)
        return Handed(built, Outcome(letter, "deferred", attempts=1, error=str(error), unconfirmed=unconfirmed, contents=built.contents), None, seconds)
    if isinstance(error, PermanentDeliveryError):
        return Handed(built, Outcome(letter, "failed", attempts=1, error=str(error), bounce=True), None, seconds)
    return Handed(built, None, error, seconds)


class Sender(Protocol):
    """Takes messages while it has a free connection; gives back each one's Handed once the server answered."""

    connections: int

    @property
    def in_flight(self) -> int:
        """Submitted, not yet collected."""
        ...

    def submit(self, built: Built) -> None:
        """Start handing `built` over (only while in_flight < connections)."""
        ...

    def collect(self, wait: bool) -> list[Handed]:
        """The hand-overs finished since the last call; with `wait`, at least one when any is in flight."""
        ...

    def close(self) -> None: ...


class InlineSender:
    """One transport, in the calling thread: submit() sends at once (the outbox, a test's transport, one connection)."""

    connections = 1

    def __init__(self, transport: Transport, sender: str) -> None:
        self.transport, self.sender = transport, sender
        self.done: list[Handed] = []

    @property
    def in_flight(self) -> int:
        return len(self.done)

    def submit(self, built: Built) -> None:
        self.done.append(hand_over(self.transport, built, self.sender))

    def collect(self, wait: bool) -> list[Handed]:
        done, self.done = self.done, []
        return done

    def close(self) -> None:
        pass


_STOP = None  # on the job queue: the thread closes its connection and ends


class ThreadedSender:
    """`connections` threads, each with its own transport (one SMTP connection, reopened when dropped) taking
    messages from one queue. The loop has no more than `connections` submitted and not yet collected, and records
    what it collects before submitting more, so at most `connections` accepted messages are unrecorded at any
    instant: a crash sends at most that many twice."""

    def __init__(self, make_transport: Callable[[], Transport], sender: str, connections: int) -> None:
        self.connections, self.sender, self.in_flight = connections, sender, 0
        self.jobs: queue.SimpleQueue[Built | None] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[Handed] = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._run, args=(make_transport,), name=f"digest-smtp-{n}", daemon=True) for n in range(connections)]
        for thread in self.threads:
            thread.start()

    def _run(self, make_transport: Callable[[], Transport]) -> None:
        transport = make_transport()
        try:
            while (built := self.jobs.get()) is not _STOP:
                self.done.put(hand_over(transport, built, self.sender))
        finally:
            transport.close()

    def submit(self, built: Built) -> None:
        self.in_flight += 1
        self.jobs.put(built)

    def collect(self, wait: bool) -> list[Handed]:
        found: list[Handed] = []
        if wait and self.in_flight:
            found.append(self.done.get())
        while True:
            try:
                found.append(self.done.get_nowait())
            except queue.Empty:
                break
        self.in_flight -= len(found)
        return found

    def close(self) -> None:
        for _ in self.threads:
            self.jobs.put(_STOP)
        for thread in self.threads:
            thread.join()


class MultiplexedSender(ThreadedSender):
    """`connections` SMTP connections driven from one I/O thread (digest.delivery.multiplex: non-blocking sockets,
    one selectors loop) instead of a thread each: the same bound on messages in flight, the same Handed values
    through the same done queue (so the loop knows it as a ThreadedSender), without 32 threads taking the GIL in
    turn after every reply. send_rate's slot is taken at submit; the wait for it is the I/O thread's timer (a slot missed
    while the process stalled is taken again, digest.delivery.multiplex)."""

    def __init__(self, make_transport: Callable[[], SMTPTransport], sender: str, connections: int, pace: PaceLike) -> None:
        self.connections, self.sender, self.in_flight, self.pace = connections, sender, 0, pace
        self.done = queue.SimpleQueue()
        self.mux: Multiplexer[Built] = Multiplexer(make_transport, connections, lambda built, error, seconds: self.done.put(handed(built, error, seconds)),
                                                   pace=pace)

    def submit(self, built: Built) -> None:
        assert built.message is not None
        self.in_flight += 1
        self.mux.submit(built, built.message, sender=self.sender, recipient=built.letter.subscriber.email, delay=self.pace.wait())

    def close(self) -> None:
        self.mux.close()


def sender_for(settings: Settings, transport: Transport | None, letters: int, *, pace: Pace | SharedPace | None = None) -> InlineSender | ThreadedSender:
    """`transport` when the caller gives one (in the calling thread); else smtp_connections SMTP connections (no more
    than there are letters) sharing one send_rate, or the outbox, or one connection, in the calling thread. `pace`:
    send_rate shared with other workers (digest.delivery.pace); by default this process paces itself."""
    pace = pace or Pace(settings.send_rate)
    if transport is None and settings.smtp_host and min(settings.smtp_connections, letters) > 1:
        return MultiplexedSender(lambda: SMTPTransport(settings, pace=pace), settings.envelope_sender, min(settings.smtp_connections, letters), pace)
    return InlineSender(transport or transport_for(settings, pace=pace), settings.envelope_sender)
