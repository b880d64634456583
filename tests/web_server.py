"""The subscription pages served by waitress on 127.0.0.1 (a free port) in a thread, for the web tests.

    with serve_web(home, secret_key=..., subscribe_limit=3) as site:
        site.client.get("/subscribe")        # httpx, keeps cookies, follows redirects
        site.outbox_messages()               # confirmation emails written by the outbox transport
        site.clock.now += timedelta(days=1)  # the app's `now`
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx

SECRET = "test-secret-key-0123456789abcdef"
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Site:
    base_url: str
    settings: Any
    engine: Any
    clock: Clock
    client: httpx.Client

    def new_client(self) -> httpx.Client:
        """A second browser: no cookies."""
        return httpx.Client(base_url=self.base_url, timeout=10, follow_redirects=True)

    def csrf(self, path: str, client: httpx.Client | None = None) -> str:
        """GET a page (setting the CSRF cookie) and return its form's CSRF token."""
        page = (client or self.client).get(path)
        match = CSRF_INPUT.search(page.text)
        assert match, f"no CSRF field on {path} ({page.status_code})"
        return match.group(1)

    def outbox_messages(self) -> list[EmailMessage]:
        files = sorted(Path(self.settings.outbox_dir).glob("*.eml")) if Path(self.settings.outbox_dir).exists() else []
        return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]  # type: ignore[misc]


def text_of(message: EmailMessage) -> str:
    return message.get_body(preferencelist=("plain",)).get_content()


def confirm_path(message: EmailMessage, base_url: str) -> str:
    match = re.search(re.escape(base_url) + r"(/confirm/[A-Za-z0-9_.\-]+)", text_of(message))
    assert match, "no confirmation link in the email"
    return match.group(1)


def _close_all(server: Any) -> None:
    """Close the listener and every open connection (keep-alive clients), and take the trigger out of the socket
    map, so the asyncore loop ends. Not the trigger's pipe: this runs in the loop's thread, which can run it before
    the thread that pulled the trigger has written its byte (the loop was awake already, woken by a worker thread
    that had just answered). Closing the pipe here made that write fail with EBADF, or land in whatever file took
    the descriptor's number meanwhile; serve_web closes it once the loop has ended."""
    from waitress import wasyncore

    for channel in list(server._map.values()):
        if channel is server:
            wasyncore.dispatcher.close(channel)  # the listener; the server's own close() closes the trigger too
        elif channel is not server.trigger:
            channel.close()
    server.trigger.del_channel()


_TEMPLATE_DB: list[Path] = []


def _migrated_database() -> Path:
    """A SQLite file at the newest migration, made once per test process (Alembic takes half a second)."""
    if not _TEMPLATE_DB:
        from digest.store import init_db, open_engine

        path = Path(tempfile.mkdtemp(prefix="digest-web-template-")) / "digest.db"
        engine = open_engine(f"sqlite:///{path}")
        init_db(engine)
        engine.dispose()
        _TEMPLATE_DB.append(path)
    return _TEMPLATE_DB[0]


@contextlib.contextmanager
def serve_web(home: Path, *, transport: Any = None, engine: Any = None, threads: int = 2, trusted_proxy: str | None = None,
              url_prefix: str = "", public_url: str | None = None, **overrides: Any) -> Iterator[Site]:
    """The pages on a free port, under the same waitress server (limits and timeouts) as `digest web`; `trusted_proxy`
    as `digest web --trusted-proxy` (127.0.0.1: the test's X-Forwarded-For is the client's address); `url_prefix`
    ("/digest") as a base_url with a path (the site's client then asks under it); `public_url` the base_url of a TLS
    proxy in front ("https://digest.example.org"), else base_url is the server's own address."""
    from digest.config import load_settings
    from digest.store import open_engine
    from digest.web import create_app
    from digest.web.serve import create_server

    holder: dict = {}

    def dispatch(environ, start_response):  # the app needs the port in base_url before it exists
        return holder["app"](environ, start_response)

    values = {"secret_key": SECRET, "subscribe_limit": 1000, **overrides}
    server = create_server(dispatch, load_settings(home, env={}, overrides=values), host="127.0.0.1", port=0, threads=threads, ident="digest-test",
                           trusted_proxy=trusted_proxy, url_prefix=url_prefix)
    base_url = f"http://127.0.0.1:{server.effective_port}{url_prefix}"
    settings = load_settings(home, env={}, overrides={**values, "base_url": public_url or base_url})
    own_engine = engine is None
    if own_engine:
        shutil.copyfile(_migrated_database(), Path(home) / "digest.db")
        engine = open_engine(settings.database_url)
    clock = Clock()
    holder["app"] = create_app(settings, engine, transport=transport, now=clock, version_ttl=0)  # a test sees its writes at once
    thread = threading.Thread(target=server.run, name="waitress-test", daemon=True)
    thread.start()
    client = httpx.Client(base_url=base_url, timeout=10, follow_redirects=True)  # as a browser: a form that worked answers 303
    try:
        yield Site(base_url, settings, engine, clock, client)
    finally:
        client.close()
        server.task_dispatcher.shutdown()
        server.trigger.pull_trigger(lambda: _close_all(server))  # inside the loop, which then ends at once
        thread.join(5)
        server.trigger.close()  # its pipe, now that no thread writes to it (see _close_all)
        if own_engine:
            engine.dispose()


@contextlib.contextmanager
def digest_web(home, *, files: tuple[int, int] | None = None, args: tuple[str, ...] = (), **settings: object) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `digest web --port 0 ARGS...` process; `files` sets its (soft, hard) open-files limit before it starts."""
    env = {**os.environ, "DIGEST_HOME": str(home), "DIGEST_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1",
           **{f"DIGEST_{k.upper()}": str(v) for k, v in settings.items()}}
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, files)) if files else None
    proc = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "web", "--port", "0", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=limit)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line + proc.stderr.read()
        yield url.group(0), proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
