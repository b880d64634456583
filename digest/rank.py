"""Ranking: pure functions of candidate papers, subscriber profiles and `now` -> ranked, explained picks.

No database, no clock, no I/O, no network and no model download: TF-IDF (scikit-learn) over the day's candidates.
The text model (tokens, vectors, similarities) lives in digest.rank_text; this module decides who gets what:

- eligible: not already sent, not muted (terms in title/abstract, authors), in the subscriber's categories if any;
- relevance: a blend of the cosine to the Rocchio centroid (interests + seed and liked papers - disliked ones) and to
  the best single interest or paper (so each of several interests gets its papers), minus the nearest disliked
  paper; pseudo relevance feedback then lifts papers like the best matches. Below `relevance_floor` a paper is out;
- trending: log-scaled Hugging Face upvotes and the number of sources carrying the paper, normalised over the day;
- score = (1 - trending_weight) * relevance / the day's best relevance + trending_weight * trending;
- MMR picks in order, so a near-duplicate of a pick loses ground and one topic cannot fill the email.

Every subscriber is ranked at once (rank_many) in chunks of one sparse float32 product each; rank_papers is the
same computation for one profile. Ties break by paper id, so the same inputs give the same output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from .models import Paper
from .store.candidates import Candidate

MMR_LAMBDA = 0.9  # share of the score against the similarity to papers already picked
TRENDING_MIN_REASON = 0.5  # trending score from which "trending" is given as a reason
CHUNK = 1000  # profiles per matrix product


class ProfilePaper(NamedTuple):
    """A seed, liked or disliked paper resolved to its text."""

    ident: str
    title: str
    abstract: str = ""


@dataclass(frozen=True)
class Profile:
    """What a subscriber wants, resolved to texts (seed and feedback papers already looked up)."""

    subscriber_id: int
    interests: tuple[str, ...] = ()
    seed_texts: tuple[ProfilePaper, ...] = ()
    liked_texts: tuple[ProfilePaper, ...] = ()
    disliked_texts: tuple[ProfilePaper, ...] = ()
    muted_terms: tuple[str, ...] = ()
    muted_authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    max_papers: int = 10
    trending_weight: float = 0.2
    exclude_paper_ids: frozenset[int] = frozenset()  # already sent to this subscriber

    @cached_property
    def is_empty(self) -> bool:
        """No interests, seeds or likes: such a subscriber gets the day's trending papers."""
        return not (any(i.strip() for i in self.interests) or self.seed_texts or self.liked_texts)


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
    `trending` the day's trending papers (score = trending, relevance not computed: 0.0), `matched` False when
    nothing cleared the relevance floor."""

    subscriber_id: int
    ranked: list[RankedPaper] = field(default_factory=list)
    trending: list[RankedPaper] = field(default_factory=list)
    matched: bool = True

    @property
    def picks(self) -> list[RankedPaper]:
        return [r for r in self.ranked if r.in_digest]


def _profile_paper(paper: Paper) -> ProfilePaper:
    return ProfilePaper(paper.ident, paper.title, paper.abstract or "")


def build_profile(subscriber, seed_papers: Iterable[Paper] = (), liked: Iterable[Paper] = (), disliked: Iterable[Paper] = (), sent_ids: Iterable[int] = ()) -> Profile:
    """The Profile of a Subscriber row, given the papers its seeds and feedback refer to."""
    return Profile(
        subscriber_id=subscriber.id,
        interests=tuple(i for i in subscriber.interests or () if i.strip()),
        seed_texts=tuple(map(_profile_paper, seed_papers)),
        liked_texts=tuple(map(_profile_paper, liked)),
        disliked_texts=tuple(map(_profile_paper, disliked)),
        muted_terms=tuple(subscriber.muted_terms or ()),
        muted_authors=tuple(subscriber.muted_authors or ()),
        categories=tuple(subscriber.categories or ()),
        max_papers=subscriber.max_papers,
        trending_weight=subscriber.trending_weight,
        exclude_paper_ids=frozenset(sent_ids),
    )


def rank_papers(candidates: Sequence[Candidate], profile: Profile, now: datetime, *, limit: int | None = None, relevance_floor: float = 0.05, trending_count: int = 5) -> RankResult:
    """Rank `candidates` for one profile: `limit` papers at most (default: the digest's own size), the first
    profile.max_papers of them in the digest. Deterministic: the same inputs give the same output."""
    return rank_many(candidates, [profile], now, limit=limit, relevance_floor=relevance_floor, trending_count=trending_count)[0]


def rank_many(candidates: Sequence[Candidate], profiles: Sequence[Profile], now: datetime, *, limit: int | None = None, relevance_floor: float = 0.05, trending_count: int = 5, chunk_size: int = CHUNK) -> list[RankResult]:
    """Rank every profile at once (one sparse matrix product per chunk of profiles); same results as rank_papers."""
    from .rank_text import Corpus, ProfileRows

    pool = sorted((c for c in candidates if _seen_by(c, now)), key=lambda c: (c.paper.id if c.paper.id is not None else -1, c.paper.ident))
    if not profiles:
        return []
    corpus = Corpus(pool)
    rows = ProfileRows(corpus, profiles)
    excluder = _Excluder(pool)
    trend_reasons = [_trending_reasons(c) for c in pool]
    # The day's trending list is the same for everyone but what they must not get: one object per paper, shared.
    shared_trending = [RankedPaper(c, t, 0.0, t, tuple(trend_reasons[d] or ["among today's papers"]), False) for d, (c, t) in enumerate(zip(pool, corpus.trending_rounded))]
    results: list[RankResult] = []
    for start in range(0, len(profiles), chunk_size):
        chunk = list(range(start, min(start + chunk_size, len(profiles))))
        lengths = [limit if limit is not None else profiles[i].max_papers for i in chunk]
        excluded = np.zeros((len(chunk), len(pool)), dtype=bool)
        for k, i in enumerate(chunk):
            excluded[k, excluder.excluded(profiles[i])] = True
        scored = rows.score_chunk(chunk, excluded, relevance_floor, lengths, MMR_LAMBDA)
        for k, i in enumerate(chunk):
            results.append(_result(profiles[i], pool, corpus, scored, k, lengths[k], excluded[k], trending_count, trend_reasons, shared_trending))
    return results


def _seen_by(candidate: Candidate, now: datetime) -> bool:
    seen = candidate.paper.first_seen
    return seen is None or seen <= now


def _result(profile: Profile, pool, corpus, scored, k: int, length: int, excluded: np.ndarray, trending_count: int, trend_reasons, shared_trending) -> RankResult:
    picks = [d for d in scored.picks[k, :length].tolist() if d >= 0]
    relevance = scored.relevance[k]
    trend = corpus.trending_rounded
    empty, max_papers = profile.is_empty, profile.max_papers
    show_trend = profile.trending_weight > 0 and not empty
    ranked = []
    if picks:
        scores = np.round(scored.score[k, picks].astype(np.float64), 6).tolist()
        relevances = np.round(relevance[picks].astype(np.float64), 6).tolist()
        for n, (d, terms, nearest) in enumerate(zip(picks, scored.terms[k], scored.nearest[k])):
            reasons: list[str] = []
            if terms:
                reasons.append("matched terms: " + ", ".join(terms))
            if nearest is not None:
                kind, paper, _sim = nearest
                reasons.append(f"similar to your seed paper {paper.ident}: {paper.title}" if kind == "seed" else f"like {paper.title} (you liked it)")
            if empty:
                reasons += trend_reasons[d] or ["one of today's papers (add interests to get personal picks)"]
            elif show_trend and trend[d] >= TRENDING_MIN_REASON:
                reasons += trend_reasons[d]
            ranked.append(RankedPaper(pool[d], scores[n], relevances[n], trend[d], tuple(reasons), n < max_papers))
    order = corpus.trending_order
    trending = [shared_trending[d] for d in order[~excluded[order]][:trending_count].tolist()]
    return RankResult(profile.subscriber_id, ranked, trending, matched=bool(ranked))


def _trending_reasons(candidate: Candidate) -> list[str]:
    reasons = []
    if candidate.paper.upvotes:
        reasons.append(f"trending: {candidate.paper.upvotes} upvotes on Hugging Face")
    sources = len(set(candidate.sources))
    if sources > 1:
        reasons.append(f"carried by {sources} sources")
    return reasons


# --- what a subscriber never gets ---------------------------------------------------------------------


def _name_tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[\s.,\-]+", name.lower()) if t]


def author_matches(muted: str, author: str) -> bool:
    """'J. Doe' mutes 'John Doe' and 'J. Doe'; 'Jane Doe' does not mute 'John Doe'; 'Doe' mutes every Doe."""
    m, a = _name_tokens(muted), _name_tokens(author)
    if not m or not a or m[-1] != a[-1]:
        return False
    for mt, at in zip(m[:-1], a[:-1]):
        if not (at.startswith(mt) if len(mt) == 1 else (at == mt or (len(at) == 1 and mt.startswith(at)))):
            return False
    return True


def in_categories(wanted: Sequence[str], categories: Sequence[str]) -> bool:
    """'cs.LG' matches cs.LG; 'cs' matches every cs.* category. A paper with no category matches none."""
    wanted_l = [w.strip().lower() for w in wanted if w.strip()]
    return any(c.lower() == w or c.lower().startswith(w + ".") for c in categories for w in wanted_l)


class _Excluder:
    """The candidates a profile must not get, as index arrays; each muted term / author / category set is
    looked up once for all profiles sharing it."""

    def __init__(self, pool: Sequence[Candidate]):
        self.pool = pool
        self.by_id = {c.paper.id: n for n, c in enumerate(pool)}
        self.texts = [f"{c.paper.title}\n{c.paper.abstract or ''}" for c in pool]
        self.cache: dict[tuple, np.ndarray] = {}

    def _cached(self, key: tuple, test) -> np.ndarray:
        if key not in self.cache:
            self.cache[key] = np.array([n for n, c in enumerate(self.pool) if test(n, c)], dtype=np.intp)
        return self.cache[key]

    def excluded(self, profile: Profile) -> np.ndarray:
        parts = [np.array([self.by_id[p] for p in profile.exclude_paper_ids if p in self.by_id], dtype=np.intp)]
        for term in profile.muted_terms:
            if term.strip():
                pattern = re.compile(r"(?<!\w)" + re.escape(term.strip()) + r"(?:s|es)?(?!\w)", re.I)
                parts.append(self._cached(("term", term.strip().lower()), lambda n, c: pattern.search(self.texts[n]) is not None))
        for name in profile.muted_authors:
            if name.strip():
                parts.append(self._cached(("author", name.strip().lower()), lambda n, c: any(author_matches(name, a) for a in c.paper.authors or ())))
        if profile.categories:
            key = ("categories", *sorted(c.strip().lower() for c in profile.categories))
            parts.append(self._cached(key, lambda n, c: not in_categories(profile.categories, c.paper.categories or ())))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
