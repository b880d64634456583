"""`digest backup` on real SQLite files: a copy that digest can use as its database, taken while another connection
holds uncheckpointed commits in the WAL; refusals that leave every file as it was."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest


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


@pytest.mark.parametrize("case", ["the-database-itself", "missing-directory", "not-a-digest-database", "no-database", "postgresql"])
def test_backup_refuses_with_one_line_and_writes_nothing(cli, home: Path, tmp_path: Path, case: str) -> None:
    args, env = [], {}
    target = tmp_path / "copy.db"
    if case != "no-database":
        assert cli("init").exit_code == 0
    if case == "the-database-itself":
        target = home / "digest.db"
        args = ["--force"]
    elif case == "missing-directory":
        target = tmp_path / "nowhere" / "copy.db"
    elif case == "not-a-digest-database":
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
        env = {"DIGEST_DATABASE_URL": f"sqlite:///{other}"}
    elif case == "postgresql":
        env = {"DIGEST_DATABASE_URL": "postgresql+psycopg://digest:hunter2hunter2@db.internal/digest"}
    before = sorted(p.name for p in tmp_path.iterdir())
    result = cli("backup", str(target), *args, env=env)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    expected = {
        "the-database-itself": f"{target} is the database itself",
        "missing-directory": f"cannot write {target}: {target.parent} is not a directory",
        "not-a-digest-database": "not a digest database: no such table: paper",
        "no-database": f"no database at {home / 'digest.db'}",
        "postgresql": "digest backup copies a SQLite file, and database_url is postgresql+psycopg://digest:***@db.internal/digest "
                      "(back up PostgreSQL with pg_dump",
    }[case]
    assert expected in result.output and "hunter2" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no copy, no partial file
    if case == "no-database":
        assert list(home.iterdir()) == []  # and no database made by looking
