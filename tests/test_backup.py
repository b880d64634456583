"""`digest backup` and `digest restore` on real SQLite files: a copy that digest can use as its database, taken while
another connection holds uncheckpointed commits in the WAL; a restore under a connection that stays open, as the web
pages' do; refusals that leave every file as it was."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from alembic import command

from digest.pipeline.job import run_lock
from digest.store import SCHEMA_REVISION, _alembic_config, open_engine


@pytest.fixture
def demo_home(cli, home: Path) -> Path:
    assert cli("--home", str(home), "demo").exit_code == 0  # a demo's database, subscribers and papers in DIGEST_HOME
    return home


def counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM paper").fetchone()[0], db.execute("SELECT count(*) FROM subscriber").fetchone()[0]


def test_backup_into_a_directory_is_a_private_database_digest_can_use(cli, demo_home: Path, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    result = cli("backup", str(backups))
    assert result.exit_code == 0, result.output
    [copy] = backups.iterdir()
    assert copy.name.startswith("digest-") and copy.suffix == ".db"
    papers, subscribers = counts(demo_home / "digest.db")
    with sqlite3.connect(demo_home / "digest.db") as db:
        [(revision,)] = db.execute("SELECT version_num FROM alembic_version")
    assert result.output == (f"backed up {demo_home / 'digest.db'} to {copy}: {copy.stat().st_size / 1e6:.1f} MB, {papers:,} papers, "
                             f"{subscribers:,} subscribers (migration {revision}, integrity ok)\n")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert [p.name for p in backups.iterdir()] == [copy.name]  # no -wal beside it, no partial file left
    # Restored: the copy in a new home's database place serves the same subscribers.
    restored = tmp_path / "restored"
    restored.mkdir()
    copy.rename(restored / "digest.db")
    listed = cli("--home", str(restored), "subscribers", "list")
    assert listed.exit_code == 0 and listed.output == cli("subscribers", "list").output


def test_backup_holds_what_is_committed_but_still_in_the_wal(cli, demo_home: Path, tmp_path: Path) -> None:
    # A connection that stays open keeps its commit in digest.db-wal (no checkpoint on close): a copy of digest.db
    # alone would not have it.
    writer = sqlite3.connect(demo_home / "digest.db")
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE subscriber SET name = 'renamed after the last checkpoint'")
        writer.commit()
        assert (demo_home / "digest.db-wal").stat().st_size > 0
        assert cli("backup", str(tmp_path / "copy.db")).exit_code == 0
    finally:
        writer.close()
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert {name for (name,) in copy.execute("SELECT name FROM subscriber")} == {"renamed after the last checkpoint"}


def test_backup_replaces_an_existing_file_only_with_force(cli, demo_home: Path, tmp_path: Path) -> None:
    target = tmp_path / "copy.db"
    target.write_bytes(b"yesterday's backup")
    refused = cli("backup", str(target))
    assert refused.exit_code == 1
    assert refused.output == f"error: {target} exists (give another name or a directory, or --force to replace it)\n"
    assert target.read_bytes() == b"yesterday's backup"
    assert cli("backup", str(target), "--force").exit_code == 0
    assert counts(target) == counts(demo_home / "digest.db")


@pytest.mark.parametrize("case", ["the-database-itself", "missing-directory", "missing-directory-with-slash", "not-a-digest-database", "no-database",
                                  "postgresql"])
def test_backup_refuses_with_one_line_and_writes_nothing(cli, home: Path, tmp_path: Path, case: str) -> None:
    args, env, slash = [], {}, ""
    target = tmp_path / "copy.db"
    if case != "no-database":
        assert cli("init").exit_code == 0
    if case == "the-database-itself":
        target = home / "digest.db"
        args = ["--force"]
    elif case == "missing-directory":
        target = tmp_path / "nowhere" / "copy.db"
    elif case == "missing-directory-with-slash":  # `digest backup /var/backups/digest/` before the directory is made
        target, slash = tmp_path / "backups", "/"
    elif case == "not-a-digest-database":
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
        env = {"DIGEST_DATABASE_URL": f"sqlite:///{other}"}
    elif case == "postgresql":
        env = {"DIGEST_DATABASE_URL": "postgresql+psycopg://digest:hunter2hunter2@db.internal/digest"}
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("backup", str(target) + slash, *args, env=env)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    expected = {
        "the-database-itself": f"{target} is the database itself",
        "missing-directory": f"cannot write {target}: {target.parent} is not a directory",
        "missing-directory-with-slash": f"cannot write into {target}/: no such directory (make it first, or give a file name)",
        "not-a-digest-database": "not a digest database: no such table: paper",
        "no-database": f"no database at {home / 'digest.db'}",
        "postgresql": "digest backup works on a SQLite file, and database_url is postgresql+psycopg://digest:***@db.internal/digest "
                      "(on PostgreSQL use pg_dump and pg_restore",
    }[case]
    assert expected in result.output and "hunter2" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no copy, no partial file
    if case == "no-database":
        assert list(home.iterdir()) == []  # and no database made by looking


def names(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {email for (email,) in db.execute("SELECT email FROM subscriber")}


def test_restore_puts_the_backup_back_under_an_open_connection_and_keeps_what_it_replaced(cli, demo_home: Path, tmp_path: Path) -> None:
    database = demo_home / "digest.db"
    before = names(database)
    assert cli("backup", str(tmp_path / "copy.db")).exit_code == 0
    assert cli("subscribers", "remove", "ada@example.org", "--yes").exit_code == 0  # the mistake the backup undoes
    removed = names(database)
    assert removed != before
    web = sqlite3.connect(database)  # a connection that stays open across the restore, as the web pages' pool does
    try:
        result = cli("restore", str(tmp_path / "copy.db"))
        assert result.exit_code == 0, result.output
        [kept] = demo_home.glob("digest.db.before-restore-*")
        assert result.output == (f"restored {tmp_path / 'copy.db'} to {database}: {counts(database)[0]:,} papers, {len(before)} subscribers; "
                                 f"the database it replaced is kept as {kept}\n")
        assert {email for (email,) in web.execute("SELECT email FROM subscriber")} == before  # the open connection sees it
    finally:
        web.close()
    assert names(kept) == removed and stat.S_IMODE(kept.stat().st_mode) == 0o600
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert cli("subscribers", "list").output.count("@") == len(before)


@pytest.mark.parametrize("existing", [True, False], ids=["over-a-database", "on-a-new-machine"])
def test_restore_upgrades_a_backup_from_an_older_version(cli, home: Path, tmp_path: Path, existing: bool) -> None:
    old = tmp_path / "old.db"
    engine = open_engine(f"sqlite:///{old}")
    command.upgrade(_alembic_config(engine), "0004")  # a database as version 0004's digest left it
    engine.dispose()
    if existing:
        assert cli("init").exit_code == 0
    result = cli("restore", str(old))
    assert result.exit_code == 0, result.output
    upgraded = f"restored {old} to {home / 'digest.db'}: 0 papers, 0 subscribers, upgraded from migration 0004 to {SCHEMA_REVISION}"
    if existing:
        assert result.output.startswith(f"{upgraded}; the database it replaced is kept as {home}/digest.db.before-restore-")
    else:
        assert result.output == f"{upgraded}\n"
        assert stat.S_IMODE((home / "digest.db").stat().st_mode) == 0o600
    with sqlite3.connect(home / "digest.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (SCHEMA_REVISION,)


@pytest.mark.parametrize("case", ["newer-version", "not-a-database", "missing", "run-in-progress"])
def test_restore_refuses_with_one_line_and_leaves_the_database_as_it_was(cli, demo_home: Path, tmp_path: Path, case: str) -> None:
    database = demo_home / "digest.db"
    copy = tmp_path / "copy.db"
    assert cli("backup", str(copy)).exit_code == 0
    if case == "newer-version":
        with sqlite3.connect(copy) as db:
            db.execute("UPDATE alembic_version SET version_num = '9999'")
    elif case == "not-a-database":
        copy.write_bytes(b"not a database, though named like one" * 200)
    elif case == "missing":
        copy.unlink()
    original = database.read_bytes()
    listed = cli("subscribers", "list").output
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another run (the daemon's tick, cron's) in progress
        from digest.config import load_settings

        with run_lock(load_settings(str(demo_home))):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    if case == "run-in-progress":
        holder.start()
        assert held.wait(10)
    try:
        result = cli("restore", str(copy))
    finally:
        release.set()
        if holder.is_alive():
            holder.join()
    assert result.exit_code == (75 if case == "run-in-progress" else 1)
    expected = {
        "newer-version": f"error: {copy} was made by a newer digest (migration 9999; this one knows up to {SCHEMA_REVISION})",
        "not-a-database": f"error: cannot restore {copy}: file is not a database",
        "missing": f"no backup at {copy}",
        "run-in-progress": "another digest run holds the lock",
    }[case]
    assert expected in result.output and result.output.count("\n") == 1, result.output
    assert list(demo_home.glob("digest.db.before-restore-*")) == []  # nothing kept: nothing was replaced
    assert cli("subscribers", "list").output == listed
    assert database.read_bytes() == original or case == "run-in-progress"
