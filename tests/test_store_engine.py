"""open_engine: what a database URL means, decided in one place (digest.store), before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from digest.errors import StoreError
from digest.store import describe, open_engine


@pytest.mark.parametrize("url", ["postgres://digest:pw@db.example.org:5432/papers", "postgresql://digest:pw@db.example.org:5432/papers"],
                         ids=["heroku-style", "no-driver"])
def test_open_engine_reads_postgres_urls_with_the_driver_digest_ships(url):
    engine = open_engine(url)  # no connection is made: the server does not need to exist
    assert engine.url.drivername == "postgresql+psycopg"
    assert describe(engine) == "postgresql+psycopg://digest:***@db.example.org:5432/papers"


def test_open_engine_refuses_a_relative_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreError, match=r"sqlite:///data/x\.db is a path relative to the current directory") as caught:
        open_engine("sqlite:///data/x.db")
    assert f"sqlite:///{tmp_path}/data/x.db" in str(caught.value)
    assert not (tmp_path / "data").exists()


def test_open_engine_expands_a_tilde_in_a_sqlite_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    engine = open_engine("sqlite:///~/digest/x.db")
    assert engine.url.database == str(tmp_path / "digest" / "x.db")
    with engine.connect():
        pass
    assert (tmp_path / "digest" / "x.db").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"], ids=["no-path", "memory"])
def test_open_engine_keeps_in_memory_sqlite(url):
    assert open_engine(url).url.database in (None, "", ":memory:")


def test_absolute_sqlite_path_is_unchanged(tmp_path):
    assert Path(open_engine(f"sqlite:///{tmp_path}/a.db").url.database) == tmp_path / "a.db"


def test_json_columns_load_empty_lists_fresh_and_the_rest_as_json(engine) -> None:
    """The engine decodes JSON columns with json.loads, "[]" without it: each load a new list (a caller may append
    to it), on SQLite and PostgreSQL."""
    from datetime import datetime, timezone

    from digest.store import session_scope
    from digest.store.subscribers import SubscriberInput, add_subscriber, list_subscribers

    now = datetime(2025, 1, 6, tzinfo=timezone.utc)
    with session_scope(engine) as session:
        add_subscriber(session, "a@example.org", SubscriberInput(interests=["graph neural networks", "\u00e9t\u00e9 \"quoted\""]), now=now)
        add_subscriber(session, "b@example.org", SubscriberInput(), now=now)
    with session_scope(engine) as session:
        a, b = sorted(list_subscribers(session), key=lambda s: s.email)
        assert a.interests == ["graph neural networks", "\u00e9t\u00e9 \"quoted\""] and b.interests == [] and b.muted_terms == []
        assert b.interests is not b.muted_terms and b.interests is not b.categories


@pytest.mark.parametrize("feature", [0, 1], ids=["json", "fts5"])
def test_init_db_names_a_sqlite_feature_it_lacks(tmp_path, monkeypatch, feature) -> None:
    """A SQLite library without JSON functions or FTS5 is refused before any table is made, with what is missing and
    what to do (a probe that fails stands in for such a library); nothing is half-written."""
    import digest.store
    from digest.store import check_sqlite_features, init_db

    check_sqlite_features(open_engine(f"sqlite:///{tmp_path / 'fine.db'}"))  # this SQLite (and CI's) has both
    features = list(digest.store.SQLITE_FEATURES)
    name, _ = features[feature]
    features[feature] = (name, ("SELECT no_such_function_here()",))
    monkeypatch.setattr(digest.store, "SQLITE_FEATURES", tuple(features))
    engine = open_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    with pytest.raises(StoreError, match=rf"has no {name.split(' (')[0]}") as raised:
        init_db(engine)
    assert "3.38" in (raised.value.hint or "")
    import sqlalchemy as sa

    assert sa.inspect(engine).get_table_names() == []
    engine.dispose()



def test_a_full_disk_is_named_with_what_to_do(tmp_path):
    """SQLite out of room (SQLITE_FULL: here its max_page_count, as a full file system gives it) said "database
    error ...: database or disk is full (check database_url and that the database is reachable and not locked)":
    the hint sent the operator to the wrong place. Now it names the full disk, where to look, and that the failed
    write left nothing behind."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from digest.ingest import import_file
    from digest.store import init_db, session_scope

    engine = open_engine(f"sqlite:///{tmp_path / 'digest.db'}")
    init_db(engine)
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    sa.event.listen(engine.pool, "connect", lambda dbapi, record: dbapi.execute(f"PRAGMA max_page_count = {pages + 2}"))
    engine.dispose()
    with pytest.raises(StoreError) as caught:
        import_file(engine, Path(__file__).parent.parent / "digest" / "data" / "sample-arxiv-cs.CL.xml", datetime.now(timezone.utc))
    said = str(caught.value)
    assert said.startswith(f"the database's disk is full (sqlite:///{tmp_path / 'digest.db'}): database or disk is full"), said
    assert caught.value.hint == f"free space on its disk (df -h {tmp_path}); the failed write left nothing behind, and the next run goes on from there"
    with session_scope(engine) as session:  # nothing half-written
        assert session.exec(sa.text("SELECT count(*) FROM paper")).scalar_one() == 0
