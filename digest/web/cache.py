"""Caching of the public pages: each is rendered once per (page, day, data version) and kept in memory, and a
browser that already has it gets 304 Not Modified (ETag and Last-Modified, RFC 9110).

What differs per request stays a slot in the cached text, filled by a string replace: the CSP nonce of the inline
style and script, and the CSRF token of the front page's Subscribe form. A page with a form is cached by the
browser only (private), and its ETag follows the browser's CSRF cookie, so a 304 never keeps a form whose token
the cookie no longer matches. It must not query the database or know what a page shows.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from flask import Response, render_template, request
from werkzeug.http import is_resource_modified

from .security import Csrf, csp_nonce

NONCE_SLOT, CSRF_SLOT = "\x00nonce\x00", "\x00csrf\x00"  # never in a page otherwise: text is cleaned of controls
_SLOT = re.compile("\x00(nonce|csrf)\x00")
PUBLIC = "public, no-cache"  # any cache may keep it, but asks each time (a cheap 304): a fetch may change it
PRIVATE = "private, no-cache"  # the browser's own cache only: the page holds this browser's CSRF token


T = TypeVar("T")


class Recent(Generic[T]):
    """A value loaded again at most every `ttl` seconds (0: every time), shared by the threads: the data version is
    asked once a second, not on every request of a busy page. `clock` is monotonic seconds (injected by tests)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._value: tuple[float, T] | None = None
        self._lock = threading.Lock()

    def get(self, load: Callable[[], T]) -> T:
        held = self._value
        if held is not None and self.ttl > 0 and self.clock() - held[0] < self.ttl:
            return held[1]
        with self._lock:  # one thread loads; the others waiting take its value
            held = self._value
            if held is not None and self.ttl > 0 and self.clock() - held[0] < self.ttl:
                return held[1]
            value = load()
            self._value = (self.clock(), value)
            return value


class PageCache:
    """Rendered pages by key, at most `size`, the least recently used dropped first; each kept as UTF-8 pieces
    split on its slots (even items text, odd items a slot's name), so a request joins bytes. Thread-safe."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._pages: OrderedDict[tuple, tuple[bytes, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> tuple[bytes, ...] | None:
        """The page `key` if it is rendered already."""
        with self._lock:
            pieces = self._pages.get(key)
            if pieces is not None:
                self._pages.move_to_end(key)
            return pieces

    def page(self, key: tuple, render: Callable[[], str]) -> tuple[bytes, ...]:
        pieces = self.get(key)
        if pieces is not None:
            return pieces
        pieces = split_slots(render())  # outside the lock: two threads may render one page once each, never wait
        with self._lock:
            self._pages[key] = pieces
            while len(self._pages) > self.size:
                self._pages.popitem(last=False)
        return pieces


def split_slots(body: str) -> tuple[bytes, ...]:
    return tuple(piece.encode() for piece in _SLOT.split(body))


def render_with_slots(template: str, **context) -> str:
    """render_template, with the per-request values left as slots for fill_slots."""
    return render_template(template, csp_nonce=lambda: NONCE_SLOT, csrf_token=lambda: CSRF_SLOT, **context)


def page_etag(key: tuple, cookie: str | None = None) -> str:
    """The ETag of page `key`; a page with a form names the browser's CSRF `cookie` too (a new visitor gets a new
    cookie, so a new ETag)."""
    parts = [repr(key)] if cookie is None else [repr(key), cookie]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def cache_headers(with_form: bool) -> dict[str, str]:
    return {"Cache-Control": PRIVATE, "Vary": "Cookie"} if with_form else {"Cache-Control": PUBLIC}


def fill_slots(pieces: tuple[bytes, ...], nonce: str, csrf_token: Callable[[], str]) -> bytes:
    """The page's bytes with this request's nonce and (only if the page has a form) CSRF token in its slots."""
    values = {b"nonce": nonce.encode()}
    if b"csrf" in pieces[1::2]:
        values[b"csrf"] = csrf_token().encode()
    return b"".join(values[p] if i % 2 else p for i, p in enumerate(pieces))


def cached_page(cache: PageCache | None, csrf: Csrf, key: tuple, last_modified: datetime, render: Callable[[], str], *,
                mimetype: str = "text/html", with_form: bool = False) -> Response:
    """The page `key` (which must name everything it shows: page, arguments, day, data version), or 304 when the
    browser's copy is current. `render` makes it (with render_with_slots) when `cache` has not got it (None: keep
    nothing in memory, only the browser's copy counts). digest.web.fast answers `/` the same way without Flask."""
    etag = page_etag(key, csrf.cookie_value() if with_form else None)
    last_modified = last_modified.replace(microsecond=0)
    headers = cache_headers(with_form)
    # A page with a form answers 304 to its ETag only: If-Modified-Since alone cannot tell whether the browser's copy
    # carries a token for the cookie it sends now.
    if not is_resource_modified(request.environ, etag=etag, last_modified=None if with_form else last_modified):
        response = Response(status=304, headers=headers)
    else:
        pieces = cache.page(key, render) if cache is not None else split_slots(render())
        body = fill_slots(pieces, csp_nonce(), csrf.token)
        response = Response(body, mimetype=mimetype, headers=headers)
    response.set_etag(etag)
    response.last_modified = last_modified
    return response
