"""The claim step of the delivery loop: which letters this worker now owns, and the ledger writes that make the
exactly-once guarantee. A letter is claimed ('sending', committed) before its message is handed over; its outcome
is recorded ('sent' with the papers it carried, 'deferred', 'failed') right after; letters claimed but never handed
over are released (back to 'pending').

Claimer is the seam: LedgerClaimer is today's single host (the edition's letters in order, marked 'sending' in
chunks); a database-backed claimer with leases (worker id, lease expiry, heartbeat, FOR UPDATE SKIP LOCKED) can
replace it without touching the loop. It must not build or send messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Connection, Engine

from ..errors import DigestError, StoreError
from ..store import deliveries as ledger
from ..store.editions import record_edition_contents, record_edition_contents_many
from .work import Contents, Letter, Outcome, Settlement, contents_of


def record_sent_letter(conn: Connection, delivery_id: int, subscriber_id: int, paper_ids: Sequence[int], contents: Contents, attempts: int,
                       now: datetime, covered_until: datetime) -> None:
    """'sent' (ledger.record_sent) and how the email showed its papers (the edition's web page reads it), in the
    caller's transaction: a sent edition always has its contents."""
    ledger.record_sent(conn, delivery_id, subscriber_id, paper_ids, attempts, now, covered_until)
    picks, trending = contents
    record_edition_contents(conn, delivery_id, picks, trending)


class Claimer(Protocol):
    def claim(self, n: int) -> list[Letter]:
        """Up to `n` letters this worker now owns, each committed 'sending' before it is returned ([]: none left)."""
        ...

    def record(self, outcome: Outcome) -> int:
        """Write one letter's outcome; returns the subscriber's hard bounces in a row (0 unless a bounce)."""
        ...

    # Optional: record_many(outcomes) -> list[int], the same for several outcomes in one transaction (the loop
    # uses it when a claimer has it: a commit per message was a fifth of the CPU of sending one).

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
            ledger.mark_sending(self.engine, [letter.delivery_id for letter in batch], self.clock())
        except BaseException:
            self.waiting.extendleft(reversed(batch))  # not claimed after all: they stay what they were
            raise
        return batch

    def record(self, outcome: Outcome) -> int:
        write = self._write_of(outcome, self.clock())
        if self.conn is None:
            self.conn = self.engine.connect()
        try:
            return int(ledger.write(self.conn, write) or 0)
        except StoreError:
            self.unrecorded.append((outcome, write))
            raise

    def record_many(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Several outcomes in one transaction (the answers several connections brought back meanwhile)."""
        now = self.clock()
        writes = [self._write_of(outcome, now) for outcome in outcomes]
        sent = [(o.letter.delivery_id, o.letter.subscriber.id or 0, o.letter.paper_ids, o.attempts) for o in outcomes if o.state == "sent"]
        contents = [(o.letter.delivery_id, *(o.contents or contents_of(o.letter.result))) for o in outcomes if o.state == "sent"]
        others = [(k, write) for k, (outcome, write) in enumerate(zip(outcomes, writes)) if outcome.state != "sent"]
        until = self.covered_until

        def work(conn: Connection) -> list[int]:
            ledger.record_sent_many(conn, sent, now, until)
            record_edition_contents_many(conn, contents)  # a sent edition always has its contents (the web page's)
            bounces = [0] * len(outcomes)
            for k, write in others:
                bounces[k] = int(write(conn) or 0)  # type: ignore[call-overload]
            return bounces

        if self.conn is None:
            self.conn = self.engine.connect()
        try:
            return list(ledger.write(self.conn, work))  # type: ignore[call-overload]
        except StoreError:
            self.unrecorded.extend(zip(outcomes, writes))
            raise

    def _write_of(self, outcome: Outcome, now: datetime) -> Callable[[Connection], object]:
        """The transaction that records `outcome`, its values bound now (it may run later, in release)."""
        letter, attempts, error = outcome.letter, outcome.attempts, outcome.error or ""
        row, sub = letter.delivery_id, letter.subscriber.id or 0
        if outcome.state == "sent":
            papers, until, contents = letter.paper_ids, self.covered_until, outcome.contents or contents_of(letter.result)
            return lambda conn: record_sent_letter(conn, row, sub, papers, contents, attempts, now, until)
        if outcome.state == "deferred":
            return lambda conn: ledger.record_deferred(conn, row, error, attempts, now)
        bounce = outcome.bounce
        return lambda conn: ledger.record_failed(conn, row, sub, error, attempts, now, bounce=bounce)

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
