"""The embedding pass of rank_model = "hybrid", shared by the daily run and `digest rank`: each paper's sentence
embedding is computed once and stored (digest.store.embeddings, with the model's name and version), each
subscriber's interest embeddings are stored until the interests change; what the ranking needs is looked up, the
missing vectors computed in one batch (digest.rank.semantic) and stored, and the lot handed to digest.rank.

It never ranks and never opens the database itself. No transaction is held while the model works (a first pass
over 2,000 papers takes a while on a CPU; SQLite writers must not wait that long).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime

import numpy as np
from sqlalchemy.engine import Engine

from .models import Subscriber
from .rank import semantic as rank_semantic
from .rank.semantic import DIMENSIONS, Embeddings, interest_key, paper_text, text_hash
from .store import session_scope
from .store.embeddings import interest_vectors, paper_vectors, save_interest_vectors, save_paper_vectors


def embeddings_for(engine: Engine, papers: Iterable[tuple[int, str, str]], subscribers: Iterable[Subscriber], now: datetime) -> Embeddings:
    """The vectors of `papers` ((paper id, title, abstract) of the candidates and profile papers) and of
    `subscribers`' interests, from the store where they are current, computed and stored where they are not."""
    model = rank_semantic.model_key()
    subscribers = list({s.id: s for s in subscribers}.values())
    texts = {pid: paper_text(title or "", abstract or "") for pid, title, abstract in papers}
    wanted = {s.id: [interest_key(i) for i in s.interests or () if i.strip()] for s in subscribers}
    with session_scope(engine) as session:
        stored = paper_vectors(session, texts, model)
        stored_interests = interest_vectors(session, wanted, model, DIMENSIONS)
    vectors = {pid: stored[pid][1] for pid, text in texts.items() if pid in stored and stored[pid][0] == text_hash(text)}
    missing = [pid for pid in texts if pid not in vectors]
    interests: dict[str, np.ndarray] = {}
    stale: list[int] = []
    for sid, keys in wanted.items():
        digest = text_hash(json.dumps(keys))
        if sid in stored_interests and stored_interests[sid][0] == digest and len(stored_interests[sid][1]) == len(keys):
            interests.update(zip(keys, stored_interests[sid][1]))
        else:
            stale.append(sid)
    new_texts = list(dict.fromkeys(k for sid in stale for k in wanted[sid] if k not in interests))
    if missing or new_texts:
        computed = rank_semantic.embed([texts[pid] for pid in missing] + new_texts)  # one batch: the model loads once
        vectors.update(zip(missing, computed[: len(missing)]))
        interests.update(zip(new_texts, computed[len(missing) :]))
        with session_scope(engine) as session:
            save_paper_vectors(session, [(pid, text_hash(texts[pid]), vectors[pid]) for pid in missing], model, now)
            save_interest_vectors(session, [(sid, text_hash(json.dumps(wanted[sid])), _stack([interests[k] for k in wanted[sid]])) for sid in stale], model, now)
    return Embeddings(vectors, interests)


def _stack(rows: list):
    import numpy as np

    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, DIMENSIONS), np.float32)
