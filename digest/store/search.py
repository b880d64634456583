"""Full-text search over paper titles and abstracts, behind one function (search_papers) on both databases:
SQLite's FTS5 table paper_search (migration 0005), PostgreSQL's GIN index on the weighted tsvector stored in
paper.search_vector (a generated column, migration 0010: ranking reads it rather than parsing each match again).

PostgreSQL keeps its index current by itself. SQLite's index is caught up here, outside the bulk upsert
(digest.store.papers): tokenising every abstract inside an import would make it several times slower, and the
daily fetch brings a few thousand papers that the next search indexes in a fraction of a second. New papers are
those above the index's highest rowid (paper ids only grow); papers whose title or abstract changed are listed in
paper_search_stale by the upsert (note_changed_text). Each search first indexes what is pending, up to a budget, so
its latency stays bounded after a huge import; the results then say how many papers are not searchable yet.

It must not rank, page or render anything beyond the query's own order (best match first).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from . import wrap_db_error
from .days import StoredPaper, papers_by_ids

# Tables, triggers and indexes the models do not declare (autogenerate and the schema test leave them alone).
SEARCH_OBJECTS = frozenset({
    "paper_search", "paper_search_data", "paper_search_idx", "paper_search_content", "paper_search_docsize",
    "paper_search_config", "paper_search_stale", "ix_paper_search", "search_vector",
})
PAPER_TRIGGERS = ("paper_search_removed",)  # SQLite; see migration 0005
INDEX_BATCH = 2_000  # papers indexed per transaction: the write lock is held briefly
INDEX_BUDGET = 10_000  # papers one search may index before it answers (about a second on this machine)
LOCK_WAIT_MS = 200  # a search does not wait for a long import's write lock: it answers from the index as it is
MAX_TERMS = 12
_WORD = re.compile(r"\w+")
# PostgreSQL's weighted tsvector of title (A) and abstract (B), stored and indexed (migration 0010).
_PG_VECTOR = "paper.search_vector"


def include_name(name: str | None, type_: str, parent_names: Mapping[Any, Any]) -> bool:
    """Alembic's include_name hook: the search objects are not models, so autogenerate must not drop them."""
    return name not in SEARCH_OBJECTS


@dataclass(frozen=True)
class SearchResults:
    """One page of matches, best first, and how many there are in all; `pending` papers were not searchable yet."""

    total: int
    papers: list[StoredPaper]
    pending: int = 0


def search_terms(query: str) -> list[str]:
    """The words of a query (letters and digits), at most MAX_TERMS: every one must match (AND)."""
    return _WORD.findall(query or "")[:MAX_TERMS]


def search_papers(engine: Engine, query: str, *, limit: int = 20, offset: int = 0) -> SearchResults:
    """Papers whose title or abstract holds every word of `query` (stemmed), best match first (a title match
    weighs more), `limit` of them from `offset`. An empty query matches nothing."""
    terms = search_terms(query)
    if not terms:
        return SearchResults(0, [])
    pending = update_search_index(engine)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                match = " ".join(f'"{t}"' for t in terms)  # quoted: FTS5 operators in the query are plain words
                total = conn.execute(sa.text("SELECT count(*) FROM paper_search WHERE paper_search MATCH :m"), {"m": match}).scalar_one()
                ids = conn.execute(sa.text("SELECT rowid FROM paper_search WHERE paper_search MATCH :m "
                                           "ORDER BY bm25(paper_search, 2.0, 1.0), rowid DESC LIMIT :n OFFSET :o"),
                                   {"m": match, "n": limit, "o": offset}).scalars().all()
            else:
                words = {"q": " ".join(terms)}
                where = f"{_PG_VECTOR} @@ plainto_tsquery('english'::regconfig, :q)"
                total = conn.execute(sa.text(f"SELECT count(*) FROM paper WHERE {where}"), words).scalar_one()
                ids = conn.execute(sa.text(f"SELECT id FROM paper WHERE {where} ORDER BY ts_rank({_PG_VECTOR}, "
                                           "plainto_tsquery('english'::regconfig, :q)) DESC, id DESC LIMIT :n OFFSET :o"),
                                   {**words, "n": limit, "o": offset}).scalars().all()
            papers = papers_by_ids(conn, list(ids))
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    return SearchResults(int(total), papers, pending)


