"""`digest backup` and `digest restore`: a consistent copy of the SQLite database, taken while the daemon, the web
pages or a run use it, and put back the same way.

SQLite's online backup API (sqlite3.Connection.backup) copies the database as one read transaction: under WAL the
writers go on, and the copy is the database at one instant, never a mix of before and after a run's commit (which a
`cp` of digest.db and its -wal can be). The copy is written beside the target under a temporary name, checked
(PRAGMA integrity_check), synced, and only then renamed over the target, for its owner alone. PostgreSQL databases
are pg_dump's job. A backup must not change the database it copies.

A restore writes the copy into the live database through the same API (the destination locked for writing while it
is written; the web pages' open connections see the restored database at their next transaction, and no stale -wal
is left to replay over it), after keeping the database it replaces as a backup beside it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import InputError, StoreError
from . import SCHEMA_REVISION, known_revisions

PG_DUMP_HINT = "on PostgreSQL use pg_dump and pg_restore: `pg_dump --format=custom --file=digest.dump DBNAME`; see docs/deployment.md#backups"


KNOWN_REVISIONS_HINT = "upgrade digest to the version that made the backup (or a newer one), then restore"


@dataclass(frozen=True)
class Backup:
    """What `backup_sqlite` wrote: where, how many bytes, and what it holds."""

    path: Path
    size: int
    papers: int
    subscribers: int
    revision: str


def backup_target(target: Path, now: datetime) -> Path:
    """The file a backup goes to: `target` itself, or in a directory a name with the time (digest-YYYYmmdd-HHMMSS.db),
    so a cron line can keep one file a day."""
    if target.is_dir():
        return target / f"digest-{now:%Y%m%d-%H%M%S}.db"
    return target


def backup_sqlite(source: Path, target: Path, *, replace: bool = False) -> Backup:
    """Copy the SQLite database `source` to the file `target`, consistently, while others use it."""
    if not source.is_file():
        raise StoreError(f"no database at {source}", "check DIGEST_HOME and database_url; `digest init` creates one")
    if not target.parent.is_dir():
        raise InputError(f"cannot write {target}: {target.parent} is not a directory", "give a file in an existing directory, or a directory")
    if target.exists() and target.resolve() == source.resolve():
        raise InputError(f"{target} is the database itself", "give another file or a directory")
    if target.exists() and not replace:
        raise InputError(f"{target} exists", "give another name or a directory, or --force to replace it")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        # 0600 from the first byte (the copy holds the subscribers' addresses), and never over a file that appeared.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        # Read only: a backup must not create, migrate or checkpoint the database it copies.
        with contextlib.closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as src, \
                contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise StoreError(f"the copy of {source} fails SQLite's integrity check: {problems[0]}",
                                 "the database itself may be damaged: run `sqlite3 digest.db 'PRAGMA integrity_check'`")
            papers, subscribers, revision = _contents(dst)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source} to {target}: {exc}") from None
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}", "check the directory's free space and permissions") from None
    finally:
        partial.unlink(missing_ok=True)
    return Backup(target, target.stat().st_size, papers, subscribers, revision)


def _contents(db: sqlite3.Connection) -> tuple[int, int, str]:
    """Papers, subscribers and the migration of a digest database (a file that is not one is refused)."""
    try:
        papers = db.execute("SELECT count(*) FROM paper").fetchone()[0]
        subscribers = db.execute("SELECT count(*) FROM subscriber").fetchone()[0]
        revision = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"not a digest database: {exc}", "check database_url") from None
    return papers, subscribers, revision[0] if revision else "none"


@dataclass(frozen=True)
class Restored:
    """What `restore_sqlite` put in place, and where the database it replaced was kept (None: there was none)."""

    papers: int
    subscribers: int
    revision: str
    kept: Backup | None


def restore_sqlite(copy: Path, database: Path, *, now: datetime) -> Restored:
    """Put the backup `copy` in place of the SQLite database `database`, keeping the database it replaces beside it
    (digest.db.before-restore-YYYYmmdd-HHMMSS). The caller holds the run lock (no run writes meanwhile) and upgrades
    the schema afterwards when the copy is older. A copy made by a newer digest (a migration this one does not know)
    is refused before anything is written."""
    if not copy.is_file():
        raise InputError(f"no backup at {copy}", "give a file `digest backup` wrote")
    if database.exists() and copy.resolve() == database.resolve():
        raise InputError(f"{copy} is the database itself", "give a backup file")
    try:
        with contextlib.closing(sqlite3.connect(f"{copy.resolve().as_uri()}?mode=ro", uri=True)) as src:
            problems = [row[0] for row in src.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise StoreError(f"{copy} fails SQLite's integrity check: {problems[0]}", "restore another backup")
            papers, subscribers, revision = _contents(src)
            if revision not in known_revisions():  # the rule every command applies to a database (newer_schema)
                raise StoreError(f"{copy} was made by a newer digest (migration {revision}; this one knows up to {SCHEMA_REVISION})",
                                 KNOWN_REVISIONS_HINT)
            kept = None
            if database.exists():
                kept = backup_sqlite(database, database.with_name(f"{database.name}.before-restore-{now:%Y%m%d-%H%M%S}"))
            with contextlib.closing(sqlite3.connect(database, timeout=30)) as live:
                src.backup(live)
                if [row[0] for row in live.execute("PRAGMA integrity_check")] != ["ok"]:
                    raise StoreError(f"{database} fails SQLite's integrity check after the restore",
                                     f"the database it replaced is kept as {kept.path if kept else 'nothing'}")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot restore {copy}: {exc}", "give a file `digest backup` wrote") from None
    return Restored(papers, subscribers, revision, kept)
