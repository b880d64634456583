"""Alembic migrations on SQLite and PostgreSQL: the newest revision builds exactly the tables of digest.models, and
a database made at an older revision upgrades in place without losing a row or a link between rows."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from digest.models import Paper
from digest.sources.clean import MAX_KEY, paper_key
from digest.sources.parse import parse_source
from digest.store import SCHEMA_REVISION, _alembic_config, ensure_ready, init_db, open_engine, schema_is_current
from digest.store.editions import sent_edition
from digest.store.papers import upsert_papers
from digest.store.search import PAPER_TRIGGERS, include_name, search_papers

NOW = datetime(2026, 8, 13, 21, 0, tzinfo=timezone.utc)


@pytest.fixture
def bare_engine(db_url):
    engine = open_engine(db_url)
    yield engine
    engine.dispose()


def test_init_db_builds_the_tables_of_the_models(bare_engine):
    init_db(bare_engine)
    with bare_engine.connect() as conn:
        # The search index (an FTS5 table, a GIN index on an expression) has no model: see digest.store.search.
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        assert compare_metadata(context, SQLModel.metadata) == []


def test_schema_revision_is_alembics_one_head(bare_engine):
    heads = ScriptDirectory.from_config(_alembic_config(bare_engine)).get_heads()
    assert heads == [SCHEMA_REVISION], "a new migration: set digest.store.SCHEMA_REVISION to its revision"


def test_schema_is_current_only_at_the_newest_revision(bare_engine):
    assert not schema_is_current(bare_engine)  # no schema at all
    command.upgrade(_alembic_config(bare_engine), "0005")
    assert not schema_is_current(bare_engine)
    ensure_ready(bare_engine)  # what every command does first
    assert schema_is_current(bare_engine)
    with bare_engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_heads() == (SCHEMA_REVISION,)


def _insert_at_0001(conn, long_key: str | None) -> None:
    """One of each kind of row, as digest 0.1 stored them (every column given, as the old code wrote them)."""
    stamp = "2026-08-01 10:00:00" if conn.dialect.name == "sqlite" else NOW
    run = lambda sql, **values: conn.execute(sa.text(sql), values)  # noqa: E731
    run("INSERT INTO source (id, name, kind, url, enabled, created_at, consecutive_errors, last_fetch_count, papers_seen) "
        "VALUES (1, 'arxiv:cs.LG', 'arxiv-rss', 'https://rss.arxiv.org/rss/cs.LG', true, :t, 0, 2, 2)", t=stamp)
    keys = ["arxiv:2401.00001", "doi:10.1234/short"] + ([long_key] if long_key else [])
    for number, key in enumerate(keys, 1):
        run("INSERT INTO paper (id, key, ident, arxiv_id, version, doi, title, abstract, authors, categories, upvotes, "
            "first_seen, last_seen) VALUES (:id, :key, :ident, NULL, 1, NULL, :title, 'About it.', '[\"Ana\"]', '[\"cs.LG\"]', 0, :t, :t)",
            id=number, key=key, ident=f"ident-{number}", title=f"Paper {number}", t=stamp)
        run("INSERT INTO paper_source (paper_id, source_id, item_id, first_seen) VALUES (:p, 1, :i, :t)", p=number, i=f"item-{number}", t=stamp)
    run("INSERT INTO subscriber (id, email, name, status, interests, seed_papers, muted_terms, muted_authors, categories, "
        "max_papers, trending_weight, send_at, tz, frequency, consecutive_bounces, token_version, created_at) VALUES "
        "(1, 'ada@example.org', 'Ada', 'active', '[]', '[]', '[]', '[]', '[]', 10, 0.2, '07:00', 'UTC', 'daily', 0, 1, :t)", t=stamp)
    run("INSERT INTO delivery (id, subscriber_id, edition, state, attempts, papers, created_at) VALUES (1, 1, '2026-08-01', 'sent', 1, '[1, 2]', :t)", t=stamp)
    run("INSERT INTO feedback (subscriber_id, paper_id, value, created_at) VALUES (1, 1, 1, :t)", t=stamp)
    run("INSERT INTO sent_paper (subscriber_id, paper_id, delivery_id, sent_at) VALUES (1, 2, 1, :t)", t=stamp)
    if conn.dialect.name == "postgresql":  # ids given by hand: move the sequences past them, as inserts would have
        for table in ("source", "paper", "subscriber", "delivery"):
            run(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")


def _counts(conn) -> dict[str, int]:
    return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("paper", "source", "paper_source", "subscriber", "delivery", "feedback", "sent_paper")}


def test_upgrade_from_0001_keeps_every_row_and_link(bare_engine):
    sqlite = bare_engine.dialect.name == "sqlite"
    # A key longer than 512 characters could only be stored on SQLite (PostgreSQL enforced VARCHAR(512)).
    long_doi = "10.1234/" + "d" * 600
    command.upgrade(_alembic_config(bare_engine), "0001")
    with bare_engine.begin() as conn:
        _insert_at_0001(conn, f"doi:{long_doi}" if sqlite else None)
        before = _counts(conn)
    init_db(bare_engine)  # what `digest init` (or any command, via ensure_ready) does to an older database
    with bare_engine.connect() as conn:
        assert _counts(conn) == before
        assert conn.execute(sa.text("SELECT name, last_fetch_skipped FROM source")).all() == [("arxiv:cs.LG", 0)]
        joined = conn.execute(sa.text("SELECT p.key, s.paper_id FROM sent_paper s JOIN paper p ON p.id = s.paper_id")).all()
        assert joined == [("doi:10.1234/short", 2)]
        assert conn.execute(sa.text("SELECT count(*) FROM paper_source ps JOIN paper p ON p.id = ps.paper_id")).scalar_one() == before["paper"]
        if sqlite:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            keys = [k for (k,) in conn.execute(sa.text("SELECT key FROM paper ORDER BY id"))]
            assert keys[2] == paper_key(None, long_doi, "") and len(keys[2]) == MAX_KEY
    # Values the old columns refused on PostgreSQL now fit; the rewritten long key still matches its paper.
    link, doi = "https://example.org/" + "a" * 651, "10.5555/" + "x" * 300
    feed = (f'<rss version="2.0" xmlns:prism="http://prismstandard.org/namespaces/basic/2.0/"><channel><title>J</title>'
            f"<item><title>Long link</title><link>{link}</link></item>"
            f"<item><title>Long DOI</title><link>https://example.org/b</link><prism:doi>{doi}</prism:doi></item>"
            + (f"<item><title>Paper 3</title><link>https://example.org/c</link><prism:doi>{long_doi}</prism:doi></item>" if sqlite else "")
            + "</channel></rss>").encode()
    report = upsert_papers(bare_engine, 1, parse_source("feed", feed).papers, NOW)
    assert (report.new, report.updated + report.unchanged, report.skipped) == (2, 1 if sqlite else 0, [])
    with bare_engine.connect() as conn:
        stored = dict(conn.execute(sa.select(Paper.ident, Paper.doi).where(Paper.title.in_(["Long link", "Long DOI"]))).all())
    assert stored == {link: None, doi: doi}


def test_upgrade_from_0003_adds_the_embedding_tables_and_keeps_every_row(bare_engine):
    from digest.models import InterestEmbedding, PaperEmbedding

    command.upgrade(_alembic_config(bare_engine), "0001")
    with bare_engine.begin() as conn:
        _insert_at_0001(conn, None)
    command.upgrade(_alembic_config(bare_engine), "0003")
    with bare_engine.connect() as conn:
        before = _counts(conn)
    init_db(bare_engine)
    with bare_engine.begin() as conn:
        assert _counts(conn) == before
        conn.execute(sa.insert(PaperEmbedding).values(paper_id=1, model="m", text_hash="h", vector=b"\0" * 8, created_at=NOW))
        conn.execute(sa.insert(InterestEmbedding).values(subscriber_id=1, model="m", interests_hash="h", vectors=b"", created_at=NOW))
    with bare_engine.begin() as conn:  # a paper or subscriber deleted takes its embeddings along
        conn.execute(sa.text("DELETE FROM sent_paper"))
        conn.execute(sa.text("DELETE FROM feedback"))
        conn.execute(sa.text("DELETE FROM paper_source WHERE paper_id = 1"))
        conn.execute(sa.text("DELETE FROM paper WHERE id = 1"))
        conn.execute(sa.text("DELETE FROM subscriber WHERE id = 1"))
        assert conn.execute(sa.text("SELECT count(*) FROM paper_embedding")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM interest_embedding")).scalar_one() == 0


def test_upgrade_to_0005_keeps_deliveries_and_makes_old_papers_searchable(bare_engine):
    command.upgrade(_alembic_config(bare_engine), "0004")
    with bare_engine.begin() as conn:
        _insert_at_0001(conn, None)  # papers "Paper 1" and "Paper 2", both "About it."; a sent delivery of both
    init_db(bare_engine)
    with bare_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT papers, contents FROM delivery")).one() in (("[1, 2]", None), ([1, 2], None))
    found = search_papers(bare_engine, "paper")  # the index of an upgraded SQLite database fills on first search
    assert sorted(c.paper.title for c in found.papers) == ["Paper 1", "Paper 2"] and found.total == 2
    assert sent_edition(bare_engine, 1, "2026-08-01").papers == [1, 2]


def test_newest_revision_keeps_the_search_triggers_on_sqlite(sqlite_url):
    # A later migration that rebuilds the paper table (SQLite batch mode copies it) drops its triggers: it must make
    # them again, or SQLite's search index would miss changed titles and deleted papers.
    engine = open_engine(sqlite_url)
    init_db(engine)
    with engine.connect() as conn:
        triggers = {name for (name,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'paper'")}
    engine.dispose()
    assert triggers == set(PAPER_TRIGGERS)
