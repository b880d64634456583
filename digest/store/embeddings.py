"""Stored sentence embeddings (rank_model = "hybrid"): a paper's by (paper, model), a subscriber's interests by
(subscriber, model), each with the hash of the text it was computed from so a changed text is embedded again.

It reads and writes rows of float32 bytes and never computes an embedding: digest.embed does, through
digest.rank.semantic, and passes the vectors to digest.rank.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
import sqlalchemy as sa
from sqlmodel import Session, col, select

from ..models import InterestEmbedding, PaperEmbedding

BATCH = 500  # ids per IN list


def _vector(blob: bytes, dimensions: int | None = None) -> np.ndarray:
    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    return vector if dimensions is None else vector.reshape(-1, dimensions)


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def paper_vectors(session: Session, paper_ids: Iterable[int], model: str) -> dict[int, tuple[str, np.ndarray]]:
    """{paper id: (text hash, vector)} of the papers among `paper_ids` already embedded by `model`."""
    ids = sorted(set(paper_ids))
    out: dict[int, tuple[str, np.ndarray]] = {}
    for start in range(0, len(ids), BATCH):
        query = select(PaperEmbedding.paper_id, PaperEmbedding.text_hash, PaperEmbedding.vector).where(
            col(PaperEmbedding.model) == model, col(PaperEmbedding.paper_id).in_(ids[start : start + BATCH]))
        for paper_id, text_hash, blob in session.exec(query):
            out[paper_id] = (text_hash, _vector(blob))
    return out


def save_paper_vectors(session: Session, rows: Sequence[tuple[int, str, np.ndarray]], model: str, now: datetime) -> None:
    """Store (paper id, text hash, vector) rows for `model`, replacing what a paper had for it."""
    ids = [paper_id for paper_id, _, _ in rows]
    for start in range(0, len(ids), BATCH):
        session.execute(sa.delete(PaperEmbedding).where(col(PaperEmbedding.model) == model, col(PaperEmbedding.paper_id).in_(ids[start : start + BATCH])))
    session.add_all(PaperEmbedding(paper_id=paper_id, model=model, text_hash=text_hash, vector=_blob(vector), created_at=now) for paper_id, text_hash, vector in rows)
    session.flush()


def interest_vectors(session: Session, subscriber_ids: Iterable[int], model: str, dimensions: int) -> dict[int, tuple[str, np.ndarray]]:
    """{subscriber id: (interests hash, interests x dimensions vectors)} of the subscribers embedded by `model`."""
    ids = sorted(set(subscriber_ids))
    out: dict[int, tuple[str, np.ndarray]] = {}
    for start in range(0, len(ids), BATCH):
        query = select(InterestEmbedding.subscriber_id, InterestEmbedding.interests_hash, InterestEmbedding.vectors).where(
            col(InterestEmbedding.model) == model, col(InterestEmbedding.subscriber_id).in_(ids[start : start + BATCH]))
        for subscriber_id, interests_hash, blob in session.exec(query):
            out[subscriber_id] = (interests_hash, _vector(blob, dimensions))
    return out


def save_interest_vectors(session: Session, rows: Sequence[tuple[int, str, np.ndarray]], model: str, now: datetime) -> None:
    """Store (subscriber id, interests hash, vectors) rows for `model`, replacing what a subscriber had for it."""
    ids = [subscriber_id for subscriber_id, _, _ in rows]
    for start in range(0, len(ids), BATCH):
        session.execute(sa.delete(InterestEmbedding).where(col(InterestEmbedding.model) == model, col(InterestEmbedding.subscriber_id).in_(ids[start : start + BATCH])))
    session.add_all(InterestEmbedding(subscriber_id=subscriber_id, model=model, interests_hash=interests_hash, vectors=_blob(vectors), created_at=now)
                    for subscriber_id, interests_hash, vectors in rows)
    session.flush()
