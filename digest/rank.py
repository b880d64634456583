"""Ranking: pure functions of candidate papers, subscriber profiles and `now` -> ranked, explained picks.

No database, no clock, no I/O. (Interface fixed here; implementation by the ranking work.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

from .models import Paper
from .store.candidates import Candidate


@dataclass(frozen=True)
class Profile:
    """What a subscriber wants, resolved to texts (seed and feedback papers already looked up)."""

    subscriber_id: int
    interests: tuple[str, ...] = ()
    seed_texts: tuple[tuple[str, str], ...] = ()  # (ident, title + abstract) of each seed paper
    liked_texts: tuple[tuple[str, str], ...] = ()
    disliked_texts: tuple[tuple[str, str], ...] = ()
    muted_terms: tuple[str, ...] = ()
    muted_authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    max_papers: int = 10
    trending_weight: float = 0.2
    exclude_paper_ids: frozenset[int] = frozenset()  # already sent to this subscriber


@dataclass(frozen=True)
class RankedPaper:
    candidate: Candidate
    score: float
    relevance: float
    trending: float
    reasons: tuple[str, ...]
    in_digest: bool

    @property
    def paper(self) -> Paper:
        return self.candidate.paper


@dataclass(frozen=True)
class RankResult:
    """The picks for one subscriber: `ranked` best first (in_digest marks the digest's own papers),
    `trending` the day's trending papers, `matched` False when nothing cleared the relevance floor."""

    subscriber_id: int
    ranked: list[RankedPaper] = field(default_factory=list)
    trending: list[RankedPaper] = field(default_factory=list)
    matched: bool = True

    @property
    def picks(self) -> list[RankedPaper]:
        return [r for r in self.ranked if r.in_digest]


def rank_papers(candidates: Sequence[Candidate], profile: Profile, now: datetime, *, limit: int | None = None, relevance_floor: float = 0.05, trending_count: int = 5) -> RankResult:
    """Rank `candidates` for one profile. Deterministic: the same inputs give the same output."""
    raise NotImplementedError


def rank_many(candidates: Sequence[Candidate], profiles: Sequence[Profile], now: datetime, *, relevance_floor: float = 0.05, trending_count: int = 5) -> list[RankResult]:
    """Rank every profile at once (one sparse matrix product in chunks); same results as rank_papers."""
    raise NotImplementedError
