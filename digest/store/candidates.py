"""Queries that feed ranking: the candidate papers of an edition (with the sources carrying them), the papers
already sent to a subscriber, and the rows a subscriber's profile refers to.

It returns rows and never ranks: the pipeline turns a StoredPaper into digest.rank's Candidate, and
digest.rank.build_profile turns ProfileRows into a Profile (the store sits below rank and never imports it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from ..models import Feedback, Paper, SentPaper, Subscriber
from .days import StoredPaper
from .papers import get_paper_by_ident, sources_of
from .subscribers import normalise_ident


@dataclass(frozen=True)
class ProfileRows:
    """The stored papers a subscriber's profile names, and the ids of the papers already sent to them."""

    seed_papers: list[Paper]
    liked: list[Paper]
    disliked: list[Paper]
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
    subs, papers = list(subscriber_ids), set(paper_ids)
    out: dict[int, set[int]] = {s: set() for s in subs}
    if not papers:
        return out
    low, high = min(papers), max(papers)
    for start in range(0, len(subs), 500):
        rows = session.exec(select(col(SentPaper.subscriber_id), col(SentPaper.paper_id))
                            .where(col(SentPaper.subscriber_id).in_(subs[start : start + 500]), col(SentPaper.paper_id).between(low, high)))
        for sub_id, paper_id in rows:
            if paper_id in papers:
                out[sub_id].add(paper_id)
    return out


def profile_rows(session: Session, subscriber: Subscriber) -> ProfileRows:
    """The rows behind one subscriber's profile, with the ids of the papers already sent to them."""
    rows = profile_rows_for(session, [subscriber])[subscriber.id]
    return ProfileRows(rows.seed_papers, rows.liked, rows.disliked, sent_paper_ids(session, subscriber.id))


def profile_rows_for(session: Session, subscribers: Sequence[Subscriber]) -> dict[int, ProfileRows]:
    """The seed, liked and disliked papers of many subscribers in one feedback query (sent_ids left empty:
    the daily run asks for those in bulk with sent_among). A seed id named by several subscribers is looked
    up once; one no longer in the store is skipped (it was checked when the subscriber named it; papers can
    be pruned since)."""
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
    for start in range(0, len(ids), 500):  # bounded IN lists
        query = (select(Feedback.subscriber_id, col(Feedback.value), Paper).join(Paper, col(Paper.id) == col(Feedback.paper_id))
                 .where(col(Feedback.subscriber_id).in_(ids[start : start + 500])).order_by(col(Feedback.created_at), col(col(Feedback.id))))
        for sub_id, value, paper in session.exec(query):
            (out[sub_id].liked if value > 0 else out[sub_id].disliked).append(paper)
    return out
