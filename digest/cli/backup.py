"""`digest backup` and `digest restore`: a consistent copy of the SQLite database while digest runs, and putting one\nback; thin commands over digest.store.backup."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import redact_url
from ..errors import InputError, StoreError
from ..pipeline.job import run_lock
from ..store import SCHEMA_REVISION, init_db, open_engine, sqlite_file
from ..store.backup import PG_DUMP_HINT, backup_sqlite, backup_target, restore_sqlite
from . import AppContext, main, pass_app


@main.command()
@click.argument("target", type=click.Path())
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
@pass_app
def backup(app: AppContext, target: str, force: bool) -> None:
    """Copy the SQLite database to TARGET (a file, or a directory for digest-YYYYmmdd-HHMMSS.db in it).

    A TARGET ending in / is a directory, which must exist. Safe while the daemon, the web pages or a run use the
    database: the copy is the database at one instant, checked, readable by its owner alone. `digest restore` puts
    it back. For PostgreSQL, use pg_dump.
    """
    source = _sqlite_database(app, "backup")
    path = Path(target).expanduser()
    if target.endswith("/") and not path.is_dir():  # a directory meant, not made yet: never a file named like it
        raise InputError(f"cannot write into {target}: no such directory", "make it first, or give a file name")
    made = backup_sqlite(source, backup_target(path, app.now()), replace=force)
    click.echo(f"backed up {source} to {made.path}: {made.size / 1e6:.1f} MB, {made.papers:,} papers, {made.subscribers:,} subscribers "
               f"(migration {made.revision}, integrity ok)")


@main.command()
@click.argument("backup_file", metavar="BACKUP", type=click.Path(path_type=Path))
@pass_app
def restore(app: AppContext, backup_file: Path) -> None:
    """Put BACKUP (a file `digest backup` wrote) in place of the SQLite database.

    The database it replaces is kept beside it (digest.db.before-restore-YYYYmmdd-HHMMSS). Takes the run lock, so
    no run sends meanwhile; the web pages may stay up. A backup from an older version is upgraded; one from a
    newer version is refused. For PostgreSQL, use pg_restore.
    """
    database = _sqlite_database(app, "restore")
    settings = app.settings
    with run_lock(settings):
        done = restore_sqlite(backup_file.expanduser(), database, now=app.now())
        engine = open_engine(settings.database_url)
        try:
            init_db(engine)  # a backup made by an older version: its migrations, as `digest init` runs them
        finally:
            engine.dispose()
    kept = f"; the database it replaced is kept as {done.kept.path}" if done.kept else ""
    upgraded = f", upgraded from migration {done.revision} to {SCHEMA_REVISION}" if done.revision != SCHEMA_REVISION else ""
    click.echo(f"restored {backup_file} to {database}: {done.papers:,} papers, {done.subscribers:,} subscribers{upgraded}{kept}")


def _sqlite_database(app: AppContext, command: str) -> Path:
    """The SQLite file database_url names; PostgreSQL is pg_dump's and pg_restore's job."""
    database = sqlite_file(app.settings.database_url)
    if database is None:
        raise StoreError(f"digest {command} works on a SQLite file, and database_url is {redact_url(app.settings.database_url)}", PG_DUMP_HINT)
    return database
