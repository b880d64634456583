"""Every SMTP connection of a sender driven from one thread: non-blocking sockets and a selectors loop run each
connection's `exchange` (digest.delivery.transport, the same steps a blocking SMTPTransport runs), so 32 connections
cost one thread's wake-ups instead of 32 threads taking the GIL in turn after every reply. A connection is opened
(greeting, EHLO, STARTTLS, AUTH, with SMTPTransport.connect's errors and hints) in a short-lived thread of its own,
so a slow greeting holds up no other connection. It must not build messages, map answers to outcomes or touch the
ledger: each message's end is reported as what SMTPTransport.send would have raised (None: accepted).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import smtplib
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..log import log_event
from .transport import Exchange, MessageEnd, PaceLike, SMTPTransport, exchange, refusal_code

log = logging.getLogger("digest.delivery")

T = TypeVar("T")
Finished = Callable[[T, BaseException | None, float], None]

_MAX_REPLY = 64 * 1024  # a reply without its end past this is not SMTP (smtplib allows 8 KB a line)
_TIMEOUT_CHECK = 0.25  # seconds between looks for a connection past smtp_timeout
_LATE = 0.05  # seconds past its send_rate slot (the process stalled) after which a message takes a new slot


@dataclass
class _Job(Generic[T]):
    token: T
    message: bytes
    sender: str
    recipient: str
    submitted: float  # perf_counter
    repaced: bool = False  # its slot passed while the process stalled; it took a new one (once)
    refusal: BaseException | None = None  # reported once the RSET after it is answered


@dataclass(eq=False)
class _Connection(Generic[T]):
    """One SMTP connection's state. `state`: closed, connecting (a thread opens it), sending (a message's exchange),
    resetting (RSET after a refusal), idle (open, no message), quitting."""

    transport: SMTPTransport
    state: str = "closed"
    smtp: smtplib.SMTP | None = None
    job: _Job[T] | None = None
    steps: Exchange | None = None
    fresh: bool = False  # opened for the message it carries: a drop is not retried (SMTPTransport.send's rule)
    ending: bool = False  # writing the message's end (MessageEnd)
    answering: bool = False  # all of it written, its answer awaited: a drop now leaves the outcome unknown
    out: memoryview = field(default_factory=lambda: memoryview(b""))
    received: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0
    events: int = 0


class Multiplexer(Generic[T]):
    """`connections` SMTP connections (one transport each, made by `make_transport`) and one I/O thread. `submit`
    from any thread; `finished(token, error, seconds)` is called in the I/O thread once the message is accepted
    (error None) or not (what SMTPTransport.send raises). Connections are opened when a message finds none idle.
    `pace`: the send_rate whose slots the submitted delays are; a message found more than a slot (at least _LATE)
    past its own, because this process stalled, takes a new slot from it instead of going at once with every other
    late one (a burst the relay would count)."""

    def __init__(self, make_transport: Callable[[], SMTPTransport], connections: int, finished: Finished[T], *,
                 pace: PaceLike | None = None) -> None:
        self._finished = finished
        self._pace = pace if pace is not None and pace.interval else None
        self._late = max(_LATE, self._pace.interval) if self._pace is not None else 0.0
        self._connections: list[_Connection[T]] = [_Connection(make_transport()) for _ in range(connections)]
        self._timeout = self._connections[0].transport.timeout
        self._data_timeout = self._connections[0].transport.data_timeout
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._wake_out.setblocking(False)
        self._selector.register(self._wake_in, selectors.EVENT_READ, None)
        self._inbox: deque[tuple[str, object, object]] = deque()  # from other threads: ("job", job, at), ("connected", connection, error), ("stop", ...)
        self._woken = False
        self._waiting: deque[_Job[T]] = deque()  # no connection free
        self._paced: list[tuple[float, int, _Job[T]]] = []  # heap: send_rate's slots to come
        self._order = itertools.count()
        self._stopping = False
        self._lock = threading.Lock()  # submit against the I/O thread's end
        self._broken: BaseException | None = None  # the I/O thread's own failure (a bug): every message's error
        self._thread = threading.Thread(target=self._run, name="digest-smtp-io", daemon=True)
        self._thread.start()

    # -- the calling threads --

    def submit(self, token: T, message: bytes, *, sender: str, recipient: str, delay: float = 0.0) -> None:
        """Send `message` in `delay` seconds (send_rate's slot) over a free connection."""
        job = _Job(token, message, sender, recipient, time.perf_counter())
        with self._lock:
            if self._broken is None:
                self._post("job", job, time.monotonic() + delay)
                return
        self._finished(token, self._broken, 0.0)

    def close(self) -> None:
        """Finish the messages in hand, QUIT every connection, end the thread."""
        self._post("stop", None, None)
        self._thread.join()

    def _post(self, kind: str, what: object, extra: object) -> None:
        self._inbox.append((kind, what, extra))
        if not self._woken:  # one byte wakes the loop for everything posted until it reads the inbox
            self._woken = True
            try:
                self._wake_out.send(b"\0")
            except OSError:  # full: it is awake already; closed: the thread has ended
                pass

    # -- the I/O thread --

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug: each message in hand, and each one submitted later, gets it
            log_event(log, "smtp-io-failed", logging.ERROR, error=repr(exc))
            with self._lock:
                self._broken = exc
                posted = list(self._inbox)
                self._inbox.clear()
            jobs = [*(c.job for c in self._connections if c.job is not None), *self._waiting, *(job for _, _, job in self._paced)]
            jobs += [what for kind, what, _ in posted if isinstance(what, _Job)]
            for job in jobs:
                self._finished(job.token, exc, time.perf_counter() - job.submitted)

    def _loop(self) -> None:
        next_check = 0.0
        try:
            while True:
                for key, _ in self._selector.select(self._select_timeout()):
                    if key.data is None:
                        self._read_inbox()
                    else:
                        self._on_ready(key.data)
                now = time.monotonic()
                while self._paced and self._paced[0][0] <= now:
                    at, _, job = heapq.heappop(self._paced)
                    self._release(job, at, now)
                if now >= next_check:
                    next_check = now + _TIMEOUT_CHECK
                    for connection in self._connections:
                        if connection.state in ("sending", "resetting", "quitting") and now > connection.deadline:
                            self._dropped(connection, TimeoutError("timed out"))
                if self._stopping and self._finished_all():
                    break
        finally:
            for connection in self._connections:
                self._close(connection)
            self._selector.close()
            self._wake_in.close()
            self._wake_out.close()

    def _select_timeout(self) -> float | None:
        timeout = _TIMEOUT_CHECK if any(c.state in ("sending", "resetting", "quitting") for c in self._connections) else None
        if self._paced:
            timeout = max(0.0, min(timeout if timeout is not None else 3600.0, self._paced[0][0] - time.monotonic()))
        return timeout

    def _read_inbox(self) -> None:
        try:
            while self._wake_in.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._woken = False  # before reading the inbox: whatever is posted after this wakes the loop again
        while self._inbox:
            kind, what, extra = self._inbox.popleft()
            if kind == "job":
                assert isinstance(what, _Job) and isinstance(extra, float)
                now = time.monotonic()
                if extra > now:
                    heapq.heappush(self._paced, (extra, next(self._order), what))
                else:
                    self._release(what, extra, now)
            elif kind == "connected":
                assert isinstance(what, _Connection)
                self._connected(what, extra)
            else:
                self._stopping = True

    def _finished_all(self) -> bool:
        """Stopping: once no message is in hand, QUIT the idle connections; done when every one is closed."""
        if self._waiting or self._paced or any(c.job is not None for c in self._connections):
            return False
        for connection in self._connections:
            if connection.state == "idle":
                connection.state = "quitting"
                self._write(connection, b"QUIT\r\n")
        return all(c.state == "closed" for c in self._connections)

    def _release(self, job: _Job[T], at: float, now: float) -> None:
        """A job whose slot `at` has come: dispatched, or, found well past it (this process stalled: GC, a busy
        host), given a new slot once, so the late ones go a slot apart instead of all at once."""
        if self._pace is not None and not job.repaced and now - at > self._late:
            job.repaced = True
            try:
                delay = self._pace.wait()
            except Exception as exc:  # noqa: BLE001 - the shared pace unreachable (digest.store.pace): send on the old slot
                log_event(log, "smtp-pace-failed", logging.WARNING, error=str(exc))
                delay = 0.0
            if delay > 0:
                heapq.heappush(self._paced, (now + delay, next(self._order), job))
                return
        self._dispatch(job)

    def _dispatch(self, job: _Job[T]) -> None:
        """The job to an idle connection, else to one not open yet (opened for it), else it waits for one."""
        free = next((c for c in self._connections if c.state == "idle"), None) or next((c for c in self._connections if c.state == "closed"), None)
        if free is None:
            self._waiting.append(job)
        else:
            self._begin(free, job)

    def _begin(self, connection: _Connection[T], job: _Job[T]) -> None:
        connection.job = job
        if connection.state == "idle":
            connection.fresh = False
            self._start(connection)
        else:
            connection.state, connection.fresh = "connecting", True
            threading.Thread(target=self._connect, args=(connection,), name="digest-smtp-connect", daemon=True).start()

    def _connect(self, connection: _Connection[T]) -> None:
        """In a thread of its own: open, secure, log in and greet (blocking, with SMTPTransport's timeouts)."""
        try:
            connection.transport.open()
            error: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - handed to the I/O thread, which reports it for the message
            error = exc
        self._post("connected", connection, error)

    def _connected(self, connection: _Connection[T], error: object) -> None:
        job = connection.job
        assert job is not None
        if error is None:
            smtp = connection.transport.smtp
            assert smtp is not None and smtp.sock is not None
            connection.smtp, connection.state = smtp, "idle"
            smtp.sock.setblocking(False)
            connection.events = selectors.EVENT_READ
            self._selector.register(smtp.sock, connection.events, connection)
            self._start(connection)
            return
        connection.transport.drop()
        connection.state = "closed"
        if isinstance(error, (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException)):  # EHLO refused
            error = connection.transport.refusal(error, sender=job.sender, recipient=job.recipient)
        elif isinstance(error, OSError):  # dropped while greeting
            error = connection.transport.dropped(error, job.recipient)
        assert isinstance(error, BaseException)
        self._finish(connection, error)

    def _start(self, connection: _Connection[T]) -> None:
        job = connection.job
        assert job is not None and connection.smtp is not None
        connection.state = "sending"
        connection.steps = exchange(connection.smtp, job.sender, job.recipient, job.message)
        try:
            command = next(connection.steps)
        except BaseException as exc:  # noqa: BLE001 - a bug (an address smtplib cannot encode): this message's error
            self._finish(connection, exc)
            return
        self._write(connection, command)

    def _on_ready(self, connection: _Connection[T]) -> None:
        try:
            if connection.out:
                self._flush(connection)
            received = self._receive(connection)
            if not received:
                return
            if connection.state == "idle":  # the server closes an idle connection (often after a 421): let it
                raise smtplib.SMTPServerDisconnected("closed while idle")
            connection.received += received
            while connection.state in ("sending", "resetting", "quitting") and (reply := _take_reply(connection.received)) is not None:
                self._on_reply(connection, reply)
        except OSError as exc:  # smtplib's and ssl's errors are OSErrors: the connection is gone
            self._dropped(connection, exc)

    def _receive(self, connection: _Connection[T]) -> bytes:
        sock = connection.smtp.sock if connection.smtp is not None else None
        if sock is None:
            return b""
        try:
            data = sock.recv(65536)
            if isinstance(sock, ssl.SSLSocket):  # TLS records already read and decrypted do not wake the selector
                while pending := sock.pending():
                    data += sock.recv(pending)
        except (BlockingIOError, ssl.SSLWantReadError):
            return b""
        except ssl.SSLWantWriteError:  # TLS wants to write before it can read: watch for writable too
            self._watch(connection, write=True)
            return b""
        if not data:
            raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")
        if len(connection.received) > _MAX_REPLY:
            raise smtplib.SMTPServerDisconnected("a reply without an end")
        connection.deadline = time.monotonic() + (self._data_timeout if connection.answering else self._timeout)
        return data

    def _write(self, connection: _Connection[T], data: bytes) -> None:
        connection.deadline = time.monotonic() + self._timeout
        connection.ending = type(data) is MessageEnd
        if data:
            connection.out = memoryview(data)
            try:
                self._flush(connection)
            except OSError as exc:
                self._dropped(connection, exc)

    def _flush(self, connection: _Connection[T]) -> None:
        assert connection.smtp is not None and connection.smtp.sock is not None
        while connection.out:
            try:
                sent = connection.smtp.sock.send(connection.out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):  # the same bytes again when ready
                break
            connection.out = connection.out[sent:]
            connection.deadline = time.monotonic() + self._timeout
        if connection.ending and not connection.out:  # the whole message is with the server: wait for its answer
            connection.ending, connection.answering = False, True
            connection.deadline = time.monotonic() + self._data_timeout
        self._watch(connection, write=bool(connection.out))

    def _watch(self, connection: _Connection[T], *, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if events != connection.events and connection.smtp is not None and connection.smtp.sock is not None:
            connection.events = events
            self._selector.modify(connection.smtp.sock, events, connection)

    def _on_reply(self, connection: _Connection[T], reply: tuple[int, bytes]) -> None:
        job = connection.job
        connection.answering = False
        if connection.state == "quitting":
            self._close(connection)
            return
        assert job is not None
        if connection.state == "resetting":  # the RSET after a refusal answered, whatever it says
            connection.state = "idle"
            self._finish(connection, job.refusal)
            return
        assert connection.steps is not None
        try:
            command = connection.steps.send(reply)
        except StopIteration:
            connection.state = "idle"
            self._finish(connection, None)
            return
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as exc:
            error = connection.transport.refusal(exc, sender=job.sender, recipient=job.recipient)
            if refusal_code(exc) == 421:  # "closing the channel"
                self._close(connection)
                self._finish(connection, error)
            else:
                job.refusal, connection.state, connection.steps = error, "resetting", None
                self._write(connection, b"RSET\r\n")
            return
        except BaseException as exc:  # noqa: BLE001 - a bug: this message's error, the connection in an unknown state
            self._close(connection)
            self._finish(connection, exc)
            return
        self._write(connection, command)

    def _dropped(self, connection: _Connection[T], exc: BaseException) -> None:
        """The connection is gone (EOF, reset, TLS error, smtp_timeout; smtp_data_timeout awaiting a message's
        answer): SMTPTransport.send's rule, a message on a connection that had carried others is sent again at once
        over a new one, once, unless all of it had gone (then it may have been accepted: not sent again in this run)."""
        job, state, answering = connection.job, connection.state, connection.answering
        self._close(connection)
        if job is None or state == "closed":
            return
        if state == "resetting":
            self._finish(connection, job.refusal)
        elif answering:
            self._finish(connection, connection.transport.unanswered(exc, job.recipient))
        elif connection.fresh:
            self._finish(connection, connection.transport.dropped(exc, job.recipient))
        else:
            log_event(log, "smtp-reconnect", logging.DEBUG, server=connection.transport.where)
            self._begin(connection, job)

    def _close(self, connection: _Connection[T]) -> None:
        if connection.state == "connecting":
            return  # its thread reports back
        if connection.smtp is not None and connection.smtp.sock is not None:
            try:
                self._selector.unregister(connection.smtp.sock)
            except (KeyError, ValueError):
                pass
        connection.transport.drop()
        connection.smtp, connection.state, connection.steps = None, "closed", None
        connection.out, connection.received = memoryview(b""), bytearray()
        connection.ending = connection.answering = False

    def _finish(self, connection: _Connection[T], error: BaseException | None) -> None:
        job = connection.job
        assert job is not None
        connection.job, connection.steps = None, None
        try:
            self._finished(job.token, error, time.perf_counter() - job.submitted)
        finally:
            if self._waiting and connection.state in ("idle", "closed"):
                self._begin(connection, self._waiting.popleft())


def _take_reply(received: bytearray) -> tuple[int, bytes] | None:
    """One whole reply from the front of `received` (removed from it), as smtplib's getreply reads it: the code of
    its last line (-1 when it is not a number) and its lines' text joined by newlines; None until it is all there."""
    lines, start = [], 0
    while (end := received.find(b"\n", start)) >= 0:
        line = bytes(received[start:end + 1])
        start = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            try:
                code = int(line[:3])
            except ValueError:
                code = -1
            del received[:start]
            return code, b"\n".join(lines)
    return None
