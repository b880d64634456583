"""Alembic migrations on SQLite and PostgreSQL: the newest revision builds exactly the tables of digest.models, and
a database made at an older revision upgrades in place without losing a row or a link between rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlmodel import SQLModel

from digest.errors import StoreError
from digest.models import Paper
from digest.sources import ParsedPaper
from digest.sources.clean import MAX_KEY, bounded_key, paper_key
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


def test_upgrade_to_0011_bounds_long_item_ids_and_finds_entries_by_them(bare_engine):
    """0011 indexes paper_source (source_id, item_id), so a retitled feed entry is found by its guid; an item id
    stored whole before (2,000 characters, 4,000 bytes here: more than a PostgreSQL B-tree entry holds) is bounded
    as keys are, and a later fetch of the same guid still finds its paper."""
    guid = "https://journal.example.org/" + "ü" * 1_972
    command.upgrade(_alembic_config(bare_engine), "0008")
    with bare_engine.begin() as conn:
        _insert_at_0001(conn, None)
        conn.execute(sa.text("UPDATE paper SET key = 'title:speach recognition', title = 'Speach recognition' WHERE id = 2"))
        conn.execute(sa.text("UPDATE paper_source SET item_id = :guid WHERE paper_id = 2"), {"guid": guid})
        before = _counts(conn)
    init_db(bare_engine)
    with bare_engine.connect() as conn:
        assert _counts(conn) == before
        assert conn.execute(sa.text("SELECT item_id FROM paper_source WHERE paper_id = 2")).scalar_one() == bounded_key(guid)
    indexes = {index["name"] for index in sa.inspect(bare_engine).get_indexes("paper_source")}
    assert {"ix_paper_source_item", "ix_paper_source_paper_id"} <= indexes and "ix_paper_source_source_id" not in indexes
    fixed = ParsedPaper(key="title:speech recognition", ident=guid, title="Speech recognition", item_id=guid)
    report = upsert_papers(bare_engine, 1, [fixed], NOW + timedelta(days=1))  # the next fetch
    assert (report.new, report.updated, report.skipped) == (0, 1, [])
    with bare_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT key, title FROM paper WHERE id = 2")).one() == ("title:speech recognition", "Speech recognition")


def test_upgrade_to_0012_keeps_every_subscriber_and_indexes_when_profiles_changed(bare_engine):
    """0012 adds subscriber.profile_changed_at (NULL for the rows already there: `digest prune` reads their seed lists
    in its one full read) and its index; a downgrade drops both and keeps every row."""
    command.upgrade(_alembic_config(bare_engine), "0011")
    with bare_engine.begin() as conn:
        _insert_at_0001(conn, None)
        before = _counts(conn)
    init_db(bare_engine)
    with bare_engine.connect() as conn:
        assert _counts(conn) == before
        assert conn.execute(sa.text("SELECT count(*) FROM subscriber WHERE profile_changed_at IS NOT NULL")).scalar_one() == 0
    assert "ix_subscriber_profile_changed_at" in {index["name"] for index in sa.inspect(bare_engine).get_indexes("subscriber")}
    command.downgrade(_alembic_config(bare_engine), "0011")
    with bare_engine.connect() as conn:
        assert _counts(conn) == before
    assert "profile_changed_at" not in {column["name"] for column in sa.inspect(bare_engine).get_columns("subscriber")}


def test_newest_revision_keeps_the_search_triggers_on_sqlite(sqlite_url):
    # A later migration that rebuilds the paper table (SQLite batch mode copies it) drops its triggers: it must make
    # them again, or SQLite's search index would miss changed titles and deleted papers.
    engine = open_engine(sqlite_url)
    init_db(engine)
    with engine.connect() as conn:
        triggers = {name for (name,) in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'paper'")}
    engine.dispose()
    assert triggers == set(PAPER_TRIGGERS)


def test_hosts_upgrading_at_once_take_turns_and_each_succeeds(postgres_url, tmp_path):
    """Two hosts start a new version (`digest status`, which upgrades as every command does) against a database at an
    older migration at the same instant. Before, both read the old revision, both ran migration 0006, and the second
    exited 1 on `column "worker" of relation "delivery" already exists`. The delivery table is locked from outside
    until both processes are waiting, so their upgrades overlap whatever the machine's speed."""
    import os
    import subprocess
    import sys
    import time

    engine = open_engine(postgres_url)
    command.upgrade(_alembic_config(engine), "0005")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    holder = engine.connect()
    try:
        holder.execute(sa.text("LOCK TABLE delivery IN ACCESS EXCLUSIVE MODE"))
        hosts = []
        for host in ("a", "b"):
            (tmp_path / host).mkdir()
            hosts.append(subprocess.Popen([sys.executable, "-m", "digest", "status"], env={**env, "DIGEST_HOME": str(tmp_path / host), "DIGEST_DATABASE_URL": postgres_url},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        deadline = time.monotonic() + 60
        waiting = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        with engine.connect() as probe:
            while probe.execute(waiting).scalar_one() < 2:
                probe.rollback()  # pg_stat_activity is read once per transaction
                assert time.monotonic() < deadline and all(p.poll() is None for p in hosts), [p.poll() for p in hosts]
                time.sleep(0.05)
        holder.rollback()  # the table free: the first upgrade goes on
    finally:
        holder.close()
    outputs = [p.communicate(timeout=120)[0] for p in hosts]
    assert [p.returncode for p in hosts] == [0, 0], outputs
    assert sum("event=schema-upgrade-waiting" in out for out in outputs) == 1, outputs  # the second one said why it waited
    assert schema_is_current(engine)
    engine.dispose()


def test_an_older_digest_refuses_a_newer_database_and_changes_nothing(bare_engine):
    """A host still on an older digest, against a database a newer one upgraded: one clear error, not alembic's
    "Can't locate revision" traceback reported as a bug in digest, and nothing written."""
    init_db(bare_engine)
    with bare_engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        before = _counts(conn)
    with pytest.raises(StoreError) as caught:
        ensure_ready(bare_engine)
    assert "schema revision 0099, newer than this digest knows (up to " + SCHEMA_REVISION in str(caught.value)
    assert "install on this host the digest version the other hosts run" in caught.value.hint
    with bare_engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0099"
        assert _counts(conn) == before


def test_cli_on_a_newer_database_exits_1_with_one_line(cli, sqlite_url):
    engine = open_engine(sqlite_url)
    init_db(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    for command_ in (("send",), ("status",), ("subscribers", "list")):
        result = cli(*command_)
        assert result.exit_code == 1, (command_, result.output)
        assert "Traceback" not in result.output and "bug in digest" not in result.output
        assert result.output.count("\n") == 1 and "schema revision 0099, newer than this digest knows" in result.output, result.output


def test_upgrade_to_0010_stores_the_search_vector_that_postgresql_ranks_by(postgres_url):
    """0005's index was on an expression: it found the matches, but ts_rank parsed each match's title and abstract
    again (33 s for "learning" on 40 days of arXiv). 0010 stores the vector; papers stored before it are found
    through its index, and a changed abstract is found by its new words (the column is generated)."""
    engine = open_engine(postgres_url)
    command.upgrade(_alembic_config(engine), "0009")
    with engine.begin() as conn:
        _insert_at_0001(conn, None)  # papers "Paper 1" and "Paper 2", both "About it."
    init_db(engine)
    assert sorted(p.paper.title for p in search_papers(engine, "paper").papers) == ["Paper 1", "Paper 2"]
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE paper SET abstract = 'Quantum annealing of spin glasses.' WHERE title = 'Paper 2'"))
        conn.execute(sa.text("SET LOCAL enable_seqscan = off"))  # two rows: make the planner show the index it can use
        plan = "\n".join(conn.execute(sa.text("EXPLAIN SELECT id FROM paper WHERE search_vector @@ plainto_tsquery('english', 'annealing')")).scalars())
    assert "ix_paper_search" in plan
    assert [p.paper.title for p in search_papers(engine, "annealing spin").papers] == ["Paper 2"]
    engine.dispose()
