"""The only place that opens the database: engine, schema (via Alembic), sessions and error wrapping.

Queries and writes live in the submodules, one per kind of record (papers, subscribers, deliveries).
Nothing here knows about feeds, ranking, email or the web.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlmodel import Session

from ..config import BARE_SCHEME, mask_secrets, redact_url, url_secrets
from ..errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 10_000


URL_HINT = "a database URL looks like postgresql+psycopg://user:password@host:5432/name or sqlite:////path/to/digest.db"


def open_engine(url: str, *, create_dir: bool = True) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and enforced foreign keys.

    Every error names the URL with its password cut out (redact_url), typo or not: the message of a parse
    error is not shown, since SQLAlchemy quotes the piece it could not read (a password, when the '@' is
    missing)."""
    shown = redact_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"database_url {shown} is not a database URL{_missing_slashes(url)}", URL_HINT) from None
    except (ValueError, TypeError):  # the port is not a number (or the '@' before the host is missing)
        raise StoreError(f"database_url {shown} is not a valid database URL: the part after the host's ':' is not a port number", URL_HINT) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "postgres"):  # a typo (sqlit://), or MySQL: no driver would help
        raise StoreError(f"database_url {shown}: digest works with SQLite and PostgreSQL, not {parsed.get_backend_name()}", URL_HINT)
    if parsed.drivername in POSTGRES_SCHEMES:
        # postgres:// (Heroku, Render, Fly.io) and a bare postgresql:// would ask SQLAlchemy for psycopg2, which
        # digest does not install: the same server, through the driver of the `postgres` extra.
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict = {"future": True, "json_deserializer": _json_loads}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parsed = parsed.set(database=_sqlite_path(database, shown))
            database = parsed.database or ""
        if database and database != ":memory:" and create_dir:
            try:
                folder = Path(database).expanduser().parent
                folder.mkdir(parents=True, exist_ok=True)
            except (OSError, ValueError) as exc:  # DIGEST_HOME under a file, on a read-only or missing mount...
                raise StoreError(f"cannot create {Path(database).parent} for the database: {getattr(exc, 'strerror', None) or exc}", "check DIGEST_HOME (or database_url) and its permissions") from None
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreError(f"no driver for {parsed.get_backend_name()}: {mask_secrets(str(exc), url_secrets(url))}", "for PostgreSQL: pip install 'digest[postgres]'") from None
    except Exception as exc:  # noqa: BLE001 - an argument the dialect refuses; its message may quote the URL
        raise StoreError(f"database_url {shown} cannot be used: {mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, url_secrets(url))}", URL_HINT) from None
    if parsed.get_backend_name() == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001 - DB-API objects
            cur = dbapi_conn.cursor()
            # WAL lets the web front read while a run writes; busy_timeout waits instead of failing.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            # 64 MB of page cache (default 2 MB): a bulk import updates five indexes of paper at random places.
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

    return engine


POSTGRES_SCHEMES = ("postgres", "postgresql")


def _missing_slashes(url: str) -> str:
    """What a URL typed without '//' after its scheme (sqlite:/x.db, which SQLAlchemy cannot parse) most likely meant,
    to end open_engine's error with; "" for any other URL. A SQLite path gets the slashes of an absolute path, the only
    kind open_engine takes."""
    bare = BARE_SCHEME.match(url)
    scheme, rest = (bare.group()[:-1], url[bare.end() :]) if bare else ("", "")
    if not rest or "@" in url or scheme.partition("+")[0] not in ("sqlite", *POSTGRES_SCHEMES):  # (user:pw@host: no scheme)
        return ""
    if scheme.partition("+")[0] == "sqlite":
        meant = f"{scheme}:///{rest if rest.startswith(('/', '~')) else Path.cwd() / rest}"
    else:
        meant = f"{scheme}://{rest.lstrip('/')}"
    return f": '//' is missing after {scheme}:, did you mean {redact_url(meant)}?"


