"""Alembic environment: runs against the engine digest.store hands over (never a URL from alembic.ini).

On PostgreSQL the migrations run under a transaction-scoped advisory lock: several hosts starting a new version at
once take turns, and each one after the first finds the schema at the head and does nothing. Without it the second
failed on `column "worker" of relation "delivery" already exists` while the first was upgrading.
"""

import hashlib
import logging

import sqlalchemy as sa
from alembic import context
from sqlmodel import SQLModel

from digest import models  # noqa: F401 - registers the tables on SQLModel.metadata
from digest.log import log_event
from digest.store.search import include_name

target_metadata = SQLModel.metadata
engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"
# The same key on every host: the first 8 bytes of a hash of a fixed name (digest.store.fleet keys its locks alike).
MIGRATE_LOCK = int.from_bytes(hashlib.sha256(b"digest:migrate").digest()[:8], "big", signed=True)


def wait_for_other_migrations(connection: sa.Connection) -> None:
    """Hold the migration lock until this transaction ends, waiting (and saying so) while another host holds it."""
    if connection.execute(sa.select(sa.func.pg_try_advisory_xact_lock(MIGRATE_LOCK))).scalar_one():
        return
    log_event(logging.getLogger("digest.store"), "schema-upgrade-waiting", logging.WARNING, note="another process is upgrading the database schema; waiting for it")
    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATE_LOCK)))


with engine.connect() as connection:
    if sqlite:
        # SQLite alters a table by copying it and dropping the old one; with foreign keys on, that DROP deletes (by
        # cascade) every row that points at the table. The pragma only takes effect outside a transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            if not sqlite:
                wait_for_other_migrations(connection)  # before alembic reads the version: after the wait it is the other's
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,  # SQLite alters tables by copy
                compare_type=True,
                include_name=include_name,  # the search index has no model (digest.store.search)
            )
            with context.begin_transaction():
                context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
