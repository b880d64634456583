"""`digest backup`: a consistent copy of the SQLite database while digest runs; a thin command over digest.store.backup."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import redact_url
from ..errors import StoreError
from ..store import sqlite_file
from ..store.backup import PG_DUMP_HINT, backup_sqlite, backup_target
from . import AppContext, main, pass_app


@main.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Replace TARGET if it exists.")
@pass_app
def backup(app: AppContext, target: Path, force: bool) -> None:
    """Copy the SQLite database to TARGET (a file, or a directory for digest-YYYYmmdd-HHMMSS.db in it).

    Safe while the daemon, the web pages or a run use the database: the copy is the database at one instant,
    checked, readable by its owner alone. Restore by stopping digest and putting the copy in the database's place.
    For PostgreSQL, use pg_dump.
    """
    source = sqlite_file(app.settings.database_url)
    if source is None:
        raise StoreError(f"digest backup copies a SQLite file, and database_url is {redact_url(app.settings.database_url)}", PG_DUMP_HINT)
    made = backup_sqlite(source, backup_target(target.expanduser(), app.now()), replace=force)
    click.echo(f"backed up {source} to {made.path}: {made.size / 1e6:.1f} MB, {made.papers:,} papers, {made.subscribers:,} subscribers "
               f"(migration {made.revision}, integrity ok)")