def begin_write(conn: Connection) -> None:
    """SQLite: open the transaction with BEGIN IMMEDIATE now, if the driver has not opened one yet. pysqlite opens it
    only before the first write, so a transaction that reads first cannot start writing once another connection has
    committed (SQLITE_BUSY at once, whatever busy_timeout says), and a SAVEPOINT outside one makes a transaction of its
    own that RELEASE commits. IMMEDIATE takes the write lock at once, waiting busy_timeout. PostgreSQL: nothing."""
    dbapi = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite" and dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def dialect_insert(dialect: str):  # noqa: ANN201 - SQLAlchemy's insert() of the dialect
    """The dialect's own insert(), which can say ON CONFLICT (DO NOTHING / DO UPDATE): SQLite's or PostgreSQL's."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    raise NotImplementedError(f"upserts need SQLite or PostgreSQL, not {dialect}")  # pragma: no cover


def _json_loads(text: str) -> object:
    """json.loads, with an empty list (most of a subscriber's six JSON columns) made without it: loading 10,000
    subscribers decoded 60,000 values, 50,000 of them "[]" (1.3 us each through json.loads, 0.1 here)."""
    return [] if text == "[]" else json.loads(text)


def _sqlite_path(database: str, shown: str) -> str:
    """The absolute path of a SQLite URL's file: ~ expanded; a relative path (three slashes) refused, since it
    names another file under cron or systemd than in the shell where it was typed."""
    try:
        path = Path(database).expanduser()
    except RuntimeError:  # ~user that does not exist
        raise StoreError(f"cannot find the home directory in {shown}", "check database_url") from None
    if not path.is_absolute():
        raise StoreError(f"database_url {shown} is a path relative to the current directory, which differs between cron, systemd and your shell",
                         f"write the absolute path after four slashes: sqlite:///{Path.cwd() / path}")
    return str(path)


def sqlite_file(url: str) -> Path | None:
    """The absolute path of the file a SQLite URL names; None for another database, one in memory, a file: URI or a
    URL open_engine refuses (it says why). Whether the database exists, without creating it."""
    try:
        parsed = make_url(url)
        database = parsed.database or ""
        if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
            return None
        return Path(_sqlite_path(database, redact_url(url)))
    except (ArgumentError, ValueError, TypeError, StoreError):
        return None


def describe(engine: Engine) -> str:
    """The engine's URL for people and logs: no password, in the user info or in the query string."""
    return redact_url(engine.url.render_as_string(hide_password=False))


def _alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def init_db(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration; safe to run any number of times, from any number of
    hosts at once (on PostgreSQL the migrations run under a lock: the others wait, then find them done). StoreError,
    with nothing changed, when a newer digest has already upgraded the database past what this one knows."""
    from alembic import command
    from alembic.util import CommandError

    check_sqlite_features(engine)
    check_not_newer(engine)
    try:
        command.upgrade(_alembic_config(engine), "head")
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
    except CommandError:  # a revision this digest does not know, written between the check and the upgrade
        check_not_newer(engine)
        raise


def known_revisions() -> frozenset[str]:
    """The revisions of this digest's migrations (their files are named NNNN_what.py)."""
    versions = Path(__file__).resolve().parent.parent / "migrations" / "versions"
    return frozenset(path.name.split("_", 1)[0] for path in versions.glob("[0-9][0-9][0-9][0-9]_*.py"))


def newer_schema(engine: Engine) -> str | None:
    """The database's schema revision when this digest does not know it (a newer digest upgraded the database, as
    one host of several does first); None otherwise."""
    current = _schema_revisions(engine)
    unknown = sorted((current or set()) - known_revisions())
    return ", ".join(unknown) or None


def _schema_revisions(engine: Engine) -> set[str] | None:
    """The database's migration revisions (alembic_version's rows), or None when it has no schema."""
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return set(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None


def check_not_newer(engine: Engine) -> None:
    """StoreError when the database's schema is newer than this digest: an older version must not write to it (its
    statements would miss columns the newer one relies on), and cannot downgrade it."""
    revision = newer_schema(engine)
    if revision is not None:
        raise StoreError(f"the database {describe(engine)} is at schema revision {revision}, newer than this digest knows (up to {SCHEMA_REVISION}): "
                         "a newer digest has upgraded it", "install on this host the digest version the other hosts run; nothing was changed")


# What digest asks of the SQLite library Python was built with: the search index (migration 0005) and the ledger's
# INSERT ... SELECT over each email's papers (digest.store.deliveries). Both are in SQLite's default build since 3.38
# and in every common Python's; an old system library may lack them.
SQLITE_FEATURES = (
    ("JSON functions (json_each)", ("SELECT count(*) FROM json_each('[1]')",)),
    ("full-text search (FTS5)", ("CREATE VIRTUAL TABLE temp.digest_fts5_probe USING fts5(a)", "DROP TABLE temp.digest_fts5_probe")),
)


def check_sqlite_features(engine: Engine) -> None:
    """StoreError naming the first SQLite feature digest needs that this SQLite library lacks (nothing for PostgreSQL):
    found before the schema is made, not in the middle of an edition."""
    if engine.dialect.name != "sqlite":
        return
    import sqlite3

    for feature, probe in SQLITE_FEATURES:
        try:
            with engine.connect() as conn:
                for statement in probe:
                    conn.exec_driver_sql(statement)
        except SQLAlchemyError as exc:
            if is_locked(exc):
                raise wrap_db_error(exc, engine) from None
            raise StoreError(f"the SQLite library Python uses ({sqlite3.sqlite_version}) has no {feature}: {getattr(exc, 'orig', exc)}",
                             "use a Python built with SQLite 3.38 or newer (python.org's and most distributions' are), or PostgreSQL") from None


# The newest migration (tests/test_migrations.py checks that it is alembic's one head: a new migration changes it).
# Every command compares it with the database's alembic_version in one query: asking alembic itself (importing it and
# reading the migration scripts) cost 0.15 s of CPU at the start of every command, 10 % of a `digest rank`.
SCHEMA_REVISION = "0014"


def schema_is_current(engine: Engine) -> bool:
    """True when the database is at the newest migration (False when it has no schema, or an older one)."""
    return _schema_revisions(engine) == {SCHEMA_REVISION}


def has_schema(engine: Engine) -> bool:
    """True when the database holds digest's tables, at any migration (False: empty, never initialised)."""
    try:
        with engine.connect() as conn:
            return sa.inspect(conn).has_table("alembic_version")
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None


def ensure_ready(engine: Engine) -> None:
    """Upgrade an older database in place; commands call this so `digest init` is optional. StoreError for a newer
    one (init_db)."""
    if not schema_is_current(engine):
        init_db(engine)


def is_locked(exc: BaseException) -> bool:
    """True for SQLite's "database is locked" (another connection holds the write lock past the busy timeout)."""
    return "locked" in str(getattr(exc, "orig", None) or exc).lower()


def _cause(exc: BaseException) -> BaseException:
    """The error that mattered. On some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) SQLite rolls the whole
    transaction back itself; the ROLLBACK TO SAVEPOINT that SQLAlchemy then sends, leaving a `begin_nested` block,
    fails with "no such savepoint", and that error, raised in its place, was all the operator saw ("database error:
    no such savepoint: sa_savepoint_1" for a full disk)."""
    while "no such savepoint" in str(getattr(exc, "orig", None) or exc) and exc.__context__ is not None:
        exc = exc.__context__
    return exc


def is_full(exc: BaseException) -> bool:
    """The database could not write for want of space: SQLite's SQLITE_FULL ("database or disk is full"), or
    PostgreSQL's disk_full (SQLSTATE 53100, "could not extend file ... No space left on device")."""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == "53100" or getattr(orig, "sqlite_errorcode", None) == 13:  # SQLITE_FULL
        return True
    text = str(orig).lower()
    return "database or disk is full" in text or "no space left on device" in text


def wrap_db_error(exc: BaseException, engine: Engine | None = None) -> StoreError:
    exc = _cause(exc)
    where = f" ({describe(engine)})" if engine is not None else ""
    text = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    url = engine.url.render_as_string(hide_password=False) if engine is not None else ""
    text = mask_secrets(text, url_secrets(url))  # a driver may quote its connection string back
    path = sqlite_file(url) if url else None  # the SQLite file, whose directory the hints name
    if is_locked(exc):
        return StoreError(f"the database is locked{where}: {text}", "another process holds a write lock; try again")
    if is_full(exc):
        place = f"free space on its disk (df -h {path.parent})" if path is not None else "free space on the disk that holds the database"
        return StoreError(f"the database's disk is full{where}: {text}", f"{place}; the failed write left nothing behind, and the next run goes on from there")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated or "connect" in text.lower() or "unable to open" in text.lower():
        if path is not None and "unable to open" in text.lower():  # a DIGEST_HOME that exists but is not this user's to write in
            return StoreError(f"cannot open the database{where}: {text}",
                              f"digest writes the database and its -wal beside it in {path.parent}: check DIGEST_HOME (or database_url) and its permissions")
        return StoreError(f"cannot open the database{where}: {text}")
    return StoreError(f"database error{where}: {text}")


@contextlib.contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success, rolled back on any error; database errors become StoreError."""
    session = Session(engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise wrap_db_error(exc, engine) from None
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def check_database(engine: Engine) -> None:
    """Answer a trivial query, or raise StoreError: the database is reachable (for /healthz)."""
    read_rows(engine, sa.select(sa.literal(1)))


def read_rows(engine: Engine, statement) -> list:
    """All rows of one read-only statement on a short-lived connection; database errors become StoreError."""
    try:
        with engine.connect() as conn:
            return list(conn.execute(statement))
    except SQLAlchemyError as exc:
        raise wrap_db_error(exc, engine) from None
