"""The front page (`GET /`) answered from memory without Flask, when today's page for the current data version is
rendered already: the busiest page costs a cookie lookup, an ETag, a form token and the headers, not a Flask
request (routing, request context, Response object and hooks took most of a cached request's time; py-spy at
500 clients, benchmarks/web_front.py).

Everything else goes to the Flask app: other paths and methods, a query string, a page not yet rendered (Flask
renders and keeps it), and any error (Flask answers it as usual). The answer is the Flask path's, made by the
same functions (digest.web.cache, digest.web.security): same body, ETag, 304, CSRF cookie and security headers.
It must not render pages or open the database itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.http import http_date, is_resource_modified, parse_cookie, quote_etag

from .cache import cache_headers, fill_slots, page_etag
from .context import WebContext
from .front import front_page_key
from .security import is_https, security_headers

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class FrontFromMemory:
    """WSGI middleware: `GET /` from digest.web.cache's PageCache, anything else to `app`."""

    def __init__(self, app: WSGIApp, ctx: WebContext) -> None:
        self.app, self.ctx = app, ctx
        self.https = is_https(ctx.settings.base_url)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        answer = None
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO") == "/" and not environ.get("QUERY_STRING"):
            try:
                answer = self.answer(environ)
            except Exception:  # noqa: BLE001 - the Flask app meets the same error and answers it as it does
                answer = None
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def answer(self, environ: dict) -> tuple[str, list[tuple[str, str]], bytes] | None:
        ctx = self.ctx
        key, _today, last_modified = front_page_key(ctx)
        pieces = ctx.page_cache.get(key)
        if pieces is None:
            return None
        cookie = parse_cookie(environ).get(ctx.csrf.cookie_name, "")
        new = None
        if len(cookie) < 32:  # as Csrf.cookie_value: a new visitor gets a new cookie
            cookie = new = secrets.token_urlsafe(32)
        etag = page_etag(key, cookie)
        nonce = secrets.token_urlsafe(16)
        headers: list[tuple[str, Any]] = list(cache_headers(with_form=True).items())
        if is_resource_modified(environ, etag=etag):  # the ETag only: see cached_page
            body = fill_slots(pieces, nonce, lambda: ctx.csrf.token_for(cookie))
            status = "200 OK"
            headers += [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))), ("ETag", quote_etag(etag)),
                        ("Last-Modified", http_date(last_modified.replace(microsecond=0)))]
        else:  # as werkzeug answers 304: no entity headers but the ETag
            status, body = "304 NOT MODIFIED", b""
            headers.append(("ETag", quote_etag(etag)))
        headers += security_headers(nonce, self.https)
        if new:
            headers.append(("Set-Cookie", ctx.csrf.cookie_header(new, environ.get("SCRIPT_NAME") or "/")))
        return status, headers, body
