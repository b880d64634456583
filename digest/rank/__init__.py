"""Ranking, pure: candidate papers + subscriber profiles (+ votes, + embeddings passed in) + `now` -> ranked,
explained picks. No database, no clock, no I/O: the pipeline hands it plain data (Candidate, Profile) built from
the store's rows, and render reads its results (RankResult, RankedPaper).

Modules: candidate (the data ranked), ranking (who gets what: rank_many, Ranking, rank_papers, trending_scores), text (the
TF-IDF model and the evidence rule), score (relevance, votes, MMR per chunk of profiles), votes (the per-subscriber
vote model), semantic (the optional sentence-embedding model of rank_model = "hybrid").
"""

from .candidate import Candidate, Profile, ProfilePaper, build_profile
from .ranking import (
    CHUNK,
    EXPLAIN_BLOCK,
    MMR_LAMBDA,
    TRENDING_MIN_REASON,
    RankedPaper,
    Ranking,
    RankResult,
    author_matches,
    default_threads,
    in_categories,
    pool_trending,
    rank_many,
    rank_papers,
    trending_scores,
)

__all__ = [
    "CHUNK", "EXPLAIN_BLOCK", "MMR_LAMBDA", "TRENDING_MIN_REASON", "Candidate", "Profile", "ProfilePaper", "RankResult", "RankedPaper", "Ranking",
    "author_matches", "build_profile", "default_threads", "in_categories", "pool_trending", "rank_many", "rank_papers", "trending_scores",
]
