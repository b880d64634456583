"""Alembic environment: runs against the engine digest.store hands over (never a URL from alembic.ini)."""

from alembic import context
from sqlmodel import SQLModel

from digest import models  # noqa: F401 - registers the tables on SQLModel.metadata
from digest.store.search import include_name

target_metadata = SQLModel.metadata
engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"

with engine.connect() as connection:
    if sqlite:
        # SQLite alters a table by copying it and dropping the old one; with foreign keys on, that DROP deletes (by
        # cascade) every row that points at the table. The pragma only takes effect outside a transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
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
