"""Queries that feed ranking: the candidate papers of an edition (with the sources carrying them), the papers
already sent to a subscriber, and the rows a subscriber's profile refers to.

It returns rows and never ranks: the pipeline turns a StoredPaper into digest.rank's Candidate, and
digest.rank.build_profile turns ProfileRows into a Profile (the store sits below rank and never imports it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..models import Feedback, Paper, SentPaper, Subscriber
from .days import StoredPaper
from .papers import get_paper_by_ident, sources_of
from .subscribers import normalise_ident


class VotedPaper(NamedTuple):
    """A paper a subscriber voted on, as a profile reads it: its id and text, read as plain columns (a whole Paper
    row each cost 2.7 times as much: 0.65 s against 0.24 for the 18,605 votes the planning reads for 100 readers who
    vote every day, benchmarks/retention.py --active-voters)."""

    id: int
    ident: str
    title: str
    abstract: str | None


@dataclass(frozen=True)
class ProfileRows:
    """The stored papers a subscriber's profile names, and the ids of the papers already sent to them."""

    seed_papers: list[Paper]
    liked: list[VotedPaper]
    disliked: list[VotedPaper]
    sent_ids: set[int]


def candidate_papers(session: Session, since: datetime, until: datetime) -> list[StoredPaper]:
    """Papers first seen in (since, until], by id, each with the names of its sources."""
    papers = list(session.exec(select(Paper).where(col(Paper.first_seen) > since, col(col(Paper.first_seen)) <= until).order_by(col(Paper.id))))
    carried = sources_of(session, [p.id for p in papers])
    return [StoredPaper(p, tuple(name for name, _ in carried[p.id]), tuple(kind for _, kind in carried[p.id])) for p in papers]


def sent_paper_ids(session: Session, subscriber_id: int) -> set[int]:
    """Ids of every paper already sent to this subscriber."""
    return set(session.exec(select(SentPaper.paper_id).where(SentPaper.subscriber_id == subscriber_id)))


def sent_among(session: Session, subscriber_ids: Iterable[int], paper_ids: Iterable[int]) -> dict[int, set[int]]:
    """For many subscribers at once: which of `paper_ids` each was already sent (one query per 500 subscribers).

    It reads those subscribers' sent_paper rows between the lowest and the highest of `paper_ids` (a range of
    uq_sent_paper, which leads with subscriber_id), not every paper ever sent to them: that grew with the ledger, 0.6 s
    for a week-old database and 4.1 s at 90 days (benchmarks/retention.py). Nor every subscriber's rows of these
    papers: `digest rank EMAIL` and each claimed batch ask for a few subscribers, and the window's papers were sent to
    all of them."""
    return _among(session, SentPaper, subscriber_ids, paper_ids)


def voted_among(session: Session, subscriber_ids: Iterable[int], paper_ids: Iterable[int]) -> dict[int, set[int]]:
    """For many subscribers at once: which of `paper_ids` each has voted on (liked or disliked), as sent_among reads
    it (a range of uq_feedback): the planning leaves them out of the candidates without reading every vote."""
    return _among(session, Feedback, subscriber_ids, paper_ids)


def _among(session: Session, table: type[SentPaper] | type[Feedback], subscriber_ids: Iterable[int], paper_ids: Iterable[int]) -> dict[int, set[int]]:
    """{subscriber id: the `paper_ids` with a row of `table`}, one query per 500 subscribers, each reading the rows
    between the lowest and the highest of `paper_ids` through the table's (subscriber_id, paper_id) unique index."""
    subs, papers = list(subscriber_ids), set(paper_ids)
    out: dict[int, set[int]] = {s: set() for s in subs}
    if not papers:
        return out
    low, high = min(papers), max(papers)
    for start in range(0, len(subs), 500):
        rows = session.exec(select(col(table.subscriber_id), col(table.paper_id))
                            .where(col(table.subscriber_id).in_(subs[start : start + 500]), col(table.paper_id).between(low, high)))
        for sub_id, paper_id in rows:
            if paper_id in papers:
                out[sub_id].add(paper_id)
    return out


def profile_rows(session: Session, subscriber: Subscriber) -> ProfileRows:
    """The rows behind one subscriber's profile, with the ids of the papers already sent to them."""
    rows = profile_rows_for(session, [subscriber])[subscriber.id]
    return ProfileRows(rows.seed_papers, rows.liked, rows.disliked, sent_paper_ids(session, subscriber.id))


def profile_rows_for(session: Session, subscribers: Sequence[Subscriber], *, votes: int | None = None) -> dict[int, ProfileRows]:
    """The seed, liked and disliked papers of many subscribers in one feedback query (sent_ids left empty:
    the daily run asks for those in bulk with sent_among), likes and dislikes oldest first. A seed id named by
    several subscribers is looked up once; one no longer in the store is skipped (it was checked when the
    subscriber named it; papers can be pruned since).

    `votes`: only each subscriber's newest `votes` likes and newest `votes` dislikes (the ranking's vote model learns
    from no more: digest.rank.score.MAX_VOTES). A reader who votes three times a day has a thousand after a year:
    read whole, they were 4.4 s of the daily planning for 100 such readers (benchmarks/retention.py --active-voters)."""
    out = {sub.id: ProfileRows([], [], [], set()) for sub in subscribers}
    seeds: dict[str, Paper | None] = {}
    for sub in subscribers:
        for ident in sub.seed_papers or ():
            if ident not in seeds:
                seeds[ident] = get_paper_by_ident(session, normalise_ident(ident))
            seed = seeds[ident]
            if seed is not None:
                out[sub.id].seed_papers.append(seed)
    ids = list(out)
    text = (col(Paper.id), col(Paper.ident), col(Paper.title), col(Paper.abstract))
    for start in range(0, len(ids), 500):  # bounded IN lists
        # Numbered newest first within each subscriber's likes and within their dislikes (a window function: SQLite
        # 3.25 and PostgreSQL), then the first `votes` of each (all without it) joined to their papers, oldest first.
        newest = sa.func.row_number().over(partition_by=(col(Feedback.subscriber_id), col(Feedback.value) > 0),
                                           order_by=(col(Feedback.created_at).desc(), col(Feedback.id).desc()))
        numbered = (sa.select(col(Feedback.id), col(Feedback.subscriber_id), col(Feedback.value), col(Feedback.paper_id), col(Feedback.created_at),
                              newest.label("newest")).where(col(Feedback.subscriber_id).in_(ids[start : start + 500])).subquery())
        query = (sa.select(numbered.c.subscriber_id, numbered.c.value, *text).join(Paper, col(Paper.id) == numbered.c.paper_id)
                 .order_by(numbered.c.created_at, numbered.c.id))
        if votes is not None:
            query = query.where(numbered.c.newest <= votes)
        for sub_id, value, *paper in session.connection().execute(query):
            (out[sub_id].liked if value > 0 else out[sub_id].disliked).append(VotedPaper(*paper))
    return out
