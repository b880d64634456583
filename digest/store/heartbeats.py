"""The heartbeat table's one write: a host's row for a kind of job (daemon, run, send, worker), upserted in one
statement. Cheap by design: no read first, so on SQLite the write lock is taken by the statement and released at
its commit, never held across anything else. It must not decide what a row means (digest.health does) nor swallow
an error (its callers log and ignore one: a heartbeat never stops a tick or a run).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..models import Heartbeat, table_of
from . import dialect_insert, wrap_db_error

KINDS = ("daemon", "run", "send", "worker")
OUTCOMES = ("ok", "failed")
ERROR_CHARS = 1000  # a failed job's error, cut: `digest status` prints it on one line
CHANGES = frozenset({"tick_seconds", "started_at", "finished_at", "outcome", "error", "stopped_at"})

_heartbeat = table_of(Heartbeat)


def record_heartbeat(engine: Engine, kind: str, host: str, pid: int, now: datetime, **changes: object) -> None:
    """Upsert the row of (`kind`, `host`): seen at `now` by `pid`, with `changes` (any of CHANGES) set; the other
    columns keep what they held. StoreError when the database refuses it."""
    if kind not in KINDS:
        raise ValueError(f"unknown heartbeat kind {kind!r}")
    if unknown := set(changes) - CHANGES:
        raise ValueError(f"not a heartbeat column: {', '.join(sorted(unknown))}")
    if changes.get("outcome") not in (None, *OUTCOMES):
        raise ValueError(f"unknown outcome {changes['outcome']!r}")
    if isinstance(error := changes.get("error"), str):
        changes["error"] = error[:ERROR_CHARS]
    values = {"pid": pid, "seen_at": now, **changes}
    statement = dialect_insert(engine.dialect.name)(_heartbeat).values(kind=kind, host=host[:255], **values)
    statement = statement.on_conflict_do_update(index_elements=["kind", "host"], set_=values)
    try:
        with engine.begin() as conn:
            conn.execute(statement)
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
