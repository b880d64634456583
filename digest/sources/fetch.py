"""Polite fetching: one feed's bytes over HTTP, with explicit timeouts, conditional GET and the status codes feeds use.

It never parses entries and never touches the database: the caller stores the validators, the new URL after a
301/308 and the "gone" verdict. The httpx client (its transport is the seam for tests) and `sleep` are injectable.

Every request has a deadline as a whole (fetch_deadline), not only a timeout per read (fetch_timeout): a server
that trickles a byte every few seconds never trips the second, and would hold `digest run` (and so everybody's
email) for days.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpcore
import httpx

from ..config import Settings
from ..errors import SourceError

PERMANENT = (301, 308)
TEMPORARY = (302, 303, 307)
RETRYABLE = (429, 503)
MAX_REDIRECTS = 5
NETWORK_HINT = "check the URL and your network; the next fetch tries again"


@dataclass
class FetchResult:
    status: str  # ok | not_modified | moved (ok, but the source has a new permanent URL) | gone
    url: str  # the URL to store: the new one after 301/308 redirects, else the one asked for
    body: bytes = b""
    etag: str | None = None
    last_modified: str | None = None
    http_status: int = 200
    requests: int = 1


def fetch_feed(
    url: str,
    *,
    settings: Settings,
    etag: str | None = None,
    last_modified: str | None = None,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """GET `url` politely. Network failures, timeouts, oversized bodies and HTTP errors raise SourceError;
    410 returns status "gone" (the caller disables the source)."""
    headers = {"User-Agent": settings.user_agent, "Accept": "application/rss+xml, application/atom+xml, application/json, application/xml;q=0.9, */*;q=0.8"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    own = client is None
    client = client or make_client(settings)
    try:
        return _fetch(client, url, headers, settings, sleep)
    finally:
        if own:
            client.close()


def make_client(settings: Settings, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client with the timeouts and User-Agent from settings; redirects are followed by hand. Its own
    transports (the direct one and any proxy's from the environment) keep fetch_deadline on every socket."""
    timeout = httpx.Timeout(settings.fetch_timeout)
    client = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport, headers={"User-Agent": settings.user_agent})
    if transport is None:
        _keep_deadlines([client._transport, *client._mounts.values()])  # noqa: SLF001 - see _keep_deadlines
    return client


# The instant (time.monotonic()) the request being made must be done by; None outside fetch_feed.
_deadline: ContextVar[float | None] = ContextVar("digest_fetch_deadline", default=None)


@contextmanager
def _request_deadline(deadline: float) -> Iterator[None]:
    token = _deadline.set(deadline)
    try:
        yield
    finally:
        _deadline.reset(token)


