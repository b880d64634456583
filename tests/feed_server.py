"""A real HTTP server on 127.0.0.1 serving tests/fixtures the way feed servers behave, as the `feed_server` fixture.

Paths (FILE is relative to tests/fixtures):
  /files/FILE                   200 with ETag and Last-Modified; 304 when the request's validators match
  /moved/FILE, /moved308/FILE   301 / 308 to /files/FILE          /temp/FILE   302 to /files/FILE
  /loop/N                       301 to /loop/0 or /loop/1, for ever
  /flaky/FILE?fail=N&status=429&retry_after=2   N answers of `status` (Retry-After: seconds, or date:S for an
                                HTTP date S seconds ahead, or none), then /files/FILE
  /api?...                      arXiv API paging: the page file for `start` (see ARXIV_PAGES), 404 past the last
  /gone  410       /status/CODE  that status       /hang  answers nothing until the test ends
  /big?bytes=N&length=1         N bytes (length=0: no Content-Length, so only the streamed cap can stop it)
  /trickle?every=S&head=1       one byte every S seconds until the test ends, each well within any read timeout:
                                of the body after the headers (head=0: of the status line and headers)
  /doc/NAME                     the bytes a test put in `server.documents[NAME]` (hostile documents made in the test)
Every request is logged (method, path with query, headers) in `server.log`.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from time import time
from urllib.parse import parse_qs, urlsplit

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
LAST_MODIFIED = "Thu, 13 Aug 2026 04:00:13 GMT"
ARXIV_PAGES = {0: "real/arxiv-atom/api-2026-04-search-all-testing-page1-start0.xml", 10: "real/arxiv-atom/api-2026-04-search-all-testing-page2-start10.xml"}


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class FeedServer:
    base: str
    log: list[Request] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    documents: dict[str, bytes] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def requests_to(self, prefix: str) -> list[Request]:
        return [r for r in self.log if r.path.startswith(prefix)]


def _handler(server: FeedServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            server.log.append(Request("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, time()))
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            head, _, rest = parts.path.lstrip("/").partition("/")
            route = getattr(self, f"route_{head}", None) if head.isidentifier() else None
            if route is None:
                return self.send(404, b"not found")
            route(rest, query)

        def send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, length: bool = True) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if length:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body and status not in (304,):
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        def route_files(self, name: str, _query: dict) -> None:
            path = (FIXTURES / name).resolve()
            if FIXTURES.resolve() not in path.parents or not path.is_file():
                return self.send(404, b"no such fixture")
            body = path.read_bytes()
            etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
            validators = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
            if self.headers.get("If-None-Match") == etag or (
                "If-None-Match" not in self.headers and self.headers.get("If-Modified-Since") == LAST_MODIFIED
            ):
                return self.send(304, headers=validators, length=False)
            kind = "application/json" if name.endswith(".json") else "application/xml"
            self.send(200, body, {**validators, "Content-Type": kind})

        def route_moved(self, name: str, _query: dict) -> None:
            self.send(301, headers={"Location": f"/files/{name}"})

        def route_moved308(self, name: str, _query: dict) -> None:
            self.send(308, headers={"Location": f"{server.base}/files/{name}"})

        def route_loop(self, step: str, _query: dict) -> None:
            self.send(301, headers={"Location": f"/loop/{(int(step or 0) + 1) % 2}"})

        def route_temp(self, name: str, _query: dict) -> None:
            self.send(302, headers={"Location": f"/files/{name}"})

        def route_flaky(self, name: str, query: dict) -> None:
            seen = server.counts[self.path] = server.counts.get(self.path, 0) + 1
            if seen > int(query.get("fail", "1")):
                return self.route_files(name, query)
            retry_after = query.get("retry_after", "none")
            headers = {}
            if retry_after.startswith("date:"):
                headers["Retry-After"] = formatdate(time() + float(retry_after[5:]), usegmt=True)
            elif retry_after != "none":
                headers["Retry-After"] = retry_after
            self.send(int(query.get("status", "429")), b"slow down", headers)

        def route_api(self, _rest: str, query: dict) -> None:
            page = ARXIV_PAGES.get(int(query.get("start", "0")))
            if page is None:
                return self.send(404, b"no such page")
            self.send(200, (FIXTURES / page).read_bytes(), {"Content-Type": "application/atom+xml"})

        def route_doc(self, name: str, _query: dict) -> None:
            if name not in server.documents:
                return self.send(404, b"no such document")
            self.send(200, server.documents[name], {"Content-Type": "application/octet-stream"})

        def route_gone(self, _rest: str, _query: dict) -> None:
            self.send(410, b"gone")

        def route_status(self, code: str, _query: dict) -> None:
            self.send(int(code), f"status {code}".encode())

        def route_hang(self, _rest: str, _query: dict) -> None:
            server.release.wait(30)

        def route_trickle(self, _rest: str, query: dict) -> None:
            every = float(query.get("every", "0.2"))
            if query.get("head", "1") == "1":
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.end_headers()
                opening = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Slow</title><!-- '
            else:
                opening = b"HTTP/1.1 200 OK\r\nX-Slow: "
            try:
                self.wfile.write(opening)
                self.wfile.flush()
                while not server.release.wait(every):
                    self.wfile.write(b"x")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass

        def route_big(self, _rest: str, query: dict) -> None:
            size = int(query.get("bytes", "100000"))
            with_length = query.get("length", "1") == "1"
            self.send_response(200)
            if with_length:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"<!-- padding -->" * 4096
            sent = 0
            try:
                while sent < size:
                    piece = chunk[: size - sent]
                    self.wfile.write(piece)
                    sent += len(piece)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


@pytest.fixture
def feed_server():
    """A FeedServer on a free port of 127.0.0.1, stopped (and any hanging request released) after the test."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), None)  # handler bound below, once the base URL is known
    httpd.daemon_threads = True
    server = FeedServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(server)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        httpd.shutdown()
        httpd.server_close()
