"""The web front's defences: security headers with a per-request CSP nonce, CSRF tokens, the per-client
sliding-window rate limit of the subscribe form, in this process's memory or in a storage every `digest web` process
and host shares (Redis and the other stores of the `limits` library). The caps on confirmation emails per inbox are
the store's (digest.store.caps): in the database, shared by every process whatever this
storage is.

It must not know about pages, subscribers or the database; digest.web.app wires it into the Flask app.

CSRF is a signed double-submit cookie (OWASP): a random value in a SameSite=Lax, HttpOnly cookie, and
the same value signed with secret_key in each form. A cross-site page can neither read the cookie nor
sign a value, so it cannot forge the pair. With an https base_url the cookie is `__Host-digest_csrf`
(RFC 6265bis: Secure, Path=/, no Domain), which a subdomain or a plain-http page of the host cannot set
or overwrite: a double-submit cookie is only as good as nobody else being able to plant one. The RFC 8058
one-click unsubscribe POST is deliberately exempt: mail providers send it without any cookie or form token.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import threading
from collections import OrderedDict, deque
from urllib.parse import urlsplit

from flask import Flask, Response, abort, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.http import dump_cookie

from ..config import Settings, mask_secrets, redact_url, url_secrets
from ..errors import ConfigError

CSRF_COOKIE = "digest_csrf"  # with an http base_url (the demo, a trial): a __Host- cookie needs Secure
HOST_CSRF_COOKIE = f"__Host-{CSRF_COOKIE}"  # with an https base_url
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 24 * 3600  # a form left open for a day must be reloaded


def csp_nonce() -> str:
    """This request's nonce for the inline <style> and the tiny time-zone <script>."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