def _within(timeout: float | None, late: type[Exception]) -> float | None:
    """A socket operation's timeout, shortened to what is left of the request's deadline; `late` once it passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("past fetch_deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write waits at most until the request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:  # noqa: ANN001
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _within(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str):  # noqa: ANN201
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every connection's socket a _DeadlineStream."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        timeout = _within(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Iterable | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._backend.connect_unix_socket(path, _within(timeout, httpcore.ConnectTimeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def _keep_deadlines(transports: Iterable[object]) -> None:
    """Put _DeadlineBackend under each httpx transport's connection pool. httpx has no deadline per request and
    does not take a network backend, so this reaches into its pool (httpcore's documented NetworkBackend seam);
    tests/test_fetch.py's trickling server fails if an httpx upgrade moves it."""
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is not None and not isinstance(backend, _DeadlineBackend):
            pool._network_backend = _DeadlineBackend(backend)  # type: ignore[union-attr]  # noqa: SLF001


def _fetch(client: httpx.Client, url: str, headers: dict[str, str], settings: Settings, sleep: Callable[[float], None]) -> FetchResult:
    stored_url, current, permanent_so_far = url, url, True
    requests = redirects = tries = 0
    while True:
        requests += 1
        deadline = time.monotonic() + settings.fetch_deadline
        try:
            with _request_deadline(deadline), client.stream("GET", current, headers=headers) as response:
                status = response.status_code
                if status in PERMANENT + TEMPORARY and "location" in response.headers:
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise SourceError(f"more than {MAX_REDIRECTS} redirects from {url} (the last to {urljoin(current, response.headers['location'])})",
                                          "the server redirects in a loop or too far; open the URL in a browser and add the feed's final address")
                    current = urljoin(current, response.headers["location"])
                    # Only an unbroken chain of permanent redirects moves the source (rss2email does the same).
                    permanent_so_far = permanent_so_far and status in PERMANENT
                    if permanent_so_far:
                        stored_url = current
                    continue
                if status in RETRYABLE and tries < settings.fetch_retries:
                    tries += 1
                    sleep(_retry_delay(response.headers.get("retry-after"), tries, settings.retry_after_max, url))
                    continue
                if status == 304:
                    return FetchResult("not_modified", stored_url, etag=headers.get("If-None-Match"),
                                       last_modified=headers.get("If-Modified-Since"), http_status=304, requests=requests)
                if status == 410:
                    return FetchResult("gone", stored_url, http_status=410, requests=requests)
                if status >= 400 or status < 200 or status in PERMANENT + TEMPORARY:
                    tried = f" after {tries + 1} tries" if tries else ""
                    said = _arxiv_error(response) if status < 500 else ""
                    raise SourceError(f"HTTP {status} {response.reason_phrase} from {current}{tried}{said}", _hint_for(status))
                body = _read_capped(response, settings.max_feed_bytes, current)
                return FetchResult(
                    "moved" if stored_url != url else "ok", stored_url, body,
                    etag=response.headers.get("etag"), last_modified=response.headers.get("last-modified"),
                    http_status=status, requests=requests,
                )
        except httpx.TimeoutException:
            if _past(deadline):
                raise _too_slow(current, settings) from None
            raise SourceError(f"no answer from {current} within {settings.fetch_timeout:g} s", "the server may be down or slow; raise fetch_timeout if it is just slow") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot reach {current}: {exc or type(exc).__name__}", NETWORK_HINT) from None


def _past(deadline: float) -> bool:
    """Whether `deadline` (time.monotonic()) has come: a timeout then was the deadline's, not fetch_timeout's.
    (A socket timeout is rounded up to the millisecond, so it never ends before the deadline it was cut to.)"""
    return time.monotonic() >= deadline


def _too_slow(url: str, settings: Settings) -> SourceError:
    return SourceError(f"{url} took more than fetch_deadline ({settings.fetch_deadline:g} s) to send the feed; stopped reading",
                       "the server is very slow or trickling bytes; raise fetch_deadline if it is just slow")


def _read_capped(response: httpx.Response, cap: int, url: str) -> bytes:
    """The body, refusing anything past `cap` bytes without reading it all (a feed is never that big)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise SourceError(f"{url} sends {int(declared):,} bytes, more than max_feed_bytes ({cap:,})", "raise max_feed_bytes if the feed is really that big")
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise SourceError(f"{url} sent more than max_feed_bytes ({cap:,} bytes); stopped reading", "raise max_feed_bytes if the feed is really that big")
        chunks.append(chunk)
    return b"".join(chunks)


_ERROR_SUMMARY = re.compile(rb"<title[^>]*>\s*Error\s*</title>.*?<summary[^>]*>\s*(.*?)\s*</summary>", re.S)


def _arxiv_error(response: httpx.Response) -> str:
    """The reason inside an arXiv API error answer (an Atom entry titled "Error"), e.g. "incorrect id format"."""
    head = b""
    try:
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) > 8192:
                break
    except httpx.HTTPError:
        return ""
    found = _ERROR_SUMMARY.search(head)
    return f": {found.group(1).decode('utf-8', 'replace')[:200]}" if found else ""


def _retry_delay(header: str | None, attempt: int, ceiling: float, url: str) -> float:
    """Seconds to wait before trying again: Retry-After (seconds or an HTTP date) or a doubling backoff.
    A server asking for longer than retry_after_max is not retried now: the next run tries again."""
    wanted: float | None = None
    if header:
        header = header.strip()
        if header.isdigit():
            wanted = float(header)
        else:
            try:
                when = parsedate_to_datetime(header)
                wanted = max(0.0, (when - datetime.now(timezone.utc)).total_seconds()) if when.tzinfo else None
            except (TypeError, ValueError):
                wanted = None
    if wanted is None:
        return min(float(2 ** (attempt - 1)), ceiling)
    if wanted > ceiling:
        raise SourceError(f"{url} asks us to come back in {wanted:.0f} s (Retry-After), more than retry_after_max ({ceiling:g} s)",
                          "the next fetch tries again")
    return wanted


def _hint_for(status: int) -> str:
    if status in (401, 403):
        return "the server refuses us; check the URL, or whether the feed needs a login"
    if status == 404:
        return "the feed is not there; check the URL, or `digest sources remove` it"
    if status in RETRYABLE:
        return "the server is busy or limiting us; the next fetch tries again"
    if 400 <= status < 500:  # the request itself is refused: asking again the same way will not help
        return "the server refuses the request as made; check the URL (an arxiv-api source: its query)"
    return "the server failed; the next fetch tries again"


# ---- the arXiv API: paging at arXiv's pace --------------------------------------------------------

_TOTAL = re.compile(rb"<(?:\w+:)?totalResults[^>]*>\s*(\d+)\s*<")
_ENTRY = re.compile(rb"<(?:\w+:)?entry[\s>]")


def fetch_arxiv_pages(
    url: str,
    *,
    settings: Settings,
    page_size: int = 100,
    max_pages: int = 5,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[bytes], list[str]]:
    """The Atom pages of an arXiv API query and warnings: start/max_results paging, at least arxiv_api_delay
    seconds apart (arXiv's terms), stopping at totalResults, a short page or `max_pages`. A failing first page
    raises SourceError; a failing later page ends the paging with a warning and keeps the pages already read."""
    own = client is None
    client = client or make_client(settings)
    pages: list[bytes] = []
    warnings: list[str] = []
    try:
        start = 0
        for number in range(max_pages):
            if number:
                sleep(settings.arxiv_api_delay)
            try:
                result = fetch_feed(_page_url(url, start, page_size), settings=settings, client=client, sleep=sleep)
                if result.status == "gone":
                    raise SourceError(f"the arXiv API answered 410 Gone for {url}")
            except SourceError as exc:
                if not pages:
                    raise
                warnings.append(f"stopped paging at start={start}: {exc}")
                break
            pages.append(result.body)
            total = _TOTAL.search(result.body)
            entries = len(_ENTRY.findall(result.body))
            start += page_size
            if entries < page_size or total is None or start >= int(total.group(1)):
                break
    finally:
        if own:
            client.close()
    return pages, warnings


def _page_url(url: str, start: int, size: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("start", "max_results")]
    query += [("start", str(start)), ("max_results", str(size))]
    return urlunsplit(parts._replace(query=urlencode(query)))
