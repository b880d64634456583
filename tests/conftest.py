"""Shared fixtures: a DIGEST_HOME per test, a real SQLite file, a real PostgreSQL database when available,
and a way to call the real CLI. Fixtures of one area (feed server, SMTP server, web server) live in the
test modules of that area or in tests/servers.py.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

# The real servers every test module may use as fixtures: tests/feed_server.py (HTTP) and tests/smtp_server.py (SMTP).
pytest_plugins = ("feed_server", "smtp_server")

FIXTURES = Path(__file__).parent / "fixtures"

# Tests stop `digest web`, `serve` and `send` processes with SIGINT (Ctrl-C) as a user does. A test run started in
# the background by a shell without job control (`(pytest &)`) inherits SIGINT ignored, and so would every process
# it starts: each would outlive its test. Handled here (as an interactive Python does), so children start with
# SIGINT at its default, whatever started the run.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def _root_logger_as_it_was():
    """Each in-process CLI run installs digest's stderr handler on the root logger and lets DEBUG through it, as
    the real command does for its one run. In the test process that lasted for every later test: the SMTP test
    server then logged each line at DEBUG, which slowed it enough to skew the send_rate test. Restored after each
    test: the root logger's level, and no handler of digest's left on it."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        if handler not in handlers and type(handler).__module__.startswith("digest."):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _umask_as_it_was():
    """Each in-process CLI run tightens the process umask (to 077, as the command does for its one run): restored
    after each test, so a test's files do not depend on which test ran before it."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty DIGEST_HOME; no DIGEST_* variable of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("DIGEST_") and key != "DIGEST_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    monkeypatch.delenv("INVOCATION_ID", raising=False)  # pytest run by systemd: the hints of a shell, as the tests expect
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("DIGEST_HOME", str(path))
    return path


@pytest.fixture
def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'digest.db'}"


@pytest.fixture
def postgres_url() -> str:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    if not POSTGRES_URL:
        pytest.skip("DIGEST_TEST_POSTGRES_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at DIGEST_TEST_POSTGRES_URL is not reachable: {exc.orig}")
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a store test on a SQLite file and, when available, on PostgreSQL."""
    return request.getfixturevalue(f"{request.param}_url")


def _ready_engine(url: str):
    from digest.store import init_db, open_engine

    eng = open_engine(url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(db_url: str):
    """A migrated database: a SQLite file and, when available, PostgreSQL (the test runs on each)."""
    yield from _ready_engine(db_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str):
    """The migrated SQLite database of the test's DIGEST_HOME, the one the `cli` fixture's commands use."""
    yield from _ready_engine(sqlite_url)


@pytest.fixture
def cli(home: Path):
    """Call the real `digest` command in-process against the test's DIGEST_HOME; returns the click Result."""
    from digest.cli import main

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, env: dict | None = None):
        return runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)

    return invoke
