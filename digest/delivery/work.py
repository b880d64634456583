"""The typed values that flow through the delivery loop (digest.delivery.loop): a Letter to deliver, what building it
made (Built), what the mail server said (Outcome), and what releasing the letters still held came to (Settlement).

Plain frozen values, no behaviour: the loop, the builders and the claimers pass them to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Literal

from ..errors import DigestError
from ..models import Subscriber
from ..rank import RankResult
from ..store.fleet import LeaseHolder


@dataclass(frozen=True)
class Letter:
    """One subscriber's edition to deliver: its ledger row, who gets it, which edition, its Message-ID (kept by the
    ledger so a resend reuses it) and what it shows: `result`, or None until the builder ranks it (a worker ranks
    only the letters it has claimed, batch after batch; digest.delivery.build)."""

    delivery_id: int
    subscriber: Subscriber
    edition: str
    message_id: str
    result: RankResult | None
    replay: Contents | None = None  # an earlier copy that may have arrived showed these: the resend shows them again
    replay_until: datetime | None = None  # and that copy's window ended here (where the next edition's starts)

    @cached_property  # read when the letter's outcome is bound and when it is recorded
    def paper_ids(self) -> tuple[int, ...]:
        """Every paper the email shows (picks, then trending), each once, in order: what 'sent' records."""
        assert self.result is not None, "a letter not ranked: its outcome's contents say what it carried"
        return papers_carried(self.result)


def papers_carried(result: RankResult) -> tuple[int, ...]:
    """Ids of every paper an email of `result` shows (picks, then trending), each once, in order."""
    shown = [r.candidate.paper_id for r in result.picks] + [r.candidate.paper_id for r in result.trending]
    return tuple(dict.fromkeys(p for p in shown if p is not None))


Contents = tuple[tuple[tuple[int, tuple[str, ...]], ...], tuple[int, ...]]  # (picks with their reasons, trending ids)


def papers_shown(contents: Contents) -> tuple[int, ...]:
    """papers_carried, read from an email's contents (the same ids in the same order)."""
    picks, trending = contents
    return tuple(dict.fromkeys([p for p, _ in picks] + list(trending)))


def contents_of(result: RankResult) -> Contents:
    """How an email of `result` shows its papers: the picks in order with their reasons, then the trending ids (what
    the ledger keeps for the edition's web page, digest.store.editions). Reads the reasons: call it where the email
    is rendered, where they are made anyway."""
    picks = tuple((pid, tuple(r.reasons)) for r in result.picks if (pid := r.candidate.paper_id) is not None)
    return picks, tuple(pid for r in result.trending if (pid := r.candidate.paper_id) is not None)


@dataclass(frozen=True)
class Unbuilt:
    """Why one subscriber's email could not be built (a plain value: it crosses from a worker process)."""

    error: str
    trace: str | None = None  # the traceback of an unexpected exception, for the log


@dataclass(frozen=True)
class Built:
    """A letter's message bytes, or why there are none; with the seconds its rendering and building took."""

    letter: Letter
    message: bytes | None
    problem: Unbuilt | None = None
    render_seconds: float = 0.0
    build_seconds: float = 0.0
    contents: Contents | None = None  # how the message shows its papers (contents_of), made while rendering it
    skipped: bool = False  # ranked with nothing to show and skip_empty set: no message, recorded 'skipped'
    rank_seconds: float = 0.0  # its share of its batch's ranking


@dataclass(frozen=True)
class Outcome:
    """What became of one letter: 'sent' (the server accepted it), 'deferred' (a 4xx: tried again later) or
    'failed' (a 5xx, a bounce; or it could not be built); 'skipped' (nothing to show, never handed over).
    `attempts`: hand-overs it adds to the ledger row."""

    letter: Letter
    state: Literal["sent", "deferred", "failed", "skipped"]
    attempts: int
    error: str | None = None
    bounce: bool = False  # a hard bounce: counts towards marking the subscriber 'bounced'
    unconfirmed: bool = False  # a deferral whose whole message went unanswered: it may have arrived, no retry this run
    contents: Contents | None = None  # of a 'sent' letter (or an unconfirmed deferral): recorded with it (contents_of its result when None)

    @property
    def paper_ids(self) -> tuple[int, ...]:
        """The papers a 'sent' letter carried: from its contents, else from its letter's result."""
        return papers_shown(self.contents) if self.contents is not None else self.letter.paper_ids

    @property
    def shown(self) -> Contents:
        """How a 'sent' letter showed its papers: its contents, else contents_of its letter's result."""
        if self.contents is not None:
            return self.contents
        assert self.letter.result is not None, "a letter ranked by a worker process comes back with its contents"
        return contents_of(self.letter.result)


@dataclass(frozen=True)
class Settlement:
    """What releasing the held letters came to: the outcomes recorded only now (their record had failed, e.g. while
    the database was locked), how many rows stay 'sending' because even that failed, and the error then."""

    recorded_late: tuple[Outcome, ...] = ()
    left_sending: int = 0
    error: DigestError | None = None
    elsewhere: int = 0  # letters this worker never claimed because other workers finished or hold them (PostgreSQL)
    gone: tuple[LeaseHolder, ...] = ()  # of those, the holders with no session on the database (died, or reconnecting)