# RFC 6797, with an https base_url: a browser that was on the site once asks over https only, for a year, so nobody on
# the network reads a link's token or the CSRF cookie from a plain-http request (a typed address, an old http link).
# Not includeSubDomains: the operator's other hosts are not digest's to decide.
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def security_headers(nonce: str, https: bool = False) -> list[tuple[str, str]]:
    """The headers every response carries, for the CSP nonce `nonce`; `https`: base_url is https (HSTS too)."""
    headers = [
        ("Content-Security-Policy", f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; img-src 'self' data:; "
                                    "base-uri 'none'; object-src 'none'; form-action 'self'; frame-ancestors 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),  # the tokens are in the URLs
        ("Cross-Origin-Opener-Policy", "same-origin"),
    ]
    return [*headers, HSTS] if https else headers


def is_https(base_url: str) -> bool:
    """Whether the site is served over https (base_url's scheme): its CSRF cookie is a __Host- one, its answers carry HSTS."""
    return urlsplit(base_url).scheme == "https"


def set_security_headers(response: Response, https: bool = False) -> Response:
    for name, value in security_headers(csp_nonce(), https):
        response.headers[name] = value
    if "Cache-Control" not in response.headers:  # the public pages say how they may be cached (digest.web.front)
        response.headers["Cache-Control"] = "no-store"  # every other page may show personal data reached by a token
    return response


class Csrf:
    """Issue and check the signed double-submit token of every form but the one-click unsubscribe."""

    def __init__(self, secret_keys: str | tuple[str, ...], base_url: str):
        """`secret_keys`: secret_key, or the keys that verify (digest.tokens.verifying_keys: the last one signs)."""
        self._serializer = URLSafeTimedSerializer(list(secret_keys) if isinstance(secret_keys, tuple) else secret_keys, salt="digest.csrf")
        self._secure = is_https(base_url)
        self.cookie_name = HOST_CSRF_COOKIE if self._secure else CSRF_COOKIE

    def install(self, app: Flask) -> None:
        app.jinja_env.globals["csrf_token"] = self.token
        app.jinja_env.globals["CSRF_FIELD"] = CSRF_FIELD
        app.after_request(self._set_cookie)

    def token(self) -> str:
        """The value for this form's hidden field (the cookie is set with the response when new)."""
        return self.token_for(self.cookie_value())

    def token_for(self, cookie: str) -> str:
        """The form token that matches the CSRF cookie `cookie`."""
        return self._serializer.dumps(cookie)

    def cookie_header(self, value: str, path: str) -> str:
        """The Set-Cookie value of a new CSRF cookie `value` for the pages under `path` (a __Host- cookie: for the
        whole host, Path=/ being one of its rules, whatever path base_url has)."""
        return dump_cookie(self.cookie_name, value, httponly=True, samesite="Lax", secure=self._secure, path="/" if self._secure else path)

    def cookie_value(self) -> str:
        """This browser's CSRF cookie, or a new one that the response sets: a page cached per browser (the
        front page's ETag) changes with it, since its form carries a token for it."""
        value = request.cookies.get(self.cookie_name, "")
        if len(value) < 32:
            value = g.get("csrf_new") or secrets.token_urlsafe(32)
            g.csrf_new = value
        return value

    def check(self) -> None:
        """Abort with 400 unless the form's token is signed by us and matches the cookie."""
        if not self.valid():
            abort(400, description="This form has expired or did not come from this site. Please go back, reload the page and try again.")

    def valid(self) -> bool:
        """Whether the form's token is signed by us, not expired, and matches the cookie. A page that can show its form
        again with what was typed (and a fresh token) asks this instead of check()."""
        cookie = request.cookies.get(self.cookie_name, "")
        sent = request.form.get(CSRF_FIELD, "")
        try:
            value = self._serializer.loads(sent, max_age=CSRF_MAX_AGE) if sent else None
        except BadSignature:
            value = None
        return bool(cookie) and isinstance(value, str) and hmac.compare_digest(value, cookie)

    def _set_cookie(self, response: Response) -> Response:
        if g.get("csrf_new"):
            response.headers.add("Set-Cookie", self.cookie_header(g.csrf_new, request.script_root or "/"))
        return response


def client_key(address: str | None) -> str:
    """The rate limit's key for a client address: an IPv4 address as it is (an IPv4-mapped IPv6 one as IPv4), an IPv6
    address by its /64 network. One subscriber line or server is given a whole /64 (RFC 6177): counted address by
    address, one machine had 2**64 tries. Anything else (a Unix socket's empty name) as it is."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


class SlidingWindowLimiter:
    """At most `limit` events per `window` seconds for each key (a client address), in memory.

    Thread-safe (waitress serves from several threads). At most `max_keys` addresses are remembered;
    the least recently seen are forgotten first, so a flood of addresses cannot exhaust memory.
    """

    def __init__(self, limit: int, window: float, max_keys: int = 10_000):
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, now: float) -> bool:
        """Count one event for `key` at `now` (seconds) unless it is over its limit; True if allowed."""
        with self._lock:
            events = self._events.pop(key, None) or deque()
            while events and events[0] <= now - self.window:
                events.popleft()
            allowed = len(events) < self.limit
            if allowed:
                events.append(now)
            self._events[key] = events  # re-inserted: now the most recently seen
            while len(self._events) > self.max_keys:
                self._events.popitem(last=False)
            return allowed

    def retry_after(self, key: str, now: float) -> int:
        """Whole seconds until `key` may try again."""
        with self._lock:
            events = self._events.get(key)
            if not events:
                return 0
            return max(1, int(events[0] + self.window - now + 0.999))


class SharedLimiter:
    """The same limit (at most `limit` events per `window` seconds per key) kept in a storage every `digest web`
    process and host shares, through `limits` (the storage-and-strategy layer of Flask-Limiter): the moving-window
    strategy on storage_uri (redis://host:6379/0, rediss://, memcached://, mongodb://...). A `key_prefix`
    query parameter names this installation's keys (default "digest"), for several installations on one Redis.

    The storage keeps its own clock: `now` is not used. A storage that cannot be reached raises StorageDown."""

    def __init__(self, storage_uri: str, limit: int, window: float, *, scope: str = "subscribe", setting: str = "web_rate_limit_storage"):
        from limits import RateLimitItemPerSecond
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        uri, options = _storage_options(storage_uri)
        try:
            self.storage = storage_from_string(uri, wrap_exceptions=True, **options)
        except Exception as exc:  # noqa: BLE001 - a bad URI or a missing driver: said at start, as a setting's error
            said = str(exc).replace(storage_uri, redact_url(storage_uri)).replace(uri, redact_url(uri))
            said = mask_secrets(said, url_secrets(storage_uri) + url_secrets(uri))[:200]
            raise StorageDown(f"{setting} {redact_url(storage_uri)} cannot be used: {type(exc).__name__}: {said}") from None
        self.item = RateLimitItemPerSecond(limit, max(1, int(round(window))))
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.scope = scope

    def check(self) -> bool:
        """True when the storage answers."""
        try:
            return bool(self.storage.check())
        except Exception:  # noqa: BLE001 - whatever the driver raises, the answer is no
            return False

    def allow(self, key: str, now: float) -> bool:
        try:
            return self.strategy.hit(self.item, self.scope, key)
        except Exception as exc:  # noqa: BLE001 - limits.errors.StorageError wraps the driver's errors
            raise StorageDown(f"the rate-limit storage did not answer: {type(exc).__name__}") from None

    def retry_after(self, key: str, now: float) -> int:
        import time

        try:
            stats = self.strategy.get_window_stats(self.item, self.scope, key)
        except Exception as exc:  # noqa: BLE001
            raise StorageDown(f"the rate-limit storage did not answer: {type(exc).__name__}") from None
        return max(1, int(stats.reset_time - time.time() + 0.999))


class StorageDown(Exception):
    """The shared rate-limit storage cannot be used (the subscribe form answers 503 until it can)."""


def _storage_options(storage_uri: str) -> tuple[str, dict[str, str]]:
    """(the URI without key_prefix, the storage's options): key_prefix from the query, "digest" by default."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    parts = urlsplit(storage_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for name, value in query if name == "key_prefix"), "digest")
    rest = urlencode([(name, value) for name, value in query if name != "key_prefix"])
    uri = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))
    return uri, ({"key_prefix": prefix} if parts.scheme.startswith("redis") else {})


def limit_storage(settings: Settings) -> tuple[str, str]:
    """Where the rate limits are kept, and the setting that says so: web_rate_limit_storage, else redis_url (the
    Redis that already keeps send_rate for the senders), else this process's memory."""
    if settings.web_rate_limit_storage:
        return settings.web_rate_limit_storage, "web_rate_limit_storage"
    if settings.redis_url:
        return settings.redis_url, "redis_url"
    return "memory://", "web_rate_limit_storage"


def make_limiter(storage_uri: str, limit: int, window: float, *, setting: str = "web_rate_limit_storage",
                 scope: str = "subscribe") -> SlidingWindowLimiter | SharedLimiter:
    """This process's memory for memory:// (or nothing set), else the shared storage, checked now: a storage
    that does not answer is a ConfigError (naming `setting`, where the URI came from) before `digest web` serves."""
    if not storage_uri or storage_uri.startswith("memory:"):
        return SlidingWindowLimiter(limit, window)
    try:
        limiter = SharedLimiter(storage_uri, limit, window, scope=scope, setting=setting)
    except StorageDown as exc:
        raise ConfigError(str(exc), f"{setting} is memory:// or a storage URI such as redis://127.0.0.1:6379/0 (pip install redis for Redis)") from None
    if not limiter.check():
        raise ConfigError(f"{setting} does not answer", f"start the storage (Redis) or fix {setting}; web_rate_limit_storage = \"memory://\" for one process")
    return limiter
