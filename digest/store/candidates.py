"""Queries that feed ranking: the candidate papers of an edition (with the sources carrying them), the papers
already sent to a subscriber, and the rows a subscriber's profile refers to.

It returns rows and never ranks; digest.rank.build_profile turns the rows into a Profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from sqlmodel import Session, select

from ..errors import NotFoundError
from ..models import Paper, SentPaper, Subscriber


@dataclass(frozen=True)
class Candidate:
    """A stored paper with what ranking needs besides the row: the names of the sources carrying it, and
    their kinds (arxiv-rss, arxiv-api, hf-daily, feed, file), in the same order."""

    paper: Paper
    sources: tuple[str, ...] = ()
    source_kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProfileRows:
    """The stored papers a subscriber's profile names, and the ids of the papers already sent to them."""

    seed_papers: list[Paper]
    liked: list[Paper]
    disliked: list[Paper]
    sent_ids: set[int]


def candidate_window(last_digest_at: datetime | None, now: datetime, window_days: int) -> tuple[datetime, datetime]:
    """(since, until): papers first seen after the last digest, but never more than window_days back."""
    floor = now - timedelta(days=window_days)
    since = max(last_digest_at, floor) if last_digest_at is not None else floor
    return since, now


def candidate_papers(session: Session, since: datetime, until: datetime) -> list[Candidate]:
    """Papers first seen in (since, until], by id, each with the names of its sources."""
    from .papers import sources_of

    papers = list(session.exec(select(Paper).where(Paper.first_seen > since, Paper.first_seen <= until).order_by(Paper.id)))
    carried = sources_of(session, [p.id for p in papers])
    return [Candidate(p, tuple(name for name, _ in carried[p.id]), tuple(kind for _, kind in carried[p.id])) for p in papers]


def sent_paper_ids(session: Session, subscriber_id: int) -> set[int]:
    """Ids of every paper already sent to this subscriber."""
    return set(session.exec(select(SentPaper.paper_id).where(SentPaper.subscriber_id == subscriber_id)))


def sent_among(session: Session, subscriber_ids: Iterable[int], paper_ids: Iterable[int]) -> dict[int, set[int]]:
    """For many subscribers at once: which of `paper_ids` each was already sent (one query per 500 subscribers)."""
    subs, papers = list(subscriber_ids), set(paper_ids)
    out: dict[int, set[int]] = {s: set() for s in subs}
    for start in range(0, len(subs), 500):
        rows = session.exec(select(SentPaper.subscriber_id, SentPaper.paper_id).where(SentPaper.subscriber_id.in_(subs[start : start + 500])))
        for sub_id, paper_id in rows:
            if paper_id in papers:
                out[sub_id].add(paper_id)
    return out


def profile_rows(session: Session, subscriber: Subscriber) -> ProfileRows:
    """The rows behind a subscriber's profile. A seed paper no longer in the store is skipped (it was checked
    when the subscriber named it; papers can be pruned since)."""
    from .subscribers import feedback_for, resolve_papers

    seeds = []
    for ident in subscriber.seed_papers or ():
        try:
            seeds += resolve_papers(session, [ident])
        except NotFoundError:
            continue
    liked, disliked = feedback_for(session, subscriber)
    return ProfileRows(seeds, liked, disliked, sent_paper_ids(session, subscriber.id))


def profile_for(session: Session, subscriber: Subscriber):
    """The subscriber's rank.Profile (convenience over profile_rows + rank.build_profile)."""
    from ..rank import build_profile

    rows = profile_rows(session, subscriber)
    return build_profile(subscriber, rows.seed_papers, rows.liked, rows.disliked, rows.sent_ids)