def note_changed_text(conn: Connection, paper_ids: Sequence[int]) -> None:
    """SQLite: these stored papers got a new title or abstract; the next search re-indexes them. Called by the bulk
    upsert inside its transaction (PostgreSQL's index follows by itself: nothing to do)."""
    if paper_ids and conn.dialect.name == "sqlite":
        conn.exec_driver_sql("INSERT OR IGNORE INTO paper_search_stale (paper_id) VALUES (?)", [(pid,) for pid in paper_ids])


def update_search_index(engine: Engine, budget: int = INDEX_BUDGET) -> int:
    """SQLite: index new papers and re-index changed ones, at most `budget`; returns how many are still pending
    (0: the index is current). Does not wait for another writer's lock: then nothing is indexed this time.
    PostgreSQL keeps its index current itself: nothing to do, 0."""
    if engine.dialect.name != "sqlite":
        return 0
    try:
        with engine.connect() as conn:
            left = _pending(conn)
            while left and budget > 0:
                done = _index_batch(conn, min(INDEX_BATCH, budget))
                if done is None:  # another process holds the write lock (an import): search the index as it is
                    break
                budget -= done
                left = _pending(conn)
            return left
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None


def _pending(conn: Connection) -> int:
    mark = conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM paper_search").scalar_one()
    new = conn.exec_driver_sql("SELECT count(*) FROM paper WHERE id > ?", (mark,)).scalar_one()
    stale = conn.exec_driver_sql("SELECT count(*) FROM paper_search_stale WHERE paper_id <= ?", (mark,)).scalar_one()
    return int(new + stale)


def _index_batch(conn: Connection, size: int) -> int | None:
    """One transaction: re-index up to `size` changed papers, then index up to `size` new ones; None when the
    write lock is taken."""
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except OperationalError as exc:
        if "locked" not in str(exc).lower() and "busy" not in str(exc).lower():
            raise
        return None
    finally:
        conn.exec_driver_sql("PRAGMA busy_timeout = 10000")  # the engine's usual wait (digest.store.open_engine)
    try:
        mark = conn.exec_driver_sql("SELECT coalesce(max(rowid), 0) FROM paper_search").scalar_one()
        stale = [row[0] for row in conn.exec_driver_sql("SELECT paper_id FROM paper_search_stale WHERE paper_id <= ? ORDER BY paper_id LIMIT ?", (mark, size))]
        for start in range(0, len(stale), 500):
            chunk = stale[start:start + 500]
            marks = ",".join("?" * len(chunk))
            conn.exec_driver_sql(f"DELETE FROM paper_search WHERE rowid IN ({marks})", tuple(chunk))
            conn.exec_driver_sql(f"INSERT INTO paper_search (rowid, title, abstract) SELECT id, title, abstract FROM paper WHERE id IN ({marks})", tuple(chunk))
            conn.exec_driver_sql(f"DELETE FROM paper_search_stale WHERE paper_id IN ({marks})", tuple(chunk))
        added = conn.exec_driver_sql("INSERT INTO paper_search (rowid, title, abstract) SELECT id, title, abstract FROM paper "
                                     "WHERE id > ? ORDER BY id LIMIT ?", (mark, size)).rowcount
        if added:  # those rows went in as they are now: a note that one of them changed is moot
            top = conn.exec_driver_sql("SELECT max(rowid) FROM paper_search").scalar_one()
            conn.exec_driver_sql("DELETE FROM paper_search_stale WHERE paper_id > ? AND paper_id <= ?", (mark, top))
        conn.exec_driver_sql("COMMIT")
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    return len(stale) + max(added, 0)
