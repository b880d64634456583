"""Full-text search and the day queries behind the public pages, on a SQLite file and (when available) PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import sqlalchemy as sa

from digest.models import Paper
from digest.sources import ParsedPaper
from digest.store import session_scope
from digest.store.days import day_papers, neighbour_days, papers_by_ids, papers_version
from digest.store.papers import upsert_papers
from digest.store.search import search_papers, search_terms, update_search_index
from digest.store.sources import add_source, record_fetch_success

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)
DAY = NOW.date()


def paper(n: int, title: str, abstract: str = "Nothing to see.", **kw) -> ParsedPaper:
    ident = f"2608.{n:05d}"
    return ParsedPaper(key=f"arxiv:{ident}", ident=ident, title=title, abstract=abstract, arxiv_id=ident, authors=["Ada Lovelace"], **kw)


def store(engine, papers: list[ParsedPaper], when: datetime = NOW, source: str = "arxiv", kind: str = "arxiv-rss") -> None:
    with session_scope(engine) as s:
        found = s.execute(sa.text("SELECT id FROM source WHERE name = :n"), {"n": source}).scalar()
        source_id = found or add_source(s, source, kind, f"https://example.org/{source}", when).id
    upsert_papers(engine, source_id, papers, when)


def titles(results) -> list[str]:
    return [c.paper.title for c in results.papers]


def test_search_papers_matches_every_word_stemmed_in_title_or_abstract(engine):
    store(engine, [
        paper(1, "Sparse autoencoders for interpretability", "We train a sparse autoencoder on activations."),
        paper(2, "Protein folding with diffusion", "An autoencoder is used nowhere; proteins fold."),
        paper(3, "Weather forecasting", "Sparse sensors and interpretable neural operators."),
    ])
    assert titles(search_papers(engine, "autoencoder")) == ["Sparse autoencoders for interpretability", "Protein folding with diffusion"]
    assert titles(search_papers(engine, "sparse autoencoders")) == ["Sparse autoencoders for interpretability"]  # every word
    assert search_papers(engine, "quantum").total == 0
    assert search_papers(engine, "   ").papers == [] and search_terms('"sparse" OR (x*') == ["sparse", "OR", "x"]
    assert titles(search_papers(engine, 'sparse" OR "protein')) == []  # query syntax is plain words, never an operator


def test_search_papers_ranks_title_matches_first_and_pages(engine):
    store(engine, [paper(n, f"Paper {n}", "Graph neural networks again.") for n in range(1, 8)] + [paper(9, "Graph transformers", "Attention.")])
    first = search_papers(engine, "graph", limit=3)
    assert first.total == 8 and len(first.papers) == 3 and first.papers[0].paper.title == "Graph transformers"
    rest = [titles(search_papers(engine, "graph", limit=3, offset=o)) for o in (3, 6)]
    assert len(set(titles(first) + rest[0] + rest[1])) == 8  # the pages do not overlap


def test_search_index_follows_changed_and_new_papers(engine):
    store(engine, [paper(1, "Old title about robots", version=1)])
    assert titles(search_papers(engine, "robots")) == ["Old title about robots"]
    # A newer arXiv version brings a new title: the old words stop matching, the new ones match.
    store(engine, [paper(1, "Quadruped locomotion", version=2), paper(2, "Robots that walk")], NOW + timedelta(hours=1))
    assert titles(search_papers(engine, "robots")) == ["Robots that walk"]
    assert titles(search_papers(engine, "quadruped")) == ["Quadruped locomotion"]
    assert update_search_index(engine) == 0


def test_search_index_catches_up_within_a_budget(sqlite_engine):
    store(sqlite_engine, [paper(n, f"Lattice paper {n}") for n in range(1, 26)])
    assert update_search_index(sqlite_engine, budget=10) == 15  # ten indexed now, fifteen left for the next search
    assert search_papers(sqlite_engine, "lattice").total == 25


def test_day_papers_counts_distinct_sources_and_keeps_days_apart(engine):
    store(engine, [paper(1, "A"), paper(2, "B", upvotes=40)])
    store(engine, [paper(2, "B", upvotes=50)], NOW + timedelta(hours=1), source="hf", kind="hf-daily")
    store(engine, [paper(3, "C")], NOW + timedelta(days=1))
    today = sorted(day_papers(engine, DAY), key=lambda p: p.id)
    assert [(p.upvotes, p.sources) for p in today] == [(0, 1), (50, 2)]
    assert len(day_papers(engine, DAY, DAY + timedelta(days=1))) == 3
    assert neighbour_days(engine, DAY) == (None, DAY + timedelta(days=1))
    assert neighbour_days(engine, date(2026, 9, 1)) == (DAY + timedelta(days=1), None)
    found = papers_by_ids(engine, [today[1].id, 999_999, today[0].id])
    assert [c.paper.title for c in found] == ["B", "A"] and found[0].sources == ("arxiv", "hf") and found[0].source_kinds == ("arxiv-rss", "hf-daily")


def test_papers_version_changes_with_each_fetch(engine):
    empty = papers_version(engine)
    store(engine, [paper(1, "A")])
    stored = papers_version(engine)
    assert stored.tag != empty.tag and stored.changed_at == NOW
    with session_scope(engine) as s:
        source = s.get(__import__("digest.models", fromlist=["Source"]).Source, 1)
        record_fetch_success(s, source, NOW + timedelta(hours=2), count=None)  # upvotes may have changed: a new version
    assert papers_version(engine).tag != stored.tag
    with session_scope(engine) as s:
        assert s.get(Paper, 1).title == "A"


def test_search_forgets_a_deleted_paper(sqlite_engine):
    store(sqlite_engine, [paper(1, "Ephemeral result"), paper(2, "Ephemeral other")])
    assert search_papers(sqlite_engine, "ephemeral").total == 2
    with sqlite_engine.begin() as conn:  # nothing deletes papers today; a trigger keeps the index right if one day it does
        conn.exec_driver_sql("DELETE FROM paper_source WHERE paper_id = 1")
        conn.exec_driver_sql("DELETE FROM paper WHERE id = 1")
    assert titles(search_papers(sqlite_engine, "ephemeral")) == ["Ephemeral other"]
