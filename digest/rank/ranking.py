"""Ranking: pure functions of candidate papers, subscriber profiles (and, for the hybrid, their embeddings, passed
in) and `now` -> ranked, explained picks.

No database, no clock, no I/O, no network and no model download. The data it works on (Candidate, Profile) is in
digest.rank.candidate, the text model (tokens, vectors, evidence) in digest.rank.text, the scoring in
digest.rank.score, the vote models in digest.rank.votes; this module decides who gets what:

- candidates: every paper of the window not already sent, not muted (terms in title/abstract, authors), in the
  subscriber's categories if any;
- relevance: the interests' text relevance (Rocchio centroid and best single match), blended with the subscriber's
  vote model (seeds, likes, dislikes) by a weight that grows with the votes; pseudo relevance feedback then lifts
  papers like the best matches;
- evidence: only a paper holding most of an interest's words (or that the vote model likes) and clearing
  `relevance_floor` may enter the digest; the others are near misses, listed after it;
- trending: trending_scores below (upvotes, cross-source presence, recency), the one definition the email's
  "Trending today" and the web front page both use;
- score = (1 - trending_weight) * relevance / the day's best relevance + trending_weight * trending;
- MMR picks in order, so a near-duplicate of a pick loses ground and one topic cannot fill the email.

Every subscriber is ranked at once (rank_many) in chunks of one sparse float32 product each, or batch after batch
against one Ranking (the candidates' side built once); rank_papers is the same computation for one profile. Ties
break by paper id, so the same inputs give the same output.
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from ..children import usable_cores
from ..models import Paper
from .candidate import Candidate, Profile

if TYPE_CHECKING:
    from .semantic import Embeddings

MMR_LAMBDA = 0.9  # share of the score against the similarity to papers already picked
TRENDING_MIN_REASON = 0.5  # trending score from which "trending" is given as a reason
CHUNK = 1000  # profiles per matrix product
UPVOTES_SHARE, SOURCES_SHARE = 0.75, 0.25  # the parts of the trending score
RECENCY_HALF_LIFE = timedelta(hours=24)  # a paper first seen a day before the pool's newest trends half as much


class RankedPaper:
    """One ranked paper. `reasons` may be given, or (in a ranking) made on first use: a daily run ranks every
    subscriber but only the emails read them, and explaining a million picks up front cost more than ranking them."""

    __slots__ = ("candidate", "score", "relevance", "trending", "in_digest", "_reasons")

    def __init__(self, candidate: Candidate, score: float, relevance: float, trending: float, reasons: tuple[str, ...] | _Pending = (), in_digest: bool = False):
        self.candidate, self.score, self.relevance, self.trending, self.in_digest = candidate, score, relevance, trending, in_digest
        self._reasons = reasons

    @property
    def reasons(self) -> tuple[str, ...]:
        reasons = self._reasons
        if type(reasons) is _Pending:
            reasons.explain()  # sets _reasons of every paper of its batch
            reasons = self._reasons
        assert not isinstance(reasons, _Pending)
        return reasons

    @property
    def paper(self) -> Paper:
        return self.candidate.paper

    def _key(self) -> tuple:
        return (self.candidate, self.score, self.relevance, self.trending, self.reasons, self.in_digest)

    def __eq__(self, other) -> bool:
        return type(other) is RankedPaper and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self.candidate.paper.id, self.score, self.in_digest))

    def __repr__(self) -> str:
        return f"RankedPaper(id={self.paper.id!r}, score={self.score!r}, relevance={self.relevance!r}, trending={self.trending!r}, reasons={self.reasons!r}, in_digest={self.in_digest!r})"


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


def rank_papers(candidates: Sequence[Candidate], profile: Profile, now: datetime, *, limit: int | None = None, relevance_floor: float = 0.05, trending_count: int = 5, model: str = "tfidf", embeddings: Embeddings | None = None) -> RankResult:
    """Rank `candidates` for one profile: `limit` papers at most (default: the digest's own size), the papers with
    evidence first (at most profile.max_papers of them in the digest), then near misses. Deterministic: the same
    inputs give the same output."""
    return rank_many(candidates, [profile], now, limit=limit, relevance_floor=relevance_floor, trending_count=trending_count, model=model, embeddings=embeddings)[0]


def rank_many(candidates: Sequence[Candidate], profiles: Sequence[Profile], now: datetime, *, limit: int | None = None, relevance_floor: float = 0.05, trending_count: int = 5, chunk_size: int = CHUNK, threads: int | None = None, model: str = "tfidf", embeddings: Embeddings | None = None) -> list[RankResult]:
    """Rank every profile at once (one sparse matrix product per chunk of profiles); same results as rank_papers.
    Reasons are made when first read, EXPLAIN_BLOCK results at a time. `model`: "tfidf", or "hybrid" (TF-IDF
    blended with sentence embeddings, which the caller passes as `embeddings`: see digest.rank.semantic.Embeddings,
    digest.embed for stored ones, digest.rank.semantic.embed_for to compute them in place)."""
    if not profiles:
        _check_model(model, embeddings)
        return []
    ranking = Ranking(candidates, now, model=model, embeddings=embeddings, trending_count=trending_count)
    return ranking.rank(profiles, limit=limit, relevance_floor=relevance_floor, chunk_size=chunk_size, threads=threads)


class Ranking:
    """The candidates' side of a ranking, built once (the text model, the trending list, the exclusion lookups):
    rank() then ranks any number of profiles against it, batch after batch. A sending worker ranks each batch of
    deliveries it has claimed, so it holds the results of that batch only; forked render workers inherit one
    Ranking and rank their own share. Read-only once built (rank() may run in several threads or processes)."""

    def __init__(self, candidates: Sequence[Candidate], now: datetime, *, model: str = "tfidf", embeddings: Embeddings | None = None, trending_count: int = 5):
        from .text import Corpus

        _check_model(model, embeddings)
        self.embeddings = embeddings if model == "hybrid" else None
        self.pool = pool = sorted((c for c in candidates if _seen_by(c, now)), key=lambda c: (c.paper.id if c.paper.id is not None else -1, c.paper.ident))
        self.corpus = corpus = Corpus(pool, pool_trending(pool), self.embeddings)
        self.excluder = _Excluder(pool)
        self.trend_reasons = [_trending_reasons(c) for c in pool]
        self.trending_count = trending_count
        # The day's trending list is the same for everyone but what they must not get: one object per paper, shared.
        self.shared_trending = [RankedPaper(c, t, 0.0, t, tuple(self.trend_reasons[d] or ["among today's papers"]), False) for d, (c, t) in enumerate(zip(pool, corpus.trending_rounded))]
        # Only papers with a trending signal (upvotes, a second source) trend: without one the order is the papers' ids.
        self.trending_order = corpus.trending_order[corpus.trending[corpus.trending_order] > 0]

    def rank(self, profiles: Sequence[Profile], *, limit: int | None = None, relevance_floor: float = 0.05, chunk_size: int = CHUNK, threads: int | None = None) -> list[RankResult]:
        """Each profile's RankResult, in order (see rank_many)."""
        from .score import ProfileRows

        if not profiles:
            return []
        pool, corpus, excluder, trending_count = self.pool, self.corpus, self.excluder, self.trending_count
        shared_trending, trending_order = self.shared_trending, self.trending_order
        # Each list runs long enough to leave out the subscriber's own picks and still fill trending_count (_result).
        reach = trending_count + max(limit if limit is not None else p.max_papers for p in profiles)
        everyones_trending = [shared_trending[d] for d in trending_order[:reach].tolist()]
        rows = ProfileRows(corpus, profiles, self.embeddings)
        explainer = _Explainer(rows, profiles, pool, corpus, self.trend_reasons)
        no_exclusion = np.zeros(0, dtype=np.intp)

        def score(start: int) -> tuple:
            """One chunk's picks with their rounded scores, and the exclusions of those who have any."""
            chunk = range(start, min(start + chunk_size, len(profiles)))
            lengths = [limit if limit is not None else profiles[i].max_papers for i in chunk]
            excluded = np.zeros((len(chunk), len(pool)), dtype=bool)
            for k, i in enumerate(chunk):
                out = excluder.excluded(profiles[i]) if profiles[i].excludes_anything else no_exclusion
                excluded[k, out] = True
            picks, score, relevance, digestable = rows.score_chunk(list(chunk), excluded, relevance_floor, lengths, MMR_LAMBDA)
            if not picks.shape[1] or not len(pool):
                return chunk, [[]] * len(chunk), [[]] * len(chunk), [[]] * len(chunk), [[]] * len(chunk), {}
            at = np.maximum(picks, 0)
            scores = np.round(np.take_along_axis(score, at, axis=1).astype(np.float64), 6).tolist()
            relevances = np.round(np.take_along_axis(relevance, at, axis=1).astype(np.float64), 6).tolist()
            digests = (np.take_along_axis(digestable, at, axis=1) & (picks >= 0)).sum(axis=1).tolist()  # the digest's papers come first
            chosen = [p[: min(length, count)] for p, length, count in zip(picks.tolist(), lengths, (picks >= 0).sum(axis=1).tolist())]
            trending = {k: _trending_for(excluded[k], trending_order, shared_trending, reach) for k in np.flatnonzero(excluded.any(axis=1)).tolist()}
            return chunk, chosen, scores, relevances, digests, trending

        results: list[RankResult] = []
        starts = range(0, len(profiles), chunk_size)
        # Chunks are scored in worker threads (numpy and scipy let go of the GIL) while this thread builds the results;
        # one chunk (a claimed batch) is scored in this thread.
        workers = min(max(1, threads or default_threads()), len(starts))
        chunks = map(score, starts) if workers == 1 else None
        with contextlib.ExitStack() as stack:
            if chunks is None:
                executor = stack.enter_context(ThreadPoolExecutor(max_workers=workers))
                chunks = _in_order(executor, score, starts, workers + 1)
            for chunk, chosen, scores, relevances, digests, trending in chunks:
                for k, i in enumerate(chunk):
                    results.append(_result(profiles[i], i, pool, corpus, chosen[k], scores[k], relevances[k], digests[k], trending.get(k, everyones_trending), trending_count, explainer))
        return results


def _check_model(model: str, embeddings: Embeddings | None) -> None:
    from .semantic import check_model

    check_model(model)
    if model == "hybrid" and embeddings is None:
        raise ValueError("rank_model = \"hybrid\" needs the embeddings of the candidates and profiles (digest.embed, or digest.rank.semantic.embed_for)")


def default_threads() -> int:
    """Threads that score chunks: two at most (memory grows with each chunk in flight), no more than usable cores."""
    return min(2, usable_cores())


def _in_order(executor: ThreadPoolExecutor, fn, items, ahead: int):
    """executor.map with at most `ahead` tasks submitted, so finished chunks do not pile up in memory."""
    pending: deque = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _seen_by(candidate: Candidate, now: datetime) -> bool:
    seen = candidate.paper.first_seen
    return seen is None or seen <= now


def _trending_for(excluded: np.ndarray, order: np.ndarray, shared_trending, reach: int) -> list[RankedPaper]:
    return [shared_trending[d] for d in order[~excluded[order]][:reach].tolist()]


def _result(profile: Profile, index: int, pool, corpus, picks: list[int], scores: list[float], relevances: list[float], digest: int, trending: list[RankedPaper], trending_count: int, explainer: _Explainer) -> RankResult:
    """The first `digest` picks may enter the digest (at most max_papers of them do); the others are near misses.
    The trending list leaves out the digest's own papers, so the email shows (and `preview` counts) trending_count."""
    if not picks:
        return RankResult(profile.subscriber_id, [], trending[:trending_count], matched=False)
    trend, in_digest = corpus.trending_rounded, min(digest, profile.max_papers)
    pending = _Pending(explainer, len(explainer.entries))
    ranked = [RankedPaper(pool[d], scores[n], relevances[n], trend[d], pending, n < in_digest) for n, d in enumerate(picks)]
    explainer.entries.append((index, picks, ranked))
    shown = {id(pool[d]) for d in picks[:in_digest]}
    return RankResult(profile.subscriber_id, ranked, [t for t in trending if id(t.candidate) not in shown][:trending_count], matched=in_digest > 0)


class _Pending:
    """Stands for the reasons of one result's papers until they are first read."""

    __slots__ = ("explainer", "entry")

    def __init__(self, explainer: _Explainer, entry: int):
        self.explainer, self.entry = explainer, entry

    def explain(self) -> None:
        self.explainer.explain(self.entry)


# Results explained together, in one vectorised pass: a render worker's share of a claimed batch (25 of its 200 with
# two workers) or a whole batch rendered in place is one pass. A pass costs about as much again in sparse set-up as
# in work: blocks of 16 split a share of 25 in two passes, 0.099 and 0.150 ms of CPU per email against 0.078 and
# 0.101 in one (docs/benchmarks.md). The same reasons either way: each pick's are computed on their own.
EXPLAIN_BLOCK = 200


class _Explainer:
    """The reasons of a ranking's picks, made on first use for a block of results at once: the matched terms,
    the nearest seed or liked paper, and (for trending picks) the trending figures."""

    def __init__(self, rows, profiles: Sequence[Profile], pool, corpus, trend_reasons):
        self.rows, self.profiles, self.pool, self.corpus, self.trend_reasons = rows, profiles, pool, corpus, trend_reasons
        self.entries: list[tuple[int, list[int], list[RankedPaper]] | None] = []  # None once explained

    def explain(self, entry: int) -> None:
        start = entry - entry % EXPLAIN_BLOCK
        block = [e for e in self.entries[start : start + EXPLAIN_BLOCK] if e is not None]
        self.entries[start : start + EXPLAIN_BLOCK] = [None] * len(self.entries[start : start + EXPLAIN_BLOCK])
        indexes, chosen = [i for i, _, _ in block], [picks for _, picks, _ in block]
        terms = self.rows.terms_of(indexes, chosen)
        nearest = self.rows.nearest_of(indexes, chosen)
        trend, trend_reasons = self.corpus.trending_rounded, self.trend_reasons
        for (i, picks, ranked), p_terms, p_nearest in zip(block, terms, nearest):
            profile = self.profiles[i]
            empty = profile.is_empty
            show_trend = profile.trending_weight > 0 and not empty
            own_words = _interest_wording(profile.interests) if profile.interests else {}
            for paper, d, matched, near in zip(ranked, picks, p_terms, p_nearest):
                reasons: list[str] = []
                if matched:
                    reasons.append("matched terms: " + ", ".join(own_words.get(_term_key(m), m) for m in matched))
                if near is not None:
                    kind, seen = near
                    reasons.append(f"similar to your seed paper {seen.ident}: {seen.title}" if kind == "seed" else f"like {seen.title} (you liked it)")
                if empty:
                    reasons += trend_reasons[d] or ["one of today's papers (add interests to get personal picks)"]
                elif show_trend and trend[d] >= TRENDING_MIN_REASON:
                    reasons += trend_reasons[d]
                paper._reasons = tuple(reasons)


@lru_cache(maxsize=65536)
def _term_key(shown: str) -> str:
    """The stemmed key of a term as a reason shows it ("mechanistic interpretation" -> "mechanist interpret")."""
    from .text import stem

    return " ".join(stem(word) for word in shown.split())


@lru_cache(maxsize=4096)
def _interest_wording(interests: tuple[str, ...]) -> dict[str, str]:
    """A matched term in the subscriber's own words where their interests hold it: the day's papers may say
    "interpretation" where the subscriber wrote "interpretability" (both stem to "interpret")."""
    from .text import readable_forms

    return readable_forms(interests)


def trending_scores(upvotes: Sequence[int | None], source_counts: Sequence[int], first_seen: Sequence[datetime | None]) -> np.ndarray:
    """The trending score of each paper of a pool, in [0, 1]: the one definition behind the email's "Trending
    today" section and the web front page (both order by it). Pure; the inputs are per paper, in the same order:

    - upvotes (Hugging Face), as log(1 + upvotes) over the pool's most upvoted: 3/4 of the score;
    - cross-source presence: the sources carrying the paper beyond the first, over the pool's most: 1/4
      (a part no paper of the pool has is left out and the other counts whole);
    - recency: the sum is halved for every RECENCY_HALF_LIFE the paper was first seen before the pool's newest
      paper, so in a pool of one day's papers it hardly matters, and across days the newest lead.
    """
    votes = np.log1p(np.array([max(v or 0, 0) for v in upvotes], dtype=np.float32))
    extra = np.array([max(n, 1) for n in source_counts], dtype=np.float32) - 1
    parts = []
    if len(votes) and votes.max() > 0:
        parts.append((UPVOTES_SHARE, votes / votes.max()))
    if len(extra) and extra.max() > 0:
        parts.append((SOURCES_SHARE, extra / extra.max()))
    if not parts:
        return np.zeros(len(votes), dtype=np.float32)
    score = sum(w * v for w, v in parts) / sum(w for w, _ in parts)
    seen = [t for t in first_seen if t is not None]
    if seen and min(seen) < max(seen):
        newest, half_life = max(seen), RECENCY_HALF_LIFE.total_seconds()
        age = np.array([(newest - t).total_seconds() if t is not None else 0.0 for t in first_seen], dtype=np.float64)
        score = score * np.exp2(-age / half_life).astype(np.float32)
    return score.astype(np.float32)


def pool_trending(pool: Sequence[Candidate]) -> np.ndarray:
    """trending_scores of ranking candidates."""
    return trending_scores([c.paper.upvotes for c in pool], [c.outlets for c in pool], [c.paper.first_seen for c in pool])


def _trending_reasons(candidate: Candidate) -> list[str]:
    reasons = []
    if candidate.paper.upvotes:
        reasons.append(f"trending: {candidate.paper.upvotes} upvotes on Hugging Face")
    sources = candidate.outlets
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
                parts.append(self._cached(("term", term.strip().lower()), lambda n, c, pattern=pattern: pattern.search(self.texts[n]) is not None))
        for name in profile.muted_authors:
            if name.strip():
                parts.append(self._cached(("author", name.strip().lower()), lambda n, c, name=name: any(author_matches(name, a) for a in c.paper.authors or ())))
        if profile.categories:
            key = ("categories", *sorted(c.strip().lower() for c in profile.categories))
            parts.append(self._cached(key, lambda n, c: not in_categories(profile.categories, c.paper.categories or ())))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
