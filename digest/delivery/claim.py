"""The claim step of the delivery loop: which letters this worker now owns, and the ledger writes that make the
exactly-once guarantee. A letter is claimed ('sending', committed) before its message is handed over; its outcome
is recorded ('sent' with the papers it carried, 'deferred', 'failed') right after; letters claimed but never handed
over are released (back to 'pending').

Claimer is the seam: LedgerClaimer is the single host (SQLite, under the run lock: the edition's letters in order,
marked 'sending' in chunks); LeaseClaimer is any number of workers on one PostgreSQL database (rows claimed FOR
UPDATE SKIP LOCKED under a lease that a heartbeat thread keeps; digest.store.fleet). It must not build or send
messages.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy.engine import Connection, Engine

from ..errors import DigestError, StoreError
from ..log import log_event
from ..store import deliveries as ledger
from ..store import fleet
from ..store.editions import edition_contents, record_edition_contents
from .work import Contents, Letter, Outcome, Settlement


def record_sent_letter(conn: Connection, delivery_id: int, subscriber_id: int, paper_ids: Sequence[int], contents: Contents, attempts: int,
                       now: datetime, covered_until: datetime) -> None:
    """'sent' (ledger.record_sent) and how the email showed its papers (the edition's web page reads it), in the
    caller's transaction: a sent edition always has its contents."""
    ledger.record_sent(conn, delivery_id, subscriber_id, paper_ids, attempts, now, covered_until)
    picks, trending = contents
    record_edition_contents(conn, delivery_id, picks, trending)

log = logging.getLogger("digest.delivery")
# A claim that came back empty while rows of this worker's edition were neither finished nor leased: another worker's
# claim held them (its transaction lasts milliseconds). Ask again this often, for at most this long.
CLAIM_SETTLE_POLL, CLAIM_SETTLE_SECONDS = 0.05, 3.0
# A worker stopped at once (a second Ctrl-C) gives its rows back within this long, or leaves them to their lease: the
# exit is never held longer, whatever the database does.
ABANDON_SECONDS = 2.0


class Claimer(Protocol):
    def claim(self, n: int) -> list[Letter]:
        """Up to `n` letters this worker now owns, each committed 'sending' before it is returned ([]: none left)."""
        ...

    def record(self, outcome: Outcome) -> int:
        """Write one letter's outcome; returns the subscriber's hard bounces in a row (0 unless a bounce)."""
        ...

    # Optional: record_many(outcomes) -> list[int], the same for several outcomes in one transaction (the loop
    # uses it when a claimer has it: a commit per message was a fifth of the CPU of sending one).
    # Optional: abandon(never_sent) -> bool, in place of release() when the loop stops at once (a second Ctrl-C):
    # a quick, best-effort give-back of the rows, which another worker would otherwise wait on.

    def release(self, letters: Sequence[Letter]) -> Settlement:
        """Give back the letters claimed but never handed over, and settle what could not be recorded; last call."""
        ...


class LedgerClaimer:
    """The edition's letters, in order, claimed `n` at a time in the delivery ledger of this host's database.

    Outcomes are written on one connection kept for the run (no pool checkout per message). A record that fails
    (the database locked past ledger.LOCK_PATIENCE) raises StoreError and is kept: release() writes it, with the
    letters going back to 'pending', in one transaction that waits longer (ledger.settle), so a message the server
    accepted is not left 'sending' and sent again."""

    def __init__(self, engine: Engine, letters: Sequence[Letter], *, clock: Callable[[], datetime], covered_until: datetime) -> None:
        self.engine, self.clock, self.covered_until = engine, clock, covered_until
        self.waiting = deque(letters)
        self.unrecorded: list[tuple[Outcome, Callable[[Connection], object]]] = []
        self.conn: Connection | None = None

    def claim(self, n: int) -> list[Letter]:
        batch = [self.waiting.popleft() for _ in range(min(n, len(self.waiting)))]
        try:
            # On the connection the outcomes are written on: SQLite empties a connection's page cache when another
            # connection wrote since its last transaction, and the claims of a pool connection made the records
            # read ~1,200 pages again after each claim (23,000 reads in a 10,000 edition).
            ledger.mark_sending(self._connection(), [letter.delivery_id for letter in batch], self.clock())
        except BaseException:
            self.waiting.extendleft(reversed(batch))  # not claimed after all: they stay what they were
            raise
        return batch

    def record(self, outcome: Outcome) -> int:
        write = self._write_of(outcome, self.clock())
        try:
            return int(self._write(write) or 0)  # type: ignore[call-overload]
        except StoreError:
            self.unrecorded.append((outcome, write))
            raise

    def _connection(self) -> Connection:
        """The connection kept for the run (claims and records), opened on first use."""
        if self.conn is None:
            self.conn = self.engine.connect()
        return self.conn

    def _write(self, work: Callable[[Connection], object]) -> object:
        """work(conn) in one transaction on the connection kept for the run."""
        return ledger.write(self._connection(), work)

    def record_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Several outcomes in one transaction (the answers several connections brought back meanwhile). The 'sent'
        ones go to record_sent_many as plain rows; each outcome's own transaction (_write_of) is made only for the
        others, and for all of them when the write fails (release() writes them)."""
        now = self.clock()
        # A resend of a copy that may have arrived (letter.replay: rare) has a window of its own (_until_of).
        plain = [outcome.state == "sent" and outcome.letter.replay is None for outcome in outcomes]
        sent = [o for o, p in zip(outcomes, plain) if p]
        rows = [(o.letter.delivery_id, o.letter.subscriber.id or 0, o.paper_ids, o.attempts) for o in sent]
        contents = [edition_contents(*o.shown) for o in sent]  # the web page's
        others = [(k, self._write_of(outcome, now)) for k, (outcome, p) in enumerate(zip(outcomes, plain)) if not p]
        until = self.covered_until

        def work(conn: Connection) -> list[int]:
            ledger.record_sent_many(conn, rows, now, until, contents=contents)  # a sent edition always has its contents
            bounces = [0] * len(outcomes)
            for k, write in others:
                bounces[k] = int(write(conn) or 0)  # type: ignore[call-overload]
            return bounces

        try:
            return list(self._write(work))  # type: ignore[call-overload]
        except StoreError:
            self.unrecorded.extend((outcome, self._write_of(outcome, now)) for outcome in outcomes)
            raise

    def _write_of(self, outcome: Outcome, now: datetime) -> Callable[[Connection], object]:
        """The transaction that records `outcome`, its values bound now (it may run later, in release)."""
        letter, attempts, error = outcome.letter, outcome.attempts, outcome.error or ""
        row, sub = letter.delivery_id, letter.subscriber.id or 0
        if outcome.state == "sent":
            papers, until, contents = outcome.paper_ids, self._until_of(outcome), outcome.shown
            return lambda conn: record_sent_letter(conn, row, sub, papers, contents, attempts, now, until)
        if outcome.state == "skipped":
            return lambda conn: ledger.record_skipped_row(conn, row, error, now)
        if outcome.state == "deferred":  # a copy that may have arrived: what it showed and its window, for the resend
            shown, window = (outcome.shown, self._until_of(outcome)) if outcome.unconfirmed else (None, None)
            return lambda conn: ledger.record_deferred(conn, row, error, attempts, now, contents=shown, until=window)
        bounce = outcome.bounce
        return lambda conn: ledger.record_failed(conn, row, sub, error, attempts, now, bounce=bounce)

    def _until_of(self, outcome: Outcome) -> datetime:
        """Where the subscriber's next window starts once `outcome`'s copy is sent: the run's instant; for a copy
        showing what an earlier copy that may have arrived showed (letter.replay), that copy's, so that the papers
        first seen in between come in the next edition rather than never."""
        letter = outcome.letter
        if letter.replay is not None and letter.replay_until is not None and outcome.shown == letter.replay:
            return min(letter.replay_until, self.covered_until)
        return self.covered_until

    def release(self, letters: Sequence[Letter]) -> Settlement:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        unrecorded, self.unrecorded = self.unrecorded, []
        try:
            ledger.settle(self.engine, [letter.delivery_id for letter in letters], [write for _, write in unrecorded], self.clock())
        except DigestError as exc:
            return Settlement(left_sending=len(letters) + len(unrecorded), error=exc)
        return Settlement(recorded_late=tuple(outcome for outcome, _ in unrecorded))

    def abandon(self, never_sent: Sequence[Letter]) -> bool:
        """The loop stopped at once (a second Ctrl-C): what release() writes (`never_sent` back to 'pending', the
        records that failed), within ABANDON_SECONDS (_best_effort). Left 'sending', a claimed letter counted as a
        message that may have gone (the next run logs it as one it resumes), up to CHUNK of them for one in flight.
        True when done."""
        if self.conn is not None:  # perhaps cut off inside a write: its transaction must not keep the write lock
            self.conn.invalidate()
            self.conn = None
        unrecorded, self.unrecorded = self.unrecorded, []
        ids, writes, now = [letter.delivery_id for letter in never_sent], [write for _, write in unrecorded], self.clock()
        return _best_effort(lambda: ledger.settle(self.engine, ids, writes, now, patience=ABANDON_SECONDS), ABANDON_SECONDS,
                            "the next run sends them, as after a crash (those left 'sending' logged as resumed)")


def worker_name() -> str:
    """This worker's name in the ledger: host, process and a few random characters (a pid is reused)."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(3)}"


class LeaseLostError(StoreError):
    """The heartbeat could not renew this worker's leases before they ran out: another worker may take its rows."""


class _Heartbeat:
    """A thread that renews the worker's leases every `lease / 3` seconds on a connection of its own. When renewing
    has failed for as long as a lease lasts, `lost` is set: the worker must stop handing messages over."""

    def __init__(self, engine: Engine, editions: Sequence[str], worker: str, lease: float) -> None:
        self.engine, self.editions, self.worker, self.lease = engine, list(editions), worker, lease
        self.lost = threading.Event()
        self.stopping = threading.Event()
        try:
            # Now, not a third of a lease later in the thread: the worker is about to hold rows, and is present from then.
            self.conn: Connection | None = self._connect()
        except Exception as exc:  # noqa: BLE001 - a wall: the thread tries again
            log_event(log, "heartbeat-failed", logging.WARNING, worker=self.worker, error=str(exc))
            self.conn = None
        self.thread = threading.Thread(target=self._run, name="digest-heartbeat", daemon=True)
        self.thread.start()

    def _connect(self) -> Connection:
        """The heartbeat's connection, which also marks this worker present while it is open (fleet.hold_worker_lock:
        `digest status` and the other workers' reports tell its rows from a dead worker's)."""
        conn = self.engine.connect()
        try:
            fleet.hold_worker_lock(conn, self.worker)
        except BaseException:
            conn.invalidate()  # whatever it holds goes with it
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        renewed = time.monotonic()
        conn, self.conn = self.conn, None
        # After a failure the next try comes within a second, not a third of a lease later: a connection terminated
        # under a live worker (a failover, pg_terminate_backend) made it look gone, in `digest status`, for 20 s.
        pause = self.lease / 3
        while not self.stopping.wait(pause):
            if time.monotonic() - renewed >= self.lease:  # the process was frozen (SIGSTOP, a paused VM) past its lease
                self.lost.set()
            try:
                if conn is None:
                    conn = self._connect()
                    if self.stopping.is_set():  # stopped while connecting: a renewal now would undo an abandon()
                        break
                fleet.renew_leases(conn, self.editions, self.worker, self.lease)
                renewed, pause = time.monotonic(), self.lease / 3
            except Exception as exc:  # noqa: BLE001 - a wall: the heartbeat tries again with a new connection
                if pause == self.lease / 3:  # once per outage, not once a second
                    log_event(log, "heartbeat-failed", logging.WARNING, worker=self.worker, error=str(exc), note="trying again every second")
                pause = min(1.0, self.lease / 3)
                if conn is not None:
                    conn.invalidate()
                    conn.close()
                    conn = None
                if time.monotonic() - renewed >= self.lease:
                    self.lost.set()
        if conn is not None:
            # Not back to the pool still marking this worker present (a session-level lock outlives the checkout): a
            # daemon's later runs would keep it "connected" for as long as the process lives.
            conn.invalidate()
            conn.close()

    def stop(self, timeout: float | None = None) -> None:
        """End the thread (a renewal under way is finished first); `timeout`: wait no longer than this for it."""
        self.stopping.set()
        self.thread.join(timeout)


class LeaseClaimer(LedgerClaimer):
    """The edition's letters claimed in the shared ledger (PostgreSQL) by `worker`, `n` at a time, in id order,
    each under a lease of `lease` seconds that a heartbeat renews: several workers on several hosts share the
    edition, none waits for another, and a dead worker's rows are taken over once its lease has passed.

    The letters are those this worker planned and ranked; a row of the editions it did not plan (another worker saw
    that subscriber due, this one did not) is left to the others. A connection terminated under it (a restarted
    database, pg_terminate_backend) is opened again once per write; outcomes are recorded as LedgerClaimer does."""

    def __init__(self, engine: Engine, letters: Sequence[Letter], *, clock: Callable[[], datetime], covered_until: datetime,
                 worker: str, lease: float) -> None:
        super().__init__(engine, letters, clock=clock, covered_until=covered_until)
        self.worker, self.lease = worker, lease
        self.by_id = {letter.delivery_id: letter for letter in letters}
        self.mine = frozenset(self.by_id)
        self.editions = sorted({letter.edition for letter in letters})
        self.claimed: set[int] = set()
        self.foreign: list[int] = []
        self.exhausted = False
        self.heartbeat: _Heartbeat | None = None
        self.unconfirmed: set[int] = set()  # deferred rows whose message may have arrived: their lease is kept

    def _write(self, work: Callable[[Connection], object]) -> object:
        return self._on_connection(lambda conn: ledger.write(conn, work))

    def _on_connection(self, work: Callable[[Connection], object]) -> object:
        """work(conn) on the kept connection; once more on a new one when the database dropped it."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return work(conn)
            except StoreError:
                if attempt == 2 or not (conn.invalidated or conn.closed):
                    raise
                log_event(log, "database-reconnect", logging.WARNING, worker=self.worker, note="the connection was dropped; opening a new one")
                conn.close()
                self.conn = None
        raise AssertionError("unreachable")

    def _unclaimed(self) -> list[int]:
        """The rows this worker planned and has not claimed (yet)."""
        return [i for i in self.by_id if i not in self.claimed]

    def _unsettled(self) -> int:
        """This worker's planned rows that it has not claimed and no one has finished or holds under a lease."""
        unclaimed = self._unclaimed()
        try:
            return len(unclaimed) - fleet.handled_elsewhere(self.engine, unclaimed, self.worker)
        except DigestError:
            return 0  # the database is failing: the claim's own errors say so, and the report counts what is left

    def _check_lease(self) -> None:
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            raise LeaseLostError(f"worker {self.worker} could not renew its leases for {self.lease:.0f}s", "check the connection to the database; the rows go to the other workers")

    def claim(self, n: int) -> list[Letter]:
        self._check_lease()
        if self.exhausted or not self.editions:
            return []
        if self.heartbeat is None:
            self.heartbeat = _Heartbeat(self.engine, self.editions, self.worker, self.lease)
        settle_by = time.monotonic() + CLAIM_SETTLE_SECONDS
        while True:
            found = self._on_connection(lambda conn: fleet.claim_deliveries(conn, self.editions, self.worker, self.lease, n, self.clock(), skip=self.foreign, mine=self.mine))
            ours, foreign = cast(tuple[list[fleet.Claimed], list[int]], found)
            self.foreign.extend(foreign)
            if ours:
                break
            if foreign:
                continue
            # Nothing claimable. SKIP LOCKED also passes over rows another worker's claim holds for the instant of its
            # transaction: still 'pending', neither finished nor leased. Counted 'not attempted', they made a host
            # exit 1 while the other sent them; wait for that claim to commit (the rows are the other's) or roll back
            # (its worker died: they are this one's), and give up only on a claim that stays open for seconds.
            if not self._unsettled() or time.monotonic() >= settle_by:
                break
            time.sleep(CLAIM_SETTLE_POLL)
        if not ours:
            self.exhausted = True  # nothing claimable left: what remains is another worker's, or finished
        resumed = [c.delivery_id for c in ours if c.was != "pending"]
        if resumed:
            log_event(log, "takeover", logging.WARNING, worker=self.worker, deliveries=len(resumed),
                      note="rows whose worker died or stopped: a message it had in flight may arrive twice")
        self.claimed.update(c.delivery_id for c in ours)
        return [self.by_id[c.delivery_id] for c in ours]

    # The lease is checked after each record: what was handed over is recorded, whoever holds the row now.
    def record(self, outcome: Outcome) -> int:
        self._note_unconfirmed([outcome])  # first: an outcome whose record fails is written at release
        bounces = super().record(outcome)
        self._check_lease()
        return bounces

    def record_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        self._note_unconfirmed(outcomes)
        bounces = super().record_many(outcomes)
        self._check_lease()
        return bounces

    def _note_unconfirmed(self, outcomes: Sequence[Outcome]) -> None:
        self.unconfirmed.update(o.letter.delivery_id for o in outcomes if o.unconfirmed)

    def release(self, letters: Sequence[Letter]) -> Settlement:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        unrecorded, self.unrecorded = self.unrecorded, []
        try:
            fleet.end_leases(self.engine, self.editions, self.worker, [letter.delivery_id for letter in letters], [write for _, write in unrecorded], self.clock(),
                             keep=sorted(self.unconfirmed))
        except DigestError as exc:
            return Settlement(left_sending=len(letters) + len(unrecorded), error=exc)
        try:
            elsewhere = fleet.handled_elsewhere(self.engine, self._unclaimed(), self.worker)
            # Of those, the rows whose worker has no session on the database: a worker killed mid-send holds its rows
            # until its lease passes, and the report must not say they are being sent.
            gone = tuple(h for h in fleet.lease_holders(self.engine, self._unclaimed(), besides=self.worker) if not h.connected and h.seconds_left > 0) if elsewhere else ()
        except DigestError:
            elsewhere, gone = 0, ()  # only counts in the report: everything this worker did is recorded
        return Settlement(recorded_late=tuple(outcome for outcome, _ in unrecorded), elsewhere=elsewhere, gone=gone)

    def abandon(self, never_sent: Sequence[Letter]) -> bool:
        """The loop stopped at once (a second Ctrl-C): `never_sent` back to 'pending', the lease of every other row
        this worker leaves 'sending' (its message may be in flight) ended now, as end_leases does the rest: the next
        run takes them over at once, not lease_seconds later. Within ABANDON_SECONDS (_best_effort); when the
        database does not answer in time the leases run out as before. True when done."""
        started = time.monotonic()
        if self.conn is not None:  # perhaps cut off inside a write: its transaction must not keep the rows locked
            self.conn.invalidate()
            self.conn = None
        if self.heartbeat is not None:  # no renewal after the leases are ended
            self.heartbeat.stop(timeout=ABANDON_SECONDS / 4)
        unrecorded, self.unrecorded = self.unrecorded, []
        ids, writes, keep, now = [letter.delivery_id for letter in never_sent], [write for _, write in unrecorded], sorted(self.unconfirmed), self.clock()
        if not self.editions:
            return False
        # A statement waits half the time at most: a lock held elsewhere makes it give up (and log) in time.
        return _best_effort(lambda: fleet.abandon_leases(self.engine, self.editions, self.worker, ids, writes, now, keep=keep, seconds=ABANDON_SECONDS / 2),
                            ABANDON_SECONDS - (time.monotonic() - started), "its rows are taken over once their lease runs out", worker=self.worker)


def _best_effort(work: Callable[[], object], seconds: float, otherwise: str, **fields: Any) -> bool:
    """`work()` on a thread of its own, waited for `seconds` at most (at least 0.1): a stop at once must not be held
    by a database that does not answer; the thread, a daemon, is left behind and the process exits. True when it
    finished; a failure or the time running out is logged (event=leases-kept) with `otherwise`, what happens instead."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
            done.set()
        except Exception as exc:  # noqa: BLE001 - a wall: what was not given back is taken over later
            log_event(log, "leases-kept", logging.WARNING, error=str(exc), note=otherwise, **fields)

    thread = threading.Thread(target=run, name="digest-abandon", daemon=True)
    thread.start()
    thread.join(max(0.1, seconds))
    if thread.is_alive():
        log_event(log, "leases-kept", logging.WARNING, note=f"the database did not answer within {ABANDON_SECONDS:.0f}s; {otherwise}", **fields)
    return done.is_set()
